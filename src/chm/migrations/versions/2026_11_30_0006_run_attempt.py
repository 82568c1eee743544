"""Runs remember the source's marker of their current attempt.

A platform can start a finished run again under the same id (an Airflow DAG
run cleared, a GitHub workflow re-run, a Databricks repair). Ingestion tells
such a new attempt from a stale snapshot by a marker the source raises with
every attempt (``chm.ingestion.rule.attempt_order``); the stored run keeps
the marker of the attempt it shows, null when the source gives none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite 3.35+ adds and drops a column in
# place): a batch copy of ``runs`` would have to rebuild its views and indexes.


def upgrade() -> None:
    op.add_column("runs", sa.Column("source_attempt", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "source_attempt")
