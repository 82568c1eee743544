"""OpenLineage jobs that match no pipeline are recorded and listed, and a
``register_pipelines`` source creates their pipelines (issue 12 §2)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import toml_text
from sqlalchemy import Engine

from chm.app import create_app
from chm.core.settings import Environment, Settings
from chm.ingestion.config import ConfigError, parse_sources
from chm.ingestion.lineage import service, unmatched
from factories import API, make_client, make_pipeline, ok
from live import serve_in_thread

KEY = "ol-key-Acme-5c1e0a9d77"
NAMESPACE = "spark://acme-prod"
PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/integration/spark"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


class Clock:
    """The server's clock in these tests: moved by hand, one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def acme_source(**extra: Any) -> dict[str, Any]:
    return {"name": "acme-spark", "platform": "spark", "environment": "prod", "client": "Acme",
            "openlineage_namespace": NAMESPACE, "token_env": "ACME_OL_KEY", **extra}  # fmt: skip


def settings_for(db_url: str, tmp_path: Path, *entries: dict[str, Any], **extra: Any) -> Settings:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(*(entries or (acme_source(),))))
    return Settings(database_url=db_url, config=path, _env_file=None, **extra)  # type: ignore[call-arg]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    ticking = Clock()
    monkeypatch.setattr(service, "utcnow", ticking)
    return ticking


@pytest.fixture
def lineage_api(db_url, engine, tmp_path, monkeypatch, clock) -> Iterator[TestClient]:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    settings = settings_for(db_url, tmp_path)
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        yield api


@pytest.fixture
def registering_api(db_url, engine, tmp_path, monkeypatch, clock) -> Iterator[TestClient]:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    settings = settings_for(db_url, tmp_path, acme_source(register_pipelines=True))
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        make_client(api, "Acme")
        yield api


def event(
    kind: str, job: str, run_id: str | None = None, at: str = "2026-03-01T10:00:00Z"
) -> bytes:
    return orjson.dumps({
        "eventType": kind, "eventTime": at, "producer": PRODUCER, "schemaURL": SCHEMA,
        "run": {"runId": run_id or str(uuid.uuid4()), "facets": {}},
        "job": {"namespace": NAMESPACE, "name": job, "facets": {}},
    })  # fmt: skip


def post(api: TestClient, body: bytes) -> Any:
    return api.post(f"{API}/lineage", content=body,
                    headers={"authorization": f"Bearer {KEY}",
                             "content-type": "application/json"})  # fmt: skip


def unmatched_jobs(api: TestClient, **params: Any) -> list[dict[str, Any]]:
    return list(ok(api.get(f"{API}/lineage/unmatched", params=params))["items"])


def stored_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT * FROM lineage_unmatched_jobs ORDER BY id")).all()


def pipelines_of(api: TestClient) -> list[dict[str, Any]]:
    return list(ok(api.get(f"{API}/pipelines", params={"include_inactive": "true"}))["items"])


def test_events_of_an_unmatched_job_are_recorded_counted_and_listed(lineage_api, engine) -> None:
    api = lineage_api
    make_pipeline(api, make_client(api, "Acme"), platform="spark", environment="prod",
                  external_id="orders_etl.load")  # fmt: skip
    for _ in range(3):
        answer = post(api, event("START", "orders_etl.lod"))  # the typo
        assert (answer.status_code, answer.json()["result"]) == (202, "ignored")
        assert answer.json()["unmatched_recorded"] is True
    assert post(api, event("COMPLETE", "adhoc.query")).status_code == 202
    assert post(api, event("START", "orders_etl.load")).status_code == 201
    items = unmatched_jobs(api)
    assert [(i["job_name"], i["event_count"]) for i in items] == [
        ("adhoc.query", 1),
        ("orders_etl.lod", 3),
    ]
    typo = items[1]
    assert typo == {
        "namespace": NAMESPACE,
        "job_name": "orders_etl.lod",
        "source": "acme-spark",
        "reason": "no active pipeline of this namespace has the job as external_id",
        "first_seen_at": "2026-03-01T10:00:01Z",
        "last_seen_at": "2026-03-01T10:00:03Z",
        "event_count": 3,
    }
    # No payload is kept: the row holds names, times and a count only.
    assert set(stored_rows(engine)[0]._mapping) == {
        "id", "namespace", "job_name", "source_name", "platform", "environment", "client_key",
        "reason", "first_seen_at", "last_seen_at", "event_count",
    }  # fmt: skip


