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

A second session sends alerts through every kind of destination (a webhook
whose URL carries a token and which signs with an HMAC key, Slack by bot
token and by incoming webhook, a Teams Workflows URL with its sig, email
through an SMTP server with a password, PagerDuty with a routing key), each
endpoint failing once with the caller's secret in its answer: afterwards
the worker's log, the server's, the alerts API, `chm alerts` and `chm
status` and every stored row are searched the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from live import free_port

sys.path.insert(0, str(Path(__file__).parent / "ingestion"))
sys.path.insert(0, str(Path(__file__).parent / "alerts"))
from channel_fakes import (
    Answer,
    FakePagerDuty,
    FakeSlack,
    FakeTeams,
    SmtpServer,
    WebhookReceiver,
)
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


# --- a session that sends alerts through every kind of destination -------------------

HOOK_TOKEN = "hook-Path-T0ken-8c7d6e5f4a3b"  # the webhook URL's credential, in its path
HOOK_SECRET = "hmac-S1gning-Key-2e4f6a8c"
SLACK_BOT_TOKEN = "xoxb-2718281828-S3cretBotTok3n-4d5e"
SLACK_HOOK_TOKEN = "Sl4ckHookT0ken9f8e7d6c5b4a"  # an incoming webhook's path
TEAMS_SIG = "TeamsS1g-0a1b2c3d4e5f6a7b8c9d0e1f"  # a Workflows URL's sig
SMTP_USER = "chm-mailer"
SMTP_PASSWORD = "smtp-Pa55word-6b5a4c3d"
ROUTING_KEY = "R0utingKey-5e6f7a8b9c0d1e2f3a4b5"  # PagerDuty's are 32 characters
CHANNEL_SECRETS = (
    HOOK_TOKEN, HOOK_SECRET, SLACK_BOT_TOKEN, SLACK_HOOK_TOKEN, TEAMS_SIG, SMTP_PASSWORD,
    ROUTING_KEY,
)  # fmt: skip
# One client-wide rule per destination; what the first attempt of each meets.
DESTINATIONS = (
    "webhook:ops-hook",  # 500 echoing its URL and signing key, then 200
    "webhook:refusing-hook",  # 403 echoing its URL: failed at once
    "webhook:unset-hook",  # its variable is not set: undeliverable
    "slack:#ops",  # the bot token: 500 with the token in Slack's error, then ok
    "slack:slack-hook",  # an incoming webhook: 500 echoing its URL, then ok
    "teams:teams",  # a Workflows URL: 500 echoing it, then 202
    "email:ops@example.com",  # SMTP with a password: 451 quoting it, then accepted
    "pagerduty:pd",  # Events API v2: 500 quoting the routing key, then 202
)
DESTINATIONS_TOML = """
[[destinations]]
name = "ops-hook"
kind = "webhook"
url_env = "OPS_HOOK_URL"
secret_env = "OPS_HOOK_SECRET"

[[destinations]]
name = "refusing-hook"
kind = "webhook"
url_env = "REFUSING_HOOK_URL"
secret_env = "OPS_HOOK_SECRET"

[[destinations]]
name = "unset-hook"
kind = "webhook"
url_env = "UNSET_HOOK_URL"

[[destinations]]
name = "slack-hook"
kind = "slack"
url_env = "SLACK_HOOK_URL"

[[destinations]]
name = "teams"
kind = "teams"
url_env = "TEAMS_URL"

[[destinations]]
name = "pd"
kind = "pagerduty"
routing_key_env = "PD_ROUTING_KEY"
"""


