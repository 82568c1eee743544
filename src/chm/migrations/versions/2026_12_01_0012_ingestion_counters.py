"""Ingestion counters (issue 16, GET /metrics): what every ingestion of a source
did, kept on its ``ingestion_sources`` row: runs created, updated, unchanged
and skipped, and pipelines ingested with and without an error. Counters only
grow; existing rows start at 0.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COUNTERS = (
    "runs_created",
    "runs_updated",
    "runs_unchanged",
    "runs_skipped",
    "ingestions_succeeded",
    "ingestions_failed",
)


def upgrade() -> None:
    with op.batch_alter_table("ingestion_sources") as batch:
        for name in COUNTERS:
            batch.add_column(
                sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0"))
            )


def downgrade() -> None:
    with op.batch_alter_table("ingestion_sources") as batch:
        for name in reversed(COUNTERS):
            batch.drop_column(name)
