"""Each source's ingestion health: when it last succeeded, its last error."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.types import UTCDateTime
from chm.models.base import Base

ZERO = sa.text("0")


class IngestionSource(Base):
    """One row per source name of the sources file, written by the ingestion
    engine after each pipeline it ingests (whatever asked: the worker, a job,
    ``chm ingest``, the API). The sources themselves stay in the file; a row
    whose source left the file is kept and no longer shown.

    ``consecutive_failures`` counts the failures of the *source* (it could not
    be reached, refused CHM's credentials, kept answering 5xx or throttling)
    since its last success; a pipeline-only failure (a job the platform does
    not know, a page of an unexpected shape) is its last error but does not
    count. The worker backs a failing source off from it.

    The counters (``runs_*``, ``ingestions_*``) only grow: what every ingestion
    of the source did, added in the transaction that records its outcome, so
    that ``GET /metrics`` (``chm_ingested_runs_total``,
    ``chm_source_ingestions_total``) is the same whichever process answers
    and survives restarts.
    """

    __tablename__ = "ingestion_sources"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    # The first error since the last success (null after a success): how long
    # a source that never succeeded has been failing.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Source runs ingested, by what became of each (the ingestion report's counts).
    runs_created: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, server_default=ZERO)
    runs_updated: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, server_default=ZERO)
    runs_unchanged: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, server_default=ZERO)
    runs_skipped: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, server_default=ZERO)
    # Pipelines ingested from the source, by outcome.
    ingestions_succeeded: Mapped[int] = mapped_column(
        sa.BigInteger, nullable=False, server_default=ZERO
    )
    ingestions_failed: Mapped[int] = mapped_column(
        sa.BigInteger, nullable=False, server_default=ZERO
    )
