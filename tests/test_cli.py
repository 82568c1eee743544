"""The command line as a user runs it: `chm db upgrade`, `chm serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from live import free_port

CHM = [sys.executable, "-m", "chm.cli"]


def run_chm(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHM, *args], env=env, capture_output=True, text=True, timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    env.update(extra)
    return env


def test_db_upgrade_creates_the_schema_on_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run_chm("db", "upgrade", env=clean_env(CHM_DATABASE_URL=url, CHM_LOG_LEVEL="WARNING"))
    assert result.returncode == 0, result.stderr
    assert "head" in result.stdout
    again = run_chm("db", "upgrade", env=clean_env(CHM_DATABASE_URL=url, CHM_LOG_LEVEL="WARNING"))
    assert again.returncode == 0


def test_db_upgrade_reports_bad_url_plainly(tmp_path: Path) -> None:
    result = run_chm("db", "upgrade", env=clean_env(CHM_DATABASE_URL="mysql://x@y/z"))
    assert result.returncode == 2
    assert "CHM_DATABASE_URL" in result.stderr and "Traceback" not in result.stderr
    unreachable = run_chm(
        "db",
        "upgrade",
        env=clean_env(CHM_DATABASE_URL="postgresql://postgres:s3cret-pw@127.0.0.1:1/none"),
    )
    assert unreachable.returncode == 1
    assert "Traceback" not in unreachable.stderr and "s3cret-pw" not in unreachable.stderr


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CHM_ENV": "production", "CHM_API_TOKEN": "t0ken-value"}, "CHM_DATABASE_URL"),
        ({"CHM_ENV": "production", "CHM_DATABASE_URL": "sqlite:///x.db"}, "CHM_API_TOKEN"),
    ],
)
def test_production_refuses_unsafe_configuration(
    tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    result = subprocess.run(
        [*CHM, "serve", "--port", str(free_port())],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "t0ken-value" not in result.stderr + result.stdout


def test_serve_answers_health_and_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    env = clean_env(CHM_DATABASE_URL=url)
    assert run_chm("db", "upgrade", env=env).returncode == 0
    port = free_port()
    server = subprocess.Popen(
        [*CHM, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        created = httpx.post(f"{base}/api/v1/clients", json={"name": "Acme"})
        assert created.status_code == 201
        assert httpx.get(f"{base}/docs").status_code == 200
        assert "/api/v1/clients" in httpx.get(f"{base}/openapi.json").json()["paths"]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert stderr.count("without a token") == 1


def test_a_database_refuses_processes_of_another_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    sources = tmp_path / "sources.toml"
    sources.write_text(
        '[[sources]]\nname = "feed"\nplatform = "generic"\nenvironment = "prod"\n'
        'base_url = "http://127.0.0.1:9"\nchm_env = "production"\n'
    )
    dev = clean_env(CHM_DATABASE_URL=url, CHM_LOG_LEVEL="WARNING")
    prod = clean_env(
        CHM_DATABASE_URL=url,
        CHM_ENV="production",
        CHM_API_TOKEN="tok-123456",
        CHM_LOG_LEVEL="WARNING",
        CHM_CONFIG=str(sources),
    )
    assert run_chm("db", "upgrade", env=dev).returncode == 0
    for args in (
        ("db", "upgrade"),
        ("serve", "--port", str(free_port())),
        ("status",),
        ("ingest",),
    ):
        result = run_chm(*args, env=prod)
        assert result.returncode == 1, (args, result.stderr)
        assert "belongs to the development environment" in result.stderr, args
        assert "Traceback" not in result.stderr and "tok-123456" not in result.stderr


def test_serve_refuses_a_database_that_was_never_migrated(tmp_path: Path) -> None:
    env = clean_env(CHM_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    result = run_chm("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 1
    assert "chm db upgrade" in result.stderr


def test_invalid_settings_are_a_plain_message_and_exit_2(tmp_path: Path) -> None:
    for command in (("ingest", "--json"), ("status",), ("db", "upgrade"), ("serve",)):
        result = run_chm(
            *command,
            env=clean_env(CHM_ENV="staging", CHM_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"),
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "CHM_ENV" in result.stderr and "Traceback" not in result.stderr
