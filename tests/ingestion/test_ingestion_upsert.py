"""Idempotent ingestion from the generic feed, on both databases (US-2, FR-012..FR-014, SC-002)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, sources
from sqlalchemy import Engine

from chm.ingestion.engine import ingest
from chm.ingestion.store import PlannerStatistics
from chm.models import Run
from factories import API, make_client, make_pipeline, make_run, ok


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def generic_pipeline(
    api: TestClient, external_id: str = "orders-ext", **fields: Any
) -> dict[str, Any]:
    client = fields.pop("client", None) or make_client(api)
    return make_pipeline(api, client, platform="generic", external_id=external_id, **fields)


def runs_of(api: TestClient, pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 500}))
    return {run["external_run_id"]: run for run in page["items"]}


def run_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(Run))


def totals(report: Any) -> int:
    return report.runs_created + report.runs_updated + report.runs_unchanged + report.runs_skipped


def test_three_replays_create_no_duplicates_and_change_nothing(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    pages = [[generic_run(f"r{page}-{i}") for i in range(4)] for page in range(3)]
    serve_generic(fake, "orders-ext", pages)
    feeds = sources(source(fake))

    first = ingest(engine, feeds)
    assert (first.pipelines, first.pages, first.runs_created, first.errors) == (1, 3, 12, [])
    stored = runs_of(api, pipeline)
    assert run_count(engine) == 12

    for _ in range(3):
        replay = ingest(engine, feeds)
        assert replay.runs_created == 0
        assert replay.runs_updated == 0
        assert replay.runs_unchanged == 12
        assert run_count(engine) == 12
    again = runs_of(api, pipeline)
    remembered = ok(api.get(f"{API}/pipelines/{pipeline['id']}"))
    assert remembered["last_ingested_at"] is not None
    assert remembered["last_ingestion_error"] is None
    assert remembered["updated_at"] == pipeline["updated_at"]
    for key, run in stored.items():
        assert again[key]["updated_at"] == run["updated_at"]
        assert again[key]["ingested_at"] == run["ingested_at"]
        assert again[key]["id"] == run["id"]


def test_a_run_seen_running_then_success_is_updated_in_place(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    running = generic_run("r-1", "running", finished_at=None, metrics=None)
    pages = [[running]]
    serve_generic(fake, "orders-ext", pages)
    feeds = sources(source(fake))
    ingest(engine, feeds)
    before = runs_of(api, pipeline)["r-1"]
    assert (before["status"], before["finished_at"], before["duration_seconds"]) == (
        "running", None, None,
    )  # fmt: skip

    pages[0] = [generic_run("r-1", "Succeeded", metrics={"rows": 42})]
    report = ingest(engine, feeds)
    assert (report.runs_created, report.runs_updated, report.runs_unchanged) == (0, 1, 0)
    after = runs_of(api, pipeline)["r-1"]
    assert after["id"] == before["id"]
    assert after["status"] == "success"
    assert after["source_status"] == "Succeeded"
    assert after["finished_at"] == "2026-03-01T10:05:00Z"
    assert after["duration_seconds"] == 300.0
    assert after["metrics"] == {"rows": 42}
    assert after["updated_at"] > before["updated_at"]
    assert after["ingested_at"] > before["ingested_at"]
    assert after["created_at"] == before["created_at"]
    assert run_count(engine) == 1


def test_partial_overlap_across_pages_stays_duplicate_free(api, engine, fake) -> None:
    generic_pipeline(api)
    pages = [
        [generic_run("a"), generic_run("b"), generic_run("c")],
        [generic_run("c"), generic_run("d")],
        [generic_run("d"), generic_run("e"), generic_run("a")],
    ]
    serve_generic(fake, "orders-ext", pages)
    report = ingest(engine, sources(source(fake)))
    assert report.runs_created == 5
    assert report.runs_unchanged == 3
    assert totals(report) == 8
    assert run_count(engine) == 5


def test_a_key_repeated_within_one_page_is_stored_once_at_its_latest_state(
    api, engine, fake
) -> None:
    pipeline = generic_pipeline(api)
    page = [generic_run("r", "running", finished_at=None), generic_run("r", "failed", error="boom")]
    serve_generic(fake, "orders-ext", [page])
    report = ingest(engine, sources(source(fake)))
    assert (report.runs_created, report.runs_unchanged) == (1, 1)
    run = runs_of(api, pipeline)["r"]
    assert (run["status"], run["error_message"]) == ("failed", "boom")


def test_runs_missing_timestamps_are_recorded_and_a_source_duration_is_kept(
    api, engine, fake
) -> None:
    pipeline = generic_pipeline(api)
    bare = {"run_id": "bare", "status": "queued"}
    only_end = {"run_id": "only-end", "status": "ok", "finished_at": "2026-03-02T08:00:00+02:00"}
    timed = generic_run("timed", duration_seconds=12.5)
    serve_generic(fake, "orders-ext", [[bare, only_end, timed]])
    report = ingest(engine, sources(source(fake)))
    assert (report.runs_created, report.runs_skipped) == (3, 0)
    runs = runs_of(api, pipeline)
    assert runs["bare"]["started_at"] is None and runs["bare"]["finished_at"] is None
    assert runs["bare"]["metrics"] == {} and runs["bare"]["duration_seconds"] is None
    assert runs["only-end"]["finished_at"] == "2026-03-02T06:00:00Z"
    assert runs["only-end"]["event_at"] == "2026-03-02T06:00:00Z"
    assert runs["only-end"]["status"] == "success"
    assert runs["timed"]["duration_seconds"] == 12.5  # the source's, not finished - started


def test_unknown_status_words_become_unknown_and_keep_the_word(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    serve_generic(
        fake, "orders-ext", [[generic_run("x", "Exploded-Sideways"), generic_run("y", " OK ")]]
    )
    ingest(engine, sources(source(fake)))
    runs = runs_of(api, pipeline)
    assert (runs["x"]["status"], runs["x"]["source_status"]) == ("unknown", "Exploded-Sideways")
    assert (runs["y"]["status"], runs["y"]["source_status"]) == ("success", "OK")


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("succeeded", "success"), ("SUCCESS", "success"), ("completed", "success"), ("ok", "success"),
        ("failed", "failed"), ("Failure", "failed"), ("error", "failed"),
        ("running", "running"), ("in_progress", "running"), ("started", "running"),
        ("queued", "queued"), ("pending", "queued"), ("scheduled", "queued"), ("waiting", "queued"),
        ("cancelled", "cancelled"), ("canceled", "cancelled"), ("aborted", "cancelled"),
        ("skipped", "skipped"), ("paused", "unknown"),
    ],
)  # fmt: skip
def test_generic_status_words_follow_the_contract(word, status) -> None:
    from chm.ingestion.normalize import GENERIC_STATUS, map_status

    assert map_status(word, GENERIC_STATUS).value == status


def test_invalid_runs_are_skipped_and_counted_while_the_others_are_stored(
    api, engine, fake
) -> None:
    pipeline = generic_pipeline(api)
    page = [
        generic_run("good-1"),
        {"status": "failed"},  # no run_id
        {"run_id": "no-status"},
        generic_run("bad-time", started_at="yesterday-ish"),
        generic_run(
            "backwards", started_at="2026-03-01T10:00:00Z", finished_at="2026-03-01T09:00:00Z"
        ),
        generic_run("bad-metrics", metrics=[1, 2]),
        "not an object",
        generic_run("good-2"),
    ]
    serve_generic(fake, "orders-ext", [page])
    report = ingest(engine, sources(source(fake)))
    assert (report.runs_created, report.runs_skipped, report.errors) == (2, 6, [])
    assert set(runs_of(api, pipeline)) == {"good-1", "good-2"}
    after = ok(api.get(f"{API}/pipelines/{pipeline['id']}"))
    assert after["last_ingestion_error"] is None and after["last_ingested_at"] is not None


def test_a_stale_running_snapshot_never_regresses_a_finished_run(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    pages = [[generic_run("r", "failed", error="disk full")]]
    serve_generic(fake, "orders-ext", pages)
    feeds = sources(source(fake))
    ingest(engine, feeds)
    stored = runs_of(api, pipeline)["r"]

    pages[0] = [generic_run("r", "running", started_at=None, finished_at=None)]
    report = ingest(engine, feeds)
    assert (report.runs_updated, report.runs_unchanged) == (0, 1)
    assert runs_of(api, pipeline)["r"] == stored


def test_a_newer_source_update_time_shows_a_real_restart(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    pages = [[generic_run("r", "failed", updated_at="2026-03-01T10:05:00Z")]]
    serve_generic(fake, "orders-ext", pages)
    feeds = sources(source(fake))
    ingest(engine, feeds)

    # Older than what is stored: stale even though it is terminal.
    pages[0] = [generic_run("r", "success", updated_at="2026-03-01T10:04:00Z")]
    assert ingest(engine, feeds).runs_unchanged == 1
    assert runs_of(api, pipeline)["r"]["status"] == "failed"

    pages[0] = [
        generic_run("r", "running", started_at="2026-03-01T11:00:00Z", finished_at=None,
                    updated_at="2026-03-01T11:00:01Z")
    ]  # fmt: skip
    assert ingest(engine, feeds).runs_updated == 1
    run = runs_of(api, pipeline)["r"]
    assert (run["status"], run["started_at"], run["finished_at"]) == (
        "running", "2026-03-01T11:00:00Z", None,
    )  # fmt: skip


def test_started_at_is_never_lost_once_known(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    pages = [[generic_run("r", "running", finished_at=None)]]
    serve_generic(fake, "orders-ext", pages)
    feeds = sources(source(fake))
    ingest(engine, feeds)

    pages[0] = [{"run_id": "r", "status": "succeeded", "finished_at": "2026-03-01T10:07:30Z"}]
    assert ingest(engine, feeds).runs_updated == 1
    run = runs_of(api, pipeline)["r"]
    assert run["started_at"] == "2026-03-01T10:00:00Z"
    assert run["finished_at"] == "2026-03-01T10:07:30Z"
    assert run["duration_seconds"] == 450.0


def test_payload_is_the_source_object_with_secrets_redacted(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    run = generic_run(
        "r",
        error="connect to postgres://etl:hunter2@db/prod failed",
        config={"db_password": "hunter2", "nested": [{"apiKey": "k-123", "host": "db"}]},
        log="sent Authorization: Bearer abcdef123456",
    )
    serve_generic(fake, "orders-ext", [[run]])
    ingest(engine, sources(source(fake)))
    stored = runs_of(api, pipeline)["r"]
    payload = stored["source_payload"]
    assert payload["config"]["db_password"] == "[REDACTED]"
    assert payload["config"]["nested"] == [{"apiKey": "[REDACTED]", "host": "db"}]
    assert payload["log"] == "sent Authorization: Bearer [REDACTED]"
    assert payload["run_id"] == "r" and payload["status"] == "succeeded"
    assert "hunter2" not in str(stored)
    assert stored["error_message"] == "connect to postgres://[REDACTED]@db/prod failed"


def test_a_manual_run_with_the_same_identity_is_updated_not_duplicated(api, engine, fake) -> None:
    pipeline = generic_pipeline(api)
    manual = make_run(api, pipeline, "running", external_run_id="r-7")
    serve_generic(fake, "orders-ext", [[generic_run("r-7")]])
    report = ingest(engine, sources(source(fake)))
    assert (report.runs_created, report.runs_updated) == (0, 1)
    run = runs_of(api, pipeline)["r-7"]
    assert run["id"] == manual["id"] and run["status"] == "success"
    assert run["ingested_at"] is not None


def test_only_active_pipelines_with_an_external_id_and_a_source_are_ingested(
    api, engine, fake
) -> None:
    acme = make_client(api, "Acme")
    ingested = generic_pipeline(api, "ext-a", client=acme)
    generic_pipeline(api, "ext-b", client=acme, is_active=False)
    make_pipeline(api, acme, platform="generic")  # no external id
    generic_pipeline(api, "ext-c", client=acme, environment="dev")  # no dev source
    gone = make_client(api, "Gone")
    generic_pipeline(api, "ext-d", client=gone)
    ok(api.delete(f"{API}/clients/{gone['id']}"))
    for external_id in ("ext-a", "ext-b", "ext-c", "ext-d"):
        serve_generic(fake, external_id, [[generic_run(f"{external_id}-1")]])

    report = ingest(engine, sources(source(fake)))
    assert (report.pipelines, report.runs_created, report.errors) == (1, 1, [])
    assert list(runs_of(api, ingested)) == ["ext-a-1"]
    asked = {seen.path for seen in fake.requests}
    assert asked == {"/pipelines/ext-a/runs"}


def test_a_client_specific_source_takes_precedence(api, engine, fake) -> None:
    other = FakeServer()
    try:
        acme, beta = make_client(api, "Acme"), make_client(api, "Beta")
        acme_pipeline = generic_pipeline(api, "p-1", client=acme)
        beta_pipeline = generic_pipeline(api, "p-1", client=beta)
        serve_generic(fake, "p-1", [[generic_run("from-shared")]])
        serve_generic(other, "p-1", [[generic_run("from-acme")]])
        feeds = sources(source(fake), source(other, name="acme-own", client="ACME"))
        report = ingest(engine, feeds)
        assert report.pipelines == 2
        assert list(runs_of(api, acme_pipeline)) == ["from-acme"]
        assert list(runs_of(api, beta_pipeline)) == ["from-shared"]
    finally:
        other.close()


def test_client_and_pipeline_filters_narrow_the_ingestion(api, engine, fake) -> None:
    acme, beta = make_client(api, "Acme"), make_client(api, "Beta")
    first = generic_pipeline(api, "p-1", client=acme)
    second = generic_pipeline(api, "p-2", client=acme)
    generic_pipeline(api, "p-3", client=beta)
    for external_id in ("p-1", "p-2", "p-3"):
        serve_generic(fake, external_id, [[generic_run(f"{external_id}-run")]])
    feeds = sources(source(fake))
    assert ingest(engine, feeds, pipeline_id=int(first["id"])).pipelines == 1
    assert ingest(engine, feeds, client_id=int(acme["id"])).pipelines == 2
    assert list(runs_of(api, second)) == ["p-2-run"]
    assert run_count(engine) == 2


@pytest.mark.postgres_only
def test_a_large_ingestion_refreshes_the_postgresql_statistics(
    api, engine, fake, monkeypatch
) -> None:
    monkeypatch.setattr(PlannerStatistics, "MIN_ROWS", 10)
    generic_pipeline(api)
    serve_generic(fake, "orders-ext", [[generic_run(f"r{i}") for i in range(25)]])
    known = sa.text("SELECT reltuples FROM pg_class WHERE oid = 'runs'::regclass")
    with engine.connect() as connection:
        assert connection.scalar(known) <= 0  # never analyzed
    assert ingest(engine, sources(source(fake))).runs_created == 25
    with engine.connect() as connection:
        assert connection.scalar(known) == 25
