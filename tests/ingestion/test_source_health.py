"""Each source's ingestion health (``chm.ingestion.health``) and ``GET /healthz?detail=1``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import (
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
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from chm.app import create_app
from chm.core.redaction import register_secret
from chm.core.settings import Environment, Settings
from chm.core.timeutil import utcnow
from chm.ingestion.engine import ingest
from chm.ingestion.health import HealthDetail, SourceHealth, source_health
from chm.models import IngestionSource, WorkerProcess
from factories import make_client, make_pipeline

T = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
INTERVAL = 300.0
TICK = timedelta(microseconds=1)
TOKEN = "prod-token-9d3e1b"


# Each source its own environment: one source per platform, environment and client.
def pull(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "platform": "generic", "environment": name,
            "base_url": "http://127.0.0.1:9", "interval_s": INTERVAL, **fields}  # fmt: skip


def push(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "platform": "spark", "environment": name,
            "openlineage_namespace": f"ns-{name}", "token_env": "SPARK_KEY", **fields}  # fmt: skip


def record(engine: Engine, name: str, **columns: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.insert(IngestionSource).values({"consecutive_failures": 0, **columns, "name": name})
        )


def worker(engine: Engine, worker_id: str, heartbeat_at: datetime, **columns: Any) -> None:
    values = {"hostname": "host-a", "pid": 4242, "started_at": heartbeat_at - timedelta(hours=1)}
    with engine.begin() as connection:
        connection.execute(
            sa.insert(WorkerProcess).values(
                id=worker_id, heartbeat_at=heartbeat_at, **(values | columns)
            )
        )


def health(
    engine: Engine, *entries: dict[str, Any], now: datetime = T, **options: Any
) -> HealthDetail:
    with engine.connect() as connection:
        return source_health(connection, sources(*entries), now, lease_s=60, **options)


def one(engine: Engine, entry: dict[str, Any], now: datetime = T) -> SourceHealth:
    return health(engine, entry, now=now).sources[0]


# --- states and overdue -----------------------------------------------------------------


def test_each_state_in_the_files_order(engine: Engine) -> None:
    record(engine, "fine", last_attempt_at=T - timedelta(minutes=2),
           last_success_at=T - timedelta(minutes=2))  # fmt: skip
    record(engine, "broken", last_attempt_at=T - timedelta(minutes=1),
           last_success_at=T - timedelta(minutes=9), last_error="HTTP 503",
           last_error_at=T - timedelta(minutes=1), consecutive_failures=2)  # fmt: skip
    record(engine, "old", last_attempt_at=T, last_success_at=T - timedelta(hours=2))
    record(engine, "gone-from-the-file", last_attempt_at=T, last_success_at=T)
    detail = health(
        engine,
        pull("old"),
        pull("fine"),
        pull("broken"),
        pull("new"),
        pull("manual", interval_s=0),
        push("spark"),
    )
    assert [(s.name, s.state.value) for s in detail.sources] == [
        ("old", "stale"),
        ("fine", "ok"),
        ("broken", "failing"),
        ("new", "never"),
        ("manual", "unscheduled"),
        ("spark", "unscheduled"),
    ]
    assert detail.stale_sources == 1
    assert [s.scheduled for s in detail.sources] == [True, True, True, True, False, False]
    assert [s.pulls for s in detail.sources] == [True, True, True, True, True, False]
    broken = detail.sources[2]
    assert (broken.last_error, broken.consecutive_failures) == ("HTTP 503", 2)
    assert broken.overdue_s == 9 * 60 - INTERVAL
    assert detail.checked_at == T


def test_a_session_serves_as_well_as_a_connection(engine: Engine) -> None:
    record(engine, "fine", last_attempt_at=T, last_success_at=T)
    with Session(engine) as session:
        detail = source_health(session, sources(pull("fine")), T, lease_s=60)
    assert detail.sources[0].state.value == "ok"


@pytest.mark.parametrize(
    ("age", "state", "overdue_s"),
    [
        (3 * timedelta(seconds=INTERVAL) - TICK, "ok", 2 * INTERVAL - 0.000001),
        (3 * timedelta(seconds=INTERVAL), "stale", 2 * INTERVAL),
        (3 * timedelta(seconds=INTERVAL) + TICK, "stale", 2 * INTERVAL + 0.000001),
    ],
)
def test_stale_from_exactly_three_intervals_without_success(
    engine: Engine, age: timedelta, state: str, overdue_s: float
) -> None:
    record(engine, "feed", last_attempt_at=T - age, last_success_at=T - age)
    source = one(engine, pull("feed"))
    assert (source.state.value, source.overdue_s) == (state, pytest.approx(overdue_s, abs=1e-9))


@pytest.mark.parametrize(("age", "state"), [(2999, "failing"), (3000, "stale")])
def test_a_failing_source_is_flagged_stale_at_three_intervals_too(
    engine: Engine, age: int, state: str
) -> None:
    record(engine, "feed", last_attempt_at=T, last_success_at=T - timedelta(seconds=age),
           last_error="refused", last_error_at=T, consecutive_failures=7)  # fmt: skip
    assert one(engine, pull("feed", interval_s=1000)).state.value == state


@pytest.mark.parametrize(
    ("age", "overdue_s"),
    [
        (timedelta(0), 0.0),
        (timedelta(seconds=INTERVAL) - TICK, 0.0),
        (timedelta(seconds=INTERVAL), 0.0),
        (timedelta(seconds=INTERVAL + 1), 1.0),
        (-timedelta(hours=1), 0.0),  # a success after `now` (another host's clock)
    ],
)
def test_overdue_counts_from_the_last_success_plus_the_interval(
    engine: Engine, age: timedelta, overdue_s: float
) -> None:
    record(engine, "feed", last_attempt_at=T - age, last_success_at=T - age)
    source = one(engine, pull("feed"))
    assert (source.state.value, source.overdue_s) == ("ok", overdue_s)


def test_never_attempted_is_never_and_never_succeeded_counts_from_its_first_failure(
    engine: Engine,
) -> None:
    # Broken from day one: failing since 3 intervals (at 1000 s) and one tick.
    record(engine, "refused", last_attempt_at=T, last_error="HTTP 401", last_error_at=T,
           consecutive_failures=40, failing_since=T - timedelta(seconds=3000))  # fmt: skip
    record(engine, "young", last_attempt_at=T, last_error="HTTP 401", last_error_at=T,
           consecutive_failures=2, failing_since=T - timedelta(seconds=2999))  # fmt: skip
    # A pipeline-only error (no failure of the source counted) and no success yet.
    record(engine, "unknown-job", last_attempt_at=T, last_error="job 'x' not found",
           last_error_at=T, failing_since=T)  # fmt: skip
    detail = health(
        engine,
        pull("new"),
        pull("refused", interval_s=1000),
        pull("young", interval_s=1000),
        pull("unknown-job"),
    )
    new, refused, young, unknown = detail.sources
    assert (new.state.value, new.overdue_s, new.last_attempt_at) == ("never", None, None)
    assert new.consecutive_failures == 0
    assert (refused.state.value, refused.overdue_s) == ("stale", 2000.0)
    assert (young.state.value, young.overdue_s) == ("failing", 1999.0)
    assert (unknown.state.value, unknown.overdue_s) == ("failing", 0.0)
    assert detail.stale_sources == 1


@pytest.mark.parametrize(
    ("error_at", "failures", "state"),
    [
        (T - timedelta(minutes=2), 0, "ok"),  # an error before the last success
        (T - timedelta(minutes=1), 0, "ok"),  # in the same walk as the success
        (T - timedelta(minutes=1) + TICK, 0, "failing"),  # after it
        (T - timedelta(minutes=2), 1, "failing"),  # the source failed since
    ],
)
def test_failing_when_the_last_outcome_is_an_error_or_the_source_failed(
    engine: Engine, error_at: datetime, failures: int, state: str
) -> None:
    record(engine, "feed", last_attempt_at=T - timedelta(minutes=1),
           last_success_at=T - timedelta(minutes=1), last_error="boom", last_error_at=error_at,
           consecutive_failures=failures)  # fmt: skip
    source = one(engine, pull("feed"))
    assert (source.state.value, source.last_error) == (state, "boom")


def test_unscheduled_sources_are_never_due_nor_stale_but_may_fail(engine: Engine) -> None:
    long_ago = T - timedelta(days=400)
    record(engine, "manual", last_attempt_at=long_ago, last_success_at=long_ago)
    record(engine, "manual-broken", last_attempt_at=T, last_success_at=long_ago,
           last_error="HTTP 500", last_error_at=T, consecutive_failures=1)  # fmt: skip
    detail = health(
        engine,
        pull("manual", interval_s=0),
        pull("manual-broken", interval_s=0),
        pull("never-run", interval_s=0),
        push("spark"),
    )
    assert [(s.state.value, s.overdue_s) for s in detail.sources] == [
        ("unscheduled", None),
        ("failing", None),
        ("unscheduled", None),
        ("unscheduled", None),
    ]
    assert detail.stale_sources == 0
    assert detail.sources[0].interval_s == 0


# --- from the engine's own records ----------------------------------------------------------


def test_what_the_engine_records_is_shown(
    engine: Engine, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the engine ingests two sources over real sockets, one of them
    down (503 after every retry, echoing its token), and writes their records."""
    fake = FakeServer()
    try:
        monkeypatch.setenv("DOWN_TOKEN", "down-token-6a1f0e")
        good = source(fake, name="good", environment="prod", interval_s=INTERVAL)
        down = source(fake, name="down", environment="staging", interval_s=INTERVAL,
                      token_env="DOWN_TOKEN")  # fmt: skip
        client = make_client(api)
        make_pipeline(api, client, platform="generic", environment="prod", external_id="p1")
        make_pipeline(api, client, platform="generic", environment="staging", external_id="p2")
        serve_generic(fake, "p1", [[generic_run("r1")]])
        serve_generic(fake, "p2", [[generic_run("r2")]])
        echo = Reply(503, {"error": "token down-token-6a1f0e refused upstream"})
        fake.script(generic_path("p2"), None, *[echo] * 4)
        configured = sources(good, down)
        report = ingest(engine, configured, clock=lambda: T, sleep=SleepRecorder())
        assert (report.runs_created, len(report.errors)) == (1, 1)
    finally:
        fake.close()
    with engine.connect() as connection:
        now = T + 3 * timedelta(seconds=INTERVAL)
        detail = source_health(connection, configured, now - TICK, lease_s=60)
        later = source_health(connection, configured, now, lease_s=60)
    good_health, down_health = detail.sources
    assert (good_health.state.value, good_health.last_success_at) == ("ok", T)
    assert good_health.overdue_s == pytest.approx(2 * INTERVAL, abs=1e-5)
    assert down_health.state.value == "failing"
    assert down_health.overdue_s == pytest.approx(2 * INTERVAL, abs=1e-5)
    assert down_health.consecutive_failures == 1 and down_health.last_error_at == T
    # Never having succeeded, it turns stale 3 intervals after its first failure.
    assert later.sources[1].state.value == "stale"
    assert down_health.last_error is not None and "503" in down_health.last_error
    assert "down-token-6a1f0e" not in detail.model_dump_json()
    assert [s.state.value for s in later.sources] == ["stale", "stale"]
    assert later.stale_sources == 2


