"""The worker (issue 13): the due rule and leases on pipelines, each source's
ingestion health, ingestion jobs and the registry of worker processes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen copies of the application's types: a migration never imports app code.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
JOB_STATUSES = ("queued", "running", "succeeded", "partial", "failed")


def upgrade() -> None:
    op.add_column("pipelines", sa.Column("last_ingest_attempt_at", TS, nullable=True))
    op.add_column("pipelines", sa.Column("ingest_lease_owner", sa.String(200), nullable=True))
    op.add_column("pipelines", sa.Column("ingest_lease_expires_at", TS, nullable=True))
    op.create_table(
        "ingestion_sources",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", TS, nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing_since", TS, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_ingestion_sources"),
    )
    op.create_table(
        "ingestion_jobs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("report", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ingestion_jobs"),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in JOB_STATUSES) + ")",
            name="ck_ingestion_jobs_status",
        ),
    )
    op.create_index("ix_ingestion_jobs_status_id", "ingestion_jobs", ["status", "id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("stopped_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_index("ix_workers_heartbeat_at", "workers", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_workers_heartbeat_at", "workers")
    op.drop_table("workers")
    op.drop_index("ix_ingestion_jobs_status_id", "ingestion_jobs")
    op.drop_table("ingestion_jobs")
    op.drop_table("ingestion_sources")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch rebuild of
    # pipelines would fail on the BI views that read it.
    for column in ("ingest_lease_expires_at", "ingest_lease_owner", "last_ingest_attempt_at"):
        op.drop_column("pipelines", column)
