"""Sending the outbox (chm.alerts.delivery): grouping per destination, the group
wait, retries with backoff and Retry-After, the statuses, the checks at send
time, a crash between claim and send, and two senders at once.

The deliveries go through a channel kind registered by the test
(``deliverytest``) that POSTs each message over HTTP to a receiver on a real
socket (the ingestion tests' FakeServer), with ``X-CHM-Delivery``, and maps
the answer as the real channels do: 2xx sent, 429/5xx retryable (with
Retry-After), other 4xx not. Time is the injected ``now``; nothing sleeps.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from chm.alerts import delivery
from chm.alerts.channels import base as channels
from chm.alerts.channels.base import (
    Channel,
    NamedFields,
    Resolved,
    SendContext,
    SendFailed,
    Undeliverable,
)
from chm.alerts.delivery import (
    GROUP_CAP,
    SendReport,
    backoff_s,
    claim,
    next_due,
    send_due,
)
from chm.alerts.destinations import Destination, Destinations
from chm.alerts.message import Message
from chm.alerts.outbox import DeliveryPlanner, deliveries_for
from chm.core.db import make_session_factory
from chm.core.settings import Settings
from chm.models import Alert, AlertDelivery, Client, Pipeline, Run, Silence

INGESTION_TESTS = str(Path(__file__).resolve().parent.parent / "ingestion")
if INGESTION_TESTS not in sys.path:
    sys.path.insert(0, INGESTION_TESTS)

from ingestion_fakes import FakeServer, Reply, Seen  # noqa: E402

T0 = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)
KIND = "deliverytest"
# The destination's secrets, as the environment holds them: a URL path that
# is itself the credential, and a signing key.
URL_SECRET = "u7-Hook-Path-Credential-93xq"
SIGNING_SECRET = "sk-signing-4242-secret-value"


# --- the test channel and its receiver --------------------------------------------------


class Receiver:
    """The HTTP end of the test channel: records every request, answers from a
    script of replies (then 200)."""

    def __init__(self) -> None:
        self.server = FakeServer()
        self.replies: deque[Reply] = deque()
        self.server.routes[("POST", f"/hook/{URL_SECRET}")] = self._answer
        self.server.routes[("POST", f"/dev/{URL_SECRET}")] = self._answer

    def _answer(self, _seen: Seen) -> Reply:
        with self.server.lock:
            return self.replies.popleft() if self.replies else Reply(200, {"ok": True})

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def requests(self) -> list[Seen]:
        with self.server.lock:
            return list(self.server.requests)

    def keys(self) -> list[str]:
        return [seen.headers["x-chm-delivery"] for seen in self.requests]


# What the channel does instead of sending, when a test says so.
_raise_instead: list[BaseException] = []
# What the channel does first on every send, when a test says so.
_while_sending: list[Callable[[], None]] = []


def _send(message: Message, resolved: Resolved, context: SendContext) -> None:
    for step in _while_sending:
        step()
    if _raise_instead:
        raise _raise_instead.pop(0)
    assert resolved.url is not None
    body = {
        "key": message.key,
        "destination": message.destination,
        "status": message.status,
        "delivery_ids": list(message.delivery_ids),
        "alerts": [
            {
                "alert_id": view.alert_id,
                "event": view.event,
                "state": view.state,
                "client": view.client_name,
                "pipeline": view.pipeline_name,
                "platform": view.platform,
                "environment": view.environment,
                "summary": view.summary,
                "error_message": view.error_message,
                "pipeline_url": view.pipeline_url,
            }
            for view in message.alerts
        ],
    }
    try:
        response = context.http.post(
            resolved.url,
            json=body,
            headers={"X-CHM-Delivery": message.key},
            timeout=context.settings.delivery_timeout_s,
        )
    except httpx.HTTPError as error:
        raise SendFailed(f"{resolved.url}: {type(error).__name__}", retryable=True) from None
    if response.is_success:
        return
    # Deliberately careless: the URL and the receiver's answer in the reason,
    # which the sender must redact before storing it.
    reason = f"POST {resolved.url} answered {response.status_code}: {response.text[:200]}"
    if response.status_code == 429 or response.status_code >= 500:
        after = response.headers.get("retry-after")
        raise SendFailed(reason, retryable=True, retry_after=float(after) if after else None)
    raise SendFailed(reason, retryable=False)


@pytest.fixture(autouse=True)
def elapsed(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sender's measure of real elapsed time, frozen: ``now`` dates every
    record unless a test moves it on (``elapsed[0] += seconds``)."""
    seconds = [0.0]
    monkeypatch.setattr(delivery, "time", SimpleNamespace(monotonic=lambda: seconds[0]))
    return seconds


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    # Registered for this test only: other tests see the real kinds.
    monkeypatch.setitem(
        channels._CHANNELS,
        KIND,
        Channel(KIND, _send, named=NamedFields(("url_env",), ("secret_env",))),
    )
    _raise_instead.clear()
    _while_sending.clear()
    fake = Receiver()
    yield fake
    fake.server.close()
    _raise_instead.clear()
    _while_sending.clear()


@pytest.fixture
def destinations(receiver: Receiver) -> Destinations:
    return Destinations(
        [
            Destination(name="ops", kind=KIND, url_env="OPS_URL", secret_env="OPS_SECRET"),
            Destination(name="dev", kind=KIND, url_env="DEV_URL"),
        ]
    )


