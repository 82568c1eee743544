"""A source token is sent only to its source and appears nowhere else (SE-001..SE-003)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import (
    FakeServer,
    Reply,
    generic_path,
    generic_run,
    serve_generic,
    source,
    toml_text,
)
from sqlalchemy import Engine

from chm.app import create_app
from chm.core.settings import Settings
from factories import API, make_client, make_pipeline, ok

TOKEN = "tok-S3cr3t-9f8e7d6c5b4a"


@pytest.fixture
def feeds() -> Iterator[tuple[FakeServer, FakeServer]]:
    acme, shared = FakeServer(), FakeServer()
    yield acme, shared
    acme.close()
    shared.close()


def echoing_runs() -> list[dict[str, object]]:
    """A partner that carelessly echoes the caller's token everywhere."""
    return [
        generic_run("r1", echo=f"Authorization: Bearer {TOKEN}", debug={"auth_header": TOKEN}),
        generic_run("r2", "failed", error=f"token {TOKEN} rejected by the warehouse",
                    note=f"called with {TOKEN}", metrics={"rows": 1, "label": TOKEN}),
    ]  # fmt: skip


def setup_pipelines(api: TestClient, acme_feed: FakeServer, shared_feed: FakeServer) -> list[dict]:
    acme, beta = make_client(api, "Acme"), make_client(api, "Beta")
    pipelines = [
        make_pipeline(api, acme, platform="generic", external_id="echo"),
        make_pipeline(api, acme, platform="generic", external_id="denied"),
        make_pipeline(api, beta, platform="generic", external_id="echo"),
    ]
    serve_generic(acme_feed, "echo", [echoing_runs()])
    serve_generic(acme_feed, "denied", [[]])
    denied = Reply(401, {"error": f"unauthorized: {TOKEN}"})
    acme_feed.script(generic_path("denied"), None, denied, denied)
    serve_generic(shared_feed, "echo", [[generic_run("shared-1")]])
    return pipelines


def config(tmp_path: Path, acme_feed: FakeServer, shared_feed: FakeServer) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(
        toml_text(
            source(shared_feed),
            source(acme_feed, name="acme-feed", client="Acme", token_env="ACME_FEED_TOKEN"),
        )
    )
    return path


def stored_text(engine: Engine) -> str:
    with engine.connect() as connection:
        runs = connection.execute(sa.text("SELECT * FROM runs")).all()
        pipelines = connection.execute(sa.text("SELECT * FROM pipelines")).all()
    return repr(runs) + repr(pipelines)


def assert_sent_only_to_its_source(acme_feed: FakeServer, shared_feed: FakeServer) -> None:
    assert acme_feed.requests
    assert {r.headers.get("authorization") for r in acme_feed.requests} == {f"Bearer {TOKEN}"}
    assert all("authorization" not in r.headers for r in shared_feed.requests)


def test_the_api_path_never_shows_or_stores_the_token(
    db_url, engine, feeds, tmp_path, monkeypatch, caplog
) -> None:
    acme_feed, shared_feed = feeds
    monkeypatch.setenv("ACME_FEED_TOKEN", TOKEN)
    settings = Settings(database_url=db_url, config=config(tmp_path, *feeds), _env_file=None)  # type: ignore[call-arg]
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        pipelines = setup_pipelines(api, acme_feed, shared_feed)
        response = api.post(f"{API}/ingestions")
        report = ok(response)
        assert report["runs_created"] == 3
        assert [e["pipeline_id"] for e in report["errors"]] == [pipelines[1]["id"]]
        assert "HTTP 401" in report["errors"][0]["message"]
        shown = response.text
        for pipeline in pipelines:
            shown += api.get(f"{API}/pipelines/{pipeline['id']}").text
            shown += api.get(f"{API}/pipelines/{pipeline['id']}/runs").text
        failed = ok(
            api.get(f"{API}/pipelines/{pipelines[0]['id']}/runs", params={"status": "failed"})
        )
        assert failed["items"][0]["error_message"] == "token [REDACTED] rejected by the warehouse"
        assert failed["items"][0]["source_payload"]["note"] == "called with [REDACTED]"
    assert TOKEN not in shown
    assert TOKEN not in caplog.text
    assert TOKEN not in stored_text(engine)
    assert "[REDACTED]" in stored_text(engine)
    assert_sent_only_to_its_source(acme_feed, shared_feed)


def test_the_cli_never_prints_or_logs_the_token(api, engine, db_url, feeds, tmp_path) -> None:
    acme_feed, shared_feed = feeds
    setup_pipelines(api, acme_feed, shared_feed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")} | {
        "CHM_DATABASE_URL": db_url,
        "CHM_CONFIG": str(config(tmp_path, *feeds)),
        "CHM_LOG_LEVEL": "DEBUG",
        "ACME_FEED_TOKEN": TOKEN,
    }
    for args in (["--json"], []):
        result = subprocess.run(
            [sys.executable, "-m", "chm.cli", "ingest", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert "HTTP 401" in result.stdout
        assert "page 1" in result.stderr  # the logs name the page...
        assert TOKEN not in result.stdout
        assert TOKEN not in result.stderr
    assert TOKEN not in stored_text(engine)
    assert_sent_only_to_its_source(acme_feed, shared_feed)