def test_the_listing_is_keyset_paginated_last_seen_first(lineage_api) -> None:
    api = lineage_api
    for n in range(7):
        assert post(api, event("START", f"job-{n}")).status_code == 202
    assert post(api, event("RUNNING", "job-2")).status_code == 202  # seen last now
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = ok(api.get(f"{API}/lineage/unmatched", params=params))
        seen += [item["job_name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["job-2", "job-6", "job-5", "job-4", "job-3", "job-1", "job-0"]
    for params, field in (({"limit": 0}, "limit"), ({"cursor": "forged"}, "cursor")):
        refused = api.get(f"{API}/lineage/unmatched", params=params)
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in refused.json()["errors"]] == [field]


def test_a_job_disappears_from_the_listing_once_its_pipeline_matches(lineage_api, engine) -> None:
    api = lineage_api
    acme = make_client(api, "Acme")
    pipeline = make_pipeline(api, acme, platform="spark", environment="prod",
                             external_id="orders_etl.lod_typo")  # fmt: skip
    assert post(api, event("START", "orders_etl.load")).status_code == 202
    assert [i["job_name"] for i in unmatched_jobs(api)] == ["orders_etl.load"]
    fixed = api.patch(f"{API}/pipelines/{pipeline['id']}", json={"external_id": "orders_etl.load"})
    assert fixed.status_code == 200
    assert unmatched_jobs(api) == []
    assert len(stored_rows(engine)) == 1  # kept, only no longer listed
    assert post(api, event("START", "orders_etl.load")).status_code == 201
    # A pipeline of another environment or an inactive one matches nothing.
    api.patch(f"{API}/pipelines/{pipeline['id']}", json={"is_active": False})
    assert [i["job_name"] for i in unmatched_jobs(api)] == ["orders_etl.load"]


def test_the_table_is_bounded(lineage_api, engine, monkeypatch, caplog) -> None:
    api = lineage_api
    monkeypatch.setattr(unmatched, "MAX_UNMATCHED_JOBS", 3)
    for n in range(3):
        assert post(api, event("START", f"job-{n}")).json()["unmatched_recorded"] is True
    caplog.set_level("WARNING", logger="chm.ingestion.lineage")
    for n in (3, 4):
        full = post(api, event("START", f"job-{n}"))
        assert full.status_code == 202
        assert (full.json()["result"], full.json()["unmatched_recorded"]) == ("ignored", False)
    assert "job-4" in caplog.text and "2 such events so far" in caplog.text
    # The jobs already recorded are still counted.
    assert post(api, event("START", "job-0")).json()["unmatched_recorded"] is True
    rows = stored_rows(engine)
    assert [(r.job_name, r.event_count) for r in rows] == [("job-0", 2), ("job-1", 1), ("job-2", 1)]


def test_register_pipelines_creates_one_pipeline_and_stores_the_run(registering_api) -> None:
    api = registering_api
    run_id = str(uuid.uuid4())
    started = post(api, event("START", "nightly.load", run_id))
    assert (started.status_code, started.json()["result"]) == (201, "created")
    finished = post(api, event("COMPLETE", "nightly.load", run_id, at="2026-03-01T10:05:00Z"))
    assert (finished.status_code, finished.json()["result"]) == (201, "updated")
    assert post(api, event("START", "nightly.load")).status_code == 201  # another run
    (pipeline,) = pipelines_of(api)
    assert {k: pipeline[k] for k in ("name", "platform", "pipeline_type", "environment",
                                     "external_id", "is_active")} == {
        "name": "nightly.load", "platform": "spark", "pipeline_type": "batch",
        "environment": "prod", "external_id": "nightly.load", "is_active": True,
    }  # fmt: skip
    assert started.json()["pipeline_id"] == pipeline["id"]
    runs = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]
    assert {r["external_run_id"]: r["status"] for r in runs}[run_id] == "success"
    assert len(runs) == 2
    assert unmatched_jobs(api) == []


def test_a_registered_name_taken_by_another_pipeline_is_recorded_as_unmatched(
    registering_api,
) -> None:
    api = registering_api
    acme = ok(api.get(f"{API}/clients"))["items"][0]
    make_pipeline(api, acme, name="Nightly.Load", platform="spark", environment="prod",
                  external_id="nightly_v1")  # fmt: skip
    answer = post(api, event("START", "nightly.load"))
    assert (answer.status_code, answer.json()["result"]) == (202, "ignored")
    assert "name is taken by pipeline 'Nightly.Load'" in answer.json()["reason"]
    (item,) = unmatched_jobs(api)
    assert item["reason"] == answer.json()["reason"]
    assert len(pipelines_of(api)) == 1
    # A job name too long for a pipeline name is refused the same way.
    long = post(api, event("START", "x" * 201))
    assert long.status_code == 202 and "1..200 characters" in long.json()["reason"]


def test_register_pipelines_without_the_client_in_the_database_records_the_job(
    db_url, engine, tmp_path, monkeypatch, clock
) -> None:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    settings = settings_for(db_url, tmp_path, acme_source(register_pipelines=True))
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        answer = post(api, event("START", "nightly.load"))
        assert answer.status_code == 202
        assert answer.json()["reason"] == "register_pipelines: client 'Acme' does not exist"
        assert [i["job_name"] for i in unmatched_jobs(api)] == ["nightly.load"]


