"""The API under load on the benchmark data set, against the same queries through the driver.

    .venv/bin/python -m bench.api --size large --database postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.api --size small --database sqlite --seconds 5

For each ``--workers`` count, starts ``chm serve --workers N`` on 127.0.0.1
over the cached data set (``bench/dataset.py``) and drives it with wrk and
``bench/wrk/spread.lua``, which spreads the requests at random over every
pipeline (every active client for the summary):

- latest run: ``GET /api/v1/pipelines/{id}/runs/latest``
- history page: ``GET /api/v1/pipelines/{id}/runs?limit=50``
- client summary: ``GET /api/v1/clients/{id}/summary`` over the last 24 hours
  of the data (``since``/``until`` given, as the data ends at ``AS_OF``).

Each endpoint gets a warm-up of ``--warmup`` seconds, then a measured run of
``--seconds`` at ``--connections`` connections (wrk's own threads share the
same 2 cores with the server: that is the machine), ``--repeat`` times; the
figures are the median (and the worst) of the runs' p50/p95 and requests/s.
The server's peak RSS is the VmHWM of its processes (``/proc/<pid>/status``),
read before it stops.

The driver baseline: the SQL statements CHM sends for each endpoint are
captured from the application itself (the app, in process, answers sample
requests while a ``before_cursor_execute`` listener records each statement
and its parameters, exactly as handed to the driver), then replayed through
the bare driver (psycopg or sqlite3, one connection, autocommit, every row
fetched) in a tight loop for ``--seconds``. The API's overhead ratio is the
API's p50 latency at one connection (one request after the other, one
worker, timed by a bare socket client) divided by the driver's p50 for the
same statements of one request (target <= 2). For scale, the HTTP floor: a
bare ASGI app (``bench/floor.py``) under the same uvicorn, same clients.
With ``--sweep`` seconds, the largest worker count is also driven at 1, 2, 4,
8 and 16 connections: where the p95 targets hold, and where throughput peaks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from sqlalchemy import event

from bench import dataset
from bench.dataset import AS_OF
from bench.load import chm_server
from chm.core.db import create_db_engine
from chm.core.settings import Settings

LUA = Path(__file__).resolve().parent / "wrk" / "spread.lua"
SINCE = (AS_OF - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
UNTIL = AS_OF.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str  # "{id}" stands for the id
    ids: str  # "pipelines" or "clients"
    target_p95_ms: float


ENDPOINTS = (
    Endpoint("latest run", "/api/v1/pipelines/{id}/runs/latest", "pipelines", 20.0),
    Endpoint("history page", "/api/v1/pipelines/{id}/runs?limit=50", "pipelines", 20.0),
    Endpoint(
        "client summary",
        f"/api/v1/clients/{{id}}/summary?since={SINCE}&until={UNTIL}",
        "clients",
        100.0,
    ),
)
TARGET_LATEST_RPS = 1000.0
SWEEP_CONNECTIONS = (1, 2, 4, 8, 16)
TARGET_OVERHEAD = 2.0


def sample_ids(url: str) -> dict[str, list[int]]:
    """Every pipeline, and every active client (an inactive one's summary is trivial)."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            pipelines = conn.scalars(sa.text("SELECT id FROM pipelines ORDER BY id")).all()
            clients = conn.scalars(
                sa.text("SELECT id FROM clients WHERE is_active ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    return {"pipelines": list(pipelines), "clients": list(clients)}


# --- wrk ------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (make bench does it)")
    return found


def run_wrk(
    base: str, endpoint: Endpoint, ids_file: Path, seconds: float, connections: int
) -> dict[str, Any]:
    threads = min(2, connections)
    env = {**os.environ, "CHM_WRK_IDS": str(ids_file), "CHM_WRK_PATH": endpoint.path}
    command = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base,
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    match = re.search(r"^WRK_JSON (.*)$", done.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout} {done.stderr}")
    raw = json.loads(match.group(1))
    latency = raw["latency_us"]
    errors = sum(raw["errors"].values())
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": latency["p50"] / 1000,
        "p95_ms": latency["p95"] / 1000,
        "p99_ms": latency["p99"] / 1000,
        "mean_ms": latency["mean"] / 1000,
        "errors": errors,
    }


# --- the server's memory --------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the fields after the command name, which may hold spaces: state, ppid, ...
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def server_processes() -> list[int]:
    """The `chm serve` process started by this process, and its descendants."""
    roots = [
        pid
        for pid in _children(os.getpid())
        if b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    tree, queue = [], list(roots)
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(_children(pid))
    return tree


def peak_rss_mib(pids: list[int]) -> dict[str, float]:
    """VmHWM of each process (MiB): the largest, and their sum."""
    peaks = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            peaks.append(int(match.group(1)) / 1024)
    return {
        "processes": len(peaks),
        "max_mib": round(max(peaks, default=0), 1),
        "sum_mib": round(sum(peaks), 1),
    }


# --- the driver baseline -----------------------------------------------------------------


Statement = tuple[str, Any]


def capture_statements(
    url: str, endpoint: Endpoint, ids: Sequence[int | str]
) -> list[list[Statement]]:
    """For each id, the statements (SQL and driver parameters) CHM sends to answer
    ``endpoint``: the real application, in process, with a listener on its engines."""
    from chm.app import create_app

    captured: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    app = create_app(Settings(database_url=url))
    engines = [app.state.engine, app.state.async_engine.sync_engine]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)

    async def ask() -> list[list[Statement]]:
        per_request = []
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://chm") as http,
        ):
            for value in ids:
                captured.clear()
                response = await http.get(endpoint.path.replace("{id}", str(value)))
                response.raise_for_status()
                per_request.append(
                    [
                        (sql, params)
                        for sql, params in captured
                        if sql.lstrip().upper().startswith(("SELECT", "WITH"))
                    ]
                )
        return per_request

    try:
        return asyncio.run(ask())
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def _driver_connection(url: str) -> Any:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        return conn
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def time_driver(url: str, requests: list[list[Statement]], seconds: float) -> dict[str, Any]:
    """Replay each request's statements through the bare driver, round robin, for ``seconds``."""
    conn = _driver_connection(url)
    latencies: list[float] = []
    try:
        cursor = conn.cursor()
        for statements in requests:  # warm-up: one pass
            for sql, params in statements:
                cursor.execute(sql, params)
                cursor.fetchall()
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            statements = requests[i % len(requests)]
            started = time.perf_counter()
            for sql, params in statements:
                cursor.execute(sql, params)
                cursor.fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1
    finally:
        conn.close()
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "rps": len(ordered) / seconds,
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[max(0, -(-95 * len(ordered) // 100) - 1)],
        "statements_per_request": round(sum(len(r) for r in requests) / len(requests), 2),
    }


# --- one connection, one request at a time -------------------------------------------


def sequential(
    base: str, endpoint: Endpoint, ids: Sequence[int | str], seconds: float
) -> dict[str, Any]:
    """Latency at one connection, one request after the other, by a bare keep-alive
    socket client (a few microseconds of its own): wrk's mean and upper
    percentiles at one connection do not add up to its request count here."""
    host, port = base.removeprefix("http://").split(":")
    rng = random.Random(7)
    latencies: list[float] = []
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            path = endpoint.path.replace("{id}", str(rng.choice(ids)))
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            started = time.perf_counter()
            sock.sendall(request)
            status = _read_response(sock)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "rps": len(ordered) / seconds,
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[max(0, -(-95 * len(ordered) // 100) - 1)],
        "p99_ms": ordered[max(0, -(-99 * len(ordered) // 100) - 1)],
        "mean_ms": statistics.fmean(ordered),
        "errors": 0,
    }


def _read_response(sock: socket.socket) -> int:
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        data += sock.recv(65536)
    head = data[:end].decode("latin-1").lower().split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in head if h.startswith("content-length:"))
    while len(data) < end + 4 + length:
        data += sock.recv(65536)
    return int(head[0].split()[1])


# --- the HTTP floor -----------------------------------------------------------------------


def http_floor(ids_file: Path, seconds: float, connections: int) -> dict[str, Any]:
    """wrk against ``bench/floor.py`` (a bare ASGI app, one uvicorn process): the
    per-request cost of the HTTP stack alone on this machine."""
    port = _free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "bench.floor:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base, timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the floor app did not start") from None
                time.sleep(0.1)
        floor = Endpoint("floor", "/floor/{id}", "pipelines", 0.0)
        run_wrk(base, floor, ids_file, 1, connections)  # warm-up
        return {
            "c1": sequential(base, floor, [1, 2, 3], seconds),
            f"c{connections}": run_wrk(base, floor, ids_file, seconds, connections),
        }
    finally:
        server.terminate()
        server.wait(timeout=15)


# --- the run -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def ids_files(ids: dict[str, list[int]]) -> Iterator[dict[str, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind, values in ids.items():
            files[kind] = Path(tmp) / f"{kind}.txt"
            files[kind].write_text("".join(f"{v}\n" for v in values))
        yield files


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p95_ms": statistics.median(r["p95_ms"] for r in runs),
        "p95_ms_worst": max(r["p95_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "repeats": len(runs),
    }


def run(
    url: str,
    *,
    workers: list[int],
    connections: int,
    seconds: float,
    warmup: float,
    repeat: int,
    samples: int = 200,
    sweep: float = 0,
) -> dict[str, Any]:
    ids = sample_ids(url)
    results: dict[str, Any] = {
        "connections": connections,
        "seconds": seconds,
        "repeat": repeat,
        "pipelines": len(ids["pipelines"]),
        "active_clients": len(ids["clients"]),
        "load": {},
    }
    with ids_files(ids) as files:
        floor = http_floor(files["pipelines"], seconds, connections)
        results["http_floor"] = floor
        print(
            f"  HTTP floor (bare ASGI app, 1 process): c=1 p50 {floor['c1']['p50_ms']:.3f} ms,"
            f" c={connections} {floor[f'c{connections}']['rps']:,.0f} req/s"
            f" p95 {floor[f'c{connections}']['p95_ms']:.2f} ms",
            flush=True,
        )
        for count in workers:
            per_endpoint: dict[str, Any] = {}
            with chm_server(url, _free_port(), count) as base:
                pids = server_processes()
                for endpoint in ENDPOINTS:
                    run_wrk(base, endpoint, files[endpoint.ids], warmup, connections)
                    runs = [
                        run_wrk(base, endpoint, files[endpoint.ids], seconds, connections)
                        for _ in range(repeat)
                    ]
                    per_endpoint[endpoint.name] = _summarise(runs)
                    _print_load(count, connections, endpoint, per_endpoint[endpoint.name])
                    if count == 1:  # the API at one connection, for the overhead ratio
                        single = sequential(base, endpoint, ids[endpoint.ids], seconds)
                        per_endpoint[endpoint.name]["c1"] = single
                if count == max(workers) and sweep:
                    # How p95 and throughput move with the number of connections.
                    per_endpoint["sweep"] = {
                        endpoint.name: {
                            f"c={c}": run_wrk(base, endpoint, files[endpoint.ids], sweep, c)
                            for c in SWEEP_CONNECTIONS
                        }
                        for endpoint in ENDPOINTS
                    }
                    _print_sweep(count, per_endpoint["sweep"])
                rss = peak_rss_mib(pids)
                print(f"  server peak RSS ({count} worker(s)): {rss}", flush=True)
            results["load"][f"workers={count}"] = {"endpoints": per_endpoint, "peak_rss": rss}
    # The driver baseline, with the statements the app sends for a sample of ids.
    overhead: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        chosen = ids[endpoint.ids][:: max(1, len(ids[endpoint.ids]) // samples)][:samples]
        statements = capture_statements(url, endpoint, chosen)
        driver = time_driver(url, statements, seconds)
        entry: dict[str, Any] = {"driver": driver}
        single = results["load"].get("workers=1", {}).get("endpoints", {}).get(endpoint.name)
        if single and "c1" in single:
            api = single["c1"]
            entry["api_c1"] = api
            entry["ratio_p50"] = round(api["p50_ms"] / driver["p50_ms"], 2)
            entry["ratio_rps"] = round(driver["rps"] / api["rps"], 2)
        overhead[endpoint.name] = entry
        _print_overhead(endpoint, entry, statements[0])
    results["overhead"] = overhead
    return results


def _print_load(workers: int, connections: int, endpoint: Endpoint, s: dict[str, Any]) -> None:
    flag = "" if s["p95_ms"] < endpoint.target_p95_ms else "  (!) p95 target"
    if endpoint.name == "latest run" and workers == 2 and s["rps"] < TARGET_LATEST_RPS:
        flag += "  (!) req/s target"
    print(
        f"  workers={workers} c={connections} {endpoint.name:15} {s['rps']:8.0f} req/s"
        f"  p50 {s['p50_ms']:6.2f}  p95 {s['p95_ms']:6.2f} (worst {s['p95_ms_worst']:6.2f})"
        f"  p99 {s['p99_ms']:6.2f} ms  errors {s['errors']}{flag}",
        flush=True,
    )


def _print_sweep(workers: int, sweep: dict[str, dict[str, dict[str, Any]]]) -> None:
    for name, by_connections in sweep.items():
        cells = "  ".join(
            f"{c}: {r['rps']:,.0f}/s p95 {r['p95_ms']:.1f}" for c, r in by_connections.items()
        )
        print(f"  workers={workers} {name:15} {cells}", flush=True)


def _print_overhead(endpoint: Endpoint, entry: dict[str, Any], example: list[Statement]) -> None:
    driver = entry["driver"]
    line = (
        f"  driver {endpoint.name:15} p50 {driver['p50_ms']:6.3f} ms"
        f"  {driver['rps']:8.0f} req/s  ({driver['statements_per_request']} statements)"
    )
    if "ratio_p50" in entry:
        line += (
            f"   API c=1 p50 {entry['api_c1']['p50_ms']:6.3f} ms"
            f"  ratio {entry['ratio_p50']:.2f}"
            f"{'' if entry['ratio_p50'] <= TARGET_OVERHEAD else '  (!)'}"
        )
    print(line, flush=True)
    for sql, _ in example:
        print(f"      {' '.join(sql.split())[:300]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="small")
    parser.add_argument("--database", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--sweep", type=float, default=5, help="seconds per connection count (0: no sweep)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    url = dataset.ensure(dataset.SIZES[args.size], args.database)
    results = run(
        url,
        workers=args.workers,
        connections=args.connections,
        seconds=args.seconds,
        warmup=args.warmup,
        repeat=args.repeat,
        sweep=args.sweep,
    )
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
