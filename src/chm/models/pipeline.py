from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, validates

from chm.core.types import UTCDateTime
from chm.models.base import Base, IdMixin, TimestampMixin, name_key
from chm.models.client import Client

DEFAULT_GRACE_MINUTES = 30
MAX_SCHEDULE_MINUTES = 43_200  # 30 days
SCHEDULE_SOURCES = ("user", "platform")


class Pipeline(IdMixin, TimestampMixin, Base):
    __tablename__ = "pipelines"
    __table_args__ = (
        # DI-002: a pipeline name is unique (case-insensitively) within its client.
        sa.UniqueConstraint("client_id", "name_key"),
        # DI-003: NULL external ids never collide, on both databases.
        sa.UniqueConstraint("client_id", "platform", "external_id"),
        sa.Index(None, "platform", "environment"),
        # The worker's top-up of stored ticks (chm.schedules.ticks).
        sa.Index(
            "ix_pipelines_schedule_ticks_until",
            "schedule_ticks_until",
            sqlite_where=sa.text("schedule IS NOT NULL"),
            postgresql_where=sa.text("schedule IS NOT NULL"),
        ),
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
    # The schedule (monitoring contract, "Schedules"; docs/schedules.md): a
    # five-field cron read in an IANA zone, stored normalized by
    # chm.core.cron.normalize_cron; null: no expectation, never overdue.
    schedule: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    schedule_timezone: Mapped[str] = mapped_column(
        sa.String(64), nullable=False, default="UTC", server_default="UTC"
    )
    grace_minutes: Mapped[int] = mapped_column(
        sa.Integer,
        sa.CheckConstraint(
            f"grace_minutes >= 0 AND grace_minutes <= {MAX_SCHEDULE_MINUTES}",
            name="grace_minutes_range",
        ),
        nullable=False,
        default=DEFAULT_GRACE_MINUTES,
        server_default=str(DEFAULT_GRACE_MINUTES),
    )
    deadline_minutes: Mapped[int | None] = mapped_column(
        sa.Integer,
        sa.CheckConstraint(
            f"deadline_minutes >= 1 AND deadline_minutes <= {MAX_SCHEDULE_MINUTES}",
            name="deadline_minutes_range",
        ),
        nullable=True,
    )
    # Who set the schedule: 'user' (the API; a user's value always wins) or
    # 'platform' (learned by ingestion); null: nobody, the platform may fill it.
    schedule_source: Mapped[str | None] = mapped_column(
        sa.String(16),
        sa.CheckConstraint(
            "schedule_source IN ('user', 'platform')", name="schedule_source_values"
        ),
        nullable=True,
    )
    # When schedule or schedule_timezone last changed value: ticks before it
    # (or before created_at) expect nothing.
    schedule_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Why the platform's schedule was not taken (or could not be read), or null.
    schedule_note: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # When ingestion last read the platform's schedule.
    schedule_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The schedule's ticks are stored (chm.schedules.ticks) up to this time.
    schedule_ticks_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @validates("name")
    def _keep_name_key(self, _key: str, value: str) -> str:
        self.name_key = name_key(value)
        return value


def active_inventory() -> sa.ColumnElement[bool]:
    """A pipeline is active inventory only when it and its client are active
    (for a select that joins ``Pipeline`` to its ``Client``)."""
    return sa.and_(Pipeline.is_active.is_(True), Client.is_active.is_(True))