def test_first_events_at_once_create_one_pipeline(db_url, engine, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    settings = settings_for(db_url, tmp_path, acme_source(register_pipelines=True))
    app = create_app(settings, engine)
    senders = 6
    with serve_in_thread(app) as base, TestClient(app) as api:
        make_client(api, "Acme")
        barrier = threading.Barrier(senders)
        answers: list[int] = []

        def send() -> None:
            body = event("START", "burst.job")
            with httpx.Client(base_url=base, timeout=60) as http:
                barrier.wait()
                response = http.post(f"{API}/lineage", content=body,
                                     headers={"authorization": f"Bearer {KEY}",
                                              "content-type": "application/json"})  # fmt: skip
                answers.append(response.status_code)

        threads = [threading.Thread(target=send) for _ in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [201] * senders
        (pipeline,) = pipelines_of(api)
        runs = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]
        assert len(runs) == senders


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"client": None}, "register_pipelines needs client"),
        ({"openlineage_namespace": None, "base_url": "http://127.0.0.1:9"},
         "it needs an openlineage_namespace"),
    ],
)  # fmt: skip
def test_register_pipelines_needs_a_namespace_and_a_client(extra, message) -> None:
    entry = {
        k: v for k, v in (acme_source(register_pipelines=True) | extra).items() if v is not None
    }
    entry["platform"] = "airflow" if "base_url" in entry else "spark"
    if entry["platform"] == "airflow":
        entry["auth"] = "bearer"
    with pytest.raises(ConfigError) as raised:
        parse_sources({"sources": [entry]}, "sources.toml")
    assert "field 'register_pipelines'" in str(raised.value)
    assert message in str(raised.value)


def test_register_pipelines_is_off_by_default() -> None:
    sources = parse_sources({"sources": [acme_source()]}, "sources.toml")
    assert sources.all[0].register_pipelines is False


def test_the_unmatched_listing_needs_the_api_token_in_production(
    db_url, engine, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    settings = settings_for(
        db_url, tmp_path, acme_source(chm_env="production"),
        env=Environment.production, api_token="prod-api-token-9",
    )  # fmt: skip
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        assert post(api, event("START", "unknown.job")).status_code == 202  # the namespace key
        for headers in ({}, {"authorization": f"Bearer {KEY}"}):
            refused = api.get(f"{API}/lineage/unmatched", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["content-type"] == "application/problem+json"
        allowed = api.get(f"{API}/lineage/unmatched",
                          headers={"authorization": "Bearer prod-api-token-9"})  # fmt: skip
        assert [i["job_name"] for i in ok(allowed)["items"]] == ["unknown.job"]


@pytest.fixture
def chm_status(db_url, monkeypatch) -> Iterator[Any]:
    """Run ``chm status ...`` in-process on the test's database."""
    from typer.testing import CliRunner

    from chm.cli import app
    from chm.core.settings import get_settings

    monkeypatch.setenv("CHM_DATABASE_URL", db_url)
    monkeypatch.delenv("COLUMNS", raising=False)
    get_settings.cache_clear()
    yield lambda *args: CliRunner().invoke(app, ["status", *args])
    get_settings.cache_clear()


def test_chm_status_shows_the_unmatched_jobs(lineage_api, chm_status) -> None:
    api = lineage_api
    before = chm_status("--json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["unmatched_lineage_jobs"] == []
    assert "OpenLineage jobs matching no pipeline: none" in chm_status().stdout
    make_client(api, "Acme")
    for job in ("orders_etl.lod", "orders_etl.lod", "adhoc.query"):
        assert post(api, event("START", job)).status_code == 202
    board = json.loads(chm_status("--json").stdout)
    assert set(board) >= {"as_of", "client", "failing_now", "stuck_runs", "changes",
                          "status_counts", "unmatched_lineage_jobs"}  # fmt: skip
    assert board["unmatched_lineage_jobs"] == unmatched_jobs(api)
    assert [(j["job_name"], j["event_count"]) for j in board["unmatched_lineage_jobs"]] == [
        ("adhoc.query", 1),
        ("orders_etl.lod", 2),
    ]
    scoped = json.loads(chm_status("--client", "acme", "--json").stdout)
    assert len(scoped["unmatched_lineage_jobs"]) == 2
    text = chm_status().stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    section = text[text.index("OpenLineage jobs matching no pipeline (2)") :]
    for expected in ("orders_etl.lod", "adhoc.query", "acme-spark", "2026-03-01 10:00",
                     "no active pipeline"):  # fmt: skip
        assert expected in section
