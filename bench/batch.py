"""Recording runs through HTTP: ``POST /api/v1/runs:batch`` and the single-run
``POST /api/v1/pipelines/{id}/runs``, against a real ``chm serve`` (issue 17).

    .venv/bin/python -m bench.batch [--backend postgresql --backend sqlite] [--runs 100000]
        [--batch-size 1000] [--pipelines 100] [--workers 1 --workers 2] [--repeat 3]

For each database and each ``--workers`` count, a scratch database and a
fresh ``chm serve --workers N`` (``bench/load.py``), one client and
``--pipelines`` pipelines made through the API, then:

1. **batch, first record**: ``--runs`` runs (unique external ids, spread over
   every pipeline, realistic fields: times, metrics, a small payload, a
   failure text on failed runs) in batches of ``--batch-size``, sent by
   ``--concurrency`` keep-alive connections; every answer must count its
   batch as created;
2. **batch, replay**: the same bodies again; every item must be unchanged;
3. **single-run POST**: ``POST /pipelines/{id}/runs`` (a new run each, spread
   over the pipelines) for ``--single-seconds`` at ``--single-concurrency``
   connections; every answer must be a 201.

Each batch measurement is repeated ``--repeat`` times on a fresh database
(its figures: the median and every run); the bodies are encoded before the
clock starts and the client is a bare asyncio socket client (pre-built
requests, the answer read by its Content-Length, a JSON parse of the batch
answers' counts), so the figures measure the server. The load averages
before and after each measurement are recorded, and the CPU time per run of
the server's processes, of the scratch database's PostgreSQL backends and of
the client (``CpuMeter``): the machine's 2 cores are shared by the client,
the server, the database and whatever else runs, and CPU per run is what
stays comparable when the machine is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy.engine import make_url

from bench.load import _free_port, chm_server, scratch_database
from bench.run import wait_quiet

PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
STATUSES = ("success", "failed", "running", "success", "cancelled")
START = datetime(2026, 1, 1, tzinfo=UTC)
# The single-run POSTs' numbers: each run new, over every repetition.
_SINGLE_RUNS = itertools.count()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


_TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process: its parent, its command line and the CPU seconds it used."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry)] = (int(fields[1]), command, (int(fields[11]) + int(fields[12])) / _TICK)
    return found


def _server_pid(port: int) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    words = cmdline.read().split(b"\0")
            except OSError:
                continue
            if b"serve" in words and str(port).encode() in words:
                return int(entry)
    raise RuntimeError(f"no chm serve on port {port}")


class CpuMeter:
    """CPU seconds used by the server's processes (the ``chm serve`` on ``port``
    and its workers), by the PostgreSQL backends of its scratch database (SQLite
    works inside the server), and by this client, between ``start`` and
    ``stop``: where each run's time goes on the shared cores, whatever else
    runs on them."""

    def __init__(self, base: str, database_url: str) -> None:
        self.root = _server_pid(int(base.rsplit(":", 1)[1]))
        self.backends = "postgres: " if database_url.startswith("postgresql") else None
        self.database = f" {make_url(database_url).database} "

    def _sample(self) -> dict[str, float]:
        processes = _processes()
        tree = {self.root}
        for pid, (parent, _command, _cpu) in sorted(processes.items()):
            if parent in tree:
                tree.add(pid)
        times = os.times()
        sample = {
            "server": sum(processes[pid][2] for pid in tree if pid in processes),
            "client": times.user + times.system,
        }
        if self.backends is not None:
            sample["postgres"] = sum(
                cpu
                for _parent, command, cpu in processes.values()
                if command.startswith(self.backends) and self.database in command
            )
        return sample

    def start(self) -> None:
        self.before = self._sample()

    def stop(self, runs: int) -> dict[str, float]:
        after = self._sample()
        return {
            f"{name}_cpu_ms_per_run": round((after[name] - self.before[name]) * 1000 / runs, 4)
            for name in after
        }


def make_pipelines(base: str, count: int) -> list[str]:
    with httpx.Client(base_url=base, timeout=30) as http:
        client = http.post("/api/v1/clients", json={"name": "bench-batch"}).json()
        ids = []
        for n in range(count):
            body = {
                "client_id": client["id"],
                "name": f"batch-{n:04d}",
                "platform": "generic",
                "pipeline_type": "batch",
                "environment": "prod",
            }
            answer = http.post("/api/v1/pipelines", json=body)
            answer.raise_for_status()
            ids.append(answer.json()["id"])
    return ids


def make_run(n: int, pipeline_id: str) -> dict[str, Any]:
    began = START + timedelta(minutes=n)
    status = STATUSES[n % len(STATUSES)]
    run: dict[str, Any] = {
        "pipeline_id": pipeline_id,
        "external_run_id": f"run-{n:07d}",
        "status": status,
        "started_at": began.isoformat(),
        "metrics": {"rows": n * 7 % 100_000, "bytes": n * 1024},
        "source_payload": {"attempt": 1, "trigger": {"kind": "schedule", "cron": "*/5 * * * *"}},
    }
    if status != "running":
        run["finished_at"] = (began + timedelta(seconds=30 + n % 600)).isoformat()
    if status == "failed":
        run["error_message"] = "task 3 failed: division by zero"
    return run


def batch_bodies(runs: int, batch_size: int, pipeline_ids: Sequence[str]) -> list[bytes]:
    """The batches, encoded once; each spreads its runs over every pipeline."""
    bodies = []
    for first in range(0, runs, batch_size):
        items = [
            make_run(n, pipeline_ids[n % len(pipeline_ids)])
            for n in range(first, min(first + batch_size, runs))
        ]
        bodies.append(orjson.dumps({"runs": items}))
    return bodies


def request_bytes(host: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in lines if h.startswith("content-length:"))
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def send_all(
    base: str, requests: Sequence[bytes], concurrency: int
) -> list[tuple[int, bytes]]:
    """Every request, over ``concurrency`` keep-alive connections taking the next
    one as they are free; the answers in request order."""
    host, port = base.removeprefix("http://").split(":")
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    queue = iter(range(len(requests)))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port), limit=2**24)
        try:
            for index in queue:
                writer.write(requests[index])
                answers[index] = await read_answer(reader)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return answers


def timed_batches(
    base: str, database_url: str, bodies: list[bytes], concurrency: int, expect: str
) -> dict[str, Any]:
    host = base.removeprefix("http://")
    requests = [request_bytes(host, "/api/v1/runs:batch", body) for body in bodies]
    meter = CpuMeter(base, database_url)
    load_before = load_average()
    meter.start()
    started = time.perf_counter()
    answers = asyncio.run(send_all(base, requests, concurrency))
    seconds = time.perf_counter() - started
    cpu = meter.stop(sum(body.count(b'"external_run_id"') for body in bodies))
    totals = {"created": 0, "updated": 0, "unchanged": 0, "errors": 0}
    for status, body in answers:
        if status != 200:
            raise RuntimeError(f"a batch answered {status}: {body[:300]!r}")
        counts = orjson.loads(body)
        for name in totals:
            totals[name] += counts[name]
    runs = sum(totals.values())
    if totals[expect] != runs:
        raise RuntimeError(f"expected every run {expect}, got {totals}")
    return {
        "runs": runs,
        "seconds": round(seconds, 3),
        "runs_per_s": round(runs / seconds),
        **cpu,
        "load_before": load_before,
        "load_after": load_average(),
    }


def timed_single(
    base: str, database_url: str, pipeline_ids: Sequence[str], seconds: float, concurrency: int
) -> dict[str, Any]:
    """Single-run POSTs for about ``seconds``: new runs (generated ids) spread
    over the pipelines; the request count is fixed from a short warm-up."""
    host = base.removeprefix("http://")

    def requests(count: int) -> list[bytes]:
        made = []
        for _ in range(count):
            n = next(_SINGLE_RUNS)
            run = make_run(n, pipeline_ids[n % len(pipeline_ids)])
            path = f"/api/v1/pipelines/{run.pop('pipeline_id')}/runs"
            run["external_run_id"] = f"single-{n:08d}"
            made.append(request_bytes(host, path, orjson.dumps(run)))
        return made

    warm = 200 * concurrency
    started = time.perf_counter()
    asyncio.run(send_all(base, requests(warm), concurrency))
    rate = warm / (time.perf_counter() - started)
    batch = requests(max(int(rate * seconds), concurrency))
    meter = CpuMeter(base, database_url)
    load_before = load_average()
    meter.start()
    started = time.perf_counter()
    answers = asyncio.run(send_all(base, batch, concurrency))
    elapsed = time.perf_counter() - started
    cpu = meter.stop(len(batch))
    bad = [status for status, _ in answers if status != 201]
    if bad:
        raise RuntimeError(f"{len(bad)} single POSTs failed, e.g. {bad[0]}")
    return {
        "runs": len(batch),
        "seconds": round(elapsed, 3),
        "runs_per_s": round(len(batch) / elapsed),
        "concurrency": concurrency,
        **cpu,
        "load_before": load_before,
        "load_after": load_average(),
    }


def database_target(backend: str) -> str:
    return "sqlite" if backend == "sqlite" else PG_ADMIN


def measure(backend: str, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    first: list[dict[str, Any]] = []
    replay: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        with (
            scratch_database(database_target(backend)) as url,
            chm_server(url, _free_port(), workers) as base,
        ):
            pipeline_ids = make_pipelines(base, args.pipelines)
            bodies = batch_bodies(args.runs, args.batch_size, pipeline_ids)
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            first.append(timed_batches(base, url, bodies, args.concurrency, "created"))
            replay.append(timed_batches(base, url, bodies, args.concurrency, "unchanged"))
            print(f"  {backend} workers={workers}: first {first[-1]}, replay {replay[-1]}",
                  flush=True)  # fmt: skip
    result: dict[str, Any] = {
        "first_runs_per_s": statistics.median(r["runs_per_s"] for r in first),
        "replay_runs_per_s": statistics.median(r["runs_per_s"] for r in replay),
        "first": first,
        "replay": replay,
    }
    if args.single_seconds > 0:
        with (
            scratch_database(database_target(backend)) as url,
            chm_server(url, _free_port(), workers) as base,
        ):
            pipeline_ids = make_pipelines(base, args.pipelines)
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            single = [
                timed_single(base, url, pipeline_ids, args.single_seconds, args.single_concurrency)
                for _ in range(args.repeat)
            ]
        print(f"  {backend} workers={workers}: single {single}", flush=True)
        result["single_runs_per_s"] = statistics.median(r["runs_per_s"] for r in single)
        result["single"] = single
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--pipelines", type=int, default=100)
    parser.add_argument("--workers", type=int, action="append", help="server processes")
    parser.add_argument("--concurrency", type=int, default=2, help="batch connections")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single-seconds", type=float, default=10)
    parser.add_argument("--single-concurrency", type=int, default=16)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        help="before each measurement, wait at most this many seconds for a 1-minute "
        "load average below 1",
    )
    parser.add_argument("--output", help="also write the figures as JSON here")
    args = parser.parse_args()
    # Stopped from outside: the servers and scratch databases still go away.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures: dict[str, Any] = {
        "runs": args.runs,
        "batch_size": args.batch_size,
        "pipelines": args.pipelines,
        "concurrency": args.concurrency,
        "load_average_at_start": load_average(),
        "results": {},
    }
    for backend in args.backend or ["postgresql", "sqlite"]:
        for workers in args.workers or [1, 2]:
            key = f"{backend}/workers={workers}"
            figures["results"][key] = measure(backend, workers, args)
    figures["load_average_at_end"] = load_average()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
