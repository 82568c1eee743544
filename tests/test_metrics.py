"""``GET /metrics`` (chm.metrics): Prometheus text parsed with prometheus_client's
own parsers, the inventory's values equal to the JSON API's for the same data,
the ingestion counters after real ingestions over real sockets, the HTTP
request metrics (route templates, never a raw path), the bearer token in
production, OpenMetrics, bounded labels, and a real ``chm serve --workers 2``
whose every scrape adds up the requests of both processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from chm.alerts.delivery import send_due
from chm.alerts.destinations import Destination, Destinations
from chm.alerts.evaluate import evaluate
from chm.app import create_app
from chm.core.migrate import alembic_config, upgrade
from chm.core.settings import Environment, Settings
from chm.ingestion.engine import IngestionEngine, ingest
from chm.ingestion.health import source_health
from chm.metrics import multiprocess
from chm.metrics.multiprocess import MULTIPROC_DIR_ENV, shared_metrics
from chm.metrics.router import scrape_time
from chm.models import Alert, IngestionSource, Pipeline
from factories import API, make_client, make_pipeline, make_rule, make_run, ok, walk
from live import free_port

INGESTION_TESTS = str(Path(__file__).resolve().parent / "ingestion")
if INGESTION_TESTS not in sys.path:
    sys.path.insert(0, INGESTION_TESTS)

from ingestion_fakes import (  # noqa: E402
    FakeServer,
    Reply,
    SleepRecorder,
    generic_path,
    generic_run,
    serve_generic,
    source,
    sources,
    toml_text,
)

T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TOKEN = "metrics-prod-token-4c1d"
RUN_STATUSES = ("queued", "running", "success", "failed", "cancelled", "skipped", "unknown")


# --- reading a scrape ---------------------------------------------------------------------


@dataclass
class Scrape:
    """One scrape's samples: name -> {labels (sorted pairs) -> value}."""

    samples: dict[str, dict[tuple[tuple[str, str], ...], float]]
    text: str

    def of(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return self.samples.get(name, {})

    def by(self, name: str, label: str) -> dict[str, float]:
        """The samples of ``name`` keyed by one label's value."""
        return {dict(labels)[label]: value for labels, value in self.of(name).items()}

    def value(self, name: str, **labels: str) -> float | None:
        return self.of(name).get(tuple(sorted(labels.items())))


def parse(text: str, families: Any = text_string_to_metric_families) -> Scrape:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            assert labels not in samples.setdefault(sample.name, {}), sample
            samples[sample.name][labels] = sample.value
    return Scrape(samples, text)


def scrape(client: TestClient | httpx.Client, **headers: str) -> Scrape:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


@pytest.fixture
def at_t(api: TestClient) -> Iterator[TestClient]:
    """The API with scrapes computed at ``T``."""
    api.app.dependency_overrides[scrape_time] = lambda: T  # type: ignore[attr-defined]
    yield api
    api.app.dependency_overrides.clear()  # type: ignore[attr-defined]


def serve(settings: Settings, engine: Engine) -> TestClient:
    client = TestClient(create_app(settings, engine), raise_server_exceptions=False)
    client.app.dependency_overrides[scrape_time] = lambda: T  # type: ignore[attr-defined]
    return client


def run_at(day: int, hour: int = 9) -> dict[str, str]:
    """A finished run's times in May 2026, before ``T``."""
    start = datetime(2026, 5, day, hour, tzinfo=UTC)
    return {
        "started_at": start.isoformat(),
        "finished_at": (start + timedelta(minutes=10)).isoformat(),
    }


# --- firing alerts by client --------------------------------------------------------------


def add_alert(engine: Engine, rule: dict[str, Any], pipeline: dict[str, Any], state: str) -> None:
    fired = T - timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Alert).values(
                rule_id=int(rule["id"]),
                rule_type=rule["rule_type"],
                client_id=int(pipeline["client_id"]),
                pipeline_id=int(pipeline["id"]),
                state=state,
                fingerprint=f"{rule['id']}-{pipeline['id']}-{state}",
                fired_at=fired,
                resolved_at=fired + timedelta(minutes=5) if state == "resolved" else None,
                summary=f"{pipeline['name']} has failed",
            )
        )


