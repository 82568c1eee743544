"""Alert delivery by real `chm worker` processes (issue 14): a worker killed
with SIGKILL while its message is in flight, whose delivery another worker
sends once more under the same ``X-CHM-Delivery`` (the receiver drops the
copy); two workers on one PostgreSQL database sending every alert's firing
and resolved message exactly once; and, in process with an injected clock,
a webhook answering 500 (echoing its URL and signing key) then 200.

The receiver is the alert tests' ``WebhookReceiver`` (Alertmanager v4 body,
HMAC signature, dedup on ``X-CHM-Delivery``) over a real socket. Waits are on
facts (a request seen, a row written, a process gone) under a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from channel_fakes import Answer, Request, WebhookReceiver
from sqlalchemy import Engine
from worker_processes import POLL_S, Clock, base_env, wait_until

from chm.alerts.delivery import backoff_s
from chm.core.settings import Settings
from chm.models import Alert, AlertDelivery
from chm.worker.alerts import LiveDestinations
from chm.worker.context import LiveSources, WorkerContext
from chm.worker.loop import Worker
from factories import make_client, make_pipeline, make_rule, make_run

SECRET = "webhook-signing-secret-7d1c0a"
# The receiver's path carries a credential, as many webhook URLs do.
URL_TOKEN = "hook-path-Credential-4b9e2f71"


def write_config(tmp_path: Path, *names: str) -> Path:
    """A CHM_CONFIG file with no sources and one webhook destination per name,
    every one at ``OPS_HOOK_URL`` signed with ``OPS_HOOK_SECRET``."""
    path = tmp_path / "chm.toml"
    path.write_text(
        "".join(
            f'[[destinations]]\nname = "{name}"\nkind = "webhook"\n'
            'url_env = "OPS_HOOK_URL"\nsecret_env = "OPS_HOOK_SECRET"\n\n'
            for name in names
        )
    )
    return path


def worker_env(
    db_url: str, config: Path, receiver: WebhookReceiver, **extra: str
) -> dict[str, str]:
    return base_env(
        db_url,
        config,
        CHM_ALERT_GROUP_WAIT_S="0",
        OPS_HOOK_URL=receiver.endpoint,
        OPS_HOOK_SECRET=SECRET,
        **extra,
    )


def delivery_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(AlertDelivery).order_by(AlertDelivery.id)))


def alert_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(Alert).order_by(Alert.id)))


def settled(engine: Engine, expected: int) -> Callable[[], bool]:
    """``expected`` deliveries exist and none is pending any more."""

    def check() -> bool:
        rows = delivery_rows(engine)
        return len(rows) == expected and all(row.status != "pending" for row in rows)

    return check


# -- SIGKILL between commit and send --------------------------------------------


def test_a_worker_killed_while_sending_leaves_its_message_to_another_under_the_same_key(
    api, engine, db_url, tmp_path, spawn
) -> None:
    pipeline = make_pipeline(api, make_client(api, "Acme"), name="orders_daily")
    make_rule(api, pipeline_id=pipeline["id"], rule_type="on_failure", destination="webhook:ops")
    make_run(api, pipeline, "failed", started_at="2026-05-31T10:00:00Z", error_message="disk full")

    in_flight, release = threading.Event(), threading.Event()
    with WebhookReceiver(secret=SECRET) as receiver:

        def take_then_hang(request: Request) -> Answer:
            # The receiver acts on the first copy, but its answer never reaches
            # the worker: killed while waiting for it.
            answer = receiver._receive(request)
            if not in_flight.is_set():
                in_flight.set()
                release.wait(30)
            return answer

        receiver.routes[receiver.PATH] = take_then_hang
        # A short lease, so that the next worker need not wait a minute for it
        # (a send must end within its lease: the timeout is shorter still).
        env = worker_env(db_url, write_config(tmp_path, "ops"), receiver,
                         CHM_WORKER_LEASE_S="8", CHM_DELIVERY_TIMEOUT_S="7")  # fmt: skip
        try:
            killed = spawn(env, name="killed")
            wait_until(in_flight.is_set, "the message was in flight", killed)
            killed.process.send_signal(signal.SIGKILL)
            assert killed.process.wait(timeout=10) == -signal.SIGKILL

            # Key and lease were committed before the send, its outcome never.
            (row,) = delivery_rows(engine)
            key = receiver.requests[0].headers["x-chm-delivery"]
            assert (row.status, row.attempts, row.message_key) == ("pending", 0, key)
            host = socket.gethostname()[:150]
            assert row.lease_owner.startswith(f"{host}:{killed.process.pid}:")

            taker = spawn(env, name="taker")
            wait_until(settled(engine, 1), "the delivery was sent again", taker, timeout=60)
            assert taker.stop() == 0, taker.stderr()[-3000:]
        finally:
            release.set()

    # The same message twice (same key, same signed body), taken once.
    first, second = receiver.requests
    assert second.headers["x-chm-delivery"] == key
    assert second.headers["x-chm-signature"] == first.headers["x-chm-signature"]
    assert second.body == first.body
    assert receiver.problems == []
    assert len(receiver.delivered) == 1 and receiver.duplicates == 1
    (body,) = receiver.delivered.values()
    assert body["status"] == "firing"
    assert [alert["labels"]["pipeline"] for alert in body["alerts"]] == ["orders_daily"]
    (row,) = delivery_rows(engine)
    # The killed worker never recorded its attempt: the one recorded is the taker's.
    assert (row.event, row.status, row.attempts, row.message_key) == ("firing", "sent", 1, key)
    assert row.sent_at is not None and row.last_error is None
    assert (row.lease_owner, row.lease_expires_at) == (None, None)
    assert [alert.state for alert in alert_rows(engine)] == ["firing"]
    assert taker.sent_keys() == [key]


# -- two workers on one PostgreSQL database -------------------------------------


@pytest.mark.postgres_only
def test_two_workers_send_each_alerts_firing_and_resolution_exactly_once(
    api, engine, db_url, tmp_path, spawn
) -> None:
    client = make_client(api, "Acme")
    for destination in ("webhook:ops", "webhook:oncall"):
        make_rule(api, client_id=client["id"], rule_type="on_failure", destination=destination)
    waves = [[make_pipeline(api, client, name=f"p{w}{n}") for n in range(4)] for w in range(3)]

    first_in, opened = threading.Event(), threading.Event()
    keys: set[str] = set()
    with WebhookReceiver(secret=SECRET) as receiver:

        def gate(request: Request) -> Answer:
            # The first message is held until another message arrives: the
            # worker sending it is stuck in this request, so the other one
            # provably sends (no fixed sleep decides who does what).
            with receiver.lock:
                keys.add(request.headers.get("x-chm-delivery", ""))
                if len(keys) >= 2:
                    opened.set()
            if not opened.is_set():
                first_in.set()
                opened.wait(30)
            return receiver._receive(request)

        receiver.routes[receiver.PATH] = gate
        env = worker_env(db_url, write_config(tmp_path, "ops", "oncall"), receiver,
                         CHM_DELIVERY_TIMEOUT_S="45")  # fmt: skip
        workers = [spawn(env, name=f"w{i}") for i in range(2)]
        try:
            for pipeline in waves[0]:
                make_run(api, pipeline, "failed", started_at="2026-05-31T10:00:00Z")
            wait_until(first_in.is_set, "the first message arrived", *workers)
            for wave in waves[1:]:
                for pipeline in wave:
                    make_run(api, pipeline, "failed", started_at="2026-05-31T10:00:00Z")
            wait_until(settled(engine, 24), "every firing delivery was sent", *workers)
            assert opened.is_set()
            # Every pipeline recovers: one resolved message per alert.
            for wave in waves:
                for pipeline in wave:
                    make_run(api, pipeline, "success", started_at="2026-05-31T11:00:00Z")
            wait_until(settled(engine, 48), "every resolved delivery was sent", *workers)
            for worker in workers:
                assert worker.stop() == 0, worker.stderr()[-3000:]
        finally:
            opened.set()

    alerts = alert_rows(engine)
    assert len(alerts) == 24 and {alert.state for alert in alerts} == {"resolved"}
    rows = delivery_rows(engine)
    assert Counter((row.alert_id, row.event) for row in rows) == {
        (alert.id, event): 1 for alert in alerts for event in ("firing", "resolved")
    }
    assert {(row.status, row.attempts) for row in rows} == {("sent", 1)}

    # Each message reached the receiver once; each alert's firing and its
    # resolution are in exactly one of them.
    assert receiver.problems == [] and receiver.duplicates == 0
    assert len(receiver.requests) == len(receiver.delivered)
    listed = Counter(
        (alert["fingerprint"], alert["status"])
        for body in receiver.delivered.values()
        for alert in body["alerts"]
    )
    assert listed == {
        (alert.fingerprint, status): 1 for alert in alerts for status in ("firing", "resolved")
    }
    assert {row.message_key for row in rows} == set(receiver.delivered)

    # Both workers sent, and no message was sent by both.
    sent = [set(worker.sent_keys()) for worker in workers]
    assert all(sent), [len(each) for each in sent]
    assert sent[0].isdisjoint(sent[1])
    assert sent[0] | sent[1] == set(receiver.delivered)


# -- a receiver answering 500 then 200 (in process, injected clock) -------------


T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def in_process_worker(
    engine: Engine, db_url: str, config: Path, clock: Clock, environ: dict[str, str]
) -> Worker:
    options = Settings(  # type: ignore[call-arg]
        database_url=db_url, config=config, worker_poll_s=POLL_S, alert_group_wait_s=0,
        _env_file=None,
    )  # fmt: skip
    live = LiveSources(config, options.env)
    live.load_initial()
    ctx = WorkerContext(engine, options, f"test:{os.getpid()}:w", clock, live, environ=environ)
    destinations = LiveDestinations(config)
    destinations.load_initial()
    return Worker(ctx, destinations=destinations)


def test_a_webhook_answering_500_then_200_is_delivered_once_with_two_attempts(
    api, engine, db_url, tmp_path
) -> None:
    pipeline = make_pipeline(api, make_client(api, "Acme"), name="orders_daily")
    make_rule(api, pipeline_id=pipeline["id"], rule_type="on_failure", destination="webhook:ops")
    make_run(api, pipeline, "failed", started_at="2026-05-31T10:00:00Z")
    with WebhookReceiver(secret=SECRET) as receiver:
        path = f"/hooks/{URL_TOKEN}"
        url = receiver.url + path
        receiver.routes[path] = receiver._receive
        # A careless receiver: its error echoes the URL and the signing key.
        receiver.script(path, Answer(500, f"no handler for POST {url} (key {SECRET}) {path}"))
        clock = Clock(T0)
        environ = {"OPS_HOOK_URL": url, "OPS_HOOK_SECRET": SECRET}
        worker = in_process_worker(engine, db_url, write_config(tmp_path, "ops"), clock, environ)

        worker.run_until_idle()
        (row,) = delivery_rows(engine)
        key = row.message_key
        retry_at = T0 + timedelta(seconds=backoff_s(key, 1))
        assert (row.status, row.attempts, row.sent_at, row.next_attempt_at) == (
            "pending", 1, None, retry_at,
        )  # fmt: skip
        assert row.last_error.startswith("webhook 'ops' answered HTTP 500: no handler for POST")
        for secret in (URL_TOKEN, SECRET, url, receiver.url + "/hooks"):
            assert secret not in row.last_error

        clock.now = retry_at - timedelta(milliseconds=1)
        worker.run_until_idle()
        assert len(receiver.requests) == 1
        clock.now = retry_at
        worker.run_until_idle()
        clock.now = retry_at + timedelta(hours=2)
        worker.run_until_idle()

    assert [r.headers["x-chm-delivery"] for r in receiver.requests] == [key, key]
    assert receiver.problems == []
    assert len(receiver.delivered) == 1 and receiver.duplicates == 0
    (row,) = delivery_rows(engine)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 2, retry_at)
    assert row.last_error is not None and "answered HTTP 500" in row.last_error
    assert URL_TOKEN not in row.last_error and SECRET not in row.last_error
