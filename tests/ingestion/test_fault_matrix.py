"""The ingestion fault matrix (issue 5 §2, FR-015): every fault a partner feed
can throw, in one place, against fake servers over real sockets.

In every case two pipelines share one source and one ingestion: the *victim*,
whose feed (two pages: ``v1, v2`` then ``v3``) meets the fault on its second
page, and a *bystander* with a healthy feed. Each case states what the victim
ends with in the database and in the report; the bystander is always ingested
whole, the victim's first page always stays committed, and no case may run
past a hard time limit (a hang fails the test instead of the suite). Waits
asked by ``Retry-After`` go to a recorder, not to the clock; timeouts are real
and small.

A ``transient`` fault is one bad answer followed by the good page; a
``persistent`` one answers every try (the first and ``max_retries`` more).
"""

from __future__ import annotations

import email.utils
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from ingestion_fakes import (
    FakeServer,
    Reply,
    SleepRecorder,
    generic_path,
    generic_run,
    serve_adf,
    serve_databricks,
    serve_generic,
    source,
    sources,
)
from sqlalchemy import Engine

from chm.ingestion.engine import ingest
from chm.ingestion.report import IngestionReport
from factories import make_client, make_pipeline

HARD_LIMIT_S = 30.0
LONGER_LIMITS_S = {"test_a_very_large_page_is_stored_whole": 120.0}
TIMEOUT_S = 0.3
RETRIES = 2
ATTEMPTS = RETRIES + 1
VICTIM_PAGES = [[generic_run("v1"), generic_run("v2")], [generic_run("v3")]]
PAGE_2 = "gvictim-1"  # the cursor of the victim's second page (ingestion_fakes)
PAGE_2_BODY = {"runs": [generic_run("v3")], "next_cursor": None}
ALL_VICTIM_RUNS = {"v1", "v2", "v3"}
FIRST_PAGE_ONLY = {"v1", "v2"}


@pytest.fixture(autouse=True)
def hard_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail (not hang) a case that runs past its limit: SIGALRM interrupts any wait."""
    limit = LONGER_LIMITS_S.get(request.node.originalname, HARD_LIMIT_S)

    def expire(_signum: int, _frame: Any) -> None:
        pytest.fail(f"the ingestion hung: still running after {limit:g}s", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@dataclass
class Outcome:
    report: IngestionReport
    victim: set[str]
    bystander: set[str]
    waits: list[float]
    elapsed: float
    victim_error: str | None
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)


def stored_runs(engine: Engine, pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT external_run_id, status, source_status, source_payload FROM runs "
                "WHERE pipeline_id = :id"
            ),
            {"id": int(pipeline["id"])},
        ).mappings()
        return {row["external_run_id"]: dict(row) for row in rows}


def pipeline_error(engine: Engine, pipeline: dict[str, Any]) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(
            sa.text("SELECT last_ingestion_error FROM pipelines WHERE id = :id"),
            {"id": int(pipeline["id"])},
        )


def run_matrix_case(
    api: Any,
    engine: Engine,
    fake: FakeServer,
    *,
    victim_pages: list[list[dict[str, Any]]] | None = None,
    page_2: tuple[Reply, ...] = (),
    **source_fields: Any,
) -> Outcome:
    """One ingestion of the victim and the bystander; ``page_2`` are the answers
    the victim's second page gives before its normal one."""
    client = make_client(api)
    victim = make_pipeline(api, client, platform="generic", external_id="victim")
    bystander = make_pipeline(api, client, platform="generic", external_id="bystander")
    serve_generic(fake, "victim", VICTIM_PAGES if victim_pages is None else victim_pages)
    serve_generic(fake, "bystander", [[generic_run("b1")]])
    fake.script(generic_path("victim"), PAGE_2, *page_2)
    feed = source(fake, timeout_s=TIMEOUT_S, max_retries=RETRIES) | source_fields
    waits = SleepRecorder()
    started = time.monotonic()
    report = ingest(engine, sources(feed), sleep=waits)
    elapsed = time.monotonic() - started

    # Whatever the victim met: one source, one run, and the bystander whole.
    assert report.pipelines == 2
    assert [e.pipeline_id for e in report.errors] in ([], [victim["id"]])
    assert set(stored_runs(engine, bystander)) == {"b1"}
    assert pipeline_error(engine, bystander) is None
    victim_error = report.errors[0].message if report.errors else None
    assert pipeline_error(engine, victim) == victim_error
    stored = stored_runs(engine, victim)
    return Outcome(report, set(stored), {"b1"}, waits.waits, elapsed, victim_error, stored)