@pytest.fixture
def environ(receiver: Receiver) -> dict[str, str]:
    return {
        "OPS_URL": f"{receiver.server.url}/hook/{URL_SECRET}",
        "OPS_SECRET": SIGNING_SECRET,
        "DEV_URL": f"{receiver.server.url}/dev/{URL_SECRET}",
    }


@pytest.fixture
def config(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "public_url": "https://chm.example.com/",
            "delivery_max_attempts": 4,
            "worker_lease_s": 60.0,
        }
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


class Sender:
    """``send_due`` with this test's configuration; ``owner`` and ``now`` per call."""

    def __init__(
        self,
        engine: Engine,
        config: Settings,
        destinations: Destinations,
        environ: dict[str, str],
        http: httpx.Client,
    ) -> None:
        self.engine, self.config, self.destinations = engine, config, destinations
        self.environ, self.http = environ, http

    def __call__(self, now: datetime, owner: str = "worker-a", **kwargs: Any) -> SendReport:
        kwargs.setdefault("environ", self.environ)
        return send_due(
            self.engine,
            owner=owner,
            now=now,
            settings=kwargs.pop("settings", self.config),
            destinations=self.destinations,
            http=self.http,
            **kwargs,
        )


@pytest.fixture
def send(
    engine: Engine,
    config: Settings,
    destinations: Destinations,
    environ: dict[str, str],
    http: httpx.Client,
) -> Sender:
    return Sender(engine, config, destinations, environ, http)


# --- rows ----------------------------------------------------------------------------------


def seed(
    engine: Engine,
    pipelines: int,
    *,
    destination: str = f"{KIND}:ops",
    event: str = "firing",
    due: datetime = T0,
    client: str = "Acme",
    rule_id: int = 7,
) -> list[int]:
    """``pipelines`` pipelines of one client, each with a firing alert and one
    pending delivery to ``destination`` due at ``due``; the delivery ids."""
    ids = []
    with make_session_factory(engine, write=True).begin() as session:
        owner = session.scalar(sa.select(Client).where(Client.name == client))
        if owner is None:
            owner = Client(name=client)
            session.add(owner)
            session.flush()
        for _ in range(pipelines):
            number = session.scalar(sa.select(sa.func.count()).select_from(Pipeline)) or 0
            pipeline = Pipeline(
                client_id=owner.id,
                name=f"orders_{number + 1:03d}",
                platform="airflow",
                pipeline_type="batch",
                environment="prod",
            )
            session.add(pipeline)
            session.flush()
            alert = Alert(
                rule_id=rule_id,
                rule_type="on_failure",
                client_id=owner.id,
                pipeline_id=pipeline.id,
                state="firing",
                fingerprint=f"{pipeline.id:032x}",
                fired_at=due - timedelta(seconds=30),
                summary=f"{pipeline.name} (Acme, airflow/prod) has failed (latest run)",
                last_notified_at=due - timedelta(seconds=30),
            )
            session.add(alert)
            session.flush()
            ids.append(add_delivery(session, alert.id, destination, event, due))
    return ids


def add_delivery(session: Any, alert_id: int, destination: str, event: str, due: datetime) -> int:
    delivery = AlertDelivery(
        alert_id=alert_id,
        destination=destination,
        event=event,
        status="pending",
        attempts=0,
        created_at=due - timedelta(seconds=30),
        next_attempt_at=due,
    )
    session.add(delivery)
    session.flush()
    return delivery.id


def deliveries(engine: Engine) -> dict[int, AlertDelivery]:
    with make_session_factory(engine)() as session:
        return {d.id: d for d in session.scalars(sa.select(AlertDelivery))}


def alert_of(engine: Engine, delivery_id: int) -> Alert:
    with make_session_factory(engine)() as session:
        alert = session.scalar(
            sa.select(Alert)
            .join(AlertDelivery, AlertDelivery.alert_id == Alert.id)
            .where(AlertDelivery.id == delivery_id)
        )
        assert alert is not None
        return alert


def update_alert(engine: Engine, delivery_id: int, **values: Any) -> None:
    alert = alert_of(engine, delivery_id)
    with make_session_factory(engine, write=True).begin() as session:
        session.execute(sa.update(Alert).where(Alert.id == alert.id).values(**values))


# --- grouping and the group wait ---------------------------------------------------------------