def test_firing_alerts_by_client_equal_the_alerts_api(at_t: TestClient, engine: Engine) -> None:
    names = ("Acme", "Globex", "Quiet", "Gone")
    acme, globex, quiet, gone = (make_client(at_t, name) for name in names)
    rule = make_rule(at_t, client_id=acme["id"])
    acme_pipelines = [make_pipeline(at_t, acme) for _ in range(3)]
    globex_pipeline = make_pipeline(at_t, globex)
    gone_pipeline = make_pipeline(at_t, gone)
    make_pipeline(at_t, quiet)
    for pipeline in acme_pipelines[:2]:
        add_alert(engine, rule, pipeline, "firing")
    add_alert(engine, rule, acme_pipelines[2], "resolved")
    add_alert(engine, rule, globex_pipeline, "resolved")
    add_alert(engine, rule, gone_pipeline, "firing")
    with engine.begin() as connection:  # an inactive client with an alert still firing
        connection.execute(sa.text("UPDATE clients SET is_active = false WHERE name = 'Gone'"))

    firing = walk(at_t, "/alerts", state="firing")
    named = {c["id"]: c["name"] for c in walk(at_t, "/clients", include_inactive="true")}
    expected = Counter(named[alert["client_id"]] for alert in firing)
    metrics = scrape(at_t).by("chm_alerts_firing", "client")
    assert {name: value for name, value in metrics.items() if value} == expected
    # Every active client has its sample, 0 when none of its alerts fires.
    assert metrics == {"Acme": 2, "Gone": 1, "Globex": 0, "Quiet": 0}


# --- pipelines by latest status and platform -----------------------------------------------


def test_pipelines_by_platform_and_status_equal_the_latest_status_report(
    at_t: TestClient,
) -> None:
    acme, globex = make_client(at_t, "Acme"), make_client(at_t, "Globex")
    histories = [
        ("airflow", acme, ["success", "failed"]),
        ("airflow", globex, ["failed", "success"]),
        ("dbt", acme, ["running"]),
        ("dbt", globex, ["success", "success", "cancelled"]),
        ("generic", acme, []),
    ]
    for platform, client, statuses in histories:
        pipeline = make_pipeline(at_t, client, platform=platform)
        for day, status in enumerate(statuses, start=1):
            make_run(at_t, pipeline, status, **run_at(day))
    retired = make_pipeline(at_t, acme, platform="airflow")
    make_run(at_t, retired, "failed", **run_at(3))
    ok(at_t.patch(f"{API}/pipelines/{retired['id']}", json={"is_active": False}))
    # A run after T does not count at T, as in the report.
    later = make_pipeline(at_t, globex, platform="dbt")
    make_run(at_t, later, "failed", started_at=(T + timedelta(hours=1)).isoformat())

    report = ok(at_t.get(f"{API}/reports/latest-status", params={"as_of": T.isoformat()}))
    expected = Counter((row["platform"], row["latest_status"] or "none") for row in report["items"])
    samples = scrape(at_t).of("chm_pipelines")
    found = {(dict(k)["platform"], dict(k)["status"]): v for k, v in samples.items()}
    assert {key: value for key, value in found.items() if value} == expected
    assert expected == {
        ("airflow", "failed"): 1,
        ("airflow", "success"): 1,
        ("dbt", "running"): 1,
        ("dbt", "cancelled"): 1,
        ("dbt", "none"): 1,
        ("generic", "none"): 1,
    }
    # Every status of each platform present, 0 included; no other platform.
    assert set(found) == {
        (platform, status)
        for platform in ("airflow", "dbt", "generic")
        for status in (*RUN_STATUSES, "none")
    }


