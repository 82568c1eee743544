"""Timeouts, retries, Retry-After, cursor loops and failures that stay local (FR-015)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from ingestion_fakes import (
    FakeServer,
    Reply,
    SleepRecorder,
    generic_path,
    generic_run,
    serve_generic,
    source,
    sources,
)

from chm.ingestion.connectors import Fetched, PageShapeError, Window
from chm.ingestion.connectors.generic import GenericConnector
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok
from live import free_port


class FakeServerStub:
    url = "http://127.0.0.1:9"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def two_pipelines(api, fake, *, pages_a=None):
    """Pipelines on feeds ``a`` (two pages) and ``b`` (one page)."""
    client = make_client(api)
    a = make_pipeline(api, client, platform="generic", external_id="a")
    b = make_pipeline(api, client, platform="generic", external_id="b")
    serve_generic(fake, "a", pages_a or [[generic_run("a1")], [generic_run("a2")]])
    serve_generic(fake, "b", [[generic_run("b1")]])
    return a, b


def stored_ids(api, pipeline) -> set[str]:
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))
    return {run["external_run_id"] for run in page["items"]}


def test_429_with_retry_after_in_seconds_or_as_an_http_date_is_honoured(api, engine, fake) -> None:
    a, b = two_pipelines(api, fake)
    fake.script(generic_path("a"), None, Reply(429, {"error": "slow down"}, {"Retry-After": "7"}))
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake.script(generic_path("b"), None, Reply(429, {}, {"Retry-After": when}))
    waits = SleepRecorder()
    report = ingest(engine, sources(source(fake)), sleep=waits)
    assert report.errors == []
    assert waits.waits[0] == 7.0
    assert len(waits.waits) == 2 and 27 <= waits.waits[1] <= 30
    assert stored_ids(api, a) == {"a1", "a2"} and stored_ids(api, b) == {"b1"}
    assert len(fake.hits(generic_path("a"))) == 3


def test_retry_after_is_really_waited(api, engine, fake) -> None:
    two_pipelines(api, fake)
    fake.script(generic_path("b"), None, Reply(503, {}, {"Retry-After": "1"}))
    started = time.monotonic()
    report = ingest(engine, sources(source(fake)))
    assert report.errors == []
    assert time.monotonic() - started >= 1.0


def test_503s_are_retried_with_backoff_until_the_page_arrives(api, engine, fake) -> None:
    a, _ = two_pipelines(api, fake)
    fake.script(generic_path("a"), "ga-1", Reply(503), Reply(502), Reply(500, b"oops"))
    waits = SleepRecorder()
    report = ingest(engine, sources(source(fake, max_retries=3)), sleep=waits)
    assert (report.errors, report.pages, report.runs_created) == ([], 3, 3)
    assert len(waits.waits) == 3
    assert all(0 < wait <= 0.01 for wait in waits.waits)
    assert stored_ids(api, a) == {"a1", "a2"}


def test_exhausted_retries_fail_only_that_pipeline_and_keep_its_committed_pages(
    api, engine, fake
) -> None:
    a, b = two_pipelines(api, fake)
    fake.script(generic_path("a"), "ga-1", *[Reply(503)] * 3)
    report = ingest(engine, sources(source(fake, max_retries=2)), sleep=SleepRecorder())
    assert [e.pipeline_id for e in report.errors] == [a["id"]]
    assert "gave up after 3 attempts: HTTP 503" in report.errors[0].message
    assert stored_ids(api, a) == {"a1"}
    assert stored_ids(api, b) == {"b1"}
    failed = ok(api.get(f"{API}/pipelines/{a['id']}"))
    assert failed["last_ingestion_error"] == report.errors[0].message
    assert failed["last_ingested_at"] is None
    assert ok(api.get(f"{API}/pipelines/{b['id']}"))["last_ingestion_error"] is None

    # The partner recovers: a re-run completes the pipeline and clears its error.
    again = ingest(engine, sources(source(fake)), sleep=SleepRecorder())
    assert again.errors == [] and again.runs_created == 1
    recovered = ok(api.get(f"{API}/pipelines/{a['id']}"))
    assert recovered["last_ingestion_error"] is None
    assert recovered["last_ingested_at"] is not None


def test_a_timeout_is_retried(api, engine, fake) -> None:
    a, _ = two_pipelines(api, fake)
    fake.script(generic_path("a"), None, Reply(200, {"runs": [], "next_cursor": None}, delay=1.0))
    report = ingest(engine, sources(source(fake, timeout_s=0.2)), sleep=SleepRecorder())
    assert report.errors == []
    assert stored_ids(api, a) == {"a1", "a2"}
    assert len(fake.hits(generic_path("a"))) == 3


def test_a_source_that_never_answers_fails_after_its_retries(api, engine) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="generic", external_id="a")
    closed = {"name": "down", "platform": "generic", "environment": "prod",
              "base_url": f"http://127.0.0.1:{free_port()}", "max_retries": 2,
              "backoff_initial_s": 0.001, "backoff_max_s": 0.001}  # fmt: skip
    waits = SleepRecorder()
    report = ingest(engine, sources(closed), sleep=waits)
    assert len(waits.waits) == 2
    assert report.errors[0].pipeline_id == pipeline["id"]
    assert "gave up after 3 attempts: connection error (ConnectError)" in report.errors[0].message


def test_a_retry_after_beyond_max_retry_wait_fails_instead_of_sleeping(api, engine, fake) -> None:
    a, b = two_pipelines(api, fake)
    fake.script(generic_path("a"), None, Reply(429, {}, {"Retry-After": "3600"}))
    waits = SleepRecorder()
    report = ingest(engine, sources(source(fake, max_retry_wait_s=60)), sleep=waits)
    assert waits.waits == []
    assert [e.pipeline_id for e in report.errors] == [a["id"]]
    assert "3600s (Retry-After), longer than max_retry_wait_s=60" in report.errors[0].message
    assert stored_ids(api, b) == {"b1"}


def test_a_client_error_fails_that_pipeline_at_once(api, engine, fake) -> None:
    a, b = two_pipelines(api, fake)
    fake.script(generic_path("a"), None, Reply(404, {"error": "unknown pipeline a"}))
    waits = SleepRecorder()
    report = ingest(engine, sources(source(fake)), sleep=waits)
    assert waits.waits == [] and len(fake.hits(generic_path("a"))) == 1
    assert [e.pipeline_id for e in report.errors] == [a["id"]]
    assert report.errors[0].message == (
        'source \'generic-prod\': HTTP 404: {"error": "unknown pipeline a"}'
    )
    assert (report.pipelines, report.runs_created) == (2, 1)
    assert stored_ids(api, b) == {"b1"}


def test_a_cursor_loop_is_stopped(api, engine, fake) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="generic", external_id="loop")
    make_pipeline(api, client, platform="generic", external_id="stuck")
    cursors = {None: "c1", "c1": "c2", "c2": "c1"}

    def looping(seen):
        cursor = seen.query.get("cursor")
        return Reply(body={"runs": [generic_run(f"r-{cursor}")], "next_cursor": cursors[cursor]})

    fake.routes[("GET", generic_path("loop"))] = looping
    # A cursor that names its own page is a loop too.
    fake.routes[("GET", generic_path("stuck"))] = lambda seen: Reply(
        body={"runs": [], "next_cursor": "same"}
    )
    report = ingest(engine, sources(source(fake)))
    assert report.pages == 3 + 2
    loop, stuck = report.errors
    assert "page 3 returned a cursor already followed (a cursor loop)" in loop.message
    assert "page 2 returned a cursor already followed (a cursor loop)" in stuck.message
    assert stored_ids(api, pipeline) == {"r-None", "r-c1", "r-c2"}


def test_max_pages_bounds_an_endless_feed(api, engine, fake) -> None:
    client = make_client(api)
    make_pipeline(api, client, platform="generic", external_id="endless")
    fake.routes[("GET", generic_path("endless"))] = lambda seen: Reply(
        body={"runs": [], "next_cursor": str(int(seen.query.get("cursor", "0")) + 1)}
    )
    report = ingest(engine, sources(source(fake, max_pages=5)))
    assert report.pages == 5
    assert "stopped after max_pages=5 pages" in report.errors[0].message


def test_a_page_of_the_wrong_shape_fails_the_pipeline(api, engine, fake) -> None:
    a, b = two_pipelines(api, fake)
    fake.script(generic_path("a"), "ga-1", Reply(200, {"items": []}))
    report = ingest(engine, sources(source(fake)))
    assert [e.pipeline_id for e in report.errors] == [a["id"]]
    assert report.errors[0].message == (
        "source 'generic-prod': page 2 is not the expected shape: the page has no 'runs' list"
    )
    assert stored_ids(api, a) == {"a1"} and stored_ids(api, b) == {"b1"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"items": []}, "the page has no 'runs' list"),
        ({"runs": None}, "the page has no 'runs' list"),
        ({"runs": {"r": 1}}, "'runs' is not a list"),
        ({"runs": [], "next_cursor": {"page": 2}}, "next_cursor is neither a string nor null"),
        ([1, 2, 3], "the page is not a JSON object"),
    ],
)
def test_generic_pages_of_the_wrong_shape_are_refused(body, reason) -> None:
    connector = GenericConnector(sources(source(FakeServerStub)).all[0], "a", Window(None))  # type: ignore[arg-type]
    with pytest.raises(PageShapeError, match=reason):
        connector.read_page(Fetched(body))


def test_an_unreadable_body_is_retried(api, engine, fake) -> None:
    a, _ = two_pipelines(api, fake)
    fake.script(generic_path("a"), None, Reply(200, b"<html>gateway hiccup</html>"))
    waits = SleepRecorder()
    report = ingest(engine, sources(source(fake)), sleep=waits)
    assert report.errors == [] and len(waits.waits) == 1
    assert stored_ids(api, a) == {"a1", "a2"}


def test_an_unset_token_variable_fails_that_source_and_names_the_variable(
    api, engine, fake
) -> None:
    other = FakeServer()
    try:
        acme, beta = make_client(api, "Acme"), make_client(api, "Beta")
        locked = make_pipeline(api, acme, platform="generic", external_id="p")
        open_ = make_pipeline(api, beta, platform="generic", external_id="p")
        serve_generic(fake, "p", [[generic_run("shared")]])
        serve_generic(other, "p", [[generic_run("acme")]])
        feeds = sources(
            source(fake), source(other, name="acme-own", client="Acme", token_env="ACME_FEED_TOKEN")
        )
        report = ingest(engine, feeds, environ={})
        assert [e.pipeline_id for e in report.errors] == [locked["id"]]
        assert report.errors[0].message == (
            "source 'acme-own': environment variable ACME_FEED_TOKEN "
            "(token_env of source 'acme-own') is not set"
        )
        assert other.requests == []
        assert stored_ids(api, open_) == {"shared"}
    finally:
        other.close()
