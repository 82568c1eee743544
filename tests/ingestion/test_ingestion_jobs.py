"""Ingestion jobs (issue 13, monitoring contract "The worker"): `POST /api/v1/ingestions`
with `Prefer: respond-async` queues a job; `GET /api/v1/ingestions[/{id}]` shows it;
a worker claims, renews, finishes or requeues it (chm.ingestion.jobs)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, toml_text
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from chm.app import create_app
from chm.core.db import make_session_factory
from chm.core.settings import Settings
from chm.ingestion.jobs import (
    MAX_ERROR_LENGTH,
    claim_job,
    create_job,
    finish_job,
    renew_job,
    requeue_job,
)
from chm.ingestion.report import IngestionReport, PipelineError
from chm.ingestion.router import preferences
from chm.models import IngestionJob
from factories import API, make_client, make_pipeline, ok, walk

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ASYNC = {"Prefer": "respond-async"}
JOB_KEYS = {
    "id", "status", "requested", "created_at", "started_at", "finished_at", "report", "error",
    "attempts",
}  # fmt: skip
EVERYTHING = {"client_id": None, "pipeline_id": None, "full": False}


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Write sessions, as a worker opens them."""
    return make_session_factory(engine, write=True)


def app_with(db_url: str, engine: Engine, config: Path | None) -> TestClient:
    settings = Settings(database_url=db_url, config=config, _env_file=None)  # type: ignore[call-arg]
    return TestClient(create_app(settings, engine), raise_server_exceptions=False)


def config_file(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(*entries) if entries else "sources = []\n")
    return path


def in_transaction(sessions: sessionmaker[Session], work: Any) -> Any:
    """``work(session)`` in one committed transaction, as the worker runs each step."""
    with sessions() as session, session.begin():
        return work(session)


def new_job(sessions: sessionmaker[Session], requested: dict[str, Any] = EVERYTHING) -> int:
    return int(in_transaction(sessions, lambda s: create_job(s, requested, T).id))


def stored(sessions: sessionmaker[Session], job_id: int) -> IngestionJob:
    with sessions() as session:
        job = session.get(IngestionJob, job_id)
        assert job is not None
        session.expunge(job)
        return job


def report(pipelines: int, failed: int) -> IngestionReport:
    errors = [
        PipelineError(pipeline_id=str(i), message=f"HTTP 503 ({i})") for i in range(1, failed + 1)
    ]
    return IngestionReport(pipelines=pipelines, pages=3, runs_created=5, errors=errors)


# --- the API ---------------------------------------------------------------------------


def test_respond_async_answers_202_with_the_queued_job_and_its_location(
    db_url, engine, fake, tmp_path
) -> None:
    with app_with(db_url, engine, config_file(tmp_path, source(fake))) as api:
        client = make_client(api)
        pipeline = make_pipeline(api, client, platform="generic", external_id="p")
        serve_generic(fake, "p", [[generic_run("r1")]])
        body = {"client_id": client["id"], "pipeline_id": pipeline["id"], "full": True}

        response = api.post(f"{API}/ingestions", json=body, headers=ASYNC)

        assert response.status_code == 202, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["preference-applied"] == "respond-async"
        job = response.json()
        assert set(job) == JOB_KEYS
        assert isinstance(job["id"], str) and job["id"].isdigit()
        assert response.headers["location"] == f"{API}/ingestions/{job['id']}"
        assert job["status"] == "queued"
        assert job["requested"] == body
        assert (job["started_at"], job["finished_at"], job["report"], job["error"]) == (
            None, None, None, None,
        )  # fmt: skip
        assert job["attempts"] == 0
        assert datetime.fromisoformat(job["created_at"]).tzinfo is not None
        assert job["created_at"].endswith("Z")
        # Queued, not run: the platform was not asked, no run was stored.
        assert fake.requests == []
        assert ok(api.get(f"{API}/runs"))["items"] == []
        assert ok(api.get(response.headers["location"])) == job


def test_respond_async_with_no_body_queues_everything(db_url, engine, tmp_path) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        job = ok(api.post(f"{API}/ingestions", headers=ASYNC), 202)
        assert job["requested"] == EVERYTHING