def test_stuck_runs_equal_the_stuck_runs_report(at_t: TestClient) -> None:
    client = make_client(at_t, "Acme")
    for hours_ago, status in ((30, "running"), (7, "queued"), (2, "running"), (40, "success")):
        pipeline = make_pipeline(at_t, client)
        make_run(at_t, pipeline, status, started_at=(T - timedelta(hours=hours_ago)).isoformat())
    report = ok(at_t.get(f"{API}/reports/stuck-runs", params={"as_of": T.isoformat()}))
    assert len(report["items"]) == 2  # older than the default 360 minutes
    assert scrape(at_t).value("chm_stuck_runs") == len(report["items"])


def scheduled(api: TestClient, engine: Engine, client: dict[str, Any], **fields: Any) -> Any:
    """A pipeline run daily at 06:00 UTC, created (and scheduled) in May."""
    pipeline = make_pipeline(api, client, schedule="0 6 * * *", grace_minutes=30, **fields)
    with engine.begin() as connection:
        connection.execute(
            sa.update(Pipeline)
            .where(Pipeline.id == int(pipeline["id"]))
            .values(created_at=T - timedelta(days=30), schedule_set_at=T - timedelta(days=30))
        )
    return pipeline


def test_overdue_pipelines_equal_the_overdue_report(at_t: TestClient, engine: Engine) -> None:
    client = make_client(at_t, "Acme")
    today = T.replace(hour=6)  # the tick each daily pipeline expects a run for
    scheduled(at_t, engine, client)  # no run: missed
    scheduled(at_t, engine, make_client(at_t, "Globex"))  # missed too
    answered = scheduled(at_t, engine, client)
    make_run(at_t, answered, "success", started_at=(today + timedelta(minutes=5)).isoformat(),
             finished_at=(today + timedelta(minutes=20)).isoformat())  # fmt: skip
    running = scheduled(at_t, engine, client, deadline_minutes=60)  # still running: late
    make_run(at_t, running, "running", started_at=(today + timedelta(minutes=5)).isoformat())
    make_pipeline(at_t, client)  # no schedule: never overdue
    report = ok(at_t.get(f"{API}/reports/overdue-pipelines", params={"as_of": T.isoformat()}))
    expected = Counter(row["state"] for row in report["items"])
    assert expected == {"missed": 2, "late": 1}
    assert scrape(at_t).by("chm_overdue_pipelines", "state") == expected


# --- sources: health, ages and counters ------------------------------------------------------


def pull(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "platform": "generic", "environment": name,
            "base_url": "http://127.0.0.1:9", "interval_s": 300, **fields}  # fmt: skip


def record(engine: Engine, name: str, **columns: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.insert(IngestionSource).values({"consecutive_failures": 0, **columns, "name": name})
        )