def assert_recovered(outcome: Outcome, runs: set[str] = ALL_VICTIM_RUNS) -> None:
    assert outcome.victim_error is None, outcome.victim_error
    assert outcome.victim == runs
    assert outcome.report.runs_created == len(runs) + 1


def assert_failed(outcome: Outcome, message: str, runs: set[str] = FIRST_PAGE_ONLY) -> None:
    assert outcome.victim_error is not None, "the victim should have failed"
    assert outcome.victim_error == f"source 'generic-prod': {message}"
    assert outcome.victim == runs


def http_date(seconds_from_now: float) -> str:
    return email.utils.format_datetime(
        datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True
    )


# -- 429 storms ---------------------------------------------------------------


def test_a_429_storm_with_retry_after_seconds_is_waited_out(api, engine, fake) -> None:
    storm = [Reply(429, {"error": "rate limited"}, {"Retry-After": "2"})] * 5
    outcome = run_matrix_case(api, engine, fake, page_2=tuple(storm), max_retries=5)
    assert_recovered(outcome)
    assert outcome.waits == [2.0] * 5


def test_a_429_storm_with_retry_after_as_an_http_date_is_waited_out(api, engine, fake) -> None:
    storm = [Reply(429, {}, {"Retry-After": http_date(20)}) for _ in range(4)]
    outcome = run_matrix_case(api, engine, fake, page_2=tuple(storm), max_retries=5)
    assert_recovered(outcome)
    assert len(outcome.waits) == 4
    # An HTTP date has whole seconds: the wait is what remains of the 20 s.
    assert all(15 <= wait <= 20 for wait in outcome.waits), outcome.waits


def test_a_429_storm_longer_than_the_retries_fails_the_pipeline_alone(api, engine, fake) -> None:
    storm = [Reply(429, {}, {"Retry-After": "1"})] * 10
    outcome = run_matrix_case(api, engine, fake, page_2=tuple(storm), max_retries=5)
    assert_failed(outcome, "gave up after 6 attempts: HTTP 429")
    assert outcome.waits == [1.0] * 5
    assert len(fake.hits(generic_path("victim"))) == 1 + 6


def test_a_429_storm_mixing_dates_and_seconds_with_an_unreadable_value(api, engine, fake) -> None:
    storm = (
        Reply(429, {}, {"Retry-After": "3"}),
        Reply(429, {}, {"Retry-After": http_date(10)}),
        Reply(429, {}, {"Retry-After": "soon-ish"}),  # unreadable: the backoff applies
    )
    outcome = run_matrix_case(api, engine, fake, page_2=storm, max_retries=5)
    assert_recovered(outcome)
    assert outcome.waits[0] == 3.0 and 5 <= outcome.waits[1] <= 10
    assert 0 < outcome.waits[2] <= 0.01


# -- server errors --------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_transient_server_error_is_retried(api, engine, fake, status) -> None:
    outcome = run_matrix_case(api, engine, fake, page_2=(Reply(status, b"upstream trouble"),))
    assert_recovered(outcome)
    assert len(outcome.waits) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_persistent_server_error_fails_the_pipeline_alone(api, engine, fake, status) -> None:
    answers = (Reply(status, b"<html>Bad gateway</html>"),) * ATTEMPTS
    outcome = run_matrix_case(api, engine, fake, page_2=answers)
    assert_failed(outcome, f"gave up after {ATTEMPTS} attempts: HTTP {status}")
    assert len(outcome.waits) == RETRIES


# -- broken bodies --------------------------------------------------------------


def reset_mid_body() -> Reply:
    return Reply(200, PAGE_2_BODY, reset_after=40)


def truncated_json() -> Reply:
    return Reply(200, b'{"runs": [{"run_id": "v3", "status": "succ')


def html_error_page() -> Reply:
    page = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
    return Reply(200, page, {"content-type": "text/html"})


def trickled_body() -> Reply:
    # 16 bytes every 50 ms: each read is quick (under the 0.3 s read timeout),
    # the whole body takes about a second.
    return Reply(200, PAGE_2_BODY, trickle=16, trickle_delay=0.05)


def stalled_headers() -> Reply:
    return Reply(200, PAGE_2_BODY, delay=TIMEOUT_S * 3)


def trickled_headers() -> Reply:
    # The status line and headers (about 130 bytes) one byte every 20 ms:
    # each read is quick (under the 0.3 s read timeout), the head alone
    # takes about 2.5 s.
    return Reply(200, PAGE_2_BODY, head_trickle_delay=0.02)