def test_without_the_header_the_endpoint_answers_the_report_as_before(
    db_url, engine, fake, tmp_path
) -> None:
    with app_with(db_url, engine, config_file(tmp_path, source(fake))) as api:
        client = make_client(api)
        make_pipeline(api, client, platform="generic", external_id="p")
        serve_generic(fake, "p", [[generic_run("r1"), generic_run("r2")]])

        first = api.post(f"{API}/ingestions")
        assert first.status_code == 200
        assert "preference-applied" not in first.headers and "location" not in first.headers
        assert first.json() == {"pipelines": 1, "pages": 1, "runs_created": 2, "runs_updated": 0,
                                "runs_unchanged": 0, "runs_skipped": 0, "errors": []}  # fmt: skip
        # Other preferences are ignored: the same synchronous ingestion.
        for prefer in ("return=minimal", "wait=5", 'foo="respond-async"', "respond-asyncx"):
            again = api.post(f"{API}/ingestions", json={}, headers={"Prefer": prefer})
            assert again.status_code == 200, prefer
            assert again.json()["runs_unchanged"] == 2
        assert ok(api.get(f"{API}/ingestions"))["items"] == []


@pytest.mark.parametrize(
    "prefer",
    [
        "respond-async",
        "RESPOND-ASYNC",
        "Respond-Async",
        "wait=10, respond-async",
        "respond-async; foo=bar",
        "  respond-async  ,",
        'foo="a,b", respond-async',
    ],
)
def test_respond_async_is_read_as_an_rfc_7240_preference(
    db_url, engine, tmp_path, prefer: str
) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        assert api.post(f"{API}/ingestions", headers={"Prefer": prefer}).status_code == 202


def test_every_prefer_header_of_the_request_counts(db_url, engine, tmp_path) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        headers = [("Prefer", "wait=5"), ("Prefer", "respond-async")]
        assert api.post(f"{API}/ingestions", headers=headers).status_code == 202


def test_preferences_are_names_outside_quoted_values() -> None:
    assert preferences(["wait=10, respond-async; x=1", "return=minimal"]) == {
        "wait", "respond-async", "return",
    }  # fmt: skip
    assert preferences(['foo="a, respond-async", bar']) == {"foo", "bar"}
    assert preferences(['foo="a\\", respond-async"']) == {"foo"}
    assert preferences(["", " , ,"]) == set()


def test_bad_scopes_with_the_header_are_the_same_422s_and_queue_nothing(
    db_url, engine, tmp_path
) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        acme, beta = make_client(api), make_client(api)
        pipeline = make_pipeline(api, beta)
        for body, field, code in (
            ({"client_id": "999999"}, "client_id", "not_found"),
            ({"client_id": "not-an-id"}, "client_id", "not_found"),
            ({"pipeline_id": "999999"}, "pipeline_id", "not_found"),
            (
                {"client_id": acme["id"], "pipeline_id": pipeline["id"]},
                "pipeline_id",
                "not_of_client",
            ),
            ({"pipeline": "1"}, "pipeline", "unknown_field"),
            ({"full": "yes"}, "full", "bool_type"),
        ):
            response = api.post(f"{API}/ingestions", json=body, headers=ASYNC)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/problem+json"
            assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [(field, code)]
        malformed = api.post(
            f"{API}/ingestions",
            content=b"{oops",
            headers={"content-type": "application/json", **ASYNC},
        )
        assert malformed.status_code == 400
        assert ok(api.get(f"{API}/ingestions"))["items"] == []


def test_without_a_sources_file_the_header_gets_the_same_409(db_url, engine, tmp_path) -> None:
    with app_with(db_url, engine, None) as api:
        response = api.post(f"{API}/ingestions", headers=ASYNC)
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/ingestion-not-configured")
        assert "CHM_CONFIG is not set" in response.json()["detail"]
        assert ok(api.get(f"{API}/ingestions"))["items"] == []
    broken = tmp_path / "broken.toml"
    broken.write_text("[[sources]]\nname = 'x'\nplatform = 'generic'\n")
    with app_with(db_url, engine, broken) as api:
        response = api.post(f"{API}/ingestions", headers=ASYNC)
        assert response.status_code == 409
        assert "field 'environment'" in response.json()["detail"]
        assert ok(api.get(f"{API}/ingestions"))["items"] == []


def test_jobs_are_listed_newest_first_page_by_page(db_url, engine, tmp_path) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        created = [ok(api.post(f"{API}/ingestions", headers=ASYNC), 202) for _ in range(5)]
        newest_first = [job["id"] for job in reversed(created)]

        first = ok(api.get(f"{API}/ingestions", params={"limit": 2}))
        assert [job["id"] for job in first["items"]] == newest_first[:2]
        assert first["next_cursor"] is not None
        assert [job["id"] for job in walk(api, "/ingestions", limit=2)] == newest_first
        everything = ok(api.get(f"{API}/ingestions"))
        assert everything["items"] == list(reversed(created))
        assert everything["next_cursor"] is None
        # A job queued while a client walks the pages is not inserted into them.
        ok(api.post(f"{API}/ingestions", headers=ASYNC), 202)
        second = ok(
            api.get(f"{API}/ingestions", params={"limit": 2, "cursor": first["next_cursor"]})
        )
        assert [job["id"] for job in second["items"]] == newest_first[2:4]