def test_source_ages_and_health_equal_healthz_detail(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    entries = [
        pull("fresh"),
        pull("broken"),
        pull("new"),
        {"name": "spark", "platform": "spark", "environment": "spark",
         "openlineage_namespace": "ns-spark", "token_env": "SPARK_KEY"},
    ]  # fmt: skip
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(*entries))
    record(engine, "fresh", last_attempt_at=T - timedelta(minutes=2),
           last_success_at=T - timedelta(minutes=2))  # fmt: skip
    record(engine, "broken", last_attempt_at=T - timedelta(minutes=1),
           last_success_at=T - timedelta(hours=3), last_error="HTTP 503",
           last_error_at=T - timedelta(minutes=1), consecutive_failures=4)  # fmt: skip
    record(engine, "left-the-file", last_attempt_at=T, last_success_at=T)
    with serve(Settings(database_url=db_url, config=path), engine) as client:
        detail = ok(client.get("/healthz?detail=1"))
        metrics = scrape(client)
    shown = {s["name"]: s for s in detail["sources"]}
    stamps = metrics.by("chm_source_last_success_timestamp_seconds", "source")
    ages = metrics.by("chm_source_last_success_age_seconds", "source")
    # Only the sources that ever succeeded, of the file.
    assert set(stamps) == set(ages) == {"fresh", "broken"}
    for name, stamp in stamps.items():
        last_success = datetime.fromisoformat(shown[name]["last_success_at"])
        assert stamp == last_success.timestamp()
        assert ages[name] == (T - last_success).total_seconds()
    assert ages == {"fresh": 120.0, "broken": 3 * 3600.0}
    failures = metrics.by("chm_source_consecutive_failures", "source")
    assert failures == {name: s["consecutive_failures"] for name, s in shown.items()}
    # The state at T is the health's at T: one 1 per source, every state present.
    with engine.connect() as connection:
        health = source_health(connection, sources(*entries), T, lease_s=60)
    states = metrics.of("chm_source_state")
    assert {dict(k)["source"]: dict(k)["state"] for k, v in states.items() if v == 1} == {
        s.name: s.state.value for s in health.sources
    }
    assert len(states) == 5 * len(entries)
    assert metrics.value("chm_sources_file_valid") == 1
    assert metrics.value("chm_workers_alive") == len(detail["workers"]) == 0


def test_a_sources_file_that_does_not_load_is_flagged(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(toml_text(pull("feed", interval_s=-5)))
    with serve(Settings(database_url=db_url, config=path), engine) as client:
        metrics = scrape(client)
    assert metrics.value("chm_sources_file_valid") == 0
    assert metrics.of("chm_source_state") == {} and metrics.value("chm_database_up") == 1


def ingested(metrics: Scrape) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["source"], dict(labels)["outcome"]): value
        for labels, value in metrics.of("chm_ingested_runs_total").items()
    }


def test_runs_ingested_by_source_and_outcome_after_real_ingestions(
    db_url: str, engine: Engine, api: TestClient, tmp_path: Path
) -> None:
    fake = FakeServer()
    try:
        good = source(fake, name="good", environment="prod")
        down = source(fake, name="down", environment="staging")
        idle = source(fake, name="idle", environment="dev")
        client = make_client(api)
        make_pipeline(api, client, platform="generic", environment="prod", external_id="p1")
        make_pipeline(api, client, platform="generic", environment="prod", external_id="p2")
        make_pipeline(api, client, platform="generic", environment="staging", external_id="p3")
        running = generic_run("r3", "running", finished_at=None)
        serve_generic(fake, "p1", [[generic_run("r1"), generic_run("r2")], [running]])
        # One run the engine cannot store: it finished before it started.
        bad = generic_run("r5", started_at="2026-03-01T10:00:00Z",
                          finished_at="2026-03-01T09:00:00Z")  # fmt: skip
        serve_generic(fake, "p2", [[generic_run("r4"), bad]])
        fake.script(generic_path("p3"), None, *[Reply(503, {"error": "down"})] * 4)
        configured = sources(good, down, idle)
        first = ingest(engine, configured, clock=lambda: T, sleep=SleepRecorder())
        # Again: r3 has ended, the rest is unchanged.
        serve_generic(fake, "p1", [[generic_run("r1"), generic_run("r2")], [generic_run("r3")]])
        fake.script(generic_path("p3"), None, *[Reply(503, {"error": "down"})] * 4)
        second = ingest(engine, configured, clock=lambda: T, sleep=SleepRecorder())
    finally:
        fake.close()
    reports = (first, second)
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(good, down, idle))
    with serve(Settings(database_url=db_url, config=path), engine) as served:
        metrics = scrape(served)
    counts = ingested(metrics)
    # "good" had every run the two reports counted; "down" and "idle" none.
    for outcome in ("created", "updated", "unchanged", "skipped"):
        assert counts["good", outcome] == sum(getattr(r, f"runs_{outcome}") for r in reports)
        assert counts["down", outcome] == counts["idle", outcome] == 0
    assert (counts["good", "created"], counts["good", "updated"]) == (4, 1)
    assert (counts["good", "unchanged"], counts["good", "skipped"]) == (3, 2)
    walks = {
        (dict(labels)["source"], dict(labels)["result"]): value
        for labels, value in metrics.of("chm_source_ingestions_total").items()
    }
    # Two pipelines of "good" and one of "down", ingested twice.
    assert walks == {
        ("good", "succeeded"): 4, ("good", "failed"): 0,
        ("down", "succeeded"): 0, ("down", "failed"): 2,
        ("idle", "succeeded"): 0, ("idle", "failed"): 0,
    }  # fmt: skip
    assert sum(len(r.errors) for r in reports) == walks["down", "failed"]


