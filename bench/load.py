"""Bounded load on loopback: concurrent writers post runs while readers ask for
the latest run and the client summary; then every acknowledged run is checked
to be stored exactly once.

    .venv/bin/python bench/load.py --seconds 60 --writers 50 --readers 50 \\
        --database postgresql://postgres@127.0.0.1:5432/postgres

starts its own `chm serve` on a scratch database (created and dropped on
PostgreSQL, a temporary file on SQLite) and prints request counts, errors and
latency percentiles per kind of request. Traffic goes to 127.0.0.1 only, and
the run stops by itself after --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

PIPELINES = 10


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, dict[int, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    transport_errors: int = 0
    # "<kind of request>: <httpx exception>" -> count
    transport_error_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    acknowledged: list[tuple[str, str]] = field(
        default_factory=list
    )  # (pipeline id, external run id)
    stored_duplicates: int = 0
    missing: int = 0

    @property
    def server_errors(self) -> int:
        return sum(
            n for by_status in self.statuses.values() for s, n in by_status.items() if s >= 500
        )

    def percentiles(self, kind: str) -> dict[str, float]:
        values = sorted(self.latencies_ms[kind])
        if not values:
            return {}

        def rank(p: float) -> float:
            # nearest rank: the value at 1-based rank ceil(p/100 * N)
            return values[max(0, math.ceil(p / 100 * len(values)) - 1)]

        return {
            "count": len(values),
            "p50": rank(50),
            "p95": rank(95),
            "p99": rank(99),
            "mean": statistics.fmean(values),
        }

    def summary(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "requests": {kind: self.percentiles(kind) for kind in sorted(self.latencies_ms)},
            "statuses": {kind: dict(v) for kind, v in self.statuses.items()},
            "server_errors": self.server_errors,
            "transport_errors": self.transport_errors,
            "transport_error_kinds": dict(self.transport_error_kinds),
            "acknowledged_runs": len(self.acknowledged),
            "missing_runs": self.missing,
            "duplicate_runs": self.stored_duplicates,
        }


async def _timed(result: LoadResult, kind: str, call: object) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call  # type: ignore[misc]
    except httpx.TransportError as error:
        result.transport_errors += 1
        result.transport_error_kinds[f"{kind}: {type(error).__name__}"] += 1
        return None
    result.latencies_ms[kind].append((time.perf_counter() - started) * 1000)
    result.statuses[kind][response.status_code] += 1
    return response


async def _writer(
    http: httpx.AsyncClient, result: LoadResult, pipelines: list[str], deadline: float, n: int
) -> None:
    i = 0
    while time.monotonic() < deadline:
        pipeline = pipelines[(n + i) % len(pipelines)]
        run_id = f"load-{n}-{i}-{uuid.uuid4().hex[:8]}"
        body = {
            "status": "failed" if i % 5 == 0 else "success",
            "external_run_id": run_id,
            "started_at": "2026-11-28T00:00:00Z",
            "metrics": {"rows": i},
        }
        response = await _timed(
            result, "POST run", http.post(f"/api/v1/pipelines/{pipeline}/runs", json=body)
        )
        if response is not None and response.status_code == 201:
            result.acknowledged.append((pipeline, run_id))
        i += 1


async def _reader(
    http: httpx.AsyncClient,
    result: LoadResult,
    pipelines: list[str],
    client_id: str,
    deadline: float,
    n: int,
) -> None:
    i = 0
    while time.monotonic() < deadline:
        if i % 4 == 3:
            await _timed(result, "GET summary", http.get(f"/api/v1/clients/{client_id}/summary"))
        else:
            pipeline = pipelines[(n + i) % len(pipelines)]
            await _timed(
                result, "GET latest", http.get(f"/api/v1/pipelines/{pipeline}/runs/latest")
            )
        i += 1


async def run_load(base_url: str, seconds: float, writers: int, readers: int) -> LoadResult:
    result = LoadResult(seconds=seconds)
    # Idle connections are given up after 2 s, before uvicorn's keep-alive
    # timeout (5 s) closes them: a connection reused just as the server closes
    # it fails its request with a ReadError that says nothing about CHM.
    limits = httpx.Limits(max_connections=writers + readers + 4, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        client = (
            await http.post("/api/v1/clients", json={"name": f"load-{uuid.uuid4().hex[:8]}"})
        ).json()
        pipelines = []
        for p in range(PIPELINES):
            created = await http.post(
                "/api/v1/pipelines",
                json={
                    "client_id": client["id"],
                    "name": f"pipeline-{p}",
                    "platform": "generic",
                    "pipeline_type": "batch",
                    "environment": "prod",
                },
            )
            pipelines.append(created.json()["id"])
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(_writer(http, result, pipelines, deadline, n) for n in range(writers)),
            *(_reader(http, result, pipelines, client["id"], deadline, n) for n in range(readers)),
        )
        # every acknowledged run is stored exactly once
        stored: dict[str, int] = defaultdict(int)
        for pipeline in pipelines:
            cursor = None
            while True:
                params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
                page = (await http.get(f"/api/v1/pipelines/{pipeline}/runs", params=params)).json()
                for run in page["items"]:
                    stored[f"{pipeline}/{run['external_run_id']}"] += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
    acknowledged = {f"{p}/{r}" for p, r in result.acknowledged}
    result.missing = sum(1 for key in acknowledged if stored.get(key, 0) == 0)
    result.stored_duplicates = sum(n - 1 for n in stored.values() if n > 1)
    return result


@contextmanager
def scratch_database(kind_or_url: str) -> Iterator[str]:
    """A fresh database: a temporary SQLite file, or a database created (and
    dropped afterwards) on the PostgreSQL server of the given admin URL."""
    if kind_or_url == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'load.db'}"
        return
    admin = make_url(kind_or_url)
    name = f"chm_load_{uuid.uuid4().hex[:10]}"
    admin_dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def chm_server(database_url: str, port: int, workers: int = 1) -> Iterator[str]:
    with chm_server_process(database_url, port, workers) as (base, _server):
        yield base


@contextmanager
def chm_server_process(
    database_url: str,
    port: int,
    workers: int = 1,
    settings: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``chm serve`` on a migrated ``database_url`` (``settings``: more CHM_*
    variables), yielded as its base URL and its process once /healthz answers.
    Its stderr goes to ``log`` (a temporary file if None): a pipe nobody reads
    would block a server that logs much, under load."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    env.update(CHM_DATABASE_URL=database_url, CHM_LOG_LEVEL="WARNING", **(settings or {}))
    subprocess.run(
        [sys.executable, "-m", "chm.cli", "db", "upgrade"], env=env, check=True, capture_output=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        log = log or Path(tmp) / "serve.log"
        with log.open("wb") as stderr:
            server = subprocess.Popen(
                [sys.executable, "-m", "chm.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", str(workers)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    detail = log.read_text(errors="replace")
                    raise RuntimeError(f"chm serve did not start: {detail}")
                time.sleep(0.1)
            yield base, server
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--database",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="'sqlite', or a PostgreSQL admin URL to create a scratch database on",
    )
    parser.add_argument("--output", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args()
    with (
        scratch_database(args.database) as url,
        chm_server(url, _free_port(), args.workers) as base,
    ):
        result = asyncio.run(run_load(base, args.seconds, args.writers, args.readers))
    summary = result.summary()
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    ok = result.server_errors == 0 and result.missing == 0 and result.stored_duplicates == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
