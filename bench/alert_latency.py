"""How long a failed run takes to reach a webhook as an alert (issue 14).

    .venv/bin/python -m bench.alert_latency [--backend sqlite postgresql]
        [--repeat 20] [--poll-s 1] [--json]

For each database, in a scratch database (SQLite: a temporary file;
PostgreSQL: a database created on ``--admin-url`` and dropped after), both
migrated by ``chm db upgrade``: ``chm serve`` and one ``chm worker`` as real
processes, the worker with ``CHM_ALERT_GROUP_WAIT_S=0`` and otherwise the
default settings (``CHM_WORKER_POLL_S`` 1 s, ``CHM_EVALUATE_EVERY_S`` 60 s),
and a webhook receiver in this process that answers 200 at once. One client
has ``--repeat`` pipelines and one client-wide ``on_failure`` rule sending
to the webhook.

Each measurement stores one failed run of a pipeline that has none (``POST
/api/v1/pipelines/{id}/runs``; the run is committed when the answer comes)
and waits for the webhook message naming that pipeline. Its latency is the
time from that answer to the message's arrival, both read on this process's
monotonic clock. Before each, a random pause of up to one poll so that the
runs land at every phase of the worker's poll (seeded: the same pauses on
every database). A first measurement, not counted, warms both processes.

What the latency holds: the wait for the worker's next look (up to a poll:
an idle worker sleeps ``CHM_WORKER_POLL_S`` and then sees the newest
``updated_at`` of runs change), one evaluation of every rule, the outbox's
write, the claim (committed before the send), rendering and the POST.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.dataset import ADMIN_URL
from bench.load import chm_server
from bench.run import load_average
from chm.core.db import create_db_engine
from chm.models import WorkerProcess

CHM_WORKER = [sys.executable, "-m", "chm.cli", "worker"]
API = "/api/v1"
TIMEOUT_S = 60.0


@dataclass
class Figures:
    backend: str
    measurements: int
    poll_s: float
    median_s: float
    p95_s: float
    max_s: float
    min_s: float
    mean_post_ms: float  # the POST of the run, for scale
    latencies_s: list[float]
    load_before: list[float]
    load_after: list[float]


class Receiver:
    """A webhook endpoint: notes when each message arrives, answers 200 at once."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                at = time.monotonic()
                with receiver.changed:
                    receiver.arrivals.append((at, json.loads(body)))
                    receiver.changed.notify_all()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def arrival_for(self, pipeline_id: str, timeout: float) -> float:
        """When the firing message naming ``pipeline_id`` arrived (waits for it)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, body in self.arrivals:
                    if body.get("status") == "firing" and any(
                        alert["annotations"]["pipeline_id"] == pipeline_id
                        for alert in body["alerts"]
                    ):
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no message for pipeline {pipeline_id} within {timeout} s")
                self.changed.wait(left)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def scratch_database(backend: str, admin_url: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/chm.db"
        return
    name = f"chm_bench_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def chm_worker(url: str, hook_url: str, extra_env: dict[str, str]) -> Iterator[None]:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "chm.toml"
        config.write_text(
            '[[destinations]]\nname = "bench"\nkind = "webhook"\nurl_env = "BENCH_HOOK_URL"\n'
        )
        log = Path(directory) / "worker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")} | {
            "CHM_DATABASE_URL": url,
            "CHM_CONFIG": str(config),
            "CHM_LOG_LEVEL": "WARNING",
            "CHM_ALERT_GROUP_WAIT_S": "0",
            "BENCH_HOOK_URL": hook_url,
            **extra_env,
        }
        with log.open("wb") as handle:
            process = subprocess.Popen(
                CHM_WORKER, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle
            )
        engine = create_db_engine(url)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            registered = sa.select(sa.func.count()).select_from(WorkerProcess)
            while True:
                with engine.connect() as connection:
                    if connection.scalar(registered):
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"chm worker did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield
            if process.poll() is not None:
                raise SystemExit(f"chm worker exited:\n{log.read_text()[-2000:]}")
        finally:
            engine.dispose()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure(
    backend: str, admin_url: str, repeat: int, poll_s: float, extra_env: dict[str, str]
) -> Figures:
    load_before = load_average()
    pauses = random.Random(14)
    receiver = Receiver()
    try:
        with (
            scratch_database(backend, admin_url) as url,
            chm_server(url, free_port()) as base,
            httpx.Client(base_url=base + API, timeout=30) as http,
        ):
            client = http.post("/clients", json={"name": "Bench"}).raise_for_status().json()
            pipelines = [
                http.post("/pipelines", json={
                    "client_id": client["id"], "name": f"p{n:03d}", "platform": "airflow",
                    "pipeline_type": "batch", "environment": "prod",
                }).raise_for_status().json()
                for n in range(repeat + 1)
            ]  # fmt: skip
            http.post("/alert-rules", json={
                "client_id": client["id"], "rule_type": "on_failure",
                "destination": "webhook:bench",
            }).raise_for_status()  # fmt: skip
            latencies, posts = [], []
            with chm_worker(url, receiver.url, extra_env):
                for n, pipeline in enumerate(pipelines):
                    time.sleep(pauses.uniform(0, poll_s))
                    asked = time.monotonic()
                    http.post(f"/pipelines/{pipeline['id']}/runs", json={
                        "status": "failed", "started_at": "2026-05-31T10:00:00Z",
                        "error_message": "bench: the load failed",
                    }).raise_for_status()  # fmt: skip
                    stored = time.monotonic()
                    arrived = receiver.arrival_for(pipeline["id"], TIMEOUT_S)
                    if n == 0:
                        continue  # the warm-up
                    latencies.append(arrived - stored)
                    posts.append(stored - asked)
    finally:
        receiver.close()
    return Figures(
        backend=backend,
        measurements=len(latencies),
        poll_s=poll_s,
        median_s=round(statistics.median(latencies), 3),
        p95_s=round(nearest_rank(latencies, 0.95), 3),
        max_s=round(max(latencies), 3),
        min_s=round(min(latencies), 3),
        mean_post_ms=round(statistics.mean(posts) * 1000, 1),
        latencies_s=[round(value, 3) for value in latencies],
        load_before=load_before,
        load_after=load_average(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--repeat", type=int, default=20, help="measurements per database")
    parser.add_argument(
        "--poll-s", type=float, help="CHM_WORKER_POLL_S (default: the setting's, 1 s)"
    )
    parser.add_argument("--admin-url", default=ADMIN_URL, help="the PostgreSQL server")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    extra_env = {}
    if args.poll_s is not None:
        extra_env["CHM_WORKER_POLL_S"] = str(args.poll_s)
    poll_s = args.poll_s if args.poll_s is not None else 1.0
    results = [
        measure(backend, args.admin_url, args.repeat, poll_s, extra_env) for backend in args.backend
    ]
    if args.json:
        print(json.dumps([asdict(figures) for figures in results], indent=2))
        return 0
    print(
        f"failed run stored (POST answered) -> webhook received; group wait 0, poll {poll_s:g} s; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'database':<11} {'n':>3} {'median':>8} {'p95':>8} {'max':>8} {'min':>8} "
        f"{'POST':>8}  load average before / after"
    )
    for figures in results:
        before = " ".join(f"{value:.2f}" for value in figures.load_before)
        after = " ".join(f"{value:.2f}" for value in figures.load_after)
        print(
            f"{figures.backend:<11} {figures.measurements:>3} {figures.median_s:>7.3f}s "
            f"{figures.p95_s:>7.3f}s {figures.max_s:>7.3f}s {figures.min_s:>7.3f}s "
            f"{figures.mean_post_ms:>6.1f}ms  {before} / {after}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