def test_jobs_are_filtered_by_status(db_url, engine, sessions, tmp_path) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        ids = [ok(api.post(f"{API}/ingestions", headers=ASYNC), 202)["id"] for _ in range(3)]
        claimed = in_transaction(sessions, lambda s: claim_job(s, "w1", T, 60).id)
        assert str(claimed) == ids[0]

        def listed(status: str) -> list[str]:
            return [job["id"] for job in walk(api, "/ingestions", status=status, limit=1)]

        assert listed("queued") == [ids[2], ids[1]]
        assert listed("running") == [ids[0]]
        assert listed("succeeded") == []
        in_transaction(sessions, lambda s: finish_job(s, claimed, "w1", T, report(1, 0), None))
        assert listed("running") == []
        assert listed("succeeded") == [ids[0]]


def test_bad_list_parameters_are_422_on_the_parameter(db_url, engine, tmp_path) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        for params, field in (
            ({"status": "done"}, "status"),
            ({"status": "success"}, "status"),
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"cursor": "not-ours"}, "cursor"),
        ):
            response = api.get(f"{API}/ingestions", params=params)
            assert response.status_code == 422, params
            assert response.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in response.json()["errors"]] == [field]
        # A cursor of another listing is not taken either.
        make_client(api)
        make_client(api)
        other = ok(api.get(f"{API}/clients", params={"limit": 1}))["next_cursor"]
        assert api.get(f"{API}/ingestions", params={"cursor": other}).status_code == 422


@pytest.mark.parametrize("job_id", ["999999", "abc", "0", "-1", "01", "9223372036854775808"])
def test_an_unknown_or_malformed_job_id_is_a_404_problem(
    db_url, engine, tmp_path, job_id: str
) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        ok(api.post(f"{API}/ingestions", headers=ASYNC), 202)
        response = api.get(f"{API}/ingestions/{job_id}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert "ingestion job" in response.json()["detail"]


def test_the_openapi_document_describes_the_202_and_its_headers(
    db_url, engine, sessions, tmp_path
) -> None:
    settings = Settings(database_url=db_url, config=config_file(tmp_path), _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings, engine)
    document = app.openapi()
    post = document["paths"][f"{API}/ingestions"]["post"]
    assert {"name": "Prefer", "in": "header"}.items() <= post["parameters"][0].items()
    accepted = post["responses"]["202"]
    assert set(accepted["headers"]) == {"Location", "Preference-Applied"}
    job_schema = accepted["content"]["application/json"]["schema"]
    assert job_schema == {"$ref": "#/components/schemas/IngestionJobOut"}
    assert set(document["components"]["schemas"]["IngestionJobOut"]["required"]) == JOB_KEYS
    # Every answer, queued or finished, conforms to the document (schemathesis's checks).
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    queue = schema[f"{API}/ingestions"]["POST"].Case(headers=ASYNC, body={})
    job = queue.call_and_validate().json()
    in_transaction(sessions, lambda s: claim_job(s, "w1", T, 30))
    in_transaction(sessions, lambda s: finish_job(s, int(job["id"]), "w1", T, report(2, 1), None))
    one = schema[f"{API}/ingestions/{{job_id}}"]["GET"].Case(path_parameters={"job_id": job["id"]})
    assert one.call_and_validate().json()["status"] == "partial"
    listing = schema[f"{API}/ingestions"]["GET"].Case(query={"status": "partial"})
    assert [item["id"] for item in listing.call_and_validate().json()["items"]] == [job["id"]]
    assert schema[f"{API}/ingestions"]["POST"].Case(body={}).call_and_validate().status_code == 200


# --- the worker's side: claim, renew, finish, requeue ----------------------------------


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (report(2, 0), "succeeded"),
        (report(0, 0), "succeeded"),
        (report(3, 1), "partial"),
        (report(2, 2), "failed"),
    ],
)
def test_a_job_walks_queued_running_finished_with_its_report(
    db_url, engine, sessions, tmp_path, outcome: IngestionReport, status: str
) -> None:
    with app_with(db_url, engine, config_file(tmp_path)) as api:
        job = ok(api.post(f"{API}/ingestions", json={"full": True}, headers=ASYNC), 202)
        job_id = int(job["id"])

        claimed = in_transaction(sessions, lambda s: claim_job(s, "worker-a", T, 30))
        assert claimed is not None and claimed.id == job_id
        running = stored(sessions, job_id)
        assert (running.status, running.started_at, running.attempts) == ("running", T, 1)
        assert running.lease_owner == "worker-a"
        assert running.lease_expires_at == T + timedelta(seconds=30)
        seen = ok(api.get(f"{API}/ingestions/{job['id']}"))
        assert (seen["status"], seen["started_at"], seen["attempts"]) == (
            "running", "2026-01-02T03:04:05Z", 1,
        )  # fmt: skip
        assert seen["finished_at"] is None and seen["report"] is None

        end = T + timedelta(seconds=12)
        assert in_transaction(
            sessions, lambda s: finish_job(s, job_id, "worker-a", end, outcome, None)
        )
        done = stored(sessions, job_id)
        assert (done.status, done.finished_at, done.error) == (status, end, None)
        assert (done.lease_owner, done.lease_expires_at) == (None, None)
        seen = ok(api.get(f"{API}/ingestions/{job['id']}"))
        assert seen["status"] == status
        assert seen["finished_at"] == "2026-01-02T03:04:17Z"
        assert seen["report"] == outcome.model_dump(mode="json")
        assert seen["requested"] == {"client_id": None, "pipeline_id": None, "full": True}


