"""The environment (development or production) a database belongs to (SE-004).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per setting the database itself must remember; the environment
    # is written by the first `chm db upgrade` (chm.core.environment).
    op.create_table(
        "chm_settings",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_chm_settings"),
    )


def downgrade() -> None:
    op.drop_table("chm_settings")
