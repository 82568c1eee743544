from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.models.base import Base, IdMixin, TimestampMixin


class RuleType(StrEnum):
    on_failure = "on_failure"
    failures_in_window = "failures_in_window"
    consecutive_failures = "consecutive_failures"
    long_running = "long_running"
    duration_anomaly = "duration_anomaly"
    missed_schedule = "missed_schedule"


# The rule types whose `threshold` is required (a count, or minutes for long_running).
THRESHOLD_REQUIRED = (
    RuleType.failures_in_window,
    RuleType.consecutive_failures,
    RuleType.long_running,
)


MAX_WINDOW_MINUTES = 43_200  # 30 days

_ENABLED = sa.text("is_enabled")


class AlertRule(IdMixin, TimestampMixin, Base):
    __tablename__ = "alert_rules"
    __table_args__ = (
        # DI-007: at least one scope.
        sa.CheckConstraint("client_id IS NOT NULL OR pipeline_id IS NOT NULL", name="has_scope"),
        sa.CheckConstraint(
            "rule_type IN (" + ", ".join(f"'{t.value}'" for t in RuleType) + ")", name="rule_type"
        ),
        # FR-010: failures_in_window needs a positive threshold and window.
        sa.CheckConstraint(
            "rule_type <> 'failures_in_window'"
            " OR (threshold IS NOT NULL AND window_minutes IS NOT NULL"
            " AND threshold >= 1 AND window_minutes >= 1"
            f" AND window_minutes <= {MAX_WINDOW_MINUTES})",
            name="window_params",
        ),
        sa.CheckConstraint("threshold IS NULL OR threshold >= 1", name="threshold_positive"),
        sa.CheckConstraint(
            "rule_type NOT IN ('consecutive_failures', 'long_running') OR threshold IS NOT NULL",
            name="threshold_params",
        ),
        sa.CheckConstraint(
            "window_minutes IS NULL"
            f" OR (window_minutes >= 1 AND window_minutes <= {MAX_WINDOW_MINUTES})",
            name="window_range",
        ),
        # DI-008: no two enabled rules with the same effective scope, type and
        # destination. The effective scope is the pipeline when set, else the client.
        sa.Index(
            "uq_alert_rules_enabled_pipeline_scope",
            "pipeline_id",
            "rule_type",
            "destination",
            unique=True,
            sqlite_where=sa.text("is_enabled AND pipeline_id IS NOT NULL"),
            postgresql_where=sa.text("is_enabled AND pipeline_id IS NOT NULL"),
        ),
        sa.Index(
            "uq_alert_rules_enabled_client_scope",
            "client_id",
            "rule_type",
            "destination",
            unique=True,
            sqlite_where=sa.text("is_enabled AND pipeline_id IS NULL"),
            postgresql_where=sa.text("is_enabled AND pipeline_id IS NULL"),
        ),
        sa.Index(None, "client_id"),
        sa.Index(None, "pipeline_id"),
        # Rules are hard-deleted: never hand a deleted rule's id to a new one.
        {"sqlite_autoincrement": True},
    )

    rule_type: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    client_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("clients.id", ondelete="RESTRICT"), nullable=True
    )
    pipeline_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("pipelines.id", ondelete="RESTRICT"), nullable=True
    )
    destination: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    threshold: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    window_minutes: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    is_enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)

    @property
    def effective_scope(self) -> str:
        return "pipeline" if self.pipeline_id is not None else "client"
