"""Alerts (issue 14): three more rule types, the alerts, their deliveries (the
outbox) and silences.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen copies of the application's types and words: a migration never imports app code.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
OLD_RULE_TYPES = ("on_failure", "failures_in_window")
RULE_TYPES = (*OLD_RULE_TYPES, "consecutive_failures", "long_running", "duration_anomaly")
ALERT_STATES = ("firing", "resolved")
DELIVERY_EVENTS = ("firing", "resolved", "repeat")
DELIVERY_STATUSES = ("pending", "sent", "failed", "silenced", "undeliverable", "superseded")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    # Rebuilt on SQLite: keep AUTOINCREMENT (a deleted rule's id is never reused).
    with op.batch_alter_table("alert_rules", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint(op.f("ck_alert_rules_rule_type"), type_="check")
        batch.create_check_constraint(
            op.f("ck_alert_rules_rule_type"), _one_of("rule_type", RULE_TYPES)
        )
        batch.create_check_constraint(
            op.f("ck_alert_rules_threshold_params"),
            "rule_type NOT IN ('consecutive_failures', 'long_running') OR threshold IS NOT NULL",
        )
    op.create_table(
        "alerts",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.BigInteger(), nullable=False),
        sa.Column("rule_type", sa.String(32), nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("pipeline_id", ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("fired_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.Column("acknowledgement_note", sa.Text(), nullable=True),
        sa.Column("last_notified_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name="fk_alerts_client_id_clients", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_alerts_pipeline_id_pipelines",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(_one_of("state", ALERT_STATES), name="ck_alerts_state"),
        sa.CheckConstraint(
            "(state = 'firing' AND resolved_at IS NULL)"
            " OR (state = 'resolved' AND resolved_at IS NOT NULL)",
            name="ck_alerts_resolved_at_state",
        ),
        sa.UniqueConstraint("fingerprint", name="uq_alerts_fingerprint"),
    )
    op.create_index(
        "uq_alerts_open_rule_pipeline",
        "alerts",
        ["rule_id", "pipeline_id"],
        unique=True,
        sqlite_where=sa.text("state = 'firing'"),
        postgresql_where=sa.text("state = 'firing'"),
    )
    op.create_index("ix_alerts_fired_at_id", "alerts", ["fired_at", "id"])
    op.create_index("ix_alerts_pipeline_id_fired_at", "alerts", ["pipeline_id", "fired_at"])
    op.create_index("ix_alerts_client_id_fired_at", "alerts", ["client_id", "fired_at"])
    op.create_index("ix_alerts_state_fired_at", "alerts", ["state", "fired_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", ID, nullable=False),
        sa.Column("destination", sa.String(500), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("message_key", sa.String(64), nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_deliveries_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(_one_of("event", DELIVERY_EVENTS), name="ck_alert_deliveries_event"),
        sa.CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="ck_alert_deliveries_status"),
    )
    op.create_index("ix_alert_deliveries_alert_id_id", "alert_deliveries", ["alert_id", "id"])
    op.create_index(
        "ix_alert_deliveries_pending",
        "alert_deliveries",
        ["destination", "next_attempt_at"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "silences",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("client_id", ID, nullable=True),
        sa.Column("pipeline_id", ID, nullable=True),
        sa.Column("rule_id", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_silences"),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name="fk_silences_client_id_clients", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_silences_pipeline_id_pipelines",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "client_id IS NOT NULL OR pipeline_id IS NOT NULL OR rule_id IS NOT NULL",
            name="ck_silences_has_scope",
        ),
        sa.CheckConstraint("ends_at > starts_at", name="ck_silences_ends_after_start"),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])
    # The worker asks for the newest change to runs each poll (evaluation after
    # any write that changed runs): an index top-1, not a scan.
    op.create_index("ix_runs_updated_at", "runs", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_updated_at", "runs")
    op.drop_index("ix_silences_ends_at", "silences")
    op.drop_table("silences")
    op.drop_index("ix_alert_deliveries_pending", "alert_deliveries")
    op.drop_index("ix_alert_deliveries_alert_id_id", "alert_deliveries")
    op.drop_table("alert_deliveries")
    for index in (
        "ix_alerts_state_fired_at",
        "ix_alerts_client_id_fired_at",
        "ix_alerts_pipeline_id_fired_at",
        "ix_alerts_fired_at_id",
        "uq_alerts_open_rule_pipeline",
    ):
        op.drop_index(index, "alerts")
    op.drop_table("alerts")
    rules = sa.table("alert_rules", sa.column("rule_type", sa.String))
    op.execute(rules.delete().where(rules.c.rule_type.not_in(OLD_RULE_TYPES)))
    # Rebuilt on SQLite: keep AUTOINCREMENT (a deleted rule's id is never reused).
    with op.batch_alter_table("alert_rules", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_constraint(op.f("ck_alert_rules_threshold_params"), type_="check")
        batch.drop_constraint(op.f("ck_alert_rules_rule_type"), type_="check")
        batch.create_check_constraint(
            op.f("ck_alert_rules_rule_type"), _one_of("rule_type", OLD_RULE_TYPES)
        )
