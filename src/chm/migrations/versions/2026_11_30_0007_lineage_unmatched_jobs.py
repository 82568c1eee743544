"""OpenLineage jobs that matched no pipeline (issue 12 §2).

An event whose job maps to no pipeline is still answered 202, and now also
leaves a trace: one row per (namespace, job name) with the source's scope,
the reason, when it was first and last seen and how many events it sent. No
payload is kept; the table is capped by the service
(``chm.ingestion.lineage.unmatched``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen copies of the application's types: a migration never imports app code.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lineage_unmatched_jobs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(500), nullable=False),
        sa.Column("job_name", sa.String(500), nullable=False),
        sa.Column("source_name", sa.String(200), nullable=False),
        sa.Column("platform", sa.String(50), nullable=False),
        sa.Column("environment", sa.String(50), nullable=False),
        sa.Column("client_key", sa.String(200), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lineage_unmatched_jobs"),
        sa.UniqueConstraint(
            "namespace", "job_name", name="uq_lineage_unmatched_jobs_namespace_job_name"
        ),
    )
    op.create_index(
        "ix_lineage_unmatched_jobs_last_seen_at_id",
        "lineage_unmatched_jobs",
        ["last_seen_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_lineage_unmatched_jobs_last_seen_at_id", "lineage_unmatched_jobs")
    op.drop_table("lineage_unmatched_jobs")