def test_a_job_that_could_not_start_fails_with_one_redacted_line(db_url, engine, sessions) -> None:
    job_id = new_job(sessions)
    in_transaction(sessions, lambda s: claim_job(s, "w1", T, 30))
    error = "sources file invalid:\n  source 'x': Bearer abcdefghijkl refused\n" + "x" * 5000
    assert in_transaction(sessions, lambda s: finish_job(s, job_id, "w1", T, None, error))
    done = stored(sessions, job_id)
    assert done.status == "failed" and done.report is None
    assert done.error is not None
    assert "\n" not in done.error and len(done.error) <= MAX_ERROR_LENGTH
    assert done.error.startswith("sources file invalid: source 'x': Bearer [REDACTED] refused")
    assert "abcdefghijkl" not in done.error


def test_a_finish_with_neither_report_nor_error_is_refused(db_url, engine, sessions) -> None:
    job_id = new_job(sessions)
    in_transaction(sessions, lambda s: claim_job(s, "w1", T, 30))
    with pytest.raises(ValueError, match="report, an error"):
        in_transaction(sessions, lambda s: finish_job(s, job_id, "w1", T, None, None))
    assert stored(sessions, job_id).status == "running"


def test_claims_take_the_oldest_waiting_job_and_skip_live_leases(db_url, engine, sessions) -> None:
    first, second = new_job(sessions), new_job(sessions)
    claim = lambda owner, now: in_transaction(  # noqa: E731
        sessions, lambda s: getattr(claim_job(s, owner, now, 30), "id", None)
    )
    assert claim("w1", T) == first
    assert claim("w2", T) == second
    # Both leases are live until T+30: nothing is waiting.
    assert claim("w3", T + timedelta(seconds=29)) is None
    assert claim("w3", T + timedelta(seconds=30)) is None


