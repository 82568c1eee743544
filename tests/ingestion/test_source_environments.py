"""A source declares the CHM environment that may use it (SE-004, SE-001).

``chm_env`` is ``development`` unless the sources file says otherwise, so a
production process uses only sources explicitly declared for production. A
process of another environment refuses the whole file (a configuration
error: ``chm ingest`` exits 2, the API answers the problem
``ingestion-not-configured``), naming every
refused source, before any request is sent or any token is read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, toml_text

from chm.app import create_app
from chm.core.settings import Environment, Settings
from chm.ingestion.config import ConfigError, load_sources, parse_sources
from factories import API, make_client, make_pipeline, ok

PROD_TOKEN = "prod-api-token-0c1d2e"
FEED_TOKEN = "feed-token-77aa88bb99"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def entry(name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "platform": "generic", "environment": "prod",
            "base_url": "http://127.0.0.1:9", **fields}  # fmt: skip


def write(tmp_path: Path, *entries: dict[str, object]) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(*entries))
    return path


def test_a_source_is_for_development_unless_it_says_otherwise() -> None:
    loaded = parse_sources({"sources": [entry("plain")]}, "s.toml")
    assert loaded.all[0].chm_env is Environment.development
    declared = parse_sources(
        {"sources": [entry("live", chm_env="production")]}, "s.toml", Environment.production
    )
    assert declared.all[0].chm_env is Environment.production


def test_a_production_process_refuses_a_source_not_declared_for_production(tmp_path) -> None:
    path = write(tmp_path, entry("live", chm_env="production"), entry("laptop", client="Acme"))
    with pytest.raises(ConfigError) as refused:
        load_sources(path, Environment.production)
    assert str(refused.value) == (
        f"{path}: source 'laptop' (sources[1]): field 'chm_env': the source is for the "
        "development environment and this process runs as production (CHM_ENV); "
        "refusing it (SE-004)"
    )


def test_a_development_process_refuses_a_production_source(tmp_path) -> None:
    path = write(tmp_path, entry("laptop"), entry("live", client="Acme", chm_env="production"))
    with pytest.raises(ConfigError, match="source 'live' \\(sources\\[1\\]\\): field 'chm_env'"):
        load_sources(path)
    with pytest.raises(ConfigError, match="this process runs as development"):
        load_sources(path, Environment.development)


def test_chm_env_takes_only_the_two_environments(tmp_path) -> None:
    path = write(tmp_path, entry("live", chm_env="prod"))
    with pytest.raises(ConfigError, match="source 'live' \\(sources\\[0\\]\\): field 'chm_env'"):
        load_sources(path, Environment.production)


def chm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chm.cli", *args],
        env={k: v for k, v in os.environ.items() if not k.startswith("CHM_")} | env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_chm_ingest_in_production_uses_only_production_sources(tmp_path, fake) -> None:
    """A production database, a production process: the development source is
    refused with exit 2 and nothing is fetched; declared, the same source ingests."""
    database = f"sqlite:///{tmp_path / 'prod.db'}"
    prod = {"CHM_ENV": "production", "CHM_DATABASE_URL": database, "CHM_API_TOKEN": PROD_TOKEN,
            "FEED_TOKEN": FEED_TOKEN}  # fmt: skip
    assert chm(prod, "db", "upgrade").returncode == 0
    settings = Settings(env=Environment.production, database_url=database, api_token=PROD_TOKEN)
    with TestClient(create_app(settings)) as api:
        api.headers["Authorization"] = f"Bearer {PROD_TOKEN}"
        make_pipeline(api, make_client(api), platform="generic", external_id="orders")
    serve_generic(fake, "orders", [[generic_run("r1")]])
    feed = source(fake, token_env="FEED_TOKEN")

    undeclared = chm(prod | {"CHM_CONFIG": str(write(tmp_path, feed))}, "ingest", "--json")
    assert undeclared.returncode == 2, undeclared.stderr
    assert undeclared.stdout == ""
    assert "source 'generic-prod' (sources[0]): field 'chm_env'" in undeclared.stderr
    assert "this process runs as production" in undeclared.stderr
    assert fake.requests == []

    declared = write(tmp_path, feed | {"chm_env": "production"})
    accepted = chm(prod | {"CHM_CONFIG": str(declared)}, "ingest", "--json")
    assert accepted.returncode == 0, accepted.stderr
    assert orjson.loads(accepted.stdout)["runs_created"] == 1
    assert {seen.headers["authorization"] for seen in fake.requests} == {f"Bearer {FEED_TOKEN}"}

    # The same production sources file on a development machine is refused too.
    dev_database = f"sqlite:///{tmp_path / 'dev.db'}"
    dev = {"CHM_DATABASE_URL": dev_database, "CHM_CONFIG": str(declared), "FEED_TOKEN": "x"}
    assert chm(dev, "db", "upgrade").returncode == 0
    refused = chm(dev, "ingest", "--json")
    assert refused.returncode == 2
    assert "the source is for the production environment and this process runs as " \
        "development" in refused.stderr  # fmt: skip
    assert len(fake.requests) == 1


def test_the_api_of_a_production_server_refuses_a_development_source(
    db_url, engine, fake, tmp_path
) -> None:
    serve_generic(fake, "orders", [[generic_run("r1")]])
    settings = Settings(
        env=Environment.production,
        database_url=db_url,
        api_token=PROD_TOKEN,
        config=write(tmp_path, source(fake)),
    )
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        api.headers["Authorization"] = f"Bearer {PROD_TOKEN}"
        make_pipeline(api, make_client(api), platform="generic", external_id="orders")
        refused = api.post(f"{API}/ingestions")
        assert refused.headers["content-type"] == "application/problem+json", refused.text
        assert refused.json()["type"].endswith("/ingestion-not-configured")
        assert "field 'chm_env'" in refused.json()["detail"]
        assert fake.requests == []

        settings.config = write(tmp_path, source(fake, chm_env="production"))
        assert ok(api.post(f"{API}/ingestions"))["runs_created"] == 1