class Endpoints:
    """Every kind's fake endpoint over a real socket, each misbehaving once with
    the caller's secret in its answer (see DESTINATIONS)."""

    def __init__(self) -> None:
        self.hook = WebhookReceiver(secret=HOOK_SECRET)
        self.slack = FakeSlack(SLACK_BOT_TOKEN, channels=("#ops",))
        self.teams = FakeTeams(TEAMS_SIG)
        self.pagerduty = FakePagerDuty()
        self.smtp = SmtpServer(login=(SMTP_USER, SMTP_PASSWORD))
        hook_path, refusing_path = f"/hooks/{HOOK_TOKEN}", f"/refusing/{HOOK_TOKEN}"
        slack_hook_path = f"/services/T0000/B0000/{SLACK_HOOK_TOKEN}"
        self.hook_url = self.hook.url + hook_path
        self.refusing_url = self.hook.url + refusing_path
        self.slack_hook_url = self.slack.url + slack_hook_path
        self.hook.routes[hook_path] = self.hook._receive
        self.hook.routes[refusing_path] = lambda _request: Answer(
            403, f"forbidden: {self.refusing_url} is not yours (key {HOOK_SECRET})"
        )
        self.slack.routes[slack_hook_path] = self.slack._incoming_webhook
        self.hook.script(
            hook_path, Answer(500, f"cannot route {self.hook_url} signed with {HOOK_SECRET}")
        )
        self.slack.script(
            FakeSlack.API, Answer(500, {"ok": False, "error": f"token {SLACK_BOT_TOKEN} broke"})
        )
        self.slack.script(slack_hook_path, Answer(500, f"no_service at {self.slack_hook_url}"))
        self.teams.script(
            FakeTeams.PATH,
            Answer(
                500, {"error": {"code": "Flow", "message": f"{self.teams.workflow_url} failed"}}
            ),
        )
        self.pagerduty.script(
            FakePagerDuty.PATH,
            Answer(500, {"status": "error", "message": f"routing_key {ROUTING_KEY} overloaded"}),
        )
        self.mail_refusals: list[str] = []
        accept = self.smtp.inbox.handle_RCPT

        async def busy_once(server: Any, session: Any, envelope: Any, address: str,
                            options: list[str]) -> str:  # fmt: skip
            if not self.mail_refusals:
                answer = f"451 4.3.0 {SMTP_USER}/{SMTP_PASSWORD} is over quota, try later"
                self.mail_refusals.append(answer)
                return answer
            return await accept(server, session, envelope, address, options)

        # aiosmtpd reads the handler's hooks when a connection opens.
        self.smtp.inbox.handle_RCPT = busy_once  # type: ignore[method-assign]

    def environ(self) -> dict[str, str]:
        return {
            "OPS_HOOK_URL": self.hook_url,
            "OPS_HOOK_SECRET": HOOK_SECRET,
            "REFUSING_HOOK_URL": self.refusing_url,
            "SLACK_HOOK_URL": self.slack_hook_url,
            "TEAMS_URL": self.teams.workflow_url,
            "PD_ROUTING_KEY": ROUTING_KEY,
            "CHM_SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
            "CHM_SLACK_API_URL": self.slack.api_url,
            "CHM_PAGERDUTY_EVENTS_URL": self.pagerduty.events_url,
            "CHM_SMTP_URL": self.smtp.url(user=SMTP_USER),
            "CHM_SMTP_PASSWORD": SMTP_PASSWORD,
            "CHM_SMTP_FROM": "chm@example.com",
        }

    def secrets(self) -> tuple[str, ...]:
        return (*CHANNEL_SECRETS, self.hook_url, self.refusing_url, self.slack_hook_url,
                self.teams.workflow_url)  # fmt: skip

    def close(self) -> None:
        for receiver in (self.hook, self.slack, self.teams, self.pagerduty):
            receiver.close()
        self.smtp.close()


@pytest.fixture
def endpoints() -> Iterator[Endpoints]:
    # The SMTP server takes the password without TLS: CHM sends it in clear to
    # a server on this machine only.
    made = Endpoints()
    yield made
    made.close()


def deliveries_settled(engine: Engine, expected: int) -> Callable[[], bool]:
    def check() -> bool:
        with engine.connect() as connection:
            statuses = connection.scalars(sa.text("SELECT status FROM alert_deliveries")).all()
        return len(statuses) == expected and "pending" not in statuses

    return check


