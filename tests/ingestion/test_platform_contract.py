"""The contract's ingestion behaviour, for every new platform at once, through `chm ingest`:
the JSON report, exit codes, idempotent replays and redaction (tokens never printed,
logged, stored or returned)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from ingestion_fakes import FakeServer, source, toml_text
from platform_fakes import (
    AirflowFake,
    DagsterFake,
    DbtCloudFake,
    GithubFake,
    PrefectFake,
    airflow_run,
    dagster_run,
    dbt_run,
    github_run,
    prefect_run,
)
from sqlalchemy import Engine

from factories import make_client, make_pipeline

SECRETS = {
    "AIRFLOW_PASSWORD": AirflowFake.password,
    "DBT_CLOUD_TOKEN": "dbtc_Contract0Secret1",
    "GITHUB_TOKEN": "ghp_Contract0Secret2",
    "PREFECT_API_KEY": "pnu_Contract0Secret3",
    "DAGSTER_CLOUD_API_TOKEN": "dagster:Contract0Secret4",
}
DEPLOYMENT = "5d0b4f2e-7a6c-4e3b-9d1f-2a8c6e4b0f11"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def echo(secret: str) -> dict[str, str]:
    """A careless platform that echoes the caller's credentials in its runs."""
    return {"note": f"called with {secret}", "api_token": secret}


def serve_every_platform(fake: FakeServer) -> None:
    airflow = AirflowFake(fake, "orders_daily")
    airflow.runs = [airflow_run(1) | {"conf": echo(AirflowFake.password)}, airflow_run(2, "failed")]
    dbt = DbtCloudFake(fake, account_id=1, job_id=77, token=SECRETS["DBT_CLOUD_TOKEN"])
    dbt.runs = [dbt_run(101, 20, status_message=f"auth {SECRETS['DBT_CLOUD_TOKEN']} refused"),
                dbt_run(102)]  # fmt: skip
    gh = GithubFake(fake, "acme/etl", "nightly.yml", SECRETS["GITHUB_TOKEN"])
    gh.runs = [github_run(1) | echo(SECRETS["GITHUB_TOKEN"]), github_run(2, "in_progress")]
    prefect = PrefectFake(fake, SECRETS["PREFECT_API_KEY"])
    prefect.runs = [prefect_run(1, "FAILED") | {"parameters": echo(SECRETS["PREFECT_API_KEY"])}]
    dagster = DagsterFake(fake, SECRETS["DAGSTER_CLOUD_API_TOKEN"])
    dagster.runs = [dagster_run(1), dagster_run(2, "FAILURE")]


def write_sources(tmp_path: Path, fake: FakeServer) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(
        source(fake, "airflow", username="chm", password_env="AIRFLOW_PASSWORD"),
        source(fake, "dbt_cloud", account_id=1, token_env="DBT_CLOUD_TOKEN"),
        source(fake, "github_actions", token_env="GITHUB_TOKEN"),
        source(fake, "prefect", base_url=f"{fake.url}/api", token_env="PREFECT_API_KEY"),
        source(fake, "dagster", token_env="DAGSTER_CLOUD_API_TOKEN"),
    ))  # fmt: skip
    return path


def chm_ingest(db_url: str, config: Path, *args: str) -> tuple[int, dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    env |= {"CHM_DATABASE_URL": db_url, "CHM_CONFIG": str(config), "CHM_LOG_LEVEL": "DEBUG",
            **SECRETS}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "chm.cli", "ingest", "--json", *args],
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    for secret in SECRETS.values():
        assert secret not in result.stdout and secret not in result.stderr
    return result.returncode, orjson.loads(result.stdout), result.stderr


def stored(engine: Engine) -> tuple[str, list[tuple]]:
    with engine.connect() as connection:
        runs = connection.execute(sa.text("SELECT * FROM runs ORDER BY id")).all()
        pipelines = connection.execute(sa.text("SELECT * FROM pipelines")).all()
        stamps = connection.execute(
            sa.text("SELECT external_run_id, updated_at, ingested_at FROM runs ORDER BY id")
        ).all()
    return repr(runs) + repr(pipelines), [tuple(row) for row in stamps]


def test_every_platform_reports_exits_replays_and_redacts_as_the_contract_says(
    api, engine, db_url, fake, tmp_path
) -> None:
    client = make_client(api, "Acme")
    for platform, external_id in (("airflow", "orders_daily"), ("dbt_cloud", "77"),
                                  ("github_actions", "acme/etl/nightly.yml"),
                                  ("prefect", DEPLOYMENT), ("dagster", "orders_job")):  # fmt: skip
        make_pipeline(api, client, platform=platform, external_id=external_id)
    broken = make_pipeline(api, client, platform="github_actions", external_id="acme/etl/gone.yml")
    serve_every_platform(fake)
    config = write_sources(tmp_path, fake)

    code, report, logs = chm_ingest(db_url, config)
    assert code == 1, logs
    assert set(report) == {"pipelines", "pages", "runs_created", "runs_updated", "runs_unchanged",
                           "runs_skipped", "errors"}  # fmt: skip
    assert (report["pipelines"], report["runs_created"], report["runs_skipped"]) == (6, 9, 0)
    assert [e["pipeline_id"] for e in report["errors"]] == [broken["id"]]
    assert "HTTP 404" in report["errors"][0]["message"]
    text, first = stored(engine)
    assert "[REDACTED]" in text
    for secret in SECRETS.values():
        assert secret not in text

    code, replay, _ = chm_ingest(db_url, config, "--full")
    assert code == 1
    assert (replay["runs_created"], replay["runs_updated"], replay["runs_unchanged"]) == (0, 0, 9)
    assert stored(engine)[1] == first  # an identical replay moves neither timestamp

    good = [p for p in api.get("/api/v1/pipelines").json()["items"] if p["id"] != broken["id"]]
    code, single, _ = chm_ingest(db_url, config, "--pipeline", good[0]["id"])
    assert (code, single["errors"], single["pipelines"]) == (0, [], 1)