BROKEN_BODIES = {
    "connection reset mid-body": (reset_mid_body, "connection error ("),
    "truncated JSON": (truncated_json, "unreadable body (not JSON)"),
    "HTML error page with status 200": (html_error_page, "unreadable body (not JSON)"),
    "body trickled slower than the timeout": (trickled_body, f"request timed out after {TIMEOUT_S:g}s"),
    "no answer before the timeout": (stalled_headers, f"request timed out after {TIMEOUT_S:g}s"),
    "headers trickled slower than the timeout": (trickled_headers, f"request timed out after {TIMEOUT_S:g}s"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(BROKEN_BODIES))
def test_a_broken_body_once_is_retried(api, engine, fake, fault) -> None:
    make_reply, _ = BROKEN_BODIES[fault]
    outcome = run_matrix_case(api, engine, fake, page_2=(make_reply(),))
    assert_recovered(outcome)
    assert len(outcome.waits) == 1


@pytest.mark.parametrize("fault", list(BROKEN_BODIES))
def test_a_broken_body_every_time_fails_the_pipeline_alone(api, engine, fake, fault) -> None:
    make_reply, reason = BROKEN_BODIES[fault]
    outcome = run_matrix_case(
        api, engine, fake, page_2=tuple(make_reply() for _ in range(ATTEMPTS))
    )
    assert outcome.victim_error is not None
    assert outcome.victim_error.startswith(
        f"source 'generic-prod': gave up after {ATTEMPTS} attempts: {reason}"
    )
    assert outcome.victim == FIRST_PAGE_ONLY
    assert len(outcome.waits) == RETRIES


def test_the_timeout_bounds_the_whole_body_not_each_read(api, engine, fake) -> None:
    """httpx's read timeout is per socket read: a trickle never trips it. The
    request's deadline does, so each try ends after about ``timeout_s``."""
    answers = tuple(trickled_body() for _ in range(ATTEMPTS))
    outcome = run_matrix_case(api, engine, fake, page_2=answers)
    assert outcome.victim_error is not None and "timed out" in outcome.victim_error
    # Three tries of 0.3 s each, where the trickle alone would take 3 x 1 s.
    assert ATTEMPTS * TIMEOUT_S <= outcome.elapsed < ATTEMPTS * TIMEOUT_S + 3.0


def test_the_timeout_bounds_the_headers_too_not_each_read(api, engine, fake) -> None:
    """A server sending its status line and headers a byte at a time trips no
    read timeout either: the deadline covers the whole exchange, headers
    included, so each try ends after about ``timeout_s``."""
    answers = tuple(trickled_headers() for _ in range(ATTEMPTS))
    outcome = run_matrix_case(api, engine, fake, page_2=answers)
    assert_failed(
        outcome, f"gave up after {ATTEMPTS} attempts: request timed out after {TIMEOUT_S:g}s"
    )
    # Three tries of 0.3 s each, where the head alone would take 3 x 2.5 s.
    assert ATTEMPTS * TIMEOUT_S <= outcome.elapsed < ATTEMPTS * TIMEOUT_S + 3.0


# -- pages with surprising content -------------------------------------------


def test_pages_with_duplicates_store_each_run_once(api, engine, fake) -> None:
    pages = [
        [generic_run("v1"), generic_run("v1", "running", finished_at=None), generic_run("v2")],
        [generic_run("v2"), generic_run("v3", "failed"), generic_run("v3", "failed")],
    ]
    outcome = run_matrix_case(api, engine, fake, victim_pages=pages)
    assert_recovered(outcome)
    report = outcome.report
    # v1 (running after success, same page) cannot regress; v2 repeats across
    # pages, v3 within one: each counts once as created, every repeat unchanged.
    assert (report.runs_created, report.runs_updated, report.runs_unchanged) == (4, 0, 3)
    assert {key: run["status"] for key, run in outcome.stored.items()} == {
        "v1": "success", "v2": "success", "v3": "failed",
    }  # fmt: skip


def test_runs_naming_another_pipeline_are_the_runs_of_the_feed_they_came_from(
    api, engine, fake
) -> None:
    """The generic feed is per pipeline (its URL names the external id) and its
    run object has no pipeline field: a run is the run of the feed that served
    it, keyed by its ``run_id`` (DI-004 is per pipeline). A ``pipeline`` field
    naming the bystander is kept in the payload and changes nothing else."""
    stray = generic_run("b1", "failed", pipeline="bystander", pipeline_id="bystander")
    pages = [[generic_run("v1"), stray]]
    outcome = run_matrix_case(api, engine, fake, victim_pages=pages)
    assert_recovered(outcome, {"v1", "b1"})
    assert outcome.stored["b1"]["status"] == "failed"
    with engine.connect() as connection:
        statuses = connection.execute(
            sa.text("SELECT external_run_id, status FROM runs ORDER BY pipeline_id")
        ).all()
    # The bystander's own b1 is untouched by the victim's b1.
    assert sorted(statuses) == [("b1", "failed"), ("b1", "success"), ("v1", "success")]


def test_a_cursor_that_loops_ends_the_pipeline_with_its_pages_kept(api, engine, fake) -> None:
    client = make_client(api)
    make_pipeline(api, client, platform="generic", external_id="bystander")
    victim = make_pipeline(api, client, platform="generic", external_id="victim")
    serve_generic(fake, "bystander", [[generic_run("b1")]])
    following = {None: "A", "A": "B", "B": "A"}
    fake.routes[("GET", generic_path("victim"))] = lambda seen: Reply(
        body={
            "runs": [generic_run(f"v-{seen.query.get('cursor', 'first')}")],
            "next_cursor": following[seen.query.get("cursor")],
        }
    )
    report = ingest(engine, sources(source(fake)), sleep=SleepRecorder())
    assert [e.pipeline_id for e in report.errors] == [victim["id"]]
    assert report.errors[0].message == (
        "source 'generic-prod': page 3 returned a cursor already followed (a cursor loop)"
    )
    assert set(stored_runs(engine, victim)) == {"v-first", "v-A", "v-B"}
    assert report.runs_created == 4
    assert len(fake.hits(generic_path("victim"))) == 3


def test_a_very_large_page_is_stored_whole(api, engine, fake) -> None:
    big = [generic_run(f"big-{i:05d}", metrics={"rows": i}) for i in range(20_000)]
    outcome = run_matrix_case(api, engine, fake, victim_pages=[big], timeout_s=30)
    assert outcome.victim_error is None
    assert len(outcome.victim) == 20_000
    assert (outcome.report.pages, outcome.report.runs_created) == (2, 20_001)
    again = ingest(engine, sources(source(fake, timeout_s=30)))
    assert (again.runs_created, again.runs_unchanged, again.errors) == (0, 20_001, [])


# -- other platforms: runs of another pipeline in an answer -------------------


def test_an_adf_answer_with_runs_of_another_pipeline_stores_only_its_own(api, engine, fake) -> None:
    """ADF filters queryPipelineRuns by pipeline name and names the pipeline in
    every run (``pipelineName``): a run of another pipeline (a filter the
    service ignored) is skipped and reported, never stored under this one."""
    client = make_client(api)
    orders = make_pipeline(api, client, platform="adf", external_id="orders")

    def adf_run(run_id: str, pipeline_name: str) -> dict[str, Any]:
        return {"runId": run_id, "pipelineName": pipeline_name, "status": "Succeeded",
                "runStart": "2026-03-01T10:00:00.1234567Z", "runEnd": "2026-03-01T10:05:00Z"}  # fmt: skip

    serve_adf(fake, "orders", [[adf_run("o-1", "orders"), adf_run("x-1", "billing")]])
    report = ingest(engine, sources(source(fake, "adf")))
    assert report.errors == []
    assert (report.runs_created, report.runs_skipped) == (1, 1)
    assert set(stored_runs(engine, orders)) == {"o-1"}


def test_a_databricks_answer_with_runs_of_another_job_stores_only_its_own(
    api, engine, fake
) -> None:
    client = make_client(api)
    job = make_pipeline(api, client, platform="databricks", external_id="42")

    def dbx_run(run_id: int, job_id: int) -> dict[str, Any]:
        return {"run_id": run_id, "job_id": job_id, "start_time": 1_772_359_200_000,
                "end_time": 1_772_359_500_000,
                "status": {"state": "TERMINATED", "termination_details": {"code": "SUCCESS"}}}  # fmt: skip

    serve_databricks(fake, "42", [[dbx_run(1, 42), dbx_run(2, 7)]])
    report = ingest(engine, sources(source(fake, "databricks")))
    assert report.errors == []
    assert (report.runs_created, report.runs_skipped) == (1, 1)
    assert set(stored_runs(engine, job)) == {"1"}
