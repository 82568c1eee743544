"""Incremental ingestion: a per-pipeline watermark and the source it belongs to.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A frozen copy of the application's timestamp type: a migration never imports app code.
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("ingest_watermark", TS, nullable=True))
        batch.add_column(sa.Column("ingest_watermark_key", sa.String(800), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("ingest_watermark_key")
        batch.drop_column("ingest_watermark")
