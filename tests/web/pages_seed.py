"""A small world for the page tests (TestClient), at a fixed clock ``T``.

Acme's ``nightly-load`` failed two hours before ``T`` (it succeeded the day
before: newly failing) and an on_failure rule, evaluated at ``T``, fires for
it; Acme's ``hourly-sync`` has a run started eight hours before (stuck);
Globex's ``daily-report`` is scheduled at 06:00 UTC and has not run since two
days before (missed at ``T``, 12:00). A resolved alert, an active silence and
a sources file with two sources complete it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chm.alerts.evaluate import evaluate
from chm.app import create_app
from chm.core.db import make_session_factory
from chm.core.settings import Settings
from chm.models import Alert, IngestionSource, Pipeline, Silence
from factories import make_client, make_pipeline, make_rule, make_run

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SOURCE_SECRET = "orders-secret-81c2f0"

SOURCES = """
[[sources]]
name = "orders-feed"
platform = "generic"
environment = "prod"
base_url = "http://feed.internal.example:9/api"
interval_s = 600
token_env = "ORDERS_TOKEN"

[[sources]]
name = "spark"
platform = "spark"
environment = "prod"
openlineage_namespace = "spark-prod"
token_env = "SPARK_KEY"
"""


def z(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def at(**delta: float) -> str:
    """``T`` minus ``delta`` (hours=2: two hours before T), as the API takes it."""
    return z(T - timedelta(**delta))


def web_client(settings: Settings, engine: Engine, clock: Callable[[], datetime] = lambda: T,
               **client_args: Any) -> TestClient:  # fmt: skip
    """The app at the clock ``clock`` (the pages' and the session cookie's)."""
    app = create_app(settings, engine)
    app.state.web_clock = clock
    return TestClient(app, raise_server_exceptions=False, **client_args)


@dataclass
class World:
    acme: dict[str, Any]
    globex: dict[str, Any]
    nightly: dict[str, Any]
    hourly: dict[str, Any]
    daily: dict[str, Any]
    failed_run: dict[str, Any]
    stuck_run: dict[str, Any]
    firing_alert_id: str
    resolved_alert_id: str
    silence_id: str


def write_sources(path: Path) -> Path:
    path.write_text(SOURCES)
    return path


def seed(api: TestClient, engine: Engine, settings: Settings) -> World:
    """The world, through the API (runs, inventory, rules), evaluation (the
    firing alert) and the tables (what only the worker writes)."""
    acme = make_client(api, "Acme")
    globex = make_client(api, "Globex")
    nightly = make_pipeline(api, acme, "nightly-load", external_id="dag-nightly")
    hourly = make_pipeline(api, acme, "hourly-sync")
    daily = make_pipeline(
        api, globex, "daily-report", schedule="0 6 * * *", schedule_timezone="UTC"
    )
    make_run(api, nightly, "success", external_run_id="n-1", started_at=at(hours=30),
             finished_at=at(hours=29, minutes=50))  # fmt: skip
    failed_run = make_run(
        api, nightly, "failed", external_run_id="n-2", started_at=at(hours=2),
        finished_at=at(hours=1, minutes=55),
        error_message="KeyError: 'orders'\nTraceback (most recent call last): ...",
    )  # fmt: skip
    make_run(api, hourly, "success", external_run_id="h-1", started_at=at(hours=9),
             finished_at=at(hours=8, minutes=59))  # fmt: skip
    stuck_run = make_run(api, hourly, "running", external_run_id="h-2", started_at=at(hours=8))
    make_run(api, daily, "success", external_run_id="d-1", started_at=at(days=2),
             finished_at=at(days=2, minutes=-20))  # fmt: skip
    rule = make_rule(api, client_id=acme["id"])
    with engine.begin() as connection:
        # Created (and scheduled) well before T: the 06:00 tick expects a run.
        connection.execute(
            sa.update(Pipeline)
            .where(Pipeline.id == int(daily["id"]))
            .values(created_at=T - timedelta(days=10), schedule_set_at=T - timedelta(days=10))
        )
        connection.execute(
            sa.insert(IngestionSource),
            [{"name": "orders-feed", "last_attempt_at": T - timedelta(minutes=5),
              "last_success_at": T - timedelta(hours=3),
              "last_error": f"HTTP 401 from the feed: token {SOURCE_SECRET} refused",
              "last_error_at": T - timedelta(minutes=5), "consecutive_failures": 4}],
        )  # fmt: skip
    evaluate(engine, T, settings, None)
    with make_session_factory(engine, write=True)() as session, session.begin():
        firing = session.scalar(sa.select(Alert.id).where(Alert.state == "firing"))
        resolved = Alert(
            rule_id=int(rule["id"]), rule_type="on_failure", client_id=int(acme["id"]),
            pipeline_id=int(hourly["id"]), state="resolved",
            fingerprint=hashlib.sha256(b"resolved").hexdigest()[:32],
            fired_at=T - timedelta(days=3), resolved_at=T - timedelta(days=2),
            summary="hourly-sync has failed (latest run)", last_notified_at=T - timedelta(days=3),
        )  # fmt: skip
        silence = Silence(
            pipeline_id=int(hourly["id"]), starts_at=T - timedelta(hours=1),
            ends_at=T + timedelta(hours=5), reason="Maintenance of the sync host",
            created_by="ops@example.com", created_at=T - timedelta(hours=1),
        )  # fmt: skip
        session.add_all([resolved, silence])
        session.flush()
        resolved_id, silence_id = resolved.id, silence.id
    assert firing is not None, "the on_failure rule fires for nightly-load at T"
    return World(
        acme=acme, globex=globex, nightly=nightly, hourly=hourly, daily=daily,
        failed_run=failed_run, stuck_run=stuck_run, firing_alert_id=str(firing),
        resolved_alert_id=str(resolved_id), silence_id=str(silence_id),
    )  # fmt: skip
