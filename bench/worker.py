"""How long a due pipeline waits before a worker takes it, with 1, 2 and 4
``chm worker`` processes on PostgreSQL (issue 13).

    .venv/bin/python -m bench.worker [--pipelines 200] [--workers 1 2 4]
        [--page-delay 0.02] [--spread 0] [--poll-s 1] [--batch 20] [--json]

For each worker count, in a scratch PostgreSQL database (created, migrated
with ``chm.core.migrate.upgrade``, dropped after): one client with
``--pipelines`` generic pipelines, against a local feed that answers each
pipeline's one page (two runs) after ``--page-delay`` seconds. The workers
are real ``chm worker`` processes with the default settings unless told
(``CHM_WORKER_POLL_S`` 1 s, ``CHM_WORKER_BATCH`` 20, ``interval_s`` 3600).
They start while nothing is due; once every one has registered, each
pipeline's last attempt is set so that it falls due at one instant T
(``--spread 0``, a burst) or at instants spread evenly over ``--spread``
seconds from T.

A pipeline's wait is its new ``last_ingest_attempt_at`` (when its ingestion
started, written by the worker) minus its due time (previous attempt +
interval); the drain is from T to the last pipeline's ``last_ingested_at``
(when its ingestion ended). The waits include the poll interval (an idle
worker looks every ``CHM_WORKER_POLL_S``) and the queue behind a claimed
batch (a worker walks the pipelines of its batch one after the other).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bench.dataset import ADMIN_URL
from chm.core.db import create_db_engine, make_session_factory
from chm.core.migrate import upgrade
from chm.core.settings import Environment
from chm.core.timeutil import utcnow
from chm.models import Client, Pipeline, Run, WorkerProcess

INTERVAL_S = 3600
# Before T every pipeline was attempted "just now": nothing is due.
LEAD_S = 1.0
CHM_WORKER = [sys.executable, "-m", "chm.cli", "worker"]
INGESTED = re.compile(r"pipeline \d+ \([^)]*\): ingestion complete")


@dataclass
class Figures:
    workers: int
    pipelines: int
    spread_s: float
    median_wait_s: float
    p95_wait_s: float
    worst_wait_s: float
    drain_s: float
    per_worker: list[int]  # pipelines each worker ingested
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


@contextmanager
def feed(page_delay: float) -> Iterator[str]:
    """A generic feed: every ``/pipelines/<id>/runs`` is one page of two runs."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle's
        # algorithm and the client's delayed ACK add ~40 ms to every page.
        disable_nagle_algorithm = True

        def log_message(self, *_args: Any) -> None:
            pass

        def do_GET(self) -> None:
            external_id = self.path.split("/")[2]
            runs = [
                {
                    "run_id": f"{external_id}-{n}",
                    "status": "succeeded",
                    "started_at": "2026-03-01T10:00:00Z",
                    "finished_at": "2026-03-01T10:05:00Z",
                    "metrics": {"rows": 10},
                }
                for n in (1, 2)
            ]
            body = json.dumps({"runs": runs, "next_cursor": None}).encode()
            time.sleep(page_delay)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"chm_bench_worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_pipelines(engine: Engine, count: int) -> None:
    """``count`` generic pipelines, all attempted just now (none due)."""
    now = utcnow()
    with make_session_factory(engine, write=True).begin() as session:
        client = Client(name="Bench")
        session.add(client)
        session.flush()
        session.add_all(
            Pipeline(client_id=client.id, name=f"p{n:04d}", platform="generic",
                     pipeline_type="batch", environment="prod", external_id=f"p{n:04d}",
                     last_ingest_attempt_at=now)
            for n in range(count)
        )  # fmt: skip


def make_due(engine: Engine, at: datetime, spread_s: float) -> dict[int, datetime]:
    """Sets each pipeline's last attempt so that it falls due at ``at`` (or, with a
    spread, evenly over ``spread_s`` seconds from it); its due time by id."""
    with make_session_factory(engine, write=True).begin() as session:
        ids = sorted(session.scalars(sa.select(Pipeline.id)))
        step = spread_s / len(ids)
        due = {pipeline_id: at + timedelta(seconds=i * step) for i, pipeline_id in enumerate(ids)}
        for pipeline_id, when in due.items():
            session.execute(
                sa.update(Pipeline)
                .where(Pipeline.id == pipeline_id)
                .values(last_ingest_attempt_at=when - timedelta(seconds=INTERVAL_S))
            )
    return due


def wait_for(condition: Any, what: str, timeout: float, processes: list[Any]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"a worker exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting until {what}")
        time.sleep(0.05)


