"""Inventory (clients, pipelines), runs and alert rules.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the application's types: a migration never imports app code.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
RUN_STATUSES = ("queued", "running", "success", "failed", "cancelled", "skipped", "unknown")


def _nulls_low(column: str) -> str:
    """The ordering key of chm.core.types.NullsLowKey, as DDL."""
    if op.get_bind().dialect.name == "postgresql":
        return f"coalesce({column}, '-infinity'::timestamptz)"
    return f"coalesce({column}, '')"


def _audit() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "clients",
        *_audit(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_key", sa.String(200), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clients"),
        sa.UniqueConstraint("name_key", name="uq_clients_name_key"),
    )
    op.create_table(
        "pipelines",
        *_audit(),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_key", sa.String(200), nullable=False),
        sa.Column("platform", sa.String(50), nullable=False),
        sa.Column("pipeline_type", sa.String(50), nullable=False),
        sa.Column("environment", sa.String(50), nullable=False),
        sa.Column("external_id", sa.String(500), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("last_ingested_at", TS, nullable=True),
        sa.Column("last_ingestion_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pipelines"),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name="fk_pipelines_client_id_clients",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("client_id", "name_key", name="uq_pipelines_client_id_name_key"),
        sa.UniqueConstraint(
            "client_id",
            "platform",
            "external_id",
            name="uq_pipelines_client_id_platform_external_id",
        ),
    )
    op.create_index("ix_pipelines_client_id", "pipelines", ["client_id"])
    op.create_index("ix_pipelines_platform_environment", "pipelines", ["platform", "environment"])

    op.create_table(
        "alert_rules",
        *_audit(),
        sa.Column("rule_type", sa.String(32), nullable=False),
        sa.Column("client_id", ID, nullable=True),
        sa.Column("pipeline_id", ID, nullable=True),
        sa.Column("destination", sa.String(500), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=True),
        sa.Column("window_minutes", sa.Integer(), nullable=True),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name="fk_alert_rules_client_id_clients",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_alert_rules_pipeline_id_pipelines",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "client_id IS NOT NULL OR pipeline_id IS NOT NULL",
            name=op.f("ck_alert_rules_has_scope"),
        ),
        sa.CheckConstraint(
            "rule_type IN ('on_failure', 'failures_in_window')",
            name=op.f("ck_alert_rules_rule_type"),
        ),
        sa.CheckConstraint(
            "rule_type <> 'failures_in_window'"
            " OR (threshold IS NOT NULL AND window_minutes IS NOT NULL"
            " AND threshold >= 1 AND window_minutes >= 1 AND window_minutes <= 43200)",
            name=op.f("ck_alert_rules_window_params"),
        ),
        sa.CheckConstraint(
            "threshold IS NULL OR threshold >= 1", name=op.f("ck_alert_rules_threshold_positive")
        ),
        sa.CheckConstraint(
            "window_minutes IS NULL OR (window_minutes >= 1 AND window_minutes <= 43200)",
            name=op.f("ck_alert_rules_window_range"),
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alert_rules_client_id", "alert_rules", ["client_id"])
    op.create_index("ix_alert_rules_pipeline_id", "alert_rules", ["pipeline_id"])
    # DI-008: one enabled rule per effective scope, rule type and destination.
    for name, columns, where in (
        (
            "uq_alert_rules_enabled_pipeline_scope",
            ["pipeline_id", "rule_type", "destination"],
            "is_enabled AND pipeline_id IS NOT NULL",
        ),
        (
            "uq_alert_rules_enabled_client_scope",
            ["client_id", "rule_type", "destination"],
            "is_enabled AND pipeline_id IS NULL",
        ),
    ):
        op.create_index(
            name,
            "alert_rules",
            columns,
            unique=True,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )

    op.create_table(
        "runs",
        *_audit(),
        sa.Column("pipeline_id", ID, nullable=False),
        sa.Column("external_run_id", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source_status", sa.String(200), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("duration_from_source", sa.Boolean(), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("source_payload", JSON, nullable=True),
        sa.Column("ingested_at", TS, nullable=True),
        sa.Column("source_updated_at", TS, nullable=True),
        # Event time (contract: Runs), kept by the database.
        sa.Column(
            "event_at",
            TS,
            sa.Computed("coalesce(started_at, finished_at, created_at)", persisted=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_runs_pipeline_id_pipelines",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint(
            "pipeline_id", "external_run_id", name="uq_runs_pipeline_id_external_run_id"
        ),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")",
            name=op.f("ck_runs_status"),
        ),
        sa.CheckConstraint(
            "finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at",
            name=op.f("ck_runs_finished_after_started"),
        ),
    )
    op.create_index("ix_runs_event_at", "runs", ["event_at"])
    op.create_index("ix_runs_pipeline_id_event_at", "runs", ["pipeline_id", "event_at"])
    # The ordering rule (FR-006) as index keys: a pipeline's latest run is the
    # first entry of its range, and a history page a range scan from the cursor.
    started, finished = _nulls_low("started_at"), _nulls_low("finished_at")
    op.execute(
        f"CREATE INDEX ix_runs_pipeline_order ON runs "
        f"(pipeline_id, {started} DESC, {finished} DESC, id DESC)"
    )
    op.execute(f"CREATE INDEX ix_runs_order ON runs ({started} DESC, {finished} DESC, id DESC)")


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("alert_rules")
    op.drop_table("pipelines")
    op.drop_table("clients")
