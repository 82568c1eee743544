"""Reading alerts (with their deliveries) and managing silences (monitoring
contract, "Alerts"). Alerts are written by evaluation and acknowledged by
``chm.alerts.outbox``; here they are only read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.alert_rules.service import scope_reference_issues
from chm.alerts.schemas import SilenceCreate
from chm.core.errors import Conflict, FieldIssue, ValidationFailed
from chm.core.keyset import Keyset, SortKey, keyset_page
from chm.core.lookup import get_or_404, not_found
from chm.core.timeutil import isoformat_z
from chm.core.window import check_window
from chm.models import Alert, AlertDelivery, AlertRule, Silence

# Newest first; the index (fired_at, id) serves it. The implied bound on
# fired_at lets SQLite, which does not seek with row values, start there too.
ALERTS = Keyset(
    "alerts",
    (SortKey(Alert.fired_at, datetime), SortKey(Alert.id, int)),
    descending=True,
    bound_first_key="sqlite",
)
# Newest first: ids are given in creation order.
SILENCES = Keyset("silences", (SortKey(Silence.id, int),), descending=True)


class SilenceEnded(Conflict):
    title = "Silence already ended"
    type_slug = "silence-ended"


@dataclass
class AlertRecord:
    """An alert and its deliveries, oldest first."""

    alert: Alert
    deliveries: list[AlertDelivery] = field(default_factory=list)


def _with_deliveries(session: Session, alerts: Sequence[Alert]) -> list[AlertRecord]:
    """The deliveries of every alert in ``alerts`` in one query (index (alert_id, id))."""
    records = {alert.id: AlertRecord(alert) for alert in alerts}
    if records:
        query = (
            sa.select(AlertDelivery)
            .where(AlertDelivery.alert_id.in_(list(records)))
            .order_by(AlertDelivery.alert_id, AlertDelivery.id)
        )
        for delivery in session.scalars(query):
            records[delivery.alert_id].deliveries.append(delivery)
    return list(records.values())


def get_alert(session: Session, alert_id: int) -> AlertRecord:
    alert = get_or_404(session, Alert, alert_id, "alert")
    return _with_deliveries(session, [alert])[0]


def list_alerts(
    session: Session,
    *,
    state: str | None = None,
    client_id: int | None = None,
    pipeline_id: int | None = None,
    rule_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[list[AlertRecord], str | None]:
    """A page of alerts, newest first (fired_at, then id), each with its
    deliveries; ``since <= fired_at < until``."""
    check_window(since, until)
    query = sa.select(Alert)
    if state is not None:
        query = query.where(Alert.state == state)
    if client_id is not None:
        query = query.where(Alert.client_id == client_id)
    if pipeline_id is not None:
        query = query.where(Alert.pipeline_id == pipeline_id)
    if rule_id is not None:
        query = query.where(Alert.rule_id == rule_id)
    if since is not None:
        query = query.where(Alert.fired_at >= since)
    if until is not None:
        query = query.where(Alert.fired_at < until)
    alerts, next_cursor = keyset_page(session, ALERTS, query, cursor=cursor, limit=limit)
    return _with_deliveries(session, alerts), next_cursor


# --- silences ---


def _scope_issues(session: Session, data: SilenceCreate) -> list[FieldIssue]:
    scope = ("client_id", "pipeline_id", "rule_id")
    if all(getattr(data, name) is None for name in scope):
        message = "a silence needs a client_id, a pipeline_id or a rule_id (or several)"
        return [FieldIssue(name, "scope_required", message) for name in scope]
    issues = scope_reference_issues(session, data.client_id, data.pipeline_id)
    if data.rule_id is not None and session.get(AlertRule, data.rule_id) is None:
        issues.append(
            FieldIssue("rule_id", "not_found", f"alert rule '{data.rule_id}' does not exist")
        )
    return issues


def create_silence(session: Session, data: SilenceCreate, now: datetime) -> Silence:
    """A silence from ``starts_at`` (default ``now``) to ``ends_at`` (in the
    future, after ``starts_at``); every issue at once, field by field."""
    starts_at = data.starts_at if data.starts_at is not None else now
    issues = _scope_issues(session, data)
    if data.ends_at <= now:
        issues.append(FieldIssue("ends_at", "not_in_future", "ends_at must be in the future"))
    elif data.ends_at <= starts_at:
        issues.append(
            FieldIssue("ends_at", "not_after_starts_at", "ends_at must be after starts_at")
        )
    if issues:
        raise ValidationFailed(issues)
    silence = Silence(
        client_id=data.client_id,
        pipeline_id=data.pipeline_id,
        rule_id=data.rule_id,
        starts_at=starts_at,
        ends_at=data.ends_at,
        reason=data.reason,
        created_by=data.created_by,
        created_at=now,
    )
    session.add(silence)
    session.flush()
    return silence


def get_silence(session: Session, silence_id: int) -> Silence:
    return get_or_404(session, Silence, silence_id, "silence")


def active_at(now: datetime) -> sa.ColumnElement[bool]:
    """Silences active at ``now``: ``starts_at <= now < ends_at``."""
    return sa.and_(Silence.starts_at <= now, Silence.ends_at > now)


def list_silences(
    session: Session, *, active: bool | None, now: datetime, limit: int, cursor: str | None
) -> tuple[list[Silence], str | None]:
    """A page of silences, newest first; ``active`` keeps those active (or not) at ``now``."""
    query = sa.select(Silence)
    if active is not None:
        query = query.where(active_at(now) if active else sa.not_(active_at(now)))
    return keyset_page(session, SILENCES, query, cursor=cursor, limit=limit)


# The database wants ends_at after starts_at: a silence ended before it began
# is stored as having begun this much before its end.
_INSTANT = timedelta(microseconds=1)


def end_silence(session: Session, silence_id: int, now: datetime) -> Silence:
    """End a silence now (ends_at = now); one that has not begun yet also begins
    now, an instant before (as Alertmanager expires a pending silence). Ending
    one that has already ended is a 409: its ends_at stays what it was."""
    # Locked: of two concurrent ends, the second sees the first's.
    silence = session.get(Silence, silence_id, with_for_update=True)
    if silence is None:
        raise not_found("silence", silence_id)
    if silence.ends_at <= now:
        raise SilenceEnded(
            f"silence '{silence_id}' already ended at {isoformat_z(silence.ends_at)}"
        )
    silence.ends_at = now
    if silence.starts_at >= now:
        silence.starts_at = now - _INSTANT
    session.flush()
    return silence