def test_pages_committed_before_a_walk_is_abandoned_still_count(
    db_url: str, engine: Engine, api: TestClient, tmp_path: Path
) -> None:
    fake = FakeServer()
    try:
        feed = source(fake, name="feed")
        make_pipeline(api, make_client(api), platform="generic", external_id="p1")
        serve_generic(fake, "p1", [[generic_run("r1"), generic_run("r2")], [generic_run("r3")]])
        asked: list[int] = []

        def stop_after_the_first_page() -> bool:
            asked.append(1)
            return len(asked) > 1

        engine_run = IngestionEngine(
            engine, sources(feed), sleep=SleepRecorder(), clock=lambda: T,
            should_stop=stop_after_the_first_page,
        )  # fmt: skip
        report = engine_run.run()
    finally:
        fake.close()
    assert engine_run.abandoned and report.runs_created == 2
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(feed))
    with serve(Settings(database_url=db_url, config=path), engine) as served:
        metrics = scrape(served)
    assert ingested(metrics)["feed", "created"] == 2
    # Its outcome is not recorded: the walk neither succeeded nor failed.
    assert metrics.value("chm_source_ingestions_total", source="feed", result="succeeded") == 0


def test_migration_0012_starts_existing_sources_at_zero_and_downgrades(engine: Engine) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO ingestion_sources (name, consecutive_failures) VALUES ('old', 2)")
        )
    upgrade(engine)
    with engine.connect() as connection:
        row = connection.execute(sa.select(IngestionSource)).one()
    assert (row.name, row.consecutive_failures) == ("old", 2)
    assert (row.runs_created, row.runs_updated, row.runs_unchanged, row.runs_skipped) == (0,) * 4
    assert (row.ingestions_succeeded, row.ingestions_failed) == (0, 0)


# --- alert deliveries -------------------------------------------------------------------------