def wait_for(ready: Callable[[], bool], what: str, worker: subprocess.Popen[bytes],
             log: Path) -> None:  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready():
        assert worker.poll() is None, f"chm worker exited before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out until {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_production_session_sending_alerts_through_every_kind_never_shows_or_stores_a_secret(
    db_url, engine, endpoints, tmp_path
) -> None:
    assert len(ROUTING_KEY) == 32
    claim_for_production(engine)
    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password=DB_PASSWORD)
    config = tmp_path / "chm.toml"
    config.write_text(DESTINATIONS_TOML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")} | {
        "CHM_ENV": "production",
        "CHM_API_TOKEN": API_TOKEN,
        "CHM_DATABASE_URL": url.render_as_string(hide_password=False),
        "CHM_CONFIG": str(config),
        "CHM_LOG_LEVEL": "DEBUG",
        "CHM_PUBLIC_URL": "https://chm.example.com",
        # A firing that comes in another evaluation a moment later (its run
        # stored by another transaction) joins the same message.
        "CHM_ALERT_GROUP_WAIT_S": "2",
        "CHM_WORKER_POLL_S": "0.05",
        **endpoints.environ(),
    }
    env.pop("UNSET_HOOK_URL", None)
    secrets = (API_TOKEN, DB_PASSWORD, *endpoints.secrets())
    seen: list[str] = []  # everything CHM showed: responses, CLI output, logs

    port = free_port()
    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    with serve_log.open("w") as log:
        server = subprocess.Popen([*CHM, "serve", "--port", str(port)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, text=True)  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        wait_until_up(base, server)
        with httpx.Client(base_url=base, headers=auth, timeout=60) as http:

            def call(method: str, path: str, **kwargs: Any) -> Any:
                response = http.request(method, path, **kwargs)
                seen.append(response.text + repr(response.headers))
                assert response.is_success, response.text
                return response.json()

            acme = call("POST", "/api/v1/clients", json={"name": "Acme"})
            pipelines = [
                call("POST", "/api/v1/pipelines", json={
                    "client_id": acme["id"], "name": name, "platform": "airflow",
                    "pipeline_type": "batch", "environment": "prod",
                })
                for name in ("orders_daily", "billing_hourly", "quiet_sandbox")
            ]  # fmt: skip
            for destination in DESTINATIONS:
                call("POST", "/api/v1/alert-rules", json={
                    "client_id": acme["id"], "rule_type": "on_failure",
                    "destination": destination,
                })  # fmt: skip
            ends_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            silence = call("POST", "/api/v1/silences", json={
                "pipeline_id": pipelines[2]["id"], "ends_at": ends_at,
                "reason": "sandbox under repair", "created_by": "ops",
            })  # fmt: skip
            for pipeline in pipelines:
                call("POST", f"/api/v1/pipelines/{pipeline['id']}/runs", json={
                    "status": "failed", "started_at": "2026-05-31T10:00:00Z",
                    "error_message": "warehouse refused the load",
                })  # fmt: skip

            with worker_log.open("wb") as log:
                worker = subprocess.Popen([*CHM, "worker"], env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log)  # fmt: skip
            # Every firing delivery ended: sent after one failed attempt (the
            # backoff's real seconds), failed, undeliverable or silenced.
            firing = len(pipelines) * len(DESTINATIONS)
            wait_for(deliveries_settled(engine, firing), "the firing deliveries ended",
                     worker, worker_log)  # fmt: skip
            (taken, *_) = call("GET", "/api/v1/alerts", params={"state": "firing"})["items"]
            call("POST", f"/api/v1/alerts/{taken['id']}/acknowledge",
                 json={"by": "ops", "note": "looking"})  # fmt: skip
            for pipeline in pipelines:
                call("POST", f"/api/v1/pipelines/{pipeline['id']}/runs", json={
                    "status": "success", "started_at": "2026-05-31T11:00:00Z",
                })  # fmt: skip
            wait_for(deliveries_settled(engine, 2 * firing), "the resolved deliveries ended",
                     worker, worker_log)  # fmt: skip

            # Everything the API shows of it.
            alerts = call("GET", "/api/v1/alerts", params={"limit": 100})["items"]
            for alert in alerts:
                call("GET", f"/api/v1/alerts/{alert['id']}")
            call("GET", "/api/v1/alerts", params={"state": "resolved"})
            call("GET", "/api/v1/silences")
            call("GET", f"/api/v1/silences/{silence['id']}")
            call("GET", "/healthz", params={"detail": "1"})
        for args in (["alerts", "--json"], ["alerts"], ["status", "--json"], ["status"]):
            result = subprocess.run([*CHM, *args], env=env, capture_output=True, text=True,
                                    timeout=120)  # fmt: skip
            assert result.returncode == 0, result.stderr
            seen.append(result.stdout + result.stderr)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker_log.read_text()[-3000:]
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        server.terminate()
        server.wait(timeout=30)
    worked = worker_log.read_text()
    seen += [serve_log.read_text(), worked]
    stored = database_text(engine)

    # The session went through every path searched below.
    assert "DEBUG" in worked and ": sent (" in worked
    assert len(alerts) == firing and {a["state"] for a in alerts} == {"resolved"}
    with engine.connect() as connection:
        every = connection.execute(
            sa.text("SELECT p.name, d.destination, d.event, d.status, d.attempts, d.last_error "
                    "FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
                    "JOIN pipelines p ON p.id = a.pipeline_id")
        ).all()  # fmt: skip
    # The silenced pipeline's firings are silenced, every one, so no resolution
    # is owed (superseded); the others' as DESTINATIONS says.
    quiet = [row for row in every if row.name == "quiet_sandbox"]
    assert len(quiet) == 2 * len(DESTINATIONS)
    assert {(row.event, row.status) for row in quiet} == {
        ("firing", "silenced"), ("resolved", "superseded")
    }  # fmt: skip
    rows = [row for row in every if row.name != "quiet_sandbox"]
    outcomes = {(row.destination, row.event, row.status, row.attempts) for row in rows}
    for destination in DESTINATIONS[3:] + DESTINATIONS[:1]:
        assert (destination, "firing", "sent", 2) in outcomes, (destination, outcomes)
        assert (destination, "resolved", "sent", 1) in outcomes, (destination, outcomes)
    assert {(row.event, row.status, row.attempts) for row in rows
            if row.destination == "webhook:refusing-hook"} == {("firing", "failed", 1),
                                                                ("resolved", "superseded", 0)}  # fmt: skip
    errors = {row.destination: row.last_error for row in rows if row.event == "firing"}
    assert "answered HTTP 500" in errors["webhook:ops-hook"]
    assert "answered HTTP 403" in errors["webhook:refusing-hook"]
    assert "UNSET_HOOK_URL" in errors["webhook:unset-hook"]
    assert "HTTP 500" in errors["slack:#ops"] and "HTTP 500" in errors["slack:slack-hook"]
    assert "HTTP 500" in errors["teams:teams"] and "HTTP 500" in errors["pagerduty:pd"]
    assert "451" in errors["email:ops@example.com"]
    assert all("[REDACTED]" in errors[d] for d in DESTINATIONS if d != "webhook:unset-hook"), errors
    assert endpoints.hook.problems == endpoints.slack.problems == endpoints.teams.problems == []
    assert endpoints.pagerduty.problems == []
    assert len(endpoints.hook.delivered) == 2 and endpoints.hook.duplicates == 0
    assert len(endpoints.slack.posted) == 4 and len(endpoints.teams.cards) == 2
    assert set(endpoints.pagerduty.alerts.values()) == {"resolved"}
    assert len(endpoints.pagerduty.alerts) == 2
    assert len(endpoints.smtp.received) == 2 and endpoints.smtp.logins
    assert endpoints.mail_refusals

    shown = "\n".join(seen)
    leaks = [
        f"{where}: ...{context(text, secret)}..."
        for secret in secrets
        for where, text in (("shown", shown), ("stored", stored))
        if secret in text
    ]
    assert leaks == [], "\n\n".join(leaks)
