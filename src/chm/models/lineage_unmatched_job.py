"""OpenLineage jobs that matched no pipeline: seen, counted, never their payloads."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.types import UTCDateTime
from chm.models.base import Base, IdMixin
from chm.models.client import Client
from chm.models.pipeline import Pipeline, active_inventory


class LineageUnmatchedJob(IdMixin, Base):
    """One (namespace, job name) whose events found no pipeline to write to.

    Recorded by ``chm.ingestion.lineage.unmatched`` with the scope of the
    source that took the event (platform, environment, client), so that a
    reader can tell without the sources file whether the job matches a
    pipeline by now (``still_unmatched``).
    """

    __tablename__ = "lineage_unmatched_jobs"
    __table_args__ = (
        sa.UniqueConstraint("namespace", "job_name"),
        # The listing's order: last_seen_at descending, then id.
        sa.Index(None, "last_seen_at", "id"),
    )

    namespace: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    job_name: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    source_name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    platform: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    environment: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    # The name_key of the source's client; null for a source of every client.
    client_key: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reason: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    event_count: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)


def still_unmatched() -> sa.ColumnElement[bool]:
    """The recorded jobs that still do not match exactly one active pipeline of
    their source's platform and environment (and client, when the source has
    one) by external id: a job whose pipeline appeared (or whose ambiguity was
    resolved) drops out of every listing, its row kept."""
    job = LineageUnmatchedJob
    matches = (
        sa.select(sa.func.count())
        .select_from(Pipeline)
        .join(Client, Client.id == Pipeline.client_id)
        .where(
            active_inventory(),
            Pipeline.platform == job.platform,
            Pipeline.environment == job.environment,
            Pipeline.external_id == job.job_name,
            sa.or_(job.client_key.is_(None), Client.name_key == job.client_key),
        )
        .correlate(job)
        .scalar_subquery()
    )
    return matches != 1
