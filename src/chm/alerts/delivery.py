"""Sending the outbox: pending deliveries, grouped per destination, one message
per group, with retries (monitoring contract, "Delivery"; docs/delivery.md).

One call of ``send_due`` works in three steps, each its own short transaction:

1. **Claim** (``claim``): the due deliveries (``pending``, ``next_attempt_at <=
   now``, lease free or expired) are selected ``FOR UPDATE SKIP LOCKED`` and
   grouped per destination, at most ``GROUP_CAP`` per message. A delivery
   that already has a ``message_key`` (a retry, or a send a crash cut short)
   keeps its group: the same key and the same set, taken whole or not at
   all. The others get a fresh random key. Key and lease are written with a
   conditional UPDATE and committed **before** anything is sent.
2. **Prepare**, per group: the lease is renewed (only while this worker still
   holds it), and each delivery checked again: a silence active now makes it
   ``silenced`` (never a ``resolved`` one: its receiver heard the trigger), a
   destination that no longer resolves ``undeliverable``, a
   repeat of an alert acknowledged (or resolved) since ``superseded``. The
   rest becomes one ``Message``; the channel sends it, with no transaction open.
3. **Record**, guarded by the lease: ``sent``; or one more failed attempt
   (``last_error`` redacted, ``next_attempt_at`` after a backoff or the
   receiver's ``Retry-After``, the key kept so a retry is the same message);
   or ``failed`` when the attempt was not worth repeating or was the last.

A worker killed between claim and record loses its leases when they expire;
another worker claims the same group under the same key, and the receiver,
seeing the same ``X-CHM-Delivery`` twice, can drop the second.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from chm.alerts.channels.base import (
    Resolved,
    SendContext,
    SendFailed,
    Undeliverable,
    channel_for,
)
from chm.alerts.destinations import Destinations, resolve
from chm.alerts.message import AlertView, Message
from chm.alerts.outbox import (
    ACKNOWLEDGED,
    RESOLVED_BEFORE_REPEAT,
    active_silences,
    silence_matching,
    stored_reason,
)
from chm.core.db import make_session_factory
from chm.core.redaction import Redactor, cap_text, redact_known
from chm.core.settings import Settings
from chm.core.types import UTCDateTime
from chm.models import Alert, AlertDelivery, Client, Pipeline, Run
from chm.runs.ordering import ORDER_BY

logger = logging.getLogger("chm.alerts")

Delivery = AlertDelivery
# The most alerts one message lists; more due to one destination go in more messages.
GROUP_CAP = 100
# How many times one claim looks further when the destinations it chose are
# being claimed by another worker at the same moment.
CLAIM_ROUNDS = 4
# Retries: 5 s, 10 s, 20 s... up to an hour, each shortened by a fixed jitter of
# up to a quarter, or the receiver's Retry-After when longer (a day at most).
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 3600.0
RETRY_AFTER_CAP_S = 86_400.0
# The latest run's error text as a message shows it (a stored last_error is
# cut by the outbox's ``stored_reason``).
ERROR_TEXT_CHARS = 1000
# A path segment or query value of a destination's URL this long is taken
# for a credential (a webhook's token) and redacted wherever it appears.
URL_SECRET_PIECE = 16


@dataclass
class SendReport:
    """What one ``send_due`` did: messages the channels accepted, attempts that
    failed, and each delivery's outcome (``sent``, ``retrying``, ``failed``,
    ``silenced``, ``undeliverable``, ``superseded``); ``released``: deliveries
    claimed but handed back unsent (the worker was stopping)."""

    messages_sent: int = 0
    failed_attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    released: int = 0


@dataclass(frozen=True)
class ClaimedGroup:
    """Deliveries to one destination that go out as one message, under one key."""

    destination: str
    message_key: str
    delivery_ids: tuple[int, ...]


def backoff_s(message_key: str, attempts: int) -> float:
    """The wait after a message's ``attempts``-th failed attempt: 5 s doubling to
    an hour, with a jitter fixed per message and attempt (so messages that
    failed together do not all come back together)."""
    if attempts <= 0:
        return 0.0
    delay = min(BACKOFF_BASE_S * 2 ** min(attempts - 1, 30), BACKOFF_CAP_S)
    digest = hashlib.sha256(f"{message_key}:{attempts}".encode()).digest()
    jitter = int.from_bytes(digest[:4], "big") / 2**32  # in [0, 1)
    return float(delay * (0.75 + 0.25 * jitter))


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        Delivery.status == "pending",
        Delivery.next_attempt_at <= now,
        sa.or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now),
    )


def _held(owner: str, ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """``owner``'s claim on these deliveries still stands: a worker that claimed
    them since (their lease had expired) wrote its own name over it."""
    return sa.and_(
        Delivery.id.in_(list(ids)), Delivery.lease_owner == owner, Delivery.status == "pending"
    )


# --- 1. claim ------------------------------------------------------------------------


def claim(
    engine: Engine, *, owner: str, now: datetime, lease_s: float, limit: int = 50
) -> list[ClaimedGroup]:
    """Lease up to ``limit`` groups of due deliveries to ``owner`` and commit,
    oldest due first; each group's key is written with its lease."""
    with make_session_factory(engine, write=True).begin() as session:
        return _claim(session, owner, now, lease_s, limit)


