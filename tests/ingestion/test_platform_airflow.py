"""Airflow (stable API v1 and Airflow 3's v2) against a local server speaking its documented shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from ingestion_fakes import FakeServer, Reply, SleepRecorder, source, sources
from platform_fakes import AirflowFake, airflow_run, snapshot

from chm.ingestion.connectors import Window
from chm.ingestion.connectors.airflow import AirflowConnector, AirflowSource
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

PASSWORD_ENV = {"AIRFLOW_PASSWORD": AirflowFake.password}


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def airflow_source(fake: FakeServer, version: str = "2", **fields: object) -> dict[str, object]:
    return source(fake, "airflow", api_version=version, username="chm",
                  password_env="AIRFLOW_PASSWORD", **fields)  # fmt: skip


def runs_of(api, pipeline) -> dict[str, dict]:
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 500}))
    return {run["external_run_id"]: run for run in page["items"]}


def test_v2_logs_in_for_a_jwt_and_keeps_paging_when_the_server_clamps_the_limit(
    api, engine, fake
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily", clamp=2)
    airflow.runs = [airflow_run(1), airflow_run(2, "failed"), airflow_run(3, "running"),
                    airflow_run(4, "queued"), airflow_run(5, "restarting")]  # fmt: skip
    report = ingest(engine, sources(airflow_source(fake)), environ=PASSWORD_ENV)

    assert (report.errors, report.pages, report.runs_created) == ([], 3, 5)
    pages = fake.hits(airflow.path)
    assert [(r.query["offset"], r.query["limit"]) for r in pages] == [("0", "100"), ("2", "100"),
                                                                     ("4", "100")]  # fmt: skip
    assert {r.headers["authorization"] for r in pages} == {"Bearer jwt-1-eyJhbGciOi"}
    assert airflow.tokens_issued == 1
    runs = runs_of(api, pipeline)
    first = runs[airflow.runs[0]["dag_run_id"]]
    assert (first["status"], first["source_status"], first["duration_seconds"]) == (
        "success", "success", 840.0,
    )  # fmt: skip
    assert first["started_at"] == "2026-03-02T02:00:00Z"
    assert first["finished_at"] == "2026-03-02T02:14:00Z"
    states = {run["source_status"]: run["status"] for run in runs.values()}
    assert states == {"success": "success", "failed": "failed", "running": "running",
                      "queued": "queued", "restarting": "unknown"}  # fmt: skip


def test_v2_asks_for_a_new_jwt_once_the_old_one_expires(api, engine, fake) -> None:
    make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily", clamp=1, expire_after=2)
    airflow.runs = [airflow_run(1), airflow_run(2), airflow_run(3)]
    report = ingest(engine, sources(airflow_source(fake)), environ=PASSWORD_ENV)
    assert (report.errors, report.pages, report.runs_created) == ([], 3, 3)
    assert airflow.tokens_issued == 2
    statuses = [
        (r.query["offset"], r.headers["authorization"][-14:]) for r in fake.hits(airflow.path)
    ]
    assert statuses == [("0", "jwt-1-eyJhbGciOi"[-14:]), ("1", "jwt-1-eyJhbGciOi"[-14:]),
                        ("2", "jwt-1-eyJhbGciOi"[-14:]), ("2", "jwt-2-eyJhbGciOi"[-14:])]  # fmt: skip


def test_v2_wrong_password_fails_the_pipeline_without_showing_it(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    AirflowFake(fake, "orders_daily")
    report = ingest(engine, sources(airflow_source(fake)), environ={"AIRFLOW_PASSWORD": "nope-123"})
    assert [e.pipeline_id for e in report.errors] == [pipeline["id"]]
    message = report.errors[0].message
    assert (
        "could not log in (POST http" in message
        and "HTTP 401" in message
        and "nope-123" not in message
    )


def test_v1_sends_basic_auth_orders_by_id_and_honours_retry_after(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily", version="1", clamp=1)
    airflow.runs = [airflow_run(1, version="1"), airflow_run(2, "failed", version="1")]
    fake.script(
        airflow.path, "1", Reply(429, {"detail": "Too many requests"}, {"Retry-After": "3"})
    )
    waits = SleepRecorder()
    report = ingest(engine, sources(airflow_source(fake, "1")), environ=PASSWORD_ENV, sleep=waits)
    assert (report.errors, report.runs_created, waits.waits) == ([], 2, [3.0])
    assert all(r.headers["authorization"].startswith("Basic ") for r in fake.hits(airflow.path))
    assert ("POST", "/auth/token") not in fake.routes
    assert {run["status"] for run in runs_of(api, pipeline).values()} == {"success", "failed"}


def test_a_ready_made_token_is_sent_as_bearer() -> None:
    entry = AirflowSource(name="a", platform="airflow", environment="prod",
                          base_url="https://composer.example", token_env="AIRFLOW_TOKEN")  # fmt: skip
    credentials = entry.credentials({"AIRFLOW_TOKEN": "tok-airflow-1"})
    assert credentials.headers == {"Authorization": "Bearer tok-airflow-1"}
    assert credentials.exchange is None


def test_the_request_filters_on_updated_at_when_incremental() -> None:
    entry = AirflowSource(name="a", platform="airflow", environment="prod",
                          base_url="https://airflow.example/", api_version="1")  # fmt: skip
    since = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    request = AirflowConnector(entry, "my dag", Window(since, since)).page_request("200")
    assert request.url == "https://airflow.example/api/v1/dags/my%20dag/dagRuns"
    assert request.params == {"limit": "100", "offset": "200", "order_by": "id",
                              "updated_at_gte": "2026-03-01T10:00:00Z"}  # fmt: skip


# Run 1 of ``airflow_run`` ran on 2026-03-02 from 02:00 to 02:14; it is cleared later that day.
CLEARED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def minutes(n: int) -> datetime:
    return CLEARED + timedelta(minutes=n)


def clock(n: int) -> Callable[[], datetime]:
    return lambda: minutes(n)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_cleared_run_is_shown_queued_then_running_then_with_its_new_outcome(
    api, engine, fake, version
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily", version=version)
    airflow.runs = [airflow_run(1, version=version)]
    run_id = airflow.runs[0]["dag_run_id"]
    feeds = sources(airflow_source(fake, version))

    def ingest_at(n: int):
        report = ingest(engine, feeds, environ=PASSWORD_ENV, clock=clock(n))
        assert report.errors == []
        return report, runs_of(api, pipeline)[run_id]

    _, first = ingest_at(-1)
    assert (first["status"], first["finished_at"]) == ("success", "2026-03-02T02:14:00Z")
    pages = [snapshot(airflow.runs)]

    airflow.clear(run_id, minutes(1))
    pages.append(snapshot(airflow.runs))
    report, queued = ingest_at(2)
    if version == "2":
        # The new queued_at shows a new attempt: the old outcome and its dates go.
        assert (report.runs_updated, queued["status"]) == (1, "queued")
        assert (queued["started_at"], queued["finished_at"], queued["duration_seconds"]) == (
            None, None, None,
        )  # fmt: skip
    else:
        # v1 shows no queued_at (nor any update time): a queued re-run cannot be
        # told from a snapshot older than the first run's end.
        assert (report.runs_unchanged, queued) == (1, first)

    airflow.start(run_id, minutes(3))
    pages.append(snapshot(airflow.runs))
    report, running = ingest_at(4)
    assert (report.runs_updated, running["status"]) == (1, "running")
    assert (running["started_at"], running["finished_at"]) == ("2026-03-02T09:03:00Z", None)

    airflow.finish(run_id, "failed", minutes(10))
    report, failed = ingest_at(11)
    assert (report.runs_updated, failed["status"]) == (1, "failed")
    assert (failed["started_at"], failed["finished_at"], failed["duration_seconds"]) == (
        "2026-03-02T09:03:00Z", "2026-03-02T09:10:00Z", 420.0,
    )  # fmt: skip
    assert failed["id"] == first["id"]

    report, replayed = ingest_at(12)
    assert (report.runs_updated, report.runs_unchanged, replayed) == (0, 1, failed)

    # Pages read before (the first run's, the re-run queued, then running) and
    # stored after never move the run back.
    for n, page in enumerate(pages, start=13):
        fake.script(airflow.path, "0", Reply(body={"dag_runs": page, "total_entries": 1}))
        report, after = ingest_at(n)
        assert (report.runs_updated, report.runs_unchanged, after) == (0, 1, failed)
