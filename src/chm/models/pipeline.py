from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, validates

from chm.core.types import UTCDateTime
from chm.models.base import Base, IdMixin, TimestampMixin, name_key
from chm.models.client import Client


class Pipeline(IdMixin, TimestampMixin, Base):
    __tablename__ = "pipelines"
    __table_args__ = (
        # DI-002: a pipeline name is unique (case-insensitively) within its client.
        sa.UniqueConstraint("client_id", "name_key"),
        # DI-003: NULL external ids never collide, on both databases.
        sa.UniqueConstraint("client_id", "platform", "external_id"),
        sa.Index(None, "platform", "environment"),
    )

    client_id: Mapped[int] = mapped_column(
        sa.ForeignKey("clients.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    name_key: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    platform: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    pipeline_type: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    environment: Mapped[str] = mapped_column(sa.String(50), nullable=False)
    external_id: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    # Written by ingestion only: when the pipeline was last ingested
    # successfully, and the error of the last failed attempt (cleared on success).
    last_ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_ingestion_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # Incremental ingestion (chm.ingestion.engine): every change up to this
    # source time has been stored, for the source and external id of the key
    # (a watermark of another source or external id counts as none).
    ingest_watermark: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ingest_watermark_key: Mapped[str | None] = mapped_column(sa.String(800), nullable=True)
    # When the last ingestion attempt (any path, failed or not) started: the
    # worker's due rule (monitoring contract: a pipeline is due when this is
    # older than its source's interval_s). Written with the outcome.
    last_ingest_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The worker holding the pipeline's ingestion lease, until when
    # (chm.worker.leases): null, or past, means free.
    ingest_lease_owner: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    ingest_lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @validates("name")
    def _keep_name_key(self, _key: str, value: str) -> str:
        self.name_key = name_key(value)
        return value


def active_inventory() -> sa.ColumnElement[bool]:
    """A pipeline is active inventory only when it and its client are active
    (for a select that joins ``Pipeline`` to its ``Client``)."""
    return sa.and_(Pipeline.is_active.is_(True), Client.is_active.is_(True))