def _claim(
    session: Session, owner: str, now: datetime, lease_s: float, limit: int
) -> list[ClaimedGroup]:
    groups: list[tuple[str, str | None, list[int]]] = []
    tried: set[str] = set()
    # The destinations due longest first; those whose deliveries another
    # worker is claiming right now are passed over for the next ones.
    for _ in range(CLAIM_ROUNDS):
        wanted = limit - len(groups)
        candidates = session.scalars(
            sa.select(Delivery.destination)
            .where(_due(now), Delivery.destination.not_in(sorted(tried)))
            .group_by(Delivery.destination)
            .order_by(sa.func.min(Delivery.next_attempt_at), Delivery.destination)
            .limit(wanted)
        ).all()
        if not candidates:
            break
        tried.update(candidates)
        rows = session.execute(
            sa.select(Delivery.id, Delivery.destination, Delivery.message_key)
            .where(_due(now), Delivery.destination.in_(candidates))
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(wanted * GROUP_CAP)
            .with_for_update(of=Delivery, skip_locked=True)
        ).all()
        groups += _group(session, now, rows)[:wanted]
        if len(groups) >= limit:
            break

    until = now + timedelta(seconds=lease_s)
    claimed: list[ClaimedGroup] = []
    for destination, key, ids in groups:
        message_key = key if key is not None else secrets.token_hex(16)
        taken = session.scalars(
            sa.update(Delivery)
            .where(
                Delivery.id.in_(ids),
                _due(now),
                sa.or_(Delivery.message_key.is_(None), Delivery.message_key == message_key),
            )
            .values(message_key=message_key, lease_owner=owner, lease_expires_at=until)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        if taken:
            claimed.append(ClaimedGroup(destination, message_key, tuple(sorted(taken))))
    return claimed


def _group(
    session: Session, now: datetime, rows: Sequence[sa.Row[int, str, str | None]]
) -> list[tuple[str, str | None, list[int]]]:
    """Locked rows as messages, in the order of their oldest due delivery: a
    retry's set as it was (whole, or not at all), the new ones per destination
    in runs of GROUP_CAP."""
    locked = {row.id for row in rows}
    keys = {row.message_key for row in rows if row.message_key is not None}
    keyed = _whole_keyed_groups(session, now, keys, locked)
    groups: list[tuple[str, str | None, list[int]]] = []
    open_group: dict[str, list[int]] = {}
    seen_keys: set[str] = set()
    for row in rows:
        if row.message_key is not None:
            if row.message_key in keyed and row.message_key not in seen_keys:
                seen_keys.add(row.message_key)
                groups.append((row.destination, row.message_key, keyed[row.message_key]))
            continue
        members = open_group.get(row.destination)
        if members is None or len(members) >= GROUP_CAP:
            members = open_group[row.destination] = []
            groups.append((row.destination, None, members))
        members.append(row.id)
    return groups


def _whole_keyed_groups(
    session: Session, now: datetime, keys: set[str], locked: set[int]
) -> dict[str, list[int]]:
    """The keyed groups this claim holds whole: every pending delivery of the
    key locked here. A group cut by the claim's row limit is completed; one
    that another worker is claiming at this moment (it holds the rest) is
    left alone, never sent as a part under a key the receiver dedups on."""
    if not keys:
        return {}
    members: dict[str, set[int]] = {}
    for delivery_id, key in session.execute(
        sa.select(Delivery.id, Delivery.message_key).where(
            Delivery.message_key.in_(sorted(keys)),
            Delivery.status == "pending",
        )
    ):
        if key is not None:
            members.setdefault(key, set()).add(delivery_id)
    missing = set().union(*members.values()) - locked
    if missing:
        locked = locked | set(
            session.scalars(
                sa.select(Delivery.id)
                .where(Delivery.id.in_(sorted(missing)), _due(now))
                .with_for_update(of=Delivery, skip_locked=True)
            )
        )
    whole = {key: sorted(ids) for key, ids in members.items() if ids <= locked}
    for key in members.keys() - whole.keys():
        logger.debug("message %s: part of its deliveries is claimed elsewhere; left", key)
    return whole


# --- 2. prepare and send ---------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    delivery_id: int
    event: str
    attempts: int
    view: AlertView
    acknowledged: bool
    # The alert has resolved since (whatever the event this delivery tells).
    alert_resolved: bool
    # The active silence that covers the alert now: its id and reason.
    silence: tuple[int, str] | None


def send_due(
    engine: Engine,
    *,
    owner: str,
    now: datetime,
    settings: Settings,
    destinations: Destinations | None,
    environ: Mapping[str, str],
    http: httpx.Client,
    should_stop: Callable[[], bool] = lambda: False,
    limit: int = 50,
    clock: Callable[[], datetime] | None = None,
) -> SendReport:
    """Claim up to ``limit`` messages of due deliveries, send each, record each
    outcome. ``now`` is the batch's start; the leases, and each record
    (``sent_at``, the next attempt after a failure), follow the time this call
    has taken since, so a long batch keeps the groups it has not sent yet and
    dates each outcome when it happened. A ``clock`` (the worker's) replaces
    that reckoning: each record is dated by it."""
    report = SendReport()
    groups = claim(engine, owner=owner, now=now, lease_s=settings.worker_lease_s, limit=limit)
    if not groups:
        return report
    writes = make_session_factory(engine, write=True)
    started = time.monotonic()

    def elapsed_clock() -> datetime:
        # ``now``, moved on by the time this call has taken so far.
        return now + timedelta(seconds=time.monotonic() - started)

    if clock is None:
        clock = elapsed_clock
    context = SendContext(settings, http, clock)
    for index, group in enumerate(groups):
        if should_stop():
            with writes.begin() as session:
                report.released += _release(session, owner, groups[index:])
            break
        # One group's failed write (the database refusing a value, a lost
        # connection) must not stop the others: logged, and the group left to
        # its lease (it is claimed again, under its key, when that expires).
        try:
            current = clock()
            with writes.begin() as session:
                prepared = _prepare(
                    session, group, owner, now, current, settings, destinations, environ, report
                )
            if prepared is None:
                continue
            message, resolved, attempts = prepared
            outcome = _attempt(message, resolved, context)
            _record_safely(
                writes, message, owner, clock, attempts, outcome, resolved, settings, report
            )
        except sa.exc.SQLAlchemyError as error:
            logger.error(
                "message %s to %s: not recorded (%s); tried again when its lease expires",
                group.message_key,
                group.destination,
                type(error).__name__,
            )
    return report


def _record_safely(
    writes: sessionmaker[Session],
    message: Message,
    owner: str,
    clock: Callable[[], datetime],
    attempts: int,
    outcome: _Outcome,
    resolved: Resolved,
    settings: Settings,
    report: SendReport,
) -> None:
    """``_record``, dated when the attempt ended (``clock()``, not the batch's
    start). When the database refuses the record, the attempt is recorded
    again with a generic ``last_error`` (the refused text is not logged: it is
    the receiver's)."""
    part = SendReport()
    try:
        with writes.begin() as session:
            _record(session, message, owner, clock(), attempts, outcome, resolved, settings, part)
    except sa.exc.SQLAlchemyError as error:
        name = type(error).__name__
        logger.error(
            "message %s to %s: its outcome could not be stored (%s); recorded without its error",
            message.key,
            message.destination,
            name,
        )
        generic = replace(
            outcome, reason=f"the attempt failed; its error could not be stored ({name})"
        )
        part = SendReport()
        with writes.begin() as session:
            _record(session, message, owner, clock(), attempts, generic, resolved, settings, part)
    report.messages_sent += part.messages_sent
    report.failed_attempts += part.failed_attempts
    report.outcomes.update(part.outcomes)


def _prepare(
    session: Session,
    group: ClaimedGroup,
    owner: str,
    now: datetime,
    current: datetime,
    settings: Settings,
    destinations: Destinations | None,
    environ: Mapping[str, str],
    report: SendReport,
) -> tuple[Message, Resolved, int] | None:
    """The group's message, after the checks at send time; None when nothing is
    left to send (the lease was lost, or every delivery ended here)."""
    held = session.scalars(
        sa.update(Delivery)
        .where(_held(owner, group.delivery_ids))
        .values(lease_expires_at=current + timedelta(seconds=settings.worker_lease_s))
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not held:
        logger.warning(
            "message %s to %s: lease lost; not sent", group.message_key, group.destination
        )
        return None
    rows = _load(session, held, now, settings)
    sending = []
    for row in rows:
        # A resolve is never silenced: it is only written for a receiver that
        # heard (or may have heard) the trigger, and that one must learn the
        # alert ended (a PagerDuty incident would stay open otherwise).
        if row.silence is not None and row.event != "resolved":
            number, reason = row.silence
            text = stored_reason(f"silenced by silence {number}: {reason}")
            _end(session, [row.delivery_id], "silenced", text, report)
        elif row.event == "repeat" and row.alert_resolved:
            _end(session, [row.delivery_id], "superseded", RESOLVED_BEFORE_REPEAT, report)
        elif row.event == "repeat" and row.acknowledged:
            _end(session, [row.delivery_id], "superseded", ACKNOWLEDGED, report)
        else:
            sending.append(row)
    if not sending:
        return None
    try:
        resolved = resolve(group.destination, destinations, settings, environ)
        if channel_for(resolved.kind) is None:
            raise Undeliverable(f"no channel for destination kind {resolved.kind!r}")
    except Undeliverable as failure:
        reason = stored_reason(redact_known(str(failure)))
        _end(session, [row.delivery_id for row in sending], "undeliverable", reason, report)
        logger.warning("%s: undeliverable: %s", group.destination, reason)
        return None
    message = Message(
        key=group.message_key,
        destination=group.destination,
        kind=resolved.kind,
        target=resolved.target,
        alerts=tuple(row.view for row in sending),
        delivery_ids=tuple(row.delivery_id for row in sending),
        public_url=settings.public_url,
    )
    return message, resolved, max(row.attempts for row in sending)


def _load(session: Session, ids: Sequence[int], now: datetime, settings: Settings) -> list[_Row]:
    """Each delivery with its alert as a message shows it, and the active
    silence that covers the alert now, if any (the outbox's rule: the oldest
    active silence every set field of which is the alert's)."""
    latest_error = (
        sa.select(Run.error_message)
        .where(Run.pipeline_id == Alert.pipeline_id)
        .order_by(*ORDER_BY)
        .limit(1)
        .correlate(Alert)
        .scalar_subquery()
    )
    result = session.execute(
        sa.select(
            Delivery.id.label("delivery_id"),
            Delivery.event,
            Delivery.attempts,
            Alert,
            Client.name.label("client_name"),
            Pipeline.name.label("pipeline_name"),
            Pipeline.platform,
            Pipeline.environment,
            latest_error.label("error_message"),
        )
        .join(Alert, Alert.id == Delivery.alert_id)
        .join(Pipeline, Pipeline.id == Alert.pipeline_id)
        .join(Client, Client.id == Alert.client_id)
        .where(Delivery.id.in_(list(ids)))
        .order_by(Alert.fired_at, Alert.id, Delivery.id)
    ).all()
    silences = active_silences(session, now) if result else []
    base = settings.public_url.rstrip("/") if settings.public_url else None
    rows = []
    for row in result:
        alert: Alert = row.Alert
        error = row.error_message
        view = AlertView(
            alert_id=alert.id,
            rule_id=alert.rule_id,
            rule_type=alert.rule_type,
            fingerprint=alert.fingerprint,
            # As the delivery's event tells it, not as the alert is now: a
            # firing retried after the alert resolved is still the trigger
            # the receiver never had (its resolve is a delivery of its own).
            state="resolved" if row.event == "resolved" else "firing",
            event=row.event,
            summary=alert.summary,
            client_id=alert.client_id,
            client_name=row.client_name,
            pipeline_id=alert.pipeline_id,
            pipeline_name=row.pipeline_name,
            platform=row.platform,
            environment=row.environment,
            fired_at=alert.fired_at,
            resolved_at=alert.resolved_at if row.event == "resolved" else None,
            run_id=alert.run_id,
            error_message=cap_text(redact_known(error), ERROR_TEXT_CHARS) if error else None,
            pipeline_url=f"{base}/pipelines/{alert.pipeline_id}" if base else None,
            acknowledged_by=alert.acknowledged_by,
        )
        found = silence_matching(silences, alert)
        silence = (found.id, found.reason) if found is not None else None
        acknowledged = alert.acknowledged_at is not None
        gone = alert.state != "firing"
        rows.append(
            _Row(row.delivery_id, row.event, row.attempts, view, acknowledged, gone, silence)
        )
    return rows


def _end(
    session: Session, ids: Sequence[int], status: str, reason: str, report: SendReport
) -> None:
    """Deliveries that end without a send, with the reason; leases cleared."""
    ended = session.execute(
        sa.update(Delivery)
        .where(Delivery.id.in_(list(ids)), Delivery.status == "pending")
        .values(status=status, last_error=reason, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    report.outcomes[status] += int(ended.rowcount)  # type: ignore[attr-defined]


def _release(session: Session, owner: str, groups: Sequence[ClaimedGroup]) -> int:
    """Hand back unsent groups at once (their keys stay: a retry is the same message)."""
    ids = [delivery_id for group in groups for delivery_id in group.delivery_ids]
    released = session.execute(
        sa.update(Delivery)
        .where(_held(owner, ids))
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(released.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Outcome:
    sent: bool
    reason: str = ""
    retryable: bool = False
    retry_after: float | None = None
    # The channel found the destination unusable as configured: no attempt.
    undeliverable: bool = False


def _secrets_of(resolved: Resolved) -> list[str]:
    """The destination's secrets, and the parts of its URL that are credentials
    too: Slack's, Teams' and most webhook URLs carry theirs in the path or the
    query, which a receiver's error may echo without the rest of the URL."""
    found = list(resolved.secrets)
    if resolved.url:
        parts = urlsplit(resolved.url)
        path_and_query = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(path_and_query) > 1:
            found.append(path_and_query)
        pieces = [*parts.path.split("/"), *(v for _, v in parse_qsl(parts.query))]
        found.extend(piece for piece in pieces if len(piece) >= URL_SECRET_PIECE)
    return found


def _attempt(message: Message, resolved: Resolved, context: SendContext) -> _Outcome:
    channel = channel_for(resolved.kind)
    assert channel is not None  # checked when prepared
    try:
        channel.send(message, resolved, context)
    except SendFailed as failed:
        return _Outcome(False, str(failed), failed.retryable, failed.retry_after)
    except Undeliverable as failure:
        return _Outcome(False, str(failure), undeliverable=True)
    except Exception as error:  # a channel's bug is a failed attempt, not a dead worker
        # Its text may hold what the channel was given (a URL, a key): the type only.
        name = type(error).__name__
        logger.error(
            "message %s to %s: unexpected %s in the %s channel",
            message.key,
            message.destination,
            name,
            resolved.kind,
        )
        return _Outcome(False, f"unexpected error in the {resolved.kind} channel ({name})", True)
    return _Outcome(True)


# --- 3. record ----------------------------------------------------------------------------


def _record(
    session: Session,
    message: Message,
    owner: str,
    now: datetime,
    attempts: int,
    outcome: _Outcome,
    resolved: Resolved,
    settings: Settings,
    report: SendReport,
) -> None:
    """The attempt's outcome on every delivery of the message that ``owner`` still holds."""
    held = _held(owner, message.delivery_ids)
    values: dict[str, object] = {"lease_owner": None, "lease_expires_at": None}
    reason = stored_reason(redact_known(Redactor(_secrets_of(resolved)).text(outcome.reason)))
    attempt = attempts + 1
    wait = 0.0
    if outcome.sent:
        status = "sent"
        values |= {"status": "sent", "sent_at": now, "attempts": Delivery.attempts + 1}
    elif outcome.undeliverable:
        status = "undeliverable"
        values |= {"status": "undeliverable", "last_error": reason}
    else:
        final = not outcome.retryable or attempt >= settings.delivery_max_attempts
        status = "failed" if final else "retrying"
        values |= {"attempts": Delivery.attempts + 1, "last_error": reason}
        if final:
            values["status"] = "failed"
        else:
            retry_after = min(outcome.retry_after or 0.0, RETRY_AFTER_CAP_S)
            wait = max(backoff_s(message.key, attempt), retry_after)
            values["next_attempt_at"] = now + timedelta(seconds=wait)
    recorded = session.execute(
        sa.update(Delivery).where(held).values(values).execution_options(synchronize_session=False)
    )
    count = int(recorded.rowcount)  # type: ignore[attr-defined]
    report.outcomes[status] += count
    if count < len(message.delivery_ids):
        logger.warning(
            "message %s to %s: %d deliveries were claimed by another worker meanwhile",
            message.key,
            message.destination,
            len(message.delivery_ids) - count,
        )
    where = f"message {message.key} to {message.destination}"
    if status == "sent":
        report.messages_sent += 1
        logger.info("%s: sent (%d alerts)", where, count)
    elif status == "undeliverable":
        logger.warning("%s: undeliverable: %s", where, reason)
    elif status == "failed":
        report.failed_attempts += 1
        logger.warning("%s: failed at attempt %d: %s", where, attempt, reason)
    else:
        report.failed_attempts += 1
        logger.warning("%s: attempt %d failed, next in %.0f s: %s", where, attempt, wait, reason)


def next_due(engine: Engine, now: datetime) -> datetime | None:
    """When the earliest pending delivery may be sent: its ``next_attempt_at``,
    or, while another worker holds it, when that lease expires. None: nothing
    is pending."""
    leased = sa.and_(Delivery.lease_expires_at.is_not(None), Delivery.lease_expires_at > now)
    when = sa.case(
        (
            sa.and_(leased, Delivery.lease_expires_at > Delivery.next_attempt_at),
            Delivery.lease_expires_at,
        ),
        else_=Delivery.next_attempt_at,
    )
    with make_session_factory(engine)() as session:
        return session.scalar(
            sa.select(sa.type_coerce(when, UTCDateTime()))
            .where(Delivery.status == "pending")
            .order_by(when)
            .limit(1)
        )