def test_delivery_failures_by_kind_equal_the_alerts_api(
    db_url: str, engine: Engine, api: TestClient
) -> None:
    """A real on_failure alert, its webhook delivery failing twice over a real
    socket before it is sent; a Slack one with no bot token (undeliverable);
    one to a kind no channel registers."""
    receiver = FakeServer()
    replies = [Reply(503, {"error": "busy"}), Reply(502, {"error": "bad gateway"})]

    def answer(_seen: Any) -> Reply:
        return replies.pop(0) if replies else Reply(200, {"ok": True})

    receiver.routes[("POST", "/hook")] = answer
    try:
        settings = Settings(database_url=db_url, alert_group_wait_s=0)
        client = make_client(api, "Acme")
        pipeline = make_pipeline(api, client)
        for destination in ("webhook:ops", "slack:#data", "carrier:pigeon"):
            make_rule(api, pipeline_id=pipeline["id"], destination=destination)
        make_run(api, pipeline, "failed", **run_at(1))
        destinations = Destinations([Destination(name="ops", kind="webhook", url_env="OPS_URL")])
        environ = {"OPS_URL": f"{receiver.url}/hook"}
        evaluate(engine, T, settings, destinations, environ)
        with httpx.Client() as http:
            for hours in range(3):  # past each retry's backoff
                send_due(engine, owner="test", now=T + timedelta(hours=hours), settings=settings,
                         destinations=destinations, environ=environ, http=http)  # fmt: skip
    finally:
        receiver.close()
    assert len(receiver.requests) == 3

    expected: Counter[str] = Counter()
    statuses: Counter[tuple[str, str]] = Counter()
    for alert in walk(api, "/alerts"):
        for delivery in alert["deliveries"]:
            kind = delivery["destination"].split(":")[0]
            kind = kind if kind in ("webhook", "slack") else "unknown"
            failed = delivery["attempts"] - (delivery["status"] == "sent")
            if failed:
                expected[kind] += failed
            statuses[kind, delivery["status"]] += 1
    metrics = scrape(api)
    failures = metrics.by("chm_alert_delivery_failures_total", "kind")
    assert {kind: value for kind, value in failures.items() if value} == expected == {"webhook": 2}
    # Every registered kind has its counter, 0 included.
    assert {"email", "pagerduty", "slack", "teams", "webhook"} <= set(failures)
    deliveries = {
        (dict(k)["kind"], dict(k)["status"]): v
        for k, v in metrics.of("chm_alert_deliveries").items()
    }
    assert deliveries == statuses == {
        ("webhook", "sent"): 1, ("slack", "undeliverable"): 1, ("unknown", "undeliverable"): 1,
    }  # fmt: skip


# --- HTTP requests ----------------------------------------------------------------------------


def requests_by_route(metrics: Scrape) -> dict[tuple[str, str, str], float]:
    return {
        (dict(k)["method"], dict(k)["route"], dict(k)["status"]): v
        for k, v in metrics.of("chm_http_requests_total").items()
    }


def grown(before: Scrape, after: Scrape) -> dict[tuple[str, str, str], float]:
    """The request counts that grew between two scrapes, by how much (the
    counters are this process's, shared by every test's application)."""
    old, new = requests_by_route(before), requests_by_route(after)
    return {key: value - old.get(key, 0) for key, value in new.items() if value != old.get(key, 0)}


def test_requests_are_counted_by_route_template_never_by_path(api: TestClient) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client)
    before = scrape(api)
    for _ in range(3):
        api.get(f"{API}/pipelines/{pipeline['id']}")
    api.get(f"{API}/pipelines/99999999")
    api.get(f"{API}/pipelines/not-an-id")
    api.post(f"{API}/clients", json={"name": ""})
    api.delete(f"{API}/runs/{pipeline['id']}")  # no DELETE on a run
    api.get(f"/no/such/{pipeline['id']}")
    api.request("BREW", f"{API}/clients")
    after = scrape(api)
    assert grown(before, after) == {
        ("GET", "/api/v1/pipelines/{pipeline_id}", "200"): 3,
        ("GET", "/api/v1/pipelines/{pipeline_id}", "404"): 2,
        ("POST", "/api/v1/clients", "422"): 1,
        ("DELETE", "/api/v1/runs/{run_id}", "405"): 1,
        ("GET", "unmatched", "404"): 1,
        ("other", "/api/v1/clients", "405"): 1,
        # the first scrape itself
        ("GET", "/metrics", "200"): 1,
    }
    durations = "chm_http_request_duration_seconds_count"
    labels = {"method": "GET", "route": "/api/v1/pipelines/{pipeline_id}"}
    assert after.value(durations, **labels) == (before.value(durations, **labels) or 0) + 5
    buckets = {
        dict(k)["le"]: v
        for k, v in after.of("chm_http_request_duration_seconds_bucket").items()
        if dict(k)["route"] == labels["route"] and dict(k)["method"] == "GET"
    }
    assert buckets["+Inf"] == after.value(durations, **labels)


# --- production, negotiation --------------------------------------------------------------------