def test_twenty_pipelines_firing_together_go_out_as_one_message(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ids = seed(engine, 20)

    report = send(T0)

    assert (report.messages_sent, report.failed_attempts) == (1, 0)
    assert report.outcomes == {"sent": 20}
    [request] = receiver.requests
    assert request.path == f"/hook/{URL_SECRET}"
    assert sorted(request.body["delivery_ids"]) == ids
    assert len(request.body["alerts"]) == 20
    assert request.body["status"] == "firing"
    assert {a["pipeline"] for a in request.body["alerts"]} == {
        f"orders_{n:03d}" for n in range(1, 21)
    }
    rows = deliveries(engine)
    assert {d.status for d in rows.values()} == {"sent"}
    assert {d.attempts for d in rows.values()} == {1}
    assert {d.sent_at for d in rows.values()} == {T0}
    assert {d.message_key for d in rows.values()} == {request.headers["x-chm-delivery"]}
    assert {(d.lease_owner, d.lease_expires_at) for d in rows.values()} == {(None, None)}
    # Sent once: nothing more to send.
    assert send(T0 + timedelta(minutes=5)).messages_sent == 0
    assert len(receiver.requests) == 1


def test_two_destinations_get_one_message_each(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ops = seed(engine, 3)
    dev = seed(engine, 2, destination=f"{KIND}:dev")

    report = send(T0)

    assert report.messages_sent == 2
    by_path = {seen.path: sorted(seen.body["delivery_ids"]) for seen in receiver.requests}
    assert by_path == {f"/hook/{URL_SECRET}": ops, f"/dev/{URL_SECRET}": dev}
    assert len(set(receiver.keys())) == 2


def test_more_than_a_message_holds_goes_out_in_several(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ids = seed(engine, GROUP_CAP + 5)

    assert send(T0).messages_sent == 2

    sizes = sorted(len(seen.body["delivery_ids"]) for seen in receiver.requests)
    assert sizes == [5, GROUP_CAP]
    sent = sorted(i for seen in receiver.requests for i in seen.body["delivery_ids"])
    assert sent == ids


def test_alerts_firing_5_s_apart_within_the_group_wait_go_out_as_one_message(
    engine: Engine,
    receiver: Receiver,
    send: Sender,
    config: Settings,
    destinations: Destinations,
    environ: dict[str, str],
) -> None:
    waiting = config.model_copy(update={"alert_group_wait_s": 30.0})
    ids = []
    for n in range(4):
        now = T0 + timedelta(seconds=5 * n)
        # An alert fired at ``now``, its delivery written by the outbox.
        [seeded] = seed(engine, 1, due=now)
        with make_session_factory(engine, write=True).begin() as session:
            alert = alert_of(engine, seeded)
            session.execute(sa.delete(AlertDelivery).where(AlertDelivery.id == seeded))
            planner = DeliveryPlanner(session, now, waiting, destinations, environ)
            targets = {alert.id: [f"{KIND}:ops"]}
            [made] = deliveries_for(session, [alert], "firing", planner, targets=targets)
            ids.append(made.id)

    assert next_due(engine, T0) == T0 + timedelta(seconds=30)
    assert send(T0 + timedelta(seconds=30) - timedelta(microseconds=1)).messages_sent == 0
    assert send(T0 + timedelta(seconds=30)).messages_sent == 1
    [request] = receiver.requests
    assert sorted(request.body["delivery_ids"]) == ids


def test_nothing_goes_out_before_the_group_wait_ends(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    due = T0 + timedelta(seconds=30)
    [first] = seed(engine, 1, due=due)
    later = seed(engine, 1, due=due + timedelta(seconds=10))

    assert next_due(engine, T0) == due
    assert send(due - timedelta(microseconds=1)).messages_sent == 0
    assert receiver.requests == []

    assert send(due).messages_sent == 1
    assert receiver.requests[0].body["delivery_ids"] == [first]
    assert next_due(engine, due) == due + timedelta(seconds=10)
    send(due + timedelta(seconds=10))
    assert receiver.requests[1].body["delivery_ids"] == later
    assert next_due(engine, due + timedelta(seconds=10)) is None


def test_the_message_shows_names_the_latest_runs_error_redacted_and_a_link(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [delivery_id] = seed(engine, 1)
    alert = alert_of(engine, delivery_id)
    with make_session_factory(engine, write=True).begin() as session:
        for number, (started, error) in enumerate(
            [
                (T0 - timedelta(hours=2), "an older failure"),
                (T0 - timedelta(hours=1), "login to postgresql://etl:hunter2-pw@db/x failed"),
                (None, "a run without a start ranks last"),
            ]
        ):
            session.add(
                Run(
                    pipeline_id=alert.pipeline_id,
                    external_run_id=f"run-{number}",
                    status="failed",
                    started_at=started,
                    finished_at=T0 - timedelta(minutes=30),
                    error_message=error + " " + "x" * 3000 if number == 1 else error,
                )
            )

    send(T0)

    [view] = receiver.requests[0].body["alerts"]
    assert view["client"] == "Acme"
    assert (view["platform"], view["environment"]) == ("airflow", "prod")
    assert view["event"] == view["state"] == "firing"
    assert view["summary"] == alert.summary
    assert view["pipeline_url"] == f"https://chm.example.com/pipelines/{alert.pipeline_id}"
    error = view["error_message"]
    assert error.startswith("login to postgresql://[REDACTED]@db/x failed")
    assert "hunter2-pw" not in error
    assert len(error) == 1000


def test_without_a_public_url_the_message_has_no_link(
    engine: Engine, receiver: Receiver, send: Sender, config: Settings
) -> None:
    seed(engine, 1)

    send(T0, settings=config.model_copy(update={"public_url": None}))

    [view] = receiver.requests[0].body["alerts"]
    assert view["pipeline_url"] is None
    assert view["error_message"] is None  # the pipeline has no run


# --- retries ----------------------------------------------------------------------------------------


def test_500_then_200_is_sent_once_with_both_attempts_recorded(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ids = seed(engine, 2)
    receiver.script(Reply(500, {"error": "upstream down"}))

    first = send(T0)

    assert (first.messages_sent, first.failed_attempts) == (0, 1)
    assert first.outcomes == {"retrying": 2}
    rows = deliveries(engine)
    key = receiver.keys()[0]
    retry_at = T0 + timedelta(seconds=backoff_s(key, 1))
    for delivery_id in ids:
        row = rows[delivery_id]
        assert (row.status, row.attempts, row.sent_at) == ("pending", 1, None)
        assert row.last_error is not None and "answered 500" in row.last_error
        assert "upstream down" in row.last_error
        assert row.next_attempt_at == retry_at
        assert row.message_key == key
        assert (row.lease_owner, row.lease_expires_at) == (None, None)
    assert T0 + timedelta(seconds=3.75) <= retry_at <= T0 + timedelta(seconds=5)
    assert next_due(engine, T0) == retry_at
    # Not before the backoff.
    assert send(retry_at - timedelta(milliseconds=1)).messages_sent == 0

    second = send(retry_at)

    assert second.messages_sent == 1
    assert receiver.keys() == [key, key]  # the same message id: the receiver may dedup
    assert sorted(receiver.requests[1].body["delivery_ids"]) == ids
    for delivery_id in ids:
        row = deliveries(engine)[delivery_id]
        assert (row.status, row.attempts, row.sent_at) == ("sent", 2, retry_at)
        assert row.last_error is not None and "answered 500" in row.last_error
    assert send(retry_at + timedelta(hours=1)).messages_sent == 0
    assert len(receiver.requests) == 2


def test_a_retry_keeps_its_set_while_new_deliveries_get_a_message_of_their_own(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    first = seed(engine, 2)
    receiver.script(Reply(503))
    send(T0)
    retry_at = deliveries(engine)[first[0]].next_attempt_at
    newer = seed(engine, 1, due=T0 + timedelta(seconds=1))

    assert send(retry_at).messages_sent == 2

    key = receiver.keys()[0]
    [retried] = [seen for seen in receiver.requests[1:] if seen.headers["x-chm-delivery"] == key]
    [fresh] = [seen for seen in receiver.requests[1:] if seen is not retried]
    assert sorted(retried.body["delivery_ids"]) == first
    assert fresh.body["delivery_ids"] == newer
    assert fresh.headers["x-chm-delivery"] != retried.headers["x-chm-delivery"]


def test_retry_after_is_honoured_when_longer_than_the_backoff(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [delivery_id] = seed(engine, 1)
    receiver.script(Reply(429, headers={"Retry-After": "120"}))

    send(T0)

    assert deliveries(engine)[delivery_id].next_attempt_at == T0 + timedelta(seconds=120)
    assert send(T0 + timedelta(seconds=119)).messages_sent == 0
    assert send(T0 + timedelta(seconds=120)).messages_sent == 1


def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [delivery_id] = seed(engine, 1)
    receiver.script(Reply(503, headers={"Retry-After": "1"}))

    send(T0)

    key = receiver.keys()[0]
    assert deliveries(engine)[delivery_id].next_attempt_at == T0 + timedelta(
        seconds=backoff_s(key, 1)
    )


def test_after_the_last_attempt_the_delivery_has_failed(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [delivery_id] = seed(engine, 1)
    receiver.script(*[Reply(502, {"error": f"attempt {n}"}) for n in range(1, 5)])
    now = T0
    waits = []
    for _ in range(4):  # delivery_max_attempts = 4
        report = send(now)
        assert report.failed_attempts == 1
        row = deliveries(engine)[delivery_id]
        waits.append(row.next_attempt_at - now)
        now = row.next_attempt_at

    row = deliveries(engine)[delivery_id]
    assert (row.status, row.attempts) == ("failed", 4)
    assert row.last_error is not None and "attempt 4" in row.last_error
    assert report.outcomes == {"failed": 1}
    assert next_due(engine, now) is None
    assert send(now + timedelta(days=1)).failed_attempts == 0
    assert len(receiver.requests) == 4
    assert len(set(receiver.keys())) == 1
    # The backoff doubled between the first three attempts.
    assert waits[0] < waits[1] < waits[2]


def test_a_refusal_not_worth_repeating_fails_at_once(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [delivery_id] = seed(engine, 1)
    receiver.script(Reply(400, {"error": "bad payload"}))

    report = send(T0)

    assert report.outcomes == {"failed": 1}
    row = deliveries(engine)[delivery_id]
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error is not None and "answered 400" in row.last_error
    assert send(T0 + timedelta(hours=2)).failed_attempts == 0


def test_an_unreachable_receiver_is_a_retryable_attempt(
    engine: Engine, receiver: Receiver, send: Sender, environ: dict[str, str]
) -> None:
    [delivery_id] = seed(engine, 1)
    receiver.server.close()  # nothing listens there any more

    report = send(T0)

    assert report.outcomes == {"retrying": 1}
    row = deliveries(engine)[delivery_id]
    assert row.attempts == 1 and row.status == "pending"
    assert row.last_error is not None and "ConnectError" in row.last_error


def test_an_unexpected_error_in_a_channel_is_a_retryable_attempt_named_by_its_type(
    engine: Engine, receiver: Receiver, send: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    [delivery_id] = seed(engine, 1)
    _raise_instead.append(KeyError(f"oops {SIGNING_SECRET}"))

    report = send(T0)

    assert report.outcomes == {"retrying": 1}
    row = deliveries(engine)[delivery_id]
    assert row.last_error == f"unexpected error in the {KIND} channel (KeyError)"
    assert SIGNING_SECRET not in caplog.text
    assert "KeyError" in caplog.text
    # The next attempt goes through.
    assert send(row.next_attempt_at).messages_sent == 1


def test_secrets_never_reach_last_error(engine: Engine, receiver: Receiver, send: Sender) -> None:
    [delivery_id] = seed(engine, 1)
    # A receiver that echoes what it was sent, secrets included.
    receiver.script(
        Reply(500, f"bad signature for {SIGNING_SECRET} at /hook/{URL_SECRET}".encode())
    )

    send(T0)

    error = deliveries(engine)[delivery_id].last_error
    assert error is not None and "answered 500" in error
    assert SIGNING_SECRET not in error
    assert URL_SECRET not in error
    assert "[REDACTED]" in error


# --- checks at send time --------------------------------------------------------------------------


def test_a_destination_no_longer_configured_is_undeliverable_at_send(
    engine: Engine, receiver: Receiver, send: Sender, environ: dict[str, str]
) -> None:
    ids = seed(engine, 2)
    unset = {name: value for name, value in environ.items() if name != "OPS_URL"}

    report = send(T0, environ=unset)

    assert report.outcomes == {"undeliverable": 2}
    assert receiver.requests == []
    for delivery_id in ids:
        row = deliveries(engine)[delivery_id]
        assert (row.status, row.attempts) == ("undeliverable", 0)
        assert (
            row.last_error == "destination 'ops': environment variable OPS_URL (url_env) is not set"
        )
        assert row.lease_owner is None
    assert next_due(engine, T0) is None


def test_an_unknown_kind_is_undeliverable_at_send(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [delivery_id] = seed(engine, 1, destination="carrier-pigeon:loft")

    assert send(T0).outcomes == {"undeliverable": 1}

    error = deliveries(engine)[delivery_id].last_error
    assert error is not None and error.startswith("unknown destination kind 'carrier-pigeon'")


def test_a_channel_that_finds_the_destination_unusable_makes_it_undeliverable(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ids = seed(engine, 2)
    _raise_instead.append(Undeliverable("the destination has no address"))

    report = send(T0)

    assert (report.messages_sent, report.failed_attempts) == (0, 0)
    assert report.outcomes == {"undeliverable": 2}
    rows = deliveries(engine)
    assert {(rows[i].status, rows[i].attempts, rows[i].last_error) for i in ids} == {
        ("undeliverable", 0, "the destination has no address")
    }
    assert next_due(engine, T0) is None


def test_a_silence_active_at_send_time_silences_what_it_covers(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    covered, other = seed(engine, 2)
    pipeline_id = alert_of(engine, covered).pipeline_id
    client_id = alert_of(engine, covered).client_id
    with make_session_factory(engine, write=True).begin() as session:
        common = {"reason": "", "created_by": "ops", "created_at": T0 - timedelta(hours=1)}
        session.add_all(
            [
                # Not this one: over, not yet begun, another rule.
                Silence(
                    pipeline_id=pipeline_id,
                    starts_at=T0 - timedelta(hours=1),
                    ends_at=T0,
                    **common | {"reason": "over"},
                ),
                Silence(
                    client_id=client_id,
                    starts_at=T0 + timedelta(seconds=1),
                    ends_at=T0 + timedelta(hours=1),
                    **common | {"reason": "later"},
                ),
                Silence(
                    pipeline_id=pipeline_id,
                    rule_id=8,
                    starts_at=T0 - timedelta(hours=1),
                    ends_at=T0 + timedelta(hours=1),
                    **common | {"reason": "rule 8"},
                ),
                # This one.
                Silence(
                    client_id=client_id,
                    pipeline_id=pipeline_id,
                    rule_id=7,
                    starts_at=T0 - timedelta(minutes=1),
                    ends_at=T0 + timedelta(hours=1),
                    **common | {"reason": "maintenance window"},
                ),
            ]
        )
    with make_session_factory(engine)() as session:
        silence_id = session.scalar(
            sa.select(Silence.id).where(Silence.reason == "maintenance window")
        )

    report = send(T0)

    assert report.outcomes == {"silenced": 1, "sent": 1}
    assert receiver.requests[0].body["delivery_ids"] == [other]
    row = deliveries(engine)[covered]
    assert (row.status, row.attempts) == ("silenced", 0)
    assert row.last_error == f"silenced by silence {silence_id}: maintenance window"


def test_a_group_whose_every_delivery_is_silenced_sends_nothing(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ids = seed(engine, 3)
    with make_session_factory(engine, write=True).begin() as session:
        session.add(
            Silence(
                client_id=alert_of(engine, ids[0]).client_id,
                reason="freeze",
                starts_at=T0 - timedelta(hours=1),
                ends_at=T0 + timedelta(hours=1),
                created_by="ops",
                created_at=T0 - timedelta(hours=1),
            )
        )

    report = send(T0)

    assert (report.messages_sent, report.outcomes) == (0, {"silenced": 3})
    assert receiver.requests == []


def test_a_repeat_of_an_alert_acknowledged_since_is_superseded(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [repeat] = seed(engine, 1, event="repeat")
    [resolved_repeat] = seed(engine, 1, event="repeat")
    [firing] = seed(engine, 1)
    update_alert(engine, repeat, acknowledged_at=T0 - timedelta(seconds=5), acknowledged_by="ana")
    update_alert(engine, resolved_repeat, state="resolved", resolved_at=T0 - timedelta(seconds=5))
    # An acknowledged alert's other deliveries still go out.
    update_alert(engine, firing, acknowledged_at=T0 - timedelta(seconds=5), acknowledged_by="ana")

    report = send(T0)

    assert report.outcomes == {"superseded": 2, "sent": 1}
    assert receiver.requests[0].body["delivery_ids"] == [firing]
    rows = deliveries(engine)
    assert (rows[repeat].status, rows[repeat].last_error) == ("superseded", "acknowledged")
    assert (rows[resolved_repeat].status, rows[resolved_repeat].last_error) == (
        "superseded",
        "resolved before the repeat was sent",
    )


def test_a_resolved_delivery_shows_the_alert_resolved(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    [delivery_id] = seed(engine, 1, event="resolved")
    update_alert(engine, delivery_id, state="resolved", resolved_at=T0 - timedelta(seconds=1))

    send(T0)

    body = receiver.requests[0].body
    assert body["status"] == "resolved"
    assert (body["alerts"][0]["event"], body["alerts"][0]["state"]) == ("resolved", "resolved")


def test_a_retried_firing_of_an_alert_resolved_since_is_still_told_as_firing(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    # The firing failed once; the alert resolved before its retry. The retry
    # is the trigger the receiver never had (its resolve follows on its own).
    [firing] = seed(engine, 1)
    receiver.script(Reply(503))
    send(T0)
    update_alert(engine, firing, state="resolved", resolved_at=T0 + timedelta(seconds=2))

    assert send(T0 + timedelta(minutes=1)).messages_sent == 1

    body = receiver.requests[1].body
    assert body["status"] == "firing"
    assert (body["alerts"][0]["event"], body["alerts"][0]["state"]) == ("firing", "firing")


def test_a_resolve_is_sent_during_a_silence(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    # The receiver heard the trigger: it must hear the end (a PagerDuty
    # incident would stay open otherwise), silence or not.
    [resolved] = seed(engine, 1, event="resolved")
    [firing] = seed(engine, 1)
    update_alert(engine, resolved, state="resolved", resolved_at=T0 - timedelta(seconds=1))
    with make_session_factory(engine, write=True).begin() as session:
        session.add(
            Silence(
                client_id=alert_of(engine, resolved).client_id,
                reason="freeze",
                starts_at=T0 - timedelta(hours=1),
                ends_at=T0 + timedelta(hours=1),
                created_by="ops",
                created_at=T0 - timedelta(hours=1),
            )
        )

    report = send(T0)

    assert report.outcomes == {"sent": 1, "silenced": 1}
    assert receiver.requests[0].body["delivery_ids"] == [resolved]
    assert deliveries(engine)[firing].status == "silenced"


# --- what is stored of a failure --------------------------------------------------------------


def hooked(
    engine: Engine, config: Settings, http: httpx.Client, receiver: Receiver
) -> tuple[Sender, list[int], list[int]]:
    """A sender to two destinations: ``webhook:bad`` (the real webhook channel)
    due first, then ``ops``; one delivery each."""
    named = Destinations(
        [
            Destination(name="ops", kind=KIND, url_env="OPS_URL"),
            Destination(name="bad", kind="webhook", url_env="BAD_URL"),
        ]
    )
    environ = {
        "OPS_URL": f"{receiver.server.url}/hook/{URL_SECRET}",
        "BAD_URL": f"{receiver.server.url}/bad",
    }
    bad = seed(engine, 1, destination="webhook:bad", due=T0 - timedelta(seconds=10))
    good = seed(engine, 1, due=T0)
    return Sender(engine, config, named, environ, http), bad, good


def test_control_characters_in_a_receivers_answer_are_not_stored_and_the_batch_goes_on(
    engine: Engine, config: Settings, http: httpx.Client, receiver: Receiver
) -> None:
    # PostgreSQL refuses a NUL in text: stored as is, it failed the record and
    # stopped the batch, the delivery retried forever with 0 attempts.
    receiver.server.routes[("POST", "/bad")] = lambda _seen: Reply(
        500, "upstream error\x00\x1b[31m red\r\n\tdetail\x7f\x9b".encode()
    )
    send, [bad], [good] = hooked(engine, config, http, receiver)

    report = send(T0)

    assert (report.messages_sent, report.outcomes) == (1, {"retrying": 1, "sent": 1})
    rows = deliveries(engine)
    assert (rows[good].status, rows[good].attempts) == ("sent", 1)
    assert (rows[bad].status, rows[bad].attempts) == ("pending", 1)
    assert rows[bad].last_error == "webhook 'bad' answered HTTP 500: upstream error[31m red detail"


def test_a_failure_that_cannot_be_stored_is_recorded_without_its_text(
    engine: Engine,
    config: Settings,
    http: httpx.Client,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.server.routes[("POST", "/bad")] = lambda _seen: Reply(500, b"upstream error")
    send, [bad], [good] = hooked(engine, config, http, receiver)
    record = delivery._record
    refused: list[str] = []

    def refusing(*args: Any, **kwargs: Any) -> None:
        outcome = args[5]
        if not outcome.sent and not refused:
            refused.append(outcome.reason)
            raise sa.exc.DataError("UPDATE alert_deliveries ...", {}, ValueError("refused"))
        record(*args, **kwargs)

    monkeypatch.setattr(delivery, "_record", refusing)

    report = send(T0)

    assert refused and "upstream error" in refused[0]
    assert report.outcomes == {"retrying": 1, "sent": 1}
    rows = deliveries(engine)
    assert rows[good].status == "sent"
    assert (rows[bad].status, rows[bad].attempts) == ("pending", 1)
    assert rows[bad].last_error == "the attempt failed; its error could not be stored (DataError)"
    assert "could not be stored (DataError)" in caplog.text


def test_an_attempt_is_dated_when_it_ended_not_when_the_batch_began(
    engine: Engine, receiver: Receiver, send: Sender, elapsed: list[float]
) -> None:
    def slow() -> None:
        elapsed[0] += 100.0  # each send takes 100 s

    _while_sending.append(slow)
    [failing] = seed(engine, 1, destination=f"{KIND}:dev", due=T0 - timedelta(seconds=10))
    [sent] = seed(engine, 1, due=T0)
    receiver.script(Reply(503))

    send(T0)

    rows = deliveries(engine)
    key = rows[failing].message_key
    assert key is not None
    assert rows[failing].next_attempt_at == T0 + timedelta(seconds=100 + backoff_s(key, 1))
    assert rows[sent].sent_at == T0 + timedelta(seconds=200)


# --- crashes, stops and concurrency ------------------------------------------------------------------


def test_a_group_claimed_but_never_sent_is_sent_once_under_the_same_key(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ids = seed(engine, 3)
    # Worker A claims and dies before sending (SIGKILL between commit and send).
    [group] = claim(engine, owner="worker-a", now=T0, lease_s=60.0)
    assert sorted(group.delivery_ids) == ids
    rows = deliveries(engine)
    assert {(d.lease_owner, d.message_key) for d in rows.values()} == {
        ("worker-a", group.message_key)
    }

    # While its lease lasts, no one else takes the group.
    assert send(T0 + timedelta(seconds=59), owner="worker-b").messages_sent == 0
    assert next_due(engine, T0 + timedelta(seconds=59)) == T0 + timedelta(seconds=60)

    after = T0 + timedelta(seconds=61)
    assert send(after, owner="worker-b").messages_sent == 1
    assert send(after + timedelta(minutes=5), owner="worker-c").messages_sent == 0

    assert receiver.keys() == [group.message_key]
    assert sorted(receiver.requests[0].body["delivery_ids"]) == ids
    assert {(d.status, d.attempts, d.sent_at) for d in deliveries(engine).values()} == {
        ("sent", 1, after)
    }


def test_a_stopping_sender_hands_back_what_it_has_not_sent(
    engine: Engine, receiver: Receiver, send: Sender
) -> None:
    ops = seed(engine, 2)
    dev = seed(engine, 2, destination=f"{KIND}:dev", due=T0 + timedelta(seconds=1))
    asked: list[bool] = []

    def should_stop() -> bool:
        asked.append(True)
        return len(asked) > 1  # after the first message

    report = send(T0 + timedelta(seconds=1), should_stop=should_stop)

    assert (report.messages_sent, report.released) == (1, 2)
    assert sorted(receiver.requests[0].body["delivery_ids"]) == ops
    rows = deliveries(engine)
    kept = {rows[i].message_key for i in dev}
    assert len(kept) == 1 and None not in kept
    assert {(rows[i].status, rows[i].lease_owner) for i in dev} == {("pending", None)}
    # Another worker takes them at once, under the key they were given.
    assert send(T0 + timedelta(seconds=1), owner="worker-b").messages_sent == 1
    assert receiver.keys()[1] in kept


class Killed(BaseException):
    """The worker dies (SIGKILL) at this point."""


def test_a_send_whose_record_was_lost_goes_again_under_the_same_key(
    engine: Engine, config: Settings, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real webhook channel: the receiver sees the same X-CHM-Delivery
    # twice and can drop the second copy.
    server = FakeServer()
    server.routes[("POST", "/alerts")] = lambda _seen: Reply(200, {})
    hooks = Destinations(
        [Destination(name="hook", kind="webhook", url_env="HOOK_URL", secret_env="HOOK_SECRET")]
    )
    environ = {"HOOK_URL": f"{server.url}/alerts", "HOOK_SECRET": SIGNING_SECRET}
    ids = seed(engine, 2, destination="webhook:hook")

    def killed(*_args: Any, **_kwargs: Any) -> None:
        raise Killed

    try:
        with monkeypatch.context() as patch:
            patch.setattr(delivery, "_record", killed)
            with pytest.raises(Killed):
                send_due(
                    engine,
                    owner="worker-a",
                    now=T0,
                    settings=config,
                    destinations=hooks,
                    environ=environ,
                    http=http,
                )
        rows = deliveries(engine)
        assert {(rows[i].status, rows[i].lease_owner) for i in ids} == {("pending", "worker-a")}

        after = T0 + timedelta(seconds=61)
        report = send_due(
            engine,
            owner="worker-b",
            now=after,
            settings=config,
            destinations=hooks,
            environ=environ,
            http=http,
        )
        assert report.messages_sent == 1
        first, second = server.requests
        assert first.headers["x-chm-delivery"] == second.headers["x-chm-delivery"]
        assert first.headers["x-chm-delivery"] == rows[ids[0]].message_key
        assert first.headers["x-chm-signature"] == second.headers["x-chm-signature"]
        assert first.body == second.body
        assert first.body["version"] == "4" and len(first.body["alerts"]) == 2
        rows = deliveries(engine)
        assert {(rows[i].status, rows[i].attempts, rows[i].sent_at) for i in ids} == {
            ("sent", 1, after)
        }
    finally:
        server.close()


@pytest.mark.postgres_only
def test_two_senders_at_once_never_send_a_delivery_twice(
    engine: Engine,
    receiver: Receiver,
    config: Settings,
    environ: dict[str, str],
    http: httpx.Client,
) -> None:
    # Sixty destinations with 3 due deliveries each, and one with 230 (three
    # messages or more): two senders that claim one message at a time.
    names = [f"d{n}" for n in range(61)]
    many = Destinations([Destination(name=name, kind=KIND, url_env="OPS_URL") for name in names])
    send = Sender(engine, config, many, environ, http)
    ids = []
    for n, name in enumerate(names):
        ids += seed(
            engine, 230 if n == 0 else 10, client=f"client-{n}", destination=f"{KIND}:{name}"
        )
    # Two messages are refused once: their retries must stay one message each.
    receiver.script(Reply(503), Reply(500))
    # No answer before both senders have a request open: they provably overlap.
    receiver.server.gate_clients = 2
    # One clock for both, moved a second at a time while work remains (well
    # within the 60 s lease: no lease expires in this test).
    clock = [T0]
    clock_lock = threading.Lock()
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    sent_by: dict[str, int] = {}

    def work(owner: str) -> None:
        try:
            start.wait()
            sent_by[owner] = 0
            for _ in range(500):
                with clock_lock:
                    now = clock[0]
                report = send(now, owner=owner, limit=1)
                sent_by[owner] += report.messages_sent
                if report.messages_sent or report.failed_attempts:
                    continue
                if next_due(engine, now) is None:
                    return
                with clock_lock:
                    if clock[0] == now:
                        clock[0] = now + timedelta(seconds=1)
                    assert clock[0] < T0 + timedelta(seconds=40)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"worker-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors

    by_key: dict[str, list[list[int]]] = {}
    for seen in receiver.requests:
        by_key.setdefault(seen.headers["x-chm-delivery"], []).append(
            sorted(seen.body["delivery_ids"])
        )
    # Each message went out once, but the two refused, which went twice: the
    # same set under the same key.
    assert sorted(len(sets) for sets in by_key.values())[-3:] == [1, 2, 2]
    assert all(all(s == sets[0] for s in sets) for sets in by_key.values())
    # Every delivery in exactly one message. (How many messages: at least 63;
    # two claims at the same moment may split one destination's due
    # deliveries between them, never share one.)
    delivered = sorted(i for sets in by_key.values() for i in sets[0])
    assert delivered == sorted(ids)
    assert len(by_key) >= 63
    assert sum(sent_by.values()) == len(by_key)
    assert all(sent_by[owner] > 0 for owner in ("worker-0", "worker-1")), sent_by
    assert {d.status for d in deliveries(engine).values()} == {"sent"}


@pytest.mark.postgres_only
def test_claims_made_at_the_same_moment_never_share_a_delivery(engine: Engine) -> None:
    # Claims only (no sends in between): the claim is the contended moment.
    ids = []
    for n in range(200):
        ids += seed(engine, 1, client="one", destination=f"{KIND}:d{n}")
    # Some retries too: keyed groups are taken whole or not at all.
    with make_session_factory(engine, write=True).begin() as session:
        for n in range(0, 200, 20):
            session.execute(
                sa.update(AlertDelivery)
                .where(AlertDelivery.destination == f"{KIND}:d{n}")
                .values(message_key=f"{n:032x}", attempts=1)
            )
    start = threading.Barrier(4)
    claimed: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    errors: list[BaseException] = []

    def work(owner: str) -> None:
        try:
            mine = claimed[owner] = []
            start.wait()
            while True:
                groups = claim(engine, owner=owner, now=T0, lease_s=60.0, limit=2)
                mine += [(group.message_key, group.delivery_ids) for group in groups]
                if not groups and next_due(engine, T0) != T0 + timedelta(seconds=60):
                    continue  # another claim holds the rest: not committed yet
                if not groups:
                    return
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"worker-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    every = [group for groups in claimed.values() for group in groups]
    assert sorted(i for _, group in every for i in group) == sorted(ids)
    assert len({key for key, _ in every}) == len(every) == 200
    assert sum(1 for groups in claimed.values() if groups) > 1
    rows = deliveries(engine)
    for owner, groups in claimed.items():
        for key, group in groups:
            assert {(rows[i].lease_owner, rows[i].message_key) for i in group} == {(owner, key)}
    for n in range(0, 200, 20):
        assert (f"{n:032x}", (ids[n],)) in every


# --- next_due and the backoff ---------------------------------------------------------------------


def test_next_due_is_none_without_pending_deliveries(engine: Engine) -> None:
    assert next_due(engine, T0) is None


def test_the_backoff_doubles_from_five_seconds_to_an_hour_with_a_fixed_jitter() -> None:
    key = "0" * 32
    for attempts, full in [(1, 5.0), (2, 10.0), (3, 20.0), (10, 2560.0), (11, 3600.0)]:
        wait = backoff_s(key, attempts)
        assert 0.75 * full <= wait <= full
        assert wait == backoff_s(key, attempts)
    assert backoff_s(key, 40) <= 3600.0
    assert backoff_s(key, 0) == 0.0
    assert len({backoff_s(f"{n:032x}", 3) for n in range(20)}) > 1
