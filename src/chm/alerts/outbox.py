"""The outbox: the deliveries an alert's state change owes, written in the
transaction of the change (monitoring contract, "Delivery"; docs/alerts.md).

A delivery is one message owed to one destination for one alert event
(``firing``, ``resolved``, ``repeat``). When it is created its status is:

- for a ``resolved`` event, ``pending`` only where the receiver heard of the
  alert, or may have: a ``firing`` or ``repeat`` delivery there was ``sent``,
  or is pending with a message key (a sender claimed it). Elsewhere it is
  ``superseded`` at once: "resolved within the group wait" when the firing
  was still pending and never claimed (superseded with it: nothing is
  sent), else "the firing notification was not delivered" (it was silenced,
  undeliverable, failed or superseded). A resolve is never silenced: the
  receiver that heard the trigger must learn the alert ended;
- ``silenced`` when an active silence (``starts_at <= now < ends_at``) matches
  the alert: every field the silence sets (client, pipeline, rule) equals the
  alert's ("silenced by silence N: <reason>");
- ``undeliverable`` when the destination does not resolve against the
  configuration (``chm.alerts.destinations.resolve``; its reason);
- else ``pending``, due with its destination's open group (Alertmanager's
  group wait): ``next_attempt_at = min(now + CHM_ALERT_GROUP_WAIT_S, the
  earliest next_attempt_at of the destination's pending deliveries no sender
  has claimed)``, never before ``now``; for a sender (``chm.alerts.delivery``).

Every reason stored in ``last_error`` goes through ``stored_reason``: no
control character (PostgreSQL refuses a NUL), cut to ``LAST_ERROR_CHARS``.

Where each event goes: a ``firing`` delivery goes to the rule's destination;
``resolved`` and ``repeat`` deliveries go where the alert's ``firing``
deliveries went, so a resolve reaches the receiver (the PagerDuty service,
the channel) that heard the trigger, even after the rule was edited or
deleted.

Repeats: a firing alert that nobody acknowledged gets one ``repeat``
delivery per destination every ``CHM_ALERT_REPEAT_S`` (0: never), counted
from ``last_notified_at``. Acknowledging stops them and supersedes a repeat
not yet claimed; a resolve supersedes one too.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.alerts.channels.base import Undeliverable
from chm.alerts.destinations import Destinations, resolve
from chm.core.errors import Conflict, NotFound
from chm.core.redaction import cap_text
from chm.core.settings import Settings
from chm.models import Alert, AlertDelivery, AlertRule, Silence
from chm.models.alert import DELIVERY_EVENTS

ALERTS: sa.Table = Alert.__table__  # type: ignore[assignment]
DELIVERIES: sa.Table = AlertDelivery.__table__  # type: ignore[assignment]
RESOLVED_IN_WAIT = "resolved within the group wait"
RESOLVED_BEFORE_REPEAT = "resolved before the repeat was sent"
NOT_NOTIFIED = "the firing notification was not delivered"
ACKNOWLEDGED = "acknowledged"
# Why a ``last_error`` is stored at most this long.
LAST_ERROR_CHARS = 2000
# Control characters (C0, DEL, C1) but tab and newline: PostgreSQL refuses a
# NUL in text (the whole write fails), and none belongs in a reason a person
# reads.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Ids per IN list: far below SQLite's limit on bound variables.
_CHUNK = 1000


class AlertNotFound(NotFound):
    title = "Alert not found"

    def __init__(self, alert_id: int) -> None:
        super().__init__(f"alert '{alert_id}' not found")


class AlertResolved(Conflict):
    title = "Alert already resolved"
    type_slug = "alert-resolved"

    def __init__(self, alert_id: int) -> None:
        super().__init__(f"alert '{alert_id}' has resolved: there is nothing to acknowledge")


class AlertLike(Protocol):
    """What deciding a delivery needs of an alert (an ``Alert`` or a row)."""

    @property
    def id(self) -> int: ...
    @property
    def rule_id(self) -> int: ...
    @property
    def client_id(self) -> int: ...
    @property
    def pipeline_id(self) -> int: ...


def stored_reason(text: str) -> str:
    """A reason as ``last_error`` stores it: without control characters (tab
    and newline kept), cut to ``LAST_ERROR_CHARS``. Every reason an alert's
    delivery stores goes through here: a receiver's answer, a silence's
    reason, a destination's problem."""
    return cap_text(_CONTROL.sub("", text), LAST_ERROR_CHARS)


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def active_silences(session: Session, now: datetime) -> list[Silence]:
    """The silences active at ``now`` (``starts_at <= now < ends_at``), oldest first."""
    return list(
        session.scalars(
            sa.select(Silence)
            .where(Silence.starts_at <= now, Silence.ends_at > now)
            .order_by(Silence.id)
        )
    )


