"""GitHub Actions workflow runs against a local server speaking the REST API's documented shapes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from ingestion_fakes import FakeServer, Reply, SleepRecorder, source, sources
from platform_fakes import GithubFake, github_run, parsed, snapshot

from chm.ingestion.connectors import Window
from chm.ingestion.connectors.github_actions import GithubActionsConnector, GithubActionsSource
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

TOKEN = "ghp_S3cr3tGithubToken0001"
ENV = {"GITHUB_TOKEN": TOKEN}
WORKFLOW = "acme/etl/nightly.yml"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def runs_of(api, pipeline) -> dict[str, dict]:
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 500}))
    return {run["external_run_id"]: run for run in page["items"]}


def github(fake: FakeServer, per_page: int = 2) -> GithubFake:
    return GithubFake(fake, "acme/etl", "nightly.yml", TOKEN, per_page=per_page)


def test_runs_are_paged_by_the_link_header_and_mapped(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="github_actions", external_id=WORKFLOW)
    gh = github(fake)
    gh.runs = [github_run(1), github_run(2, conclusion="failure"), github_run(3, "in_progress"),
               github_run(4, "queued"), github_run(5, conclusion="action_required")]  # fmt: skip
    report = ingest(engine, sources(source(fake, "github_actions", token_env="GITHUB_TOKEN")),
                    environ=ENV)  # fmt: skip
    assert (report.errors, report.pages, report.runs_created) == ([], 3, 5)
    requests = fake.hits(gh.path)
    assert [r.query.get("page") for r in requests] == [None, "2", "3"]
    assert requests[0].query == {"per_page": "100"}
    assert {r.headers["authorization"] for r in requests} == {f"Bearer {TOKEN}"}
    runs = runs_of(api, pipeline)
    assert (runs["1"]["status"], runs["1"]["source_status"]) == ("success", "completed/success")
    assert runs["1"]["started_at"] == "2026-03-01T09:01:05Z"
    assert runs["1"]["finished_at"] == "2026-03-01T09:01:45Z"
    assert runs["2"]["status"] == "failed"
    assert (runs["3"]["status"], runs["3"]["finished_at"]) == ("running", None)
    assert (runs["4"]["status"], runs["5"]["status"]) == ("queued", "queued")


def test_a_spent_rate_limit_waits_for_its_reset_a_refusal_does_not(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="github_actions", external_id=WORKFLOW)
    gh = github(fake)
    gh.runs = [github_run(1), github_run(2), github_run(3)]
    spent = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
             "x-ratelimit-reset": str(int(time.time()) + 20)}  # fmt: skip
    fake.script(gh.path, "2", Reply(403, {"message": "API rate limit exceeded"}, spent),
                Reply(429, {"message": "API rate limit exceeded"}, spent))  # fmt: skip
    waits = SleepRecorder()
    feeds = sources(source(fake, "github_actions", token_env="GITHUB_TOKEN"))
    report = ingest(engine, feeds, environ=ENV, sleep=waits)
    assert (report.errors, report.runs_created) == ([], 3)
    assert len(waits.waits) == 2 and all(15 <= wait <= 20 for wait in waits.waits)

    fake.script(gh.path, None, Reply(403, {"message": "Resource not accessible by integration"}))
    refused = ingest(engine, feeds, environ=ENV, sleep=waits)
    assert [e.pipeline_id for e in refused.errors] == [pipeline["id"]]
    assert 'HTTP 403: {"message": "Resource not accessible' in refused.errors[0].message
    assert len(waits.waits) == 2

    late = {**spent, "x-ratelimit-reset": str(int(time.time()) + 3600)}
    fake.script(gh.path, None, Reply(403, {"message": "API rate limit exceeded"}, late))
    too_long = ingest(engine, feeds, environ=ENV, sleep=waits)
    assert "(rate limit reset), longer than max_retry_wait_s=60" in too_long.errors[0].message


def test_a_next_link_to_another_host_ends_the_walk(api, engine, fake) -> None:
    make_pipeline(api, make_client(api), platform="github_actions", external_id=WORKFLOW)
    gh = github(fake)
    evil = {"link": '<https://collector.invalid/steal?page=2>; rel="next"'}
    fake.script(
        gh.path, None, Reply(200, {"total_count": 9, "workflow_runs": [github_run(1)]}, evil)
    )
    report = ingest(engine, sources(source(fake, "github_actions", token_env="GITHUB_TOKEN")),
                    environ=ENV)  # fmt: skip
    assert "leaves the source" in report.errors[0].message
    assert len(fake.requests) == 1


def connector(external_id: str = WORKFLOW) -> GithubActionsConnector:
    entry = GithubActionsSource(name="g", platform="github_actions", environment="prod",
                                base_url="https://api.github.com")  # fmt: skip
    return GithubActionsConnector(entry, external_id, Window(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "conclusion", "expected"),
    [
        ("requested", None, "queued"), ("queued", None, "queued"), ("pending", None, "queued"),
        ("waiting", None, "queued"), ("in_progress", None, "running"),
        ("completed", "success", "success"), ("completed", "neutral", "success"),
        ("completed", "failure", "failed"), ("completed", "timed_out", "failed"),
        ("completed", "startup_failure", "failed"), ("completed", "stale", "failed"),
        ("completed", "cancelled", "cancelled"), ("completed", "skipped", "skipped"),
        ("completed", "action_required", "queued"), ("completed", "brand_new", "unknown"),
        ("paused", None, "unknown"),
    ],
)  # fmt: skip
def test_status_and_conclusion(status, conclusion, expected) -> None:
    mapped = connector().map_run(github_run(7, status, conclusion))
    assert mapped.status.value == expected
    assert mapped.source_status == (f"{status}/{conclusion}" if status == "completed" else status)
    assert (mapped.finished_at is not None) == (expected in ("success", "failed", "cancelled",
                                                             "skipped"))  # fmt: skip


def test_external_ids_name_owner_repo_and_workflow() -> None:
    with pytest.raises(ValueError, match="is not owner/repo/workflow"):
        connector("acme/etl")
    request = connector("acme/etl/161335").page_request(None)
    assert request.url == "https://api.github.com/repos/acme/etl/actions/workflows/161335/runs"
    assert request.headers == {"Accept": "application/vnd.github+json",
                               "X-GitHub-Api-Version": "2022-11-28"}  # fmt: skip


def test_a_rerun_is_shown_queued_then_running_then_with_its_new_outcome(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="github_actions", external_id=WORKFLOW)
    gh = github(fake)
    gh.runs = [github_run(7)]  # created 09:07:00, started 09:07:05, completed 09:07:45
    feeds = sources(source(fake, "github_actions", token_env="GITHUB_TOKEN"))
    completed = parsed(gh.runs[0]["updated_at"])

    def ingest_at(seconds: int):
        moment = completed + timedelta(seconds=seconds)
        report = ingest(engine, feeds, environ=ENV, clock=lambda: moment)
        assert report.errors == []
        return report, runs_of(api, pipeline)["7"]

    _, first = ingest_at(5)
    assert (first["status"], first["finished_at"]) == ("success", "2026-03-01T09:07:45Z")
    pages = [snapshot(gh.runs)]

    # Re-run in the second the run completed: updated_at (whole seconds) does
    # not move, run_attempt does.
    gh.rerun(7, completed)
    pages.append(snapshot(gh.runs))
    report, queued = ingest_at(10)
    assert (report.runs_updated, queued["status"], queued["source_status"]) == (
        1,
        "queued",
        "queued",
    )
    assert (queued["started_at"], queued["finished_at"]) == ("2026-03-01T09:07:45Z", None)

    gh.progress(7, "in_progress", completed + timedelta(seconds=20))
    pages.append(snapshot(gh.runs))
    report, running = ingest_at(30)
    assert (report.runs_updated, running["status"], running["finished_at"]) == (1, "running", None)

    gh.progress(7, "completed", completed + timedelta(minutes=3), "failure")
    report, failed = ingest_at(200)
    assert (report.runs_updated, failed["status"], failed["source_status"]) == (
        1, "failed", "completed/failure",
    )  # fmt: skip
    assert (failed["started_at"], failed["finished_at"]) == (
        "2026-03-01T09:07:45Z", "2026-03-01T09:10:45Z",
    )  # fmt: skip
    assert failed["source_payload"]["run_attempt"] == 2 and failed["id"] == first["id"]

    report, replayed = ingest_at(210)
    assert (report.runs_updated, report.runs_unchanged, replayed) == (0, 1, failed)
    for n, page in enumerate(pages):
        fake.script(gh.path, None, Reply(body={"total_count": 1, "workflow_runs": page}))
        report, after = ingest_at(220 + n)
        assert (report.runs_updated, report.runs_unchanged, after) == (0, 1, failed)
