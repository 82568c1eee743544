from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.status import RUN_STATUSES
from chm.core.types import JSONDocument, UTCDateTime
from chm.models.base import Base, IdMixin, TimestampMixin

# Event time (contract: Runs): started, else finished, else created. Kept by
# the database itself, so every time window can use an index on it.
EVENT_AT_SQL = "coalesce(started_at, finished_at, created_at)"


class Run(IdMixin, TimestampMixin, Base):
    __tablename__ = "runs"
    __table_args__ = (
        # DI-004: one run per (pipeline, external run id); the upsert key.
        sa.UniqueConstraint("pipeline_id", "external_run_id"),
        # DI-005: only the canonical lifecycle states.
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")", name="status"
        ),
        sa.CheckConstraint(
            "finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at",
            name="finished_after_started",
        ),
        sa.Index(None, "pipeline_id", "event_at"),
        sa.Index(None, "event_at"),
        # The worker's "did runs change since the last evaluation?" (chm.worker.alerts).
        sa.Index(None, "updated_at"),
        # The ordering indexes (pipeline and global) are expression indexes,
        # declared per dialect in the migrations: see chm.runs.ordering.
        # The reports' indexes (migration 0002, chm.reports): covering, so a
        # count over an event-time window, per pipeline or across all of them,
        # never reads the table; and the few runs still open, for stuck runs.
        sa.Index(
            "ix_runs_report_pipeline", "pipeline_id", "event_at", "id", "status", "duration_seconds"
        ),
        sa.Index("ix_runs_report_event", "event_at", "pipeline_id", "status", "duration_seconds"),
        sa.Index(
            "ix_runs_open",
            "event_at",
            "pipeline_id",
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        ),
    )

    # Fetch the database-computed event_at with RETURNING on insert and update.
    __mapper_args__ = {"eager_defaults": True}

    pipeline_id: Mapped[int] = mapped_column(
        sa.ForeignKey("pipelines.id", ondelete="RESTRICT"), nullable=False
    )
    external_run_id: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    source_status: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Served as is: the source's own duration when it gave one
    # (duration_from_source), else finished - started when both exist.
    duration_seconds: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    duration_from_source: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONDocument, nullable=False, default=dict)
    error_message: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    source_payload: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    ingested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The source's own "last changed" time, when it has one: lets ingestion
    # tell a real restart from a stale snapshot.
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The source's marker of the run's current attempt (GitHub run_attempt,
    # Airflow 3 queued_at...): lets ingestion show a run started again.
    source_attempt: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    event_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), sa.Computed(EVENT_AT_SQL, persisted=True), nullable=False
    )