def silence_matching(silences: Iterable[Silence], alert: AlertLike) -> Silence | None:
    """The first silence every set field of which (client, pipeline, rule) is the alert's."""
    for silence in silences:
        if (
            (silence.client_id is None or silence.client_id == alert.client_id)
            and (silence.pipeline_id is None or silence.pipeline_id == alert.pipeline_id)
            and (silence.rule_id is None or silence.rule_id == alert.rule_id)
        ):
            return silence
    return None


class DeliveryPlanner:
    """Decides the status of each new delivery of one transaction: the active
    silences are read once (when first needed) and each destination resolved
    once."""

    def __init__(
        self,
        session: Session,
        now: datetime,
        settings: Settings,
        destinations: Destinations | None,
        environ: Mapping[str, str],
    ) -> None:
        self.session = session
        self.now = now
        self.settings = settings
        self.destinations = destinations
        self.environ = environ
        self._silences: list[Silence] | None = None
        self._reasons: dict[str, str | None] = {}
        # Per destination: when its open group is due (None: no open group).
        self._groups: dict[str, datetime | None] = {}

    @property
    def silences(self) -> list[Silence]:
        if self._silences is None:
            self._silences = active_silences(self.session, self.now)
        return self._silences

    def undeliverable(self, destination: str) -> str | None:
        """Why ``destination`` cannot be sent to as configured; None when it can."""
        if destination not in self._reasons:
            try:
                resolve(destination, self.destinations, self.settings, self.environ)
                self._reasons[destination] = None
            except Undeliverable as exc:
                self._reasons[destination] = str(exc)
        return self._reasons[destination]

    def open_groups(self, destinations: Iterable[str]) -> None:
        """Read when each destination's open group is due: the earliest
        ``next_attempt_at`` of its pending deliveries no sender has claimed
        (no message key). One statement per thousand destinations."""
        wanted = sorted(set(destinations) - self._groups.keys())
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            self._groups.update(dict.fromkeys(chunk))
            rows = self.session.execute(
                sa.select(DELIVERIES.c.destination, sa.func.min(DELIVERIES.c.next_attempt_at))
                .where(
                    DELIVERIES.c.destination.in_(chunk),
                    DELIVERIES.c.status == "pending",
                    DELIVERIES.c.message_key.is_(None),
                )
                .group_by(DELIVERIES.c.destination)
            )
            self._groups.update({row[0]: row[1] for row in rows})

    def due(self, destination: str) -> datetime:
        """When a new pending delivery to ``destination`` is due: with its
        destination's open group if there is one (Alertmanager's group wait:
        alerts arriving within the wait go out together), at the end of a
        group wait from now at the latest, never before now."""
        self.open_groups([destination])
        wait_end = self.now + timedelta(seconds=self.settings.alert_group_wait_s)
        group = self._groups[destination]
        return wait_end if group is None else max(self.now, min(wait_end, group))

    def new(
        self, alert: AlertLike, event: str, destination: str, superseded: str | None = None
    ) -> dict[str, Any]:
        """The values of the delivery of ``event`` to ``destination``, its status
        decided; ``superseded``: why it ends ``superseded`` at once, if it does.
        A ``resolved`` delivery is never silenced (see the module doc)."""
        status, reason, due = "pending", None, self.now
        silenced = superseded is None and event != "resolved"
        silence = silence_matching(self.silences, alert) if silenced else None
        if superseded is not None:
            status, reason = "superseded", superseded
        elif silence is not None:
            status = "silenced"
            reason = stored_reason(f"silenced by silence {silence.id}: {silence.reason}")
        elif (why := self.undeliverable(destination)) is not None:
            status, reason = "undeliverable", stored_reason(why)
        else:
            due = self.due(destination)
        return {
            "alert_id": alert.id,
            "destination": destination,
            "event": event,
            "status": status,
            "attempts": 0,
            "last_error": reason,
            "created_at": self.now,
            "next_attempt_at": due,
        }