def scalar(engine: Engine, statement: Any) -> Any:
    with engine.connect() as connection:
        return connection.scalar(statement)


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure(
    admin_url: str,
    base_url: str,
    workers: int,
    pipelines: int,
    spread_s: float,
    extra_env: dict[str, str],
) -> Figures:
    load_before = os.getloadavg()
    with scratch_database(admin_url) as url, tempfile.TemporaryDirectory() as directory:
        engine = create_db_engine(url)
        upgrade(engine, environment=Environment.development)
        create_pipelines(engine, pipelines)
        config = Path(directory) / "sources.toml"
        config.write_text(
            "[[sources]]\n"
            'name = "bench"\nplatform = "generic"\nenvironment = "prod"\n'
            f'base_url = "{base_url}"\ninterval_s = {INTERVAL_S}\ntimeout_s = 10\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")} | {
            "CHM_ENV": Environment.development.value,
            "CHM_DATABASE_URL": url,
            "CHM_CONFIG": str(config),
            **extra_env,
        }
        logs = [Path(directory) / f"worker-{n}.log" for n in range(workers)]
        processes = []
        for log in logs:
            with log.open("wb") as handle:
                processes.append(
                    subprocess.Popen(CHM_WORKER, env=env, stdin=subprocess.DEVNULL,
                                     stdout=handle, stderr=handle)
                )  # fmt: skip
        try:
            registered = sa.select(sa.func.count()).select_from(WorkerProcess)
            wait_for(lambda: scalar(engine, registered) == workers, "every worker registered",
                     60, processes)  # fmt: skip
            start = utcnow() + timedelta(seconds=LEAD_S)
            due = make_due(engine, start, spread_s)
            done = (
                sa.select(sa.func.count())
                .select_from(Pipeline)
                .where(
                    Pipeline.last_ingested_at >= start,
                    Pipeline.ingest_lease_owner.is_(None),
                )
            )
            wait_for(lambda: scalar(engine, done) == pipelines, "every pipeline was ingested",
                     600, processes)  # fmt: skip
            with engine.connect() as connection:
                rows = connection.execute(
                    sa.select(
                        Pipeline.id,
                        Pipeline.last_ingest_attempt_at,
                        Pipeline.last_ingested_at,
                        Pipeline.last_ingestion_error,
                    )
                ).all()
                stored = connection.scalar(sa.select(sa.func.count()).select_from(Run))
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=60)
        engine.dispose()
        errors = [row.last_ingestion_error for row in rows if row.last_ingestion_error]
        if errors or stored != 2 * pipelines:
            raise SystemExit(f"ingestion went wrong: {stored} runs stored, errors {errors[:3]}")
        per_worker = [len(INGESTED.findall(log.read_text(errors="replace"))) for log in logs]
    waits = [(row.last_ingest_attempt_at - due[row.id]).total_seconds() for row in rows]
    drain = max(row.last_ingested_at for row in rows) - start
    return Figures(
        workers=workers,
        pipelines=pipelines,
        spread_s=spread_s,
        median_wait_s=round(statistics.median(waits), 3),
        p95_wait_s=round(nearest_rank(waits, 0.95), 3),
        worst_wait_s=round(max(waits), 3),
        drain_s=round(drain.total_seconds(), 3),
        per_worker=per_worker,
        load_before=load_before,
        load_after=os.getloadavg(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--page-delay", type=float, default=0.02, help="seconds per page")
    parser.add_argument("--spread", type=float, default=0.0, help="due times over seconds")
    parser.add_argument("--poll-s", type=float, help="CHM_WORKER_POLL_S (default: the setting's)")
    parser.add_argument("--batch", type=int, help="CHM_WORKER_BATCH (default: the setting's)")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="the PostgreSQL server")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    extra_env = {}
    if args.poll_s is not None:
        extra_env["CHM_WORKER_POLL_S"] = str(args.poll_s)
    if args.batch is not None:
        extra_env["CHM_WORKER_BATCH"] = str(args.batch)
    results = []
    with feed(args.page_delay) as base_url:
        for workers in args.workers:
            results.append(
                measure(args.admin_url, base_url, workers, args.pipelines, args.spread, extra_env)
            )
    if args.json:
        print(json.dumps([asdict(figures) for figures in results], indent=2))
        return 0
    print(
        f"{args.pipelines} pipelines, one page each ({args.page_delay * 1000:g} ms), due "
        + (f"over {args.spread:g} s" if args.spread else "at one instant")
        + f"; {extra_env or 'default worker settings'}; {os.cpu_count()} CPUs"
    )
    print(
        f"{'workers':>7} {'median':>8} {'p95':>8} {'worst':>8} {'drain':>8}  "
        f"{'per worker':<22} load average before / after"
    )
    for figures in results:
        before = " ".join(f"{value:.2f}" for value in figures.load_before)
        after = " ".join(f"{value:.2f}" for value in figures.load_after)
        print(
            f"{figures.workers:>7} {figures.median_wait_s:>7.2f}s {figures.p95_wait_s:>7.2f}s "
            f"{figures.worst_wait_s:>7.2f}s {figures.drain_s:>7.2f}s  "
            f"{' '.join(map(str, figures.per_worker)):<22} {before} / {after}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
