"""A whole production session leaks no secret anywhere (SE-002, SE-003; issue 5 §7).

``chm serve`` runs as a separate process in production mode (bearer token,
logging at DEBUG); clients and pipelines are created through it; it ingests
once through the API, then ``chm ingest`` runs twice (JSON and text) with the
sources' tokens; bad configurations and an unreachable database are tried
too. The partner feeds misbehave as carelessly as they can: they echo the
caller's token in error bodies and headers, answer 401/403/500 with it, and
send run payloads carrying secrets in nested objects and lists, URL userinfo
and bearer strings. Afterwards every log line, every CLI output, every API
response and every stored row (read from the database itself) is searched
for each configured secret: none may appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from live import free_port

sys.path.insert(0, str(Path(__file__).parent / "ingestion"))
from ingestion_fakes import (
    FakeServer,
    Reply,
    generic_path,
    generic_run,
    serve_generic,
    source,
    toml_text,
)

API_TOKEN = "chm-api-Tok3n-5a6b7c8d9e"
ACME_TOKEN = "acme-feed-S3cret-1f2e3d4c"
BETA_TOKEN = "beta-feed-S3cret-9a8b7c6d"
DB_PASSWORD = "db-Pa55word-71c2e9"  # in the PostgreSQL URL (trust auth ignores it)
PAYLOAD_PASSWORD = "warehouse-Pa55-0b1c2d"
PAYLOAD_KEY = "sk-live-4e5f6a7b8c9d0e1f"
USERINFO_PASSWORD = "userinfo-Pw-3c4d5e"
PAYLOAD_BEARER = "eyJhbGciOiJIUzI1NiJ9.payload-bearer.sig"
SECRETS = (
    API_TOKEN, ACME_TOKEN, BETA_TOKEN, DB_PASSWORD, PAYLOAD_PASSWORD, PAYLOAD_KEY,
    USERINFO_PASSWORD, PAYLOAD_BEARER,
)  # fmt: skip
CHM = [sys.executable, "-m", "chm.cli"]


@pytest.fixture
def feeds() -> Iterator[tuple[FakeServer, FakeServer]]:
    acme, beta = FakeServer(), FakeServer()
    yield acme, beta
    acme.close()
    beta.close()


def careless_runs() -> list[dict[str, Any]]:
    """Runs whose payloads carry every kind of secret, nested and in free text."""
    return [
        generic_run(
            "r1",
            trigger={
                "connections": [
                    {"name": "warehouse", "password": PAYLOAD_PASSWORD, "port": 5432},
                    {"name": "api", "headers": {"X-Api-Key": PAYLOAD_KEY}},
                ],
                "source_uri": f"postgresql://etl:{USERINFO_PASSWORD}@db.internal:5432/dwh",
                "log": [f"GET /data with Authorization: Bearer {PAYLOAD_BEARER}", "ok"],
            },
            echo={"caller": f"Bearer {ACME_TOKEN}", "raw": [ACME_TOKEN]},
        ),
        generic_run(
            "r2",
            "failed",
            error=f"token {ACME_TOKEN} rejected; retry with api_key={PAYLOAD_KEY}",
            metrics={"rows": 1, "label": f"conn=https://u:{USERINFO_PASSWORD}@h/x"},
        ),
    ]


def setup_feeds(acme: FakeServer, beta: FakeServer) -> None:
    echo_headers = {"X-Debug-Auth": f"Bearer {ACME_TOKEN}"}
    serve_generic(acme, "echo", [careless_runs()])
    acme.script(generic_path("echo"), None, Reply(429, {}, {"Retry-After": "0", **echo_headers}))
    serve_generic(acme, "denied", [[]])
    acme.script(
        generic_path("denied"), None,
        *[Reply(401, {"error": f"bad token {ACME_TOKEN}"}, echo_headers)] * 50,
    )  # fmt: skip
    serve_generic(acme, "broken", [[]])
    acme.script(generic_path("broken"), None, *[Reply(500, f"trace: {ACME_TOKEN}".encode())] * 50)
    serve_generic(beta, "other", [[]])
    beta.script(
        generic_path("other"), None,
        *[Reply(403, {"error": f"Bearer {BETA_TOKEN} lacks scope"},
                {"WWW-Authenticate": f'Bearer error="insufficient_scope" token="{BETA_TOKEN}"'})]
        * 50,
    )  # fmt: skip


def sources_file(tmp_path: Path, acme: FakeServer, beta: FakeServer, **extra: Any) -> Path:
    path = tmp_path / "sources.toml"
    fast = {"chm_env": "production", "max_retries": 1, "backoff_initial_s": 0.001,
            "backoff_max_s": 0.001}  # fmt: skip
    path.write_text(
        toml_text(
            source(acme, name="acme", token_env="ACME_FEED_TOKEN", **fast, **extra),
            source(beta, name="beta", client="Beta", token_env="BETA_FEED_TOKEN", **fast),
        )
    )
    return path


def claim_for_production(engine: Engine) -> None:
    """The test database was migrated by a development process: hand it over."""
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE chm_settings SET value = 'production' WHERE key = 'environment'")
        )


def database_text(engine: Engine) -> str:
    """Every row of every table, as text."""
    dumped = []
    with engine.connect() as connection:
        for table in sa.inspect(connection).get_table_names():
            rows = connection.execute(sa.text(f'SELECT * FROM "{table}"')).all()
            dumped.append(f"{table}: {rows!r}")
    return "\n".join(dumped)


def wait_until_up(base: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, "chm serve exited early"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "chm serve did not come up"
        time.sleep(0.1)


def test_a_production_session_never_shows_logs_or_stores_a_secret(
    db_url, engine, feeds, tmp_path
) -> None:
    acme, beta = feeds
    setup_feeds(acme, beta)
    claim_for_production(engine)
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password=DB_PASSWORD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")} | {
        "CHM_ENV": "production",
        "CHM_API_TOKEN": API_TOKEN,
        "CHM_DATABASE_URL": url.render_as_string(hide_password=False),
        "CHM_CONFIG": str(sources_file(tmp_path, acme, beta)),
        "CHM_LOG_LEVEL": "DEBUG",
        "ACME_FEED_TOKEN": ACME_TOKEN,
        "BETA_FEED_TOKEN": BETA_TOKEN,
    }
    seen: list[str] = []  # everything CHM showed: responses, CLI output, logs

    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*CHM, "serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        wait_until_up(base, server)
        with httpx.Client(base_url=f"{base}/api/v1", timeout=60) as http:
            # Wrong or misplaced credentials: 401s that echo nothing.
            for headers, params in (
                ({}, {}),
                ({"Authorization": f"Bearer {API_TOKEN}x"}, {}),
                ({"Authorization": API_TOKEN}, {}),
                ({}, {"access_token": API_TOKEN}),
            ):
                denied = http.get("/clients", headers=headers, params=params)
                assert denied.status_code == 401
                seen.append(denied.text + repr(denied.headers))

            def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
                response = http.request(method, path, headers=auth, **kwargs)
                seen.append(response.text + repr(response.headers))
                return response

            acme_client = call("POST", "/clients", json={"name": "Acme"}).json()
            beta_client = call("POST", "/clients", json={"name": "Beta"}).json()
            pipelines = [
                call("POST", "/pipelines", json={
                    "client_id": owner["id"], "name": external_id, "platform": "generic",
                    "pipeline_type": "batch", "environment": "prod", "external_id": external_id,
                }).json()
                for owner, external_id in ((acme_client, "echo"), (acme_client, "denied"),
                                           (acme_client, "broken"), (beta_client, "other"))
            ]  # fmt: skip
            report = call("POST", "/ingestions").json()
            assert report["runs_created"] == 2, report
            assert len(report["errors"]) == 3, report
            # A manual run whose payload carries secrets is redacted too.
            call("POST", f"/pipelines/{pipelines[0]['id']}/runs", json={
                "status": "failed", "error_message": f"Authorization: Bearer {PAYLOAD_BEARER}",
                "source_payload": {"steps": [{"env": {"DB_PASSWORD": PAYLOAD_PASSWORD}}],
                                   "url": f"https://bot:{USERINFO_PASSWORD}@git.internal/r"}})  # fmt: skip

            # The CLI: JSON and text reports, at DEBUG.
            for args in (["--json"], []):
                result = subprocess.run([*CHM, "ingest", *args], env=env, capture_output=True,
                                        text=True, timeout=120)  # fmt: skip
                assert result.returncode == 1, result.stderr
                assert "HTTP 401" in result.stdout and "HTTP 403" in result.stdout
                assert "DEBUG" in result.stderr or "page 1" in result.stderr
                seen.append(result.stdout + result.stderr)

            # Bad configurations: the token pasted into the file, broken TOML
            # around it, and a database that cannot be reached.
            pasted = tmp_path / "pasted.toml"
            pasted.write_text(sources_file(tmp_path, acme, beta).read_text()
                              + f'\n[[sources]]\nname = "x"\ntoken = "{ACME_TOKEN}"\n')  # fmt: skip
            broken = tmp_path / "broken.toml"
            broken.write_text(f'[[sources]]\nname = "x"\ntoken_env = {ACME_TOKEN}\n')
            unreachable = make_url("postgresql://chm@127.0.0.1:1/none").set(password=DB_PASSWORD)
            for changes, code in (
                ({"CHM_CONFIG": str(pasted)}, 2),
                ({"CHM_CONFIG": str(broken)}, 2),
                ({"CHM_DATABASE_URL": unreachable.render_as_string(hide_password=False)}, 1),
            ):
                result = subprocess.run([*CHM, "ingest", "--json"], env=env | changes,
                                        capture_output=True, text=True, timeout=60)  # fmt: skip
                assert result.returncode == code, result.stderr
                seen.append(result.stdout + result.stderr)

            # Everything the API shows afterwards.
            for pipeline in pipelines:
                call("GET", f"/pipelines/{pipeline['id']}")
                runs = call("GET", f"/pipelines/{pipeline['id']}/runs").json()["items"]
                for run in runs:
                    call("GET", f"/runs/{run['id']}")
            call("GET", "/runs")
            call("GET", "/pipelines")
            call("GET", f"/clients/{acme_client['id']}/summary",
                 params={"since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"})  # fmt: skip
            for report_path in ("latest-status", "failures-by-client", "stuck-runs"):
                call("GET", f"/reports/{report_path}")
                call("GET", f"/reports/{report_path}", params={"format": "csv"})
            failed = call("GET", f"/pipelines/{pipelines[0]['id']}/runs",
                          params={"status": "failed"}).json()["items"]  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = log_path.read_text()
    seen.append(served)
    stored = database_text(engine)

    # The session really went through every path searched below.
    assert "DEBUG" in served and "/api/v1/ingestions" in served
    assert "[REDACTED]" in stored
    assert any(run["error_message"] == "token [REDACTED] rejected; retry with "
               "api_key=[REDACTED]" for run in failed)  # fmt: skip
    assert {r.headers["authorization"] for r in acme.requests} == {f"Bearer {ACME_TOKEN}"}
    assert {r.headers["authorization"] for r in beta.requests} == {f"Bearer {BETA_TOKEN}"}

    shown = "\n".join(seen)
    leaks = [
        f"{where}: ...{context(text, secret)}..."
        for secret in SECRETS
        for where, text in (("shown", shown), ("stored", stored))
        if secret in text
    ]
    assert leaks == [], "\n\n".join(leaks)


def context(text: str, secret: str) -> str:
    at = text.index(secret)
    return text[max(0, at - 200) : at + len(secret) + 50].replace(secret, "<SECRET>")