def test_an_expired_lease_is_claimed_again_by_another_worker(db_url, engine, sessions) -> None:
    job_id = new_job(sessions)
    in_transaction(sessions, lambda s: claim_job(s, "dead-worker", T, 30))
    later = T + timedelta(seconds=31)

    taken = in_transaction(sessions, lambda s: claim_job(s, "w2", later, 30))

    assert taken is not None and taken.id == job_id
    job = stored(sessions, job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("running", "w2", 2)
    assert job.started_at == T  # the first claim's
    assert job.lease_expires_at == later + timedelta(seconds=30)
    # The dead worker, come back, holds nothing any more.
    assert not in_transaction(sessions, lambda s: renew_job(s, job_id, "dead-worker", later))
    assert not in_transaction(
        sessions, lambda s: finish_job(s, job_id, "dead-worker", later, report(1, 0), None)
    )
    assert not in_transaction(sessions, lambda s: requeue_job(s, job_id, "dead-worker"))
    assert stored(sessions, job_id).status == "running"
    assert in_transaction(
        sessions, lambda s: finish_job(s, job_id, "w2", later, report(1, 0), None)
    )
    assert stored(sessions, job_id).status == "succeeded"


def test_only_the_owner_renews_finishes_or_requeues(db_url, engine, sessions) -> None:
    job_id = new_job(sessions)
    in_transaction(sessions, lambda s: claim_job(s, "w1", T, 30))
    until = T + timedelta(minutes=5)

    assert not in_transaction(sessions, lambda s: renew_job(s, job_id, "w2", until))
    assert not in_transaction(
        sessions, lambda s: finish_job(s, job_id, "w2", T, report(1, 0), None)
    )
    assert not in_transaction(sessions, lambda s: requeue_job(s, job_id, "w2"))
    assert stored(sessions, job_id).lease_expires_at == T + timedelta(seconds=30)

    assert in_transaction(sessions, lambda s: renew_job(s, job_id, "w1", until))
    assert stored(sessions, job_id).lease_expires_at == until
    # Renewed: not claimable at T+31 any more.
    later = T + timedelta(seconds=31)
    assert in_transaction(sessions, lambda s: claim_job(s, "w2", later, 30)) is None

    assert in_transaction(sessions, lambda s: requeue_job(s, job_id, "w1"))
    queued = stored(sessions, job_id)
    assert (queued.status, queued.lease_owner, queued.lease_expires_at) == ("queued", None, None)
    assert (queued.attempts, queued.started_at) == (1, T)

    again = in_transaction(sessions, lambda s: claim_job(s, "w2", later, 30))
    assert again is not None and again.id == job_id
    assert (stored(sessions, job_id).attempts, stored(sessions, job_id).started_at) == (2, T)
    assert in_transaction(
        sessions, lambda s: finish_job(s, job_id, "w2", later, report(1, 1), None)
    )
    # Finished: nobody renews, finishes or requeues it again, nor claims it.
    assert not in_transaction(sessions, lambda s: renew_job(s, job_id, "w2", until))
    assert not in_transaction(
        sessions, lambda s: finish_job(s, job_id, "w2", later, report(1, 0), None)
    )
    assert not in_transaction(sessions, lambda s: requeue_job(s, job_id, "w2"))
    assert (
        in_transaction(sessions, lambda s: claim_job(s, "w3", until + timedelta(days=1), 30))
        is None
    )
    assert stored(sessions, job_id).status == "failed"


def test_a_job_in_the_session_is_read_again_after_a_change(db_url, engine, sessions) -> None:
    job_id = new_job(sessions)
    with sessions() as session, session.begin():
        job = session.get(IngestionJob, job_id)
        assert job is not None and job.status == "queued"
        assert claim_job(session, "w1", T, 30) is job
        assert job.status == "running"
        assert finish_job(session, job_id, "w1", T, report(2, 1), None)
        assert job.status == "partial" and job.report is not None


def test_concurrent_claimers_never_take_the_same_job(db_url, engine, sessions) -> None:
    ids = [new_job(sessions) for _ in range(20)]
    claimed: dict[str, list[int]] = {f"w{n}": [] for n in range(4)}
    start = threading.Barrier(len(claimed))
    failures: list[BaseException] = []

    def claimer(owner: str) -> None:
        try:
            start.wait(timeout=10)
            while True:
                job = in_transaction(sessions, lambda s: claim_job(s, owner, T, 60))
                if job is None:
                    return
                claimed[owner].append(job.id)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=claimer, args=(owner,)) for owner in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    every_claim = [job_id for jobs in claimed.values() for job_id in jobs]
    assert sorted(every_claim) == ids  # each job exactly once
    owner_of = {job_id: owner for owner, jobs in claimed.items() for job_id in jobs}
    with sessions() as session:
        rows = session.execute(
            sa.select(IngestionJob.id, IngestionJob.lease_owner, IngestionJob.attempts)
        ).all()
    assert {(job_id, owner, attempts) for job_id, owner, attempts in rows} == {
        (job_id, owner, 1) for job_id, owner in owner_of.items()
    }


@pytest.mark.postgres_only
def test_a_claimer_passes_over_a_job_another_transaction_is_taking(
    db_url, engine, sessions
) -> None:
    first, second = new_job(sessions), new_job(sessions)
    with sessions() as holder, holder.begin():
        taking = claim_job(holder, "w1", T, 30)
        assert taking is not None and taking.id == first  # locked, not committed
        with sessions() as other, other.begin():
            # Without SKIP LOCKED this would wait for the holder: fail instead.
            other.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            passed_over = claim_job(other, "w2", T, 30)
            assert passed_over is not None and passed_over.id == second