# --- one query ----------------------------------------------------------------------------


def count_statements(engine: Engine, entries: list[dict[str, Any]]) -> tuple[int, int]:
    """The queries of one call: those reading ingestion_sources, and all."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    with engine.connect() as connection:
        sa.event.listen(engine, "before_cursor_execute", before)
        try:
            source_health(connection, sources(*entries), T, lease_s=60)
        finally:
            sa.event.remove(engine, "before_cursor_execute", before)
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    return len([s for s in selects if "ingestion_sources" in s]), len(selects)


def test_one_query_reads_every_sources_record(engine: Engine) -> None:
    for index in range(30):
        record(engine, f"feed-{index}", last_attempt_at=T, last_success_at=T)
    one_source = count_statements(engine, [pull("feed-0")])
    thirty = count_statements(engine, [pull(f"feed-{index}") for index in range(30)])
    assert one_source == thirty == (1, 2)  # the records (one IN), the workers
    assert count_statements(engine, []) == (0, 1)


# --- workers ------------------------------------------------------------------------------


def test_workers_alive_are_those_with_a_current_heartbeat(engine: Engine) -> None:
    worker(engine, "w-alive", T - timedelta(seconds=60) + TICK, hostname="host-a", pid=11,
           started_at=T - timedelta(hours=2))  # fmt: skip
    worker(engine, "w-early", T, hostname="host-b", pid=12, started_at=T - timedelta(hours=3))
    worker(engine, "w-expired", T - timedelta(seconds=60))  # the lease ran out just now
    worker(engine, "w-killed", T - timedelta(hours=20))
    worker(engine, "w-history", T - timedelta(days=1, minutes=2))
    worker(engine, "w-stopped", T, stopped_at=T - timedelta(seconds=1))
    detail = health(engine)
    assert [(w.id, w.hostname, w.pid) for w in detail.workers] == [
        ("w-early", "host-b", 12),
        ("w-alive", "host-a", 11),
    ]
    assert detail.workers[0].started_at == T - timedelta(hours=3)
    assert detail.workers[1].heartbeat_at == T - timedelta(seconds=60) + TICK
    assert detail.workers_lost == 2


# --- secrets and shape -----------------------------------------------------------------------


def test_no_secret_of_the_environment_is_ever_shown(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEED_TOKEN", "feed-secret-7f3a9c")
    monkeypatch.setenv("SPARK_KEY", "spark-key-2b8e4d")
    register_secret("api-token-c4d1e8")
    # Stored before today's redaction rules: the secrets are in the text.
    record(engine, "feed", last_attempt_at=T, last_error_at=T, consecutive_failures=1,
           last_error="feed-secret-7f3a9c rejected; spark-key-2b8e4d; api-token-c4d1e8; "
                      "Authorization: Bearer abcdef123456")  # fmt: skip
    detail = health(engine, pull("feed", token_env="FEED_TOKEN"), push("spark"))
    shown = detail.model_dump_json()
    for secret in ("feed-secret-7f3a9c", "spark-key-2b8e4d", "api-token-c4d1e8", "abcdef123456"):
        assert secret not in shown
    assert detail.sources[0].last_error is not None
    assert detail.sources[0].last_error.startswith("[REDACTED] rejected")


def test_the_json_shape(engine: Engine) -> None:
    record(engine, "feed", last_attempt_at=T, last_success_at=T - timedelta(seconds=1),
           last_error="boom", last_error_at=T, consecutive_failures=1)  # fmt: skip
    worker(engine, "w1", T)
    body = health(engine, pull("feed", client="Acme")).model_dump(mode="json")
    assert body == {
        "checked_at": "2026-03-15T12:00:00Z",
        "sources": [
            {
                "name": "feed",
                "platform": "generic",
                "environment": "feed",
                "client": "Acme",
                "pulls": True,
                "interval_s": 300.0,
                "scheduled": True,
                "state": "failing",
                "last_attempt_at": "2026-03-15T12:00:00Z",
                "last_success_at": "2026-03-15T11:59:59Z",
                "last_error": "boom",
                "last_error_at": "2026-03-15T12:00:00Z",
                "consecutive_failures": 1,
                "overdue_s": 0.0,
            }
        ],
        "stale_sources": 0,
        "sources_error": None,
        "workers": [
            {
                "id": "w1",
                "hostname": "host-a",
                "pid": 4242,
                "started_at": "2026-03-15T11:00:00Z",
                "heartbeat_at": "2026-03-15T12:00:00Z",
            }
        ],
        "workers_lost": 0,
    }


# --- GET /healthz?detail=1 -----------------------------------------------------------------


def serve(settings: Settings, engine: Engine) -> TestClient:
    return TestClient(create_app(settings, engine), raise_server_exceptions=False)


@pytest.fixture
def sources_file(tmp_path: Path) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(
        toml_text(
            pull("fresh", interval_s=3600, token_env="FEED_TOKEN"),
            pull("stale", interval_s=60),
            push("spark"),
        )
    )
    return path


@pytest.fixture
def detail_api(db_url: str, engine: Engine, sources_file: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, config=sources_file, worker_lease_s=3600)
    with serve(settings, engine) as client:
        yield client


@pytest.mark.parametrize("query", ["", "?detail=0", "?detail=false"])
def test_plain_healthz_is_unchanged(detail_api: TestClient, backend: str, query: str) -> None:
    response = detail_api.get(f"/healthz{query}")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": backend}


@pytest.mark.parametrize("flag", ["1", "true"])
def test_detail_shows_each_source_and_stays_200_when_one_is_stale(
    detail_api: TestClient,
    engine: Engine,
    backend: str,
    flag: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEED_TOKEN", "feed-secret-55e0aa")
    now = utcnow()
    record(engine, "fresh", last_attempt_at=now, last_success_at=now)
    # Long ago whatever today is: stale for good.
    past = datetime(2026, 1, 1, tzinfo=UTC)
    record(engine, "stale", last_attempt_at=past, last_success_at=past,
           last_error="HTTP 503 from the feed", last_error_at=past)  # fmt: skip
    worker(engine, "w1", now, hostname="box", pid=7)
    response = detail_api.get(f"/healthz?detail={flag}")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", backend)
    assert [(s["name"], s["state"]) for s in body["sources"]] == [
        ("fresh", "ok"),
        ("stale", "stale"),
        ("spark", "unscheduled"),
    ]
    assert body["stale_sources"] == 1 and body["sources_error"] is None
    assert body["sources"][1]["last_error"] == "HTTP 503 from the feed"
    assert body["sources"][1]["overdue_s"] > 60
    assert [(w["id"], w["hostname"], w["pid"]) for w in body["workers"]] == [("w1", "box", 7)]
    assert body["workers_lost"] == 0
    assert "feed-secret-55e0aa" not in response.text


def test_detail_without_a_sources_file_says_why(db_url: str, engine: Engine, backend: str) -> None:
    settings = Settings(database_url=db_url, config=None)
    with serve(settings, engine) as client:
        response = client.get("/healthz?detail=1")
    assert response.status_code == 200
    body = response.json()
    assert body["sources"] == [] and body["stale_sources"] == 0
    assert body["sources_error"].startswith("CHM_CONFIG is not set")
    assert (body["status"], body["database"], body["workers"]) == ("ok", backend, [])


def test_detail_with_an_invalid_sources_file_names_the_problem(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(toml_text(pull("feed", interval_s=-5)))
    with serve(Settings(database_url=db_url, config=path), engine) as client:
        response = client.get("/healthz?detail=1")
    assert response.status_code == 200
    body = response.json()
    assert body["sources"] == []
    assert str(path) in body["sources_error"] and "interval_s" in body["sources_error"]


def test_a_malformed_detail_flag_is_a_422_problem(detail_api: TestClient) -> None:
    response = detail_api.get("/healthz?detail=maybe")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "detail"


def test_detail_on_a_schema_behind_the_code_is_a_503_not_a_500(
    detail_api: TestClient, engine: Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE ingestion_sources"))
    assert detail_api.get("/healthz").status_code == 200
    response = detail_api.get("/healthz?detail=1")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


@pytest.fixture
def prod_api(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "production.toml"
    path.write_text(toml_text(pull("feed", chm_env="production")))
    settings = Settings(
        env=Environment.production, database_url=db_url, api_token=TOKEN, config=path
    )
    with serve(settings, engine) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
     {"Authorization": f"Bearer {TOKEN}x"}],
)  # fmt: skip
def test_in_production_the_detail_needs_the_token(
    prod_api: TestClient, headers: dict[str, str]
) -> None:
    response = prod_api.get("/healthz?detail=1", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text and "sources" not in response.json()


def test_in_production_the_token_opens_the_detail_and_plain_healthz_stays_open(
    prod_api: TestClient, backend: str
) -> None:
    assert prod_api.get("/healthz").json() == {"status": "ok", "database": backend}
    response = prod_api.get("/healthz?detail=1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    body = response.json()
    assert [(s["name"], s["state"]) for s in body["sources"]] == [("feed", "never")]
    assert body["sources_error"] is None
    assert TOKEN not in response.text


def test_in_production_without_a_configured_token_the_detail_stays_closed(
    db_url: str, engine: Engine
) -> None:
    settings = Settings(env=Environment.production, database_url=db_url, api_token=None)
    with serve(settings, engine) as client:
        assert client.get("/healthz?detail=1").status_code == 401
        assert (
            client.get("/healthz?detail=1", headers={"Authorization": "Bearer "}).status_code == 401
        )
        assert client.get("/healthz").status_code == 200
