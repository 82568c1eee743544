"""Ingestion jobs: ``POST /api/v1/ingestions`` with ``Prefer: respond-async``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.types import JSONDocument, UTCDateTime
from chm.models.base import Base, IdMixin

JOB_STATUSES = ("queued", "running", "succeeded", "partial", "failed")
FINISHED_JOB_STATUSES = ("succeeded", "partial", "failed")


class IngestionJob(IdMixin, Base):
    """One asked-for ingestion, run by a worker (chm.worker.jobs).

    A worker claims a queued job (or a running one whose lease expired: its
    worker died) by a conditional update, so two workers never run the same
    job; ``attempts`` counts the claims.
    """

    __tablename__ = "ingestion_jobs"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in JOB_STATUSES) + ")", name="status"
        ),
        # The claim's query: the oldest queued (or abandoned running) job first.
        sa.Index(None, "status", "id"),
    )

    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="queued")
    # The request's body as the API validated it: client_id, pipeline_id, full.
    requested: Mapped[dict[str, Any]] = mapped_column(JSONDocument, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The ingestion report (chm.ingestion.report.IngestionReport) once finished.
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    # One redacted line, when the job could not start (or its worker failed).
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
