"""Schedules (issue 15): a pipeline's schedule, grace and deadline, who set it,
its stored ticks, and the alert rule type missed_schedule.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen copies of the application's types and words: a migration never imports app code.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
MAX_MINUTES = 43_200
OLD_RULE_TYPES = (
    "on_failure",
    "failures_in_window",
    "consecutive_failures",
    "long_running",
    "duration_anomaly",
)
RULE_TYPES = (*OLD_RULE_TYPES, "missed_schedule")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _rule_types(values: tuple[str, ...]) -> None:
    # Rebuilt on SQLite: keep AUTOINCREMENT (a deleted rule's id is never reused).
    with op.batch_alter_table("alert_rules", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint(op.f("ck_alert_rules_rule_type"), type_="check")
        batch.create_check_constraint(
            op.f("ck_alert_rules_rule_type"), _one_of("rule_type", values)
        )


def upgrade() -> None:
    # Added column by column (SQLite keeps a column's own CHECK on ADD COLUMN),
    # so the pipelines table, which runs and rules refer to, is never rebuilt.
    columns = (
        sa.Column("schedule", sa.String(200), nullable=True),
        sa.Column("schedule_timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column(
            "grace_minutes",
            sa.Integer(),
            sa.CheckConstraint(
                f"grace_minutes >= 0 AND grace_minutes <= {MAX_MINUTES}",
                name=op.f("ck_pipelines_grace_minutes_range"),
            ),
            nullable=False,
            server_default="30",
        ),
        sa.Column(
            "deadline_minutes",
            sa.Integer(),
            sa.CheckConstraint(
                f"deadline_minutes >= 1 AND deadline_minutes <= {MAX_MINUTES}",
                name=op.f("ck_pipelines_deadline_minutes_range"),
            ),
            nullable=True,
        ),
        sa.Column(
            "schedule_source",
            sa.String(16),
            sa.CheckConstraint(
                _one_of("schedule_source", ("user", "platform")),
                name=op.f("ck_pipelines_schedule_source_values"),
            ),
            nullable=True,
        ),
        sa.Column("schedule_set_at", TS, nullable=True),
        sa.Column("schedule_note", sa.Text(), nullable=True),
        sa.Column("schedule_checked_at", TS, nullable=True),
        sa.Column("schedule_ticks_until", TS, nullable=True),
    )
    for column in columns:
        op.add_column("pipelines", column)
    op.create_index(
        "ix_pipelines_schedule_ticks_until",
        "pipelines",
        ["schedule_ticks_until"],
        sqlite_where=sa.text("schedule IS NOT NULL"),
        postgresql_where=sa.text("schedule IS NOT NULL"),
    )
    op.create_table(
        "schedule_ticks",
        sa.Column("pipeline_id", ID, nullable=False),
        sa.Column("tick_at", TS, nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("due_missed", TS, nullable=False),
        sa.Column("due_late", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_schedule_ticks_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pipeline_id", "tick_at", name="pk_schedule_ticks"),
    )
    op.create_index(
        "ix_schedule_ticks_pipeline_id_due_missed", "schedule_ticks", ["pipeline_id", "due_missed"]
    )
    _rule_types(RULE_TYPES)


def downgrade() -> None:
    rules = sa.table("alert_rules", sa.column("rule_type", sa.String))
    op.execute(rules.delete().where(rules.c.rule_type.not_in(OLD_RULE_TYPES)))
    _rule_types(OLD_RULE_TYPES)
    op.drop_index("ix_schedule_ticks_pipeline_id_due_missed", "schedule_ticks")
    op.drop_table("schedule_ticks")
    op.drop_index("ix_pipelines_schedule_ticks_until", "pipelines")
    # Dropped in place (SQLite 3.35+ drops a column whose CHECK is its own):
    # rebuilding pipelines would drop a table that runs and rules refer to.
    for name in (
        "schedule_ticks_until",
        "schedule_checked_at",
        "schedule_note",
        "schedule_set_at",
        "schedule_source",
        "deadline_minutes",
        "grace_minutes",
        "schedule_timezone",
        "schedule",
    ):
        op.drop_column("pipelines", name)
