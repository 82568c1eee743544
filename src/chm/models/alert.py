"""Alerts: one occurrence of a rule's condition for one pipeline (monitoring
contract, "Alerts"), and the deliveries that tell people about it."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from chm.core.types import UTCDateTime
from chm.models.base import Base, IdMixin

ALERT_STATES = ("firing", "resolved")
DELIVERY_EVENTS = ("firing", "resolved", "repeat")
# `superseded`: an alert that fired and resolved within the group wait sends
# nothing; its deliveries end here, with the reason.
DELIVERY_STATUSES = ("pending", "sent", "failed", "silenced", "undeliverable", "superseded")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class Alert(IdMixin, Base):
    """An occurrence: fires when the rule's condition becomes true for the
    pipeline, resolves when it stops being true. The database holds at most one
    open (firing) alert per rule and pipeline.

    ``rule_id`` and ``run_id`` are not foreign keys: a deleted rule's alerts
    (resolved by the next evaluation) and a pruned run's alert keep their history.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        sa.CheckConstraint(_one_of("state", ALERT_STATES), name="state"),
        sa.CheckConstraint(
            "(state = 'firing' AND resolved_at IS NULL)"
            " OR (state = 'resolved' AND resolved_at IS NOT NULL)",
            name="resolved_at_state",
        ),
        sa.Index(
            "uq_alerts_open_rule_pipeline",
            "rule_id",
            "pipeline_id",
            unique=True,
            sqlite_where=sa.text("state = 'firing'"),
            postgresql_where=sa.text("state = 'firing'"),
        ),
        sa.UniqueConstraint("fingerprint"),
        # Listings: newest first, overall and per pipeline / client.
        sa.Index(None, "fired_at", "id"),
        sa.Index(None, "pipeline_id", "fired_at"),
        sa.Index(None, "client_id", "fired_at"),
        sa.Index(None, "state", "fired_at"),
    )

    rule_id: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    rule_type: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    client_id: Mapped[int] = mapped_column(
        sa.ForeignKey("clients.id", ondelete="RESTRICT"), nullable=False
    )
    pipeline_id: Mapped[int] = mapped_column(
        sa.ForeignKey("pipelines.id", ondelete="RESTRICT"), nullable=False
    )
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    # Stable for the occurrence (rule, pipeline, fired_at): PagerDuty's dedup_key.
    fingerprint: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    summary: Mapped[str] = mapped_column(sa.Text, nullable=False)
    run_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    acknowledgement_note: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # When a firing, or the last repeat, delivery was created (CHM_ALERT_REPEAT_S).
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AlertDelivery(IdMixin, Base):
    """One message owed to one destination for one alert event: written in the
    transaction that changes the alert (the outbox), sent by a worker."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        sa.CheckConstraint(_one_of("event", DELIVERY_EVENTS), name="event"),
        sa.CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="status"),
        sa.Index(None, "alert_id", "id"),
        # The sender's query: pending deliveries, by destination, oldest first.
        sa.Index(
            "ix_alert_deliveries_pending",
            "destination",
            "next_attempt_at",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )

    alert_id: Mapped[int] = mapped_column(
        sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False
    )
    destination: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    event: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    # Redacted; for `undeliverable`, `silenced` and `superseded`, the reason.
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Not before: the group wait at first, then each retry's backoff.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The message it goes out in: X-CHM-Delivery, the same on every retry.
    message_key: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Silence(IdMixin, Base):
    """While active (``starts_at <= now < ends_at``), alerts in its scope still
    fire and resolve, but their deliveries are ``silenced``."""

    __tablename__ = "silences"
    __table_args__ = (
        sa.CheckConstraint(
            "client_id IS NOT NULL OR pipeline_id IS NOT NULL OR rule_id IS NOT NULL",
            name="has_scope",
        ),
        sa.CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        sa.Index(None, "ends_at"),
    )

    client_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("clients.id", ondelete="RESTRICT"), nullable=True
    )
    pipeline_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("pipelines.id", ondelete="RESTRICT"), nullable=True
    )
    rule_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_by: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
