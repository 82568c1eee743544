"""The README's pictures of the operator pages: ``make screenshots``.

    .venv/bin/python -m tests.web.screenshots [--out docs/screenshots]

Seeds a realistic database over the API of a real ``chm serve`` (four
clients, ten pipelines on five platforms, about 500 runs that follow their
schedules over the last days, rules whose alerts fired and resolved along the
way, an acknowledged alert, a silence, a stuck run, overdue pipelines), then
saves the now, pipeline and alerts pages at 1280 px wide as PNGs (whole,
or their first 2,200 px: the pipeline's history goes on).
The data is relative to the real time (the server's), so the pictures read
like a morning's look at the screen. Needs Debian's chromium.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

for folder in ("tests", "tests/web"):
    path = str(Path(__file__).resolve().parents[2] / folder)
    if path not in sys.path:
        sys.path.insert(0, path)

from browser import chromium_problem, launch, serve  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from chm.alerts.evaluate import evaluate  # noqa: E402
from chm.core.cron import ticks_after  # noqa: E402
from chm.core.db import create_db_engine, make_session_factory  # noqa: E402
from chm.core.migrate import upgrade  # noqa: E402
from chm.core.settings import Environment, Settings  # noqa: E402
from chm.models import AlertDelivery, Pipeline  # noqa: E402
from chm.schedules.ticks import rewrite_ticks  # noqa: E402
from factories import API, make_client, make_pipeline, make_rule, make_run, ok  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTH = 1280
HEIGHT = 900
# A page longer than this is cut (the pipeline's history of 50 runs goes on).
MAX_HEIGHT = 2200

ERRORS = {
    "airflow": 'Task load_orders failed: psycopg2.errors.UndefinedTable: relation "staging.orders" does not exist',
    "adf": "Copy activity failed: ErrorCode=SqlFailedToConnect, the server was not found or was not accessible",
    "databricks": "Job run failed: SparkException: Job aborted due to stage failure: Task 3 in stage 12.0 failed 4 times",
    "dbt_cloud": "Database Error in model fct_ledger (models/marts/fct_ledger.sql): division by zero",
    "generic": "HTTP 503 from rates provider after 3 retries",
}


@dataclass
class Plan:
    """One pipeline: its schedule, how long its runs take, how far back its
    history goes, and how its latest runs ended (oldest first: s success,
    f failed, r still running)."""

    client: str
    name: str
    platform: str
    cron: str
    zone: str
    minutes: float
    days: float
    tail: str = "s"
    # No run for this long before now (the schedule says there should be).
    silent_hours: float = 0
    # How often an earlier run failed.
    flakiness: float = 0.03


PLANS = [
    Plan("Acme Retail", "orders_daily", "airflow", "0 2 * * *", "Europe/Berlin", 32, 60, "sff"),
    Plan("Acme Retail", "inventory_sync", "databricks", "15 * * * *", "UTC", 6, 3),
    Plan("Acme Retail", "customer_360", "dbt_cloud", "30 4 * * *", "UTC", 18, 30, silent_hours=50),
    Plan("Globex Logistics", "shipments_hourly", "adf", "5 * * * *", "UTC", 4, 3, "sf"),
    Plan("Globex Logistics", "billing_export", "airflow", "0 6 * * MON-FRI", "UTC", 11, 30),
    Plan("Globex Logistics", "fleet_telemetry", "databricks", "*/15 * * * *", "UTC", 9, 2, "sr"),
    Plan(
        "Initech Finance",
        "ledger_close",
        "dbt_cloud",
        "0 1 * * *",
        "America/New_York",
        25,
        30,
        "sfs",
    ),
    Plan("Initech Finance", "fx_rates", "generic", "0 * * * *", "UTC", 1, 2, flakiness=0.15),
    # Its latest run hangs since the last tick at least 7 h ago: stuck, and overdue.
    Plan("Umbrella Health", "claims_ingest", "airflow", "0 3 * * *", "UTC", 40, 30, "sr", 7),
    Plan("Umbrella Health", "lab_results_sync", "adf", "30 */2 * * *", "UTC", 7, 4),
]
RULES: dict[str, dict[str, Any]] = {
    "Acme Retail": {"rule_type": "on_failure", "destination": "slack:#acme-data"},
    "Globex Logistics": {"rule_type": "on_failure", "destination": "pagerduty:globex"},
    "Initech Finance": {"rule_type": "on_failure", "destination": "email:data@initech.example"},
    "Umbrella Health": {
        "rule_type": "long_running",
        "threshold": 240,
        "destination": "slack:#umbrella-data",
    },
}
# Alerts are evaluated at these times before now, as the worker would have.
CHECKPOINTS = (timedelta(hours=30), timedelta(hours=6), timedelta(hours=1), timedelta(0))


def z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def external_run_id(platform: str, tick: datetime, rng: random.Random) -> str:
    """A run id as the platform writes it."""
    if platform == "airflow":
        return f"scheduled__{tick.isoformat()}"
    if platform == "adf":
        return f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}"
    return str(rng.randint(10**8, 10**9))


def planned_runs(plan: Plan, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """The pipeline's runs, one per tick, each as the API takes it."""
    until = now - timedelta(hours=plan.silent_hours)
    ticks = ticks_after(plan.cron, plan.zone, now - timedelta(days=plan.days), until, 10_000)
    tail = plan.tail[-len(ticks) :]
    statuses = [
        "failed" if rng.random() < plan.flakiness else "success"
        for _ in range(len(ticks) - len(tail))
    ] + [{"s": "success", "f": "failed", "r": "running"}[c] for c in tail]
    runs = []
    for tick, status in zip(ticks, statuses, strict=True):
        started = tick + timedelta(seconds=rng.randint(20, 150))
        seconds = plan.minutes * 60 * rng.uniform(0.8, 1.25)
        if rng.random() < 0.05:
            seconds *= 2.2  # the odd slow day
        run: dict[str, Any] = {
            "status": status,
            "external_run_id": external_run_id(plan.platform, tick, rng),
            "started_at": z(started),
        }
        if status != "running":
            finished = min(started + timedelta(seconds=seconds), now - timedelta(seconds=5))
            run["finished_at"] = z(finished)
        if status == "failed":
            run["error_message"] = ERRORS[plan.platform]
        runs.append(run)
    return runs