def rule_destinations(session: Session, alerts: Sequence[AlertLike]) -> dict[int, list[str]]:
    """Where each alert's ``firing`` deliveries go: its rule's destination (none
    when the rule is gone)."""
    rule_ids = sorted({alert.rule_id for alert in alerts})
    destination: dict[int, str] = {}
    for chunk in _chunks(rule_ids):
        rows = session.execute(
            sa.select(AlertRule.id, AlertRule.destination).where(AlertRule.id.in_(chunk))
        )
        destination.update({row.id: row.destination for row in rows})
    return {
        alert.id: [destination[alert.rule_id]] if alert.rule_id in destination else []
        for alert in alerts
    }


def notified_destinations(session: Session, alert_ids: Sequence[int]) -> dict[int, list[str]]:
    """Where each alert's ``firing`` deliveries went, in the order they were created:
    where its ``resolved`` and ``repeat`` deliveries go."""
    targets: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(alert_ids):
        rows = session.execute(
            sa.select(DELIVERIES.c.alert_id, DELIVERIES.c.destination)
            .where(DELIVERIES.c.alert_id.in_(chunk), DELIVERIES.c.event == "firing")
            .order_by(DELIVERIES.c.alert_id, DELIVERIES.c.id)
        )
        for row in rows:
            if row.destination not in targets[row.alert_id]:
                targets[row.alert_id].append(row.destination)
    return targets


def _unclaimed(alert_ids: list[int], events: Sequence[str]) -> sa.ColumnElement[bool]:
    """Deliveries of ``alert_ids`` still pending and never claimed by a sender
    (no message key: nothing of them can have been sent; a sender writes the
    key before its first attempt and never clears it, so these have 0
    attempts too)."""
    return sa.and_(
        DELIVERIES.c.alert_id.in_(alert_ids),
        DELIVERIES.c.event.in_(events),
        DELIVERIES.c.status == "pending",
        DELIVERIES.c.message_key.is_(None),
    )


def heard_destinations(session: Session, alert_ids: Sequence[int]) -> dict[int, set[str]]:
    """Per alert, the destinations that heard of it, or may have: a ``firing``
    or ``repeat`` delivery there was ``sent``, or is pending with a message key
    (a sender claimed it: it may be on the wire, or be retried)."""
    heard: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(alert_ids):
        rows = session.execute(
            sa.select(DELIVERIES.c.alert_id, DELIVERIES.c.destination)
            .where(
                DELIVERIES.c.alert_id.in_(chunk),
                DELIVERIES.c.event.in_(("firing", "repeat")),
                sa.or_(
                    DELIVERIES.c.status == "sent",
                    sa.and_(
                        DELIVERIES.c.status == "pending", DELIVERIES.c.message_key.is_not(None)
                    ),
                ),
            )
            .distinct()
        )
        for row in rows:
            heard[row.alert_id].add(row.destination)
    return heard


def supersede_unsent(session: Session, alert_ids: Sequence[int]) -> dict[int, set[str]]:
    """For alerts that resolve: their ``firing`` and ``repeat`` deliveries not yet
    claimed end ``superseded``. Answers, per alert, the destinations whose
    firing delivery was superseded (the resolved one is then superseded too)."""
    superseded: dict[int, set[str]] = defaultdict(set)
    reason = sa.case(
        (DELIVERIES.c.event == "firing", RESOLVED_IN_WAIT), else_=RESOLVED_BEFORE_REPEAT
    )
    for chunk in _chunks(alert_ids):
        rows = session.execute(
            sa.update(DELIVERIES)
            .where(_unclaimed(chunk, ("firing", "repeat")))
            .values(status="superseded", last_error=reason)
            .returning(DELIVERIES.c.alert_id, DELIVERIES.c.destination, DELIVERIES.c.event)
        )
        for row in rows:
            if row.event == "firing":
                superseded[row.alert_id].add(row.destination)
    return superseded


def deliveries_for(
    session: Session,
    alerts: Sequence[AlertLike],
    event: str,
    planner: DeliveryPlanner,
    *,
    targets: Mapping[int, Sequence[str]] | None = None,
) -> list[AlertDelivery]:
    """The deliveries ``event`` owes for each of ``alerts``, inserted:
    one per destination, to ``targets`` when given (alert id to destinations),
    else where the module doc says. A constant number of statements, however
    many alerts."""
    if event not in DELIVERY_EVENTS:
        raise ValueError(f"unknown delivery event {event!r}")
    if not alerts:
        return []
    ids = [alert.id for alert in alerts]
    if targets is None:
        targets = (
            rule_destinations(session, alerts)
            if event == "firing"
            else notified_destinations(session, ids)
        )
    why: dict[tuple[int, str], str] = {}
    if event == "resolved":
        superseded = supersede_unsent(session, ids)
        heard = heard_destinations(session, ids)
        for alert in alerts:
            for destination in targets.get(alert.id, ()):
                if destination in heard.get(alert.id, ()):
                    continue
                in_wait = destination in superseded.get(alert.id, ())
                why[alert.id, destination] = RESOLVED_IN_WAIT if in_wait else NOT_NOTIFIED
    planner.open_groups(d for alert in alerts for d in targets.get(alert.id, ()))
    rows = [
        planner.new(alert, event, destination, why.get((alert.id, destination)))
        for alert in alerts
        for destination in targets.get(alert.id, ())
    ]
    if not rows:
        return []
    # One INSERT (batched by the driver), RETURNING the new rows as objects of
    # the session, on both databases.
    return list(session.scalars(sa.insert(AlertDelivery).returning(AlertDelivery), rows))


def create_deliveries(
    session: Session,
    alert: AlertLike,
    event: str,
    now: datetime,
    settings: Settings,
    destinations: Destinations | None,
    environ: Mapping[str, str] = os.environ,
) -> list[AlertDelivery]:
    """The deliveries ``event`` (firing, resolved or repeat) of ``alert`` owes,
    inserted in ``session``'s transaction; see the module doc."""
    planner = DeliveryPlanner(session, now, settings, destinations, environ)
    return deliveries_for(session, [alert], event, planner)


def create_repeats(
    session: Session,
    now: datetime,
    settings: Settings,
    destinations: Destinations | None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """A ``repeat`` delivery per destination for every firing alert nobody
    acknowledged whose last notification is ``CHM_ALERT_REPEAT_S`` old or more
    (none when it is 0); answers how many deliveries it created.

    Each alert's ``last_notified_at`` moves to ``now`` in one conditional
    UPDATE: two workers doing this at once repeat each alert once."""
    if settings.alert_repeat_s <= 0:
        return 0
    cutoff = now - timedelta(seconds=settings.alert_repeat_s)
    due = sa.func.coalesce(ALERTS.c.last_notified_at, ALERTS.c.fired_at) <= cutoff
    repeated = session.execute(
        sa.update(ALERTS)
        .where(ALERTS.c.state == "firing", ALERTS.c.acknowledged_at.is_(None), due)
        .values(last_notified_at=now)
        .returning(ALERTS.c.id, ALERTS.c.rule_id, ALERTS.c.client_id, ALERTS.c.pipeline_id)
    ).all()
    planner = DeliveryPlanner(session, now, settings, destinations, environ)
    return len(deliveries_for(session, repeated, "repeat", planner))


def acknowledge(session: Session, alert_id: int, by: str, note: str | None, now: datetime) -> Alert:
    """Record who took the alert (a later acknowledgement replaces an earlier
    one): no more repeats, and its repeat deliveries not yet claimed are
    ``superseded`` ("acknowledged"). 404 when there is no such alert, 409 when
    it has resolved."""
    taken = session.execute(
        sa.update(ALERTS)
        .where(ALERTS.c.id == alert_id, ALERTS.c.state == "firing")
        .values(acknowledged_at=now, acknowledged_by=by, acknowledgement_note=note)
        .returning(ALERTS.c.id)
    ).first()
    if taken is None:
        if session.scalar(sa.select(Alert.id).where(Alert.id == alert_id)) is None:
            raise AlertNotFound(alert_id)
        raise AlertResolved(alert_id)
    session.execute(
        sa.update(DELIVERIES)
        .where(_unclaimed([alert_id], ("repeat",)))
        .values(status="superseded", last_error=ACKNOWLEDGED)
    )
    alert = session.get(Alert, alert_id, populate_existing=True)
    assert alert is not None
    return alert