@pytest.fixture
def production(db_url: str, engine: Engine) -> Iterator[TestClient]:
    settings = Settings(env=Environment.production, database_url=db_url, api_token=TOKEN)
    with serve(settings, engine) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"bearer {TOKEN}"}],
)  # fmt: skip
def test_in_production_metrics_need_the_token(
    production: TestClient, headers: dict[str, str]
) -> None:
    response = production.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "chm_" not in response.text


def test_in_production_the_token_opens_metrics_and_401s_are_counted(
    production: TestClient,
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    before = scrape(production, **bearer)
    production.get("/metrics")
    production.get(f"{API}/clients")
    production.get(f"{API}/clients", headers=bearer)
    after = scrape(production, **bearer)
    assert after.value("chm_database_up") == 1
    # Answered before routing, a 401 is still named by the route it asked for.
    assert grown(before, after) == {
        ("GET", "/metrics", "401"): 1,
        ("GET", "/metrics", "200"): 1,
        ("GET", "/api/v1/clients", "401"): 1,
        ("GET", "/api/v1/clients", "200"): 1,
    }


@pytest.mark.parametrize("version", ["abc", "1.x", "1.0.0=1"])
def test_an_accept_header_with_an_odd_version_gets_the_text_format(
    at_t: TestClient, version: str
) -> None:
    accept = f"application/openmetrics-text; version={version}"
    response = at_t.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_openmetrics_when_the_accept_header_asks(at_t: TestClient) -> None:
    make_client(at_t, "Acme")
    response = at_t.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    assert response.text.endswith("# EOF\n")
    metrics = parse(response.text, openmetrics_families)
    assert metrics.value("chm_alerts_firing", client="Acme") == 0
    assert metrics.value("chm_database_up") == 1
    # The same families as the text format.
    plain = scrape(at_t, Accept="text/plain")
    assert plain.value("chm_alerts_firing", client="Acme") == 0
    assert {name for name in plain.samples if name.startswith("chm_") and "http" not in name} <= {
        name for name in metrics.samples
    }


def test_a_database_that_does_not_answer_is_chm_database_up_0(
    at_t: TestClient, engine: Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE alert_deliveries"))
    metrics = scrape(at_t)
    assert metrics.value("chm_database_up") == 0
    assert metrics.value("chm_build_info", version=_version()) == 1
    assert metrics.of("chm_alerts_firing") == {}
    assert metrics.of("chm_http_requests_total") != {}


def _version() -> str:
    from chm import __version__

    return __version__


# --- bounded labels -------------------------------------------------------------------------------


def test_no_id_nor_name_of_a_pipeline_or_run_is_ever_a_label(
    at_t: TestClient, engine: Engine
) -> None:
    rule = make_rule(at_t, client_id=make_client(at_t, "Rules")["id"])
    ids: set[str] = set()
    names: set[str] = set()
    for index in range(3):
        client = make_client(at_t, f"Client {index}")
        for _ in range(10):
            pipeline = make_pipeline(at_t, client, platform=("airflow", "dbt")[index % 2])
            names.add(pipeline["name"])
            ids.add(str(pipeline["id"]))
            for day in (1, 2):
                run = make_run(at_t, pipeline, ("failed", "success")[day % 2], **run_at(day))
                ids.add(str(run["id"]))
                at_t.get(f"{API}/runs/{run['id']}")
            at_t.get(f"{API}/pipelines/{pipeline['id']}/runs")
            add_alert(engine, rule, pipeline, "firing")
    for alert in walk(at_t, "/alerts"):
        ids.add(str(alert["id"]))
        at_t.get(f"{API}/alerts/{alert['id']}")
    metrics = scrape(at_t)
    # CHM's own (python_info's version numbers are not ids).
    values = {value for name, samples in metrics.samples.items() if name.startswith("chm_")
              for labels in samples for _, value in labels}  # fmt: skip
    assert not values & (ids | names)
    routes = {dict(k)["route"] for k in metrics.of("chm_http_requests_total")}
    assert "/api/v1/runs/{run_id}" in routes and "/api/v1/alerts/{alert_id}" in routes
    assert all(route == "unmatched" or route.startswith("/") for route in routes)
    # 30 pipelines, 60 runs and 30 alerts: the inventory's series count the
    # clients, platforms and statuses, not the rows.
    assert len(metrics.of("chm_alerts_firing")) == 4  # the clients, "Rules" included
    assert len(metrics.of("chm_pipelines")) == 2 * (len(RUN_STATUSES) + 1)


# --- several server processes -------------------------------------------------------------------


def test_one_worker_drops_an_inherited_directory_several_get_a_fresh_private_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    with shared_metrics(1) as directory:
        assert directory is None and MULTIPROC_DIR_ENV not in os.environ
    with shared_metrics(2) as directory:
        assert directory is not None and directory != tmp_path
        assert os.environ[MULTIPROC_DIR_ENV] == str(directory)
        assert directory.is_dir() and list(directory.iterdir()) == []
        assert directory.stat().st_mode & 0o777 == 0o700
        (directory / "counter_1.db").write_bytes(b"x")
    assert not directory.exists()
    assert os.environ[MULTIPROC_DIR_ENV] == str(tmp_path)  # given back


def test_the_cli_imports_no_prometheus_client_before_serve_sets_its_directory() -> None:
    """prometheus_client chooses memory or files when first imported: ``chm``
    must not import it before ``shared_metrics`` has set the variable."""
    code = "import sys, chm.cli; print('prometheus_client' in sys.modules)"
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert answer.stdout.strip() == "False", answer.stderr
    assert multiprocess.__name__ == "chm.metrics.multiprocess"


def start_server(db_url: str, port: int, tmp: Path, workers: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    env.pop(MULTIPROC_DIR_ENV, None)
    env.update(CHM_DATABASE_URL=db_url, CHM_LOG_LEVEL="WARNING", TMPDIR=str(tmp))
    command = [sys.executable, "-m", "chm.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        assert server.poll() is None, server.communicate()[1]
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)


def clients_requests(metrics: Scrape) -> float:
    return sum(
        value
        for (method, route, _), value in requests_by_route(metrics).items()
        if (method, route) == ("GET", "/api/v1/clients")
    )


def answered_by_each(directory: Path) -> dict[str, float]:
    """The requests for /api/v1/clients each process has counted, by its file."""
    answered = {}
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)]):
            for sample in metric.samples:
                if sample.labels.get("route") == "/api/v1/clients" and sample.value:
                    answered[path.name] = answered.get(path.name, 0) + sample.value
    return answered


def test_every_scrape_of_two_server_processes_counts_the_requests_of_both(
    db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    server = start_server(db_url, port, tmp_path, workers=2)
    base = f"http://127.0.0.1:{port}"
    try:
        (directory,) = tmp_path.glob("chm-metrics-*")

        def one_request() -> None:
            # A new connection each: the kernel hands them to either process.
            with httpx.Client(base_url=base, timeout=10) as http:
                assert http.get(f"{API}/clients").status_code == 200

        made = 0
        deadline = time.monotonic() + 60
        # Until both processes have answered some (each counts in its own file).
        while len(answered_by_each(directory)) < 2:
            assert time.monotonic() < deadline, "one process answered every request"
            threads = [threading.Thread(target=one_request) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            made += len(threads)
            for _ in range(4):
                with httpx.Client(base_url=base, timeout=10) as http:
                    assert clients_requests(scrape(http)) >= made
        for _ in range(20):
            one_request()
            made += 1
            with httpx.Client(base_url=base, timeout=10) as http:
                counted = clients_requests(scrape(http))
            assert counted >= made
        assert counted == made  # nothing else asked for /api/v1/clients
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    # Removed with the server: a restart never adds an old run's counts.
    assert list(tmp_path.glob("chm-metrics-*")) == []
