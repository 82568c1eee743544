"""CHM_READ_DATABASE_URL: reports, the operator pages and `chm status` read
from a second database (a read replica); writes, the API's own reads and
/metrics stay on CHM_DATABASE_URL.

The "replica" here is a second database of the same kind holding other rows,
so each answer shows which database it was read from.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from chm.app import create_app
from chm.cli import app as cli
from chm.core.db import create_db_engine
from chm.core.settings import Settings, get_settings
from factories import API, make_client, make_pipeline, make_run, ok


@pytest.fixture
def replica(second_db_url: str) -> Iterator[TestClient]:
    """An API on the second database, to give it its own rows."""
    engine = create_db_engine(second_db_url)
    settings = Settings(database_url=second_db_url, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine)) as client:
        yield client
    engine.dispose()


@pytest.fixture
def split(db_url: str, second_db_url: str, engine: Engine) -> Iterator[TestClient]:
    """The API on the primary, reading its reports from the second database."""
    settings = Settings(  # type: ignore[call-arg]
        database_url=db_url, read_database_url=second_db_url, _env_file=None
    )
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        yield client


def _seed(client: TestClient, name: str) -> dict[str, object]:
    pipeline = make_pipeline(client, make_client(client, name), f"{name}-load")
    make_run(client, pipeline, "failed", started_at="2026-11-30T10:00:00Z")
    return pipeline


def test_reports_and_pages_read_the_read_database_and_the_rest_the_primary(
    split: TestClient, replica: TestClient
) -> None:
    written = _seed(split, "primary-co")  # written through the split app: the primary
    _seed(replica, "replica-co")
    # The replica also has a succeeding pipeline: the counts tell them apart.
    healthy = make_pipeline(replica, ok(replica.get(f"{API}/clients"))["items"][0], "healthy")
    make_run(replica, healthy, "success", started_at="2026-11-30T11:00:00Z")

    # The API's own reads see what was just written (the primary).
    clients = ok(split.get(f"{API}/clients"))["items"]
    assert [c["name"] for c in clients] == ["primary-co"]
    assert ok(split.get(f"{API}/pipelines/{written['id']}/runs/latest"))["status"] == "failed"

    # The reports read the replica, JSON and CSV alike.
    latest = ok(split.get(f"{API}/reports/latest-status"))["items"]
    assert [row["pipeline_name"] for row in latest] == ["healthy", "replica-co-load"]
    csv = split.get(f"{API}/reports/latest-status", params={"format": "csv"})
    assert "replica-co" in csv.text and "primary-co" not in csv.text

    # So do the operator pages.
    page = split.get("/")
    assert page.status_code == 200
    assert "replica-co-load" in page.text and "primary-co-load" not in page.text

    # /metrics reads the primary: chm_database_up and the workers are its own.
    response = split.get("/metrics")
    assert response.status_code == 200
    pipelines_by_status = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "chm_pipelines" and sample.value
    }
    assert pipelines_by_status == {"failed": 1.0}


def test_the_primary_named_twice_is_one_set_of_engines(db_url: str, engine: Engine) -> None:
    settings = Settings(  # type: ignore[call-arg]
        database_url=db_url, read_database_url=db_url, _env_file=None
    )
    app = create_app(settings, engine)
    assert app.state.report_engine is engine
    assert app.state.report_async_engine is app.state.async_engine


def test_a_read_database_of_another_kind_is_refused(db_url: str, backend: str) -> None:
    other = "postgresql://u@h/db" if backend == "sqlite" else "sqlite:///elsewhere.db"
    settings = Settings(  # type: ignore[call-arg]
        database_url=db_url, read_database_url=other, _env_file=None
    )
    with pytest.raises(ValueError, match="the read database must be a copy of the primary"):
        create_app(settings)


@pytest.fixture
def chm(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.delenv("CHM_READ_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_chm_status_reads_the_read_database(
    chm: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    second_db_url: str,
    api: TestClient,
    replica: TestClient,
) -> None:
    _seed(api, "primary-co")
    _seed(replica, "replica-co")
    monkeypatch.setenv("CHM_DATABASE_URL", db_url)
    monkeypatch.setenv("CHM_READ_DATABASE_URL", second_db_url)
    result = chm.invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    assert [f["client_name"] for f in board["failing_now"]] == ["replica-co"]


def test_a_bad_read_database_url_is_a_plain_error_naming_it(
    chm: CliRunner, monkeypatch: pytest.MonkeyPatch, db_url: str, backend: str, tmp_path: Path
) -> None:
    other = "postgresql://u@h/db" if backend == "sqlite" else f"sqlite:///{tmp_path}/x.db"
    monkeypatch.setenv("CHM_DATABASE_URL", db_url)
    for bad, says in ((other, "must be a copy of the primary"), ("nonsense://", "")):
        monkeypatch.setenv("CHM_READ_DATABASE_URL", bad)
        get_settings.cache_clear()
        for command in (["status"], ["serve", "--port", "1"]):
            result = chm.invoke(cli, command)
            assert result.exit_code == 2, result.output
            assert "invalid CHM_READ_DATABASE_URL" in result.output
            assert says in result.output
            assert "Traceback" not in result.output


def test_a_bad_primary_url_is_named_as_such_whatever_the_read_url(
    chm: CliRunner, monkeypatch: pytest.MonkeyPatch, second_db_url: str
) -> None:
    monkeypatch.setenv("CHM_DATABASE_URL", "nonsense://")
    monkeypatch.setenv("CHM_READ_DATABASE_URL", second_db_url)
    result = chm.invoke(cli, ["status"])
    assert result.exit_code == 2, result.output
    assert "invalid CHM_DATABASE_URL" in result.output
    assert "CHM_READ_DATABASE_URL" not in result.output


def _metric(client: TestClient, name: str) -> float | None:
    response = client.get("/metrics")
    assert response.status_code == 200
    values = [
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    ]
    return values[0] if values else None


def test_health_and_metrics_say_whether_the_read_database_answers(
    db_url: str, backend: str, engine: Engine, tmp_path: Path, split: TestClient
) -> None:
    """A dead replica fails the reports and pages, not the writes: /healthz
    stays 200 (the primary answers) and names it; /metrics has its gauge."""
    assert ok(split.get("/healthz"))["read_database"] == "ok"
    assert _metric(split, "chm_read_database_up") == 1.0

    dead = (
        f"sqlite:///{tmp_path}/no/such/dir/replica.db"
        if backend == "sqlite"
        else "postgresql://postgres@127.0.0.1:1/replica"  # nothing listens on port 1
    )
    settings = Settings(  # type: ignore[call-arg]
        database_url=db_url, read_database_url=dead, _env_file=None
    )
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok",
            "database": backend,
            "read_database": "unavailable",
        }
        assert _metric(client, "chm_read_database_up") == 0.0
        assert _metric(client, "chm_database_up") == 1.0
        # The reports need it: a 503 problem, not a 500.
        report = client.get(f"{API}/reports/latest-status")
        assert report.status_code == 503, report.text
        # The writes do not.
        make_pipeline(client, make_client(client, "still-writing"), "orders")


def test_without_a_read_database_health_and_metrics_do_not_mention_one(api: TestClient) -> None:
    assert "read_database" not in ok(api.get("/healthz"))
    assert _metric(api, "chm_read_database_up") is None


def test_the_read_database_is_asked_again_at_every_check(
    db_url: str, backend: str, engine: Engine, tmp_path: Path
) -> None:
    """A replica that answered once and then went away is reported gone at the
    next /healthz and scrape, not remembered as it was."""
    replica_dir = tmp_path / "replica"
    replica_dir.mkdir()
    if backend == "sqlite":
        read_url = f"sqlite:///{replica_dir / 'replica.db'}"
        shutil.copyfile(make_url(db_url).database or "", replica_dir / "replica.db")
    else:
        name = f"chm_gone_{uuid.uuid4().hex[:10]}"
        admin = make_url(db_url).set(drivername="postgresql", database="postgres")
        dsn = admin.render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        read_url = make_url(db_url).set(database=name).render_as_string(hide_password=False)
    settings = Settings(  # type: ignore[call-arg]
        database_url=db_url, read_database_url=read_url, _env_file=None
    )
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        assert ok(client.get("/healthz"))["read_database"] == "ok"
        assert _metric(client, "chm_read_database_up") == 1.0
        client.app.state.report_engine.dispose()  # type: ignore[attr-defined]
        if backend == "sqlite":
            shutil.rmtree(replica_dir)
        else:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        assert ok(client.get("/healthz"))["read_database"] == "unavailable"
        assert _metric(client, "chm_read_database_up") == 0.0