def seed(http: httpx.Client, db_url: str, now: datetime) -> dict[str, dict[str, Any]]:
    """The world, over the API; alerts evaluated at each checkpoint as the runs
    arrive in time order. Returns the pipelines by name."""
    rng = random.Random(16)
    clients = {name: make_client(http, name) for name in dict.fromkeys(p.client for p in PLANS)}
    pipelines = {
        plan.name: make_pipeline(
            http,
            clients[plan.client],
            plan.name,
            platform=plan.platform,
            schedule=plan.cron,
            schedule_timezone=plan.zone,
            grace_minutes=30,
        )
        for plan in PLANS
    }
    for client, rule in RULES.items():
        make_rule(http, client_id=clients[client]["id"], **rule)
    # Since the night before: the long_running alert it covers is silenced.
    ok(
        http.post(
            f"{API}/silences",
            json={
                "client_id": clients["Umbrella Health"]["id"],
                "starts_at": z(now - timedelta(hours=12)),
                "ends_at": z(now + timedelta(hours=20)),
                "reason": "EHR migration weekend: claims run long",
                "created_by": "sam@umbrella.example",
            },
        ),
        201,
    )
    arrivals = sorted(
        (run["started_at"], plan.name, run)
        for plan in PLANS
        for run in planned_runs(plan, now, rng)
    )
    engine = create_db_engine(db_url)
    settings = Settings(database_url=db_url, _env_file=None)  # type: ignore[call-arg]
    try:
        checkpoints = [now - before for before in CHECKPOINTS]
        for started_at, name, run in arrivals:
            while checkpoints and z(checkpoints[0]) < started_at:
                evaluate(engine, checkpoints.pop(0), settings, None)
            make_run(http, pipelines[name], **run)
        for checkpoint in checkpoints:
            evaluate(engine, checkpoint, settings, None)
        schedules_set_long_ago(engine, now)
        deliveries_sent(engine)
    finally:
        engine.dispose()
    firing = ok(http.get(f"{API}/alerts", params={"state": "firing"}))["items"]
    shipments = next(a for a in firing if a["pipeline_id"] == pipelines["shipments_hourly"]["id"])
    ok(
        http.post(
            f"{API}/alerts/{shipments['id']}/acknowledge",
            json={"by": "dana@globex.example", "note": "Gateway maintenance, retrying at 07:00"},
        )
    )
    return pipelines


def schedules_set_long_ago(engine: sa.Engine, now: datetime) -> None:
    """The schedules as if set two months ago (the API sets them now), so the
    pipelines that stopped running are overdue."""
    set_at = now - timedelta(days=61)
    with make_session_factory(engine, write=True).begin() as session:
        for pipeline in session.scalars(sa.select(Pipeline)).all():
            pipeline.schedule_set_at = set_at
            pipeline.created_at = min(pipeline.created_at, set_at)
            session.flush()
            rewrite_ticks(session, pipeline, now)


def deliveries_sent(engine: sa.Engine) -> None:
    """The notifications as sent a few seconds after their alerts, as the
    worker's sender would have (no worker runs here, and the destinations
    are not configured: they would stay undeliverable)."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(AlertDelivery)
            .where(AlertDelivery.status == "undeliverable")
            .values(
                status="sent",
                attempts=1,
                last_error=None,
                sent_at=AlertDelivery.created_at,
            )
        )


def photograph(url: str, pages: dict[str, str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
        page = context.new_page()
        for name, path in pages.items():
            response = page.goto(url + path)
            assert response is not None and response.status == 200, (path, response)
            page.wait_for_load_state("networkidle")
            height = min(MAX_HEIGHT, int(page.evaluate("document.documentElement.scrollHeight")))
            page.screenshot(
                path=str(out / f"{name}.png"),
                full_page=True,
                clip={"x": 0, "y": 0, "width": WIDTH, "height": height},
            )
            print(f"saved {out / f'{name}.png'}", flush=True)
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    problem = chromium_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        db_url = f"sqlite:///{scratch}/chm.db"
        engine = create_db_engine(db_url)
        upgrade(engine, environment=Environment.development)
        engine.dispose()
        # A refresh far off: the pictures are of the page as it loaded.
        with serve(db_url, Path(scratch) / "serve.log", CHM_WEB_REFRESH_S="3600") as server:
            now = datetime.now(UTC).replace(microsecond=0)
            with server.http() as http:
                pipelines = seed(http, db_url, now)
            pages = {
                "now": "/",
                "pipeline": f"/pipelines/{pipelines['orders_daily']['id']}",
                "alerts": "/alerts",
            }
            photograph(server.url, pages, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
