"""What the browser tests and the screenshots share: a real ``chm serve`` over a
seeded database, and Debian's chromium driven by Playwright's sync API.

Nothing is downloaded: Playwright is pointed at ``/usr/bin/chromium`` (``make
test`` installs it when it can). Without it the browser tests skip with the
reason, and fail under CI (CI=true).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, Response

from chm.alerts.evaluate import EvaluationReport, evaluate
from chm.core.db import create_db_engine
from chm.core.settings import Settings
from factories import make_client, make_pipeline, make_rule, make_run, ok
from live import free_port

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
API = "/api/v1"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 20


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"{CHROMIUM} is missing: install Debian's chromium (`make test` does when it can,"
            " as root: apt-get install chromium)"
        )
    return None


def require_chromium() -> None:
    """Skip the calling test without chromium, or fail under CI."""
    problem = chromium_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem}; under CI the browser tests must run", pytrace=False)
    pytest.skip(problem)


def launch(playwright: Playwright) -> Browser:
    # --no-sandbox: chromium refuses to start its sandbox as root (containers).
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
    )


# --- a real server -------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Path
    url: str
    token: str | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def http(self) -> httpx.Client:
        """An HTTP client of the API (with the bearer token in production)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_env(db_url: str, **settings: str) -> dict[str, str]:
    """This process's environment without its CHM_* settings, and the server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    return env | {"CHM_DATABASE_URL": db_url, "CHM_LOG_LEVEL": "WARNING", **settings}


@contextmanager
def serve(db_url: str, log: Path, **settings: str) -> Iterator[Server]:
    """``chm serve`` on a free loopback port over ``db_url`` (``settings``: more
    CHM_* variables), its output in ``log``; yielded once /healthz answers 200,
    stopped (SIGTERM, killed if it hangs) on leaving."""
    port = free_port()
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "chm.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env(db_url, **settings),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
        )
    server = Server(process, log, f"http://127.0.0.1:{port}", settings.get("CHM_API_TOKEN"))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(server.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chm serve did not start:\n{server.output()[-3000:]}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def claim_for_production(db_url: str) -> None:
    """Record a fresh test database as production's (SE-004), as a production
    ``chm db upgrade`` would have: a production server refuses any other."""
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE chm_settings SET value = 'production' WHERE key = 'environment'")
            )
    finally:
        engine.dispose()


def fire_alerts(db_url: str) -> EvaluationReport:
    """One alert evaluation at the real time (the server renders at it too), as
    the worker's would be; deliveries have no destinations configured."""
    engine = create_db_engine(db_url)
    try:
        settings = Settings(database_url=db_url, _env_file=None)  # type: ignore[call-arg]
        return evaluate(engine, datetime.now(UTC), settings, None)
    finally:
        engine.dispose()


# --- the seeded world ------------------------------------------------------------------

# Runs happened at fixed times (the server's "now" is the real clock: they are
# in its past, and the relative forms say how long ago).
BASE = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


@dataclass
class World:
    """What the browser tests look for, by id."""

    acme: dict[str, Any]
    globex: dict[str, Any]
    failing: dict[str, Any]  # Acme's orders_daily: latest run failed, an alert firing
    healthy: dict[str, Any]  # Acme's inventory_sync: all green
    stuck: dict[str, Any]  # Globex's billing_export: running since BASE
    failing_runs: list[str] = field(default_factory=list)  # newest first
    alert_id: str = ""


def seed(http: httpx.Client) -> World:
    """A small world over the API: two clients, a failing pipeline with an
    on_failure rule, a healthy one and a stuck run."""
    acme = make_client(http, "Acme Retail")
    globex = make_client(http, "Globex")
    failing = make_pipeline(
        http,
        acme,
        "orders_daily",
        schedule="0 2 * * *",
        schedule_timezone="Europe/Berlin",
        grace_minutes=30,
    )
    healthy = make_pipeline(http, acme, "inventory_sync", platform="databricks")
    stuck = make_pipeline(http, globex, "billing_export", platform="adf")
    world = World(acme=acme, globex=globex, failing=failing, healthy=healthy, stuck=stuck)
    statuses = ["success", "success", "failed", "success", "failed"]
    for day, status in enumerate(statuses):
        run = make_run(
            http,
            failing,
            status,
            external_run_id=f"scheduled__2026-11-{23 + day}",
            started_at=at(24 * (day - 4)),
            finished_at=at(24 * (day - 4) + 0.5 + 0.1 * day),
            error_message=(
                'Task load_orders failed: relation "staging.orders" does not exist'
                if status == "failed"
                else None
            ),
        )
        world.failing_runs.insert(0, run["id"])
    for hour in range(3):
        make_run(http, healthy, "success", started_at=at(hour), finished_at=at(hour + 0.2))
    make_run(http, stuck, "success", started_at=at(-24), finished_at=at(-23.5))
    make_run(http, stuck, "running", started_at=at(0))
    make_rule(http, client_id=acme["id"], destination="webhook:ops")
    return world


def firing_alert_id(http: httpx.Client, pipeline: dict[str, Any]) -> str:
    page = ok(http.get(f"{API}/alerts", params={"state": "firing"}))
    ids = [a["id"] for a in page["items"] if a["pipeline_id"] == pipeline["id"]]
    assert len(ids) == 1, page
    return str(ids[0])


# --- what a page did wrong -------------------------------------------------------------


@dataclass
class PageProblems:
    """Console errors, uncaught exceptions, failed requests and error answers
    seen by a page since ``watch``."""

    seen: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.seen.append(f"console {message.type}: {message.text} ({message.location})")

    def page_error(self, error: Exception) -> None:
        self.seen.append(f"uncaught: {error}")

    def request_failed(self, request: Request) -> None:
        self.seen.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def response(self, response: Response) -> None:
        if response.status >= 400:
            self.seen.append(f"HTTP {response.status}: {response.request.method} {response.url}")


def watch(page: Page) -> PageProblems:
    problems = PageProblems()
    page.on("console", problems.console)
    page.on("pageerror", problems.page_error)
    page.on("requestfailed", problems.request_failed)
    page.on("response", problems.response)
    return problems


def axe_violations(page: Page) -> tuple[int, str]:
    """axe-core's violations on the page as loaded: their count and its report."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return results.violations_count, results.generate_report()


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the document is wider than the viewport (0: no
    horizontal scroll of the page; a table may still scroll in its wrapper)."""
    return int(
        page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )
