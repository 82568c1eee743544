"""Many processes on one PostgreSQL under load (issue 17): `chm serve --workers 4`
and two `chm worker` processes on one scratch database while 50 writers and 50
readers run bench/load.py's load and the workers keep ingesting a live feed.

    .venv/bin/python -m bench.scale [--seconds 60] [--serve-workers 4] [--chm-workers 2]
        [--writers 50] [--readers 50] [--ingest-pipelines 20] [--interval-s 2]
        [--repeat 3] [--database postgresql://postgres@127.0.0.1:5432/postgres]
        [--output bench/results/scale.json] [--logs DIR] [--wait-quiet 120]

Each repetition, on a fresh scratch database (created and dropped on the
server of ``--database``):

- a live generic feed in this process (bench/ingest.py's feed server, answering
  the pages of a ``LiveFeed``): every pipeline's feed starts with a backlog of
  finished runs, then every ``--tick-s`` seconds a few new runs appear queued,
  run a tick later and end (succeeded, or failed one in five) the tick after,
  each change with a newer ``updated_at``: every ingestion has new runs to
  create and statuses to update;
- ``chm serve --workers N`` and ``chm worker`` processes (connections named by
  ``application_name``: ``chm-serve``, ``chm-worker-<n>``), a sources file whose
  one source points at the feed with ``interval_s = --interval-s``, and
  ``--ingest-pipelines`` pipelines with the feed's external ids;
- bench/load.py's ``run_load`` for ``--seconds``, while a thread samples
  ``pg_stat_activity`` every second: connections to the scratch database, in
  total, by state, by process kind and per process (a connection's client port
  matched to the process holding the socket, through /proc), and the CPU time
  of each kind of process (the API, the workers, PostgreSQL's backends, this
  process) against the machine's.

Then the feed is frozen and the bench waits for every pipeline to be ingested
again (an attempt that started after the freeze), and checks: no 5xx and no
transport error; every acknowledged write stored exactly once; each ingest
pipeline's stored runs exactly the feed's last state (every run, once, with the
feed's status; nothing more); the source's counters (runs created = runs
stored; runs updated no more than the changes the feed made; no failed
ingestion); ``/healthz?detail=1``: the source ``ok``, every worker alive, none
lost; each worker ingested, and stopped with exit code 0 on SIGTERM; no error
in the processes' logs. Any failed check is named in ``problems`` and the exit
code is 1. Before each repetition it waits (at most ``--wait-quiet`` seconds)
for the load average to fall below 1, and records the load before and after.

The connections count against the server's ``max_connections``: on a server
others use, run it against a PostgreSQL of its own (docs/deployment.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

from bench.ingest import feed
from bench.load import LoadResult, _free_port, chm_server_process, run_load, scratch_database
from bench.run import wait_quiet
from bench.worker import INGESTED
from chm.core.settings import Settings

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SOURCE = "scale-feed"
FEED_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# The feed's words for the final statuses, and CHM's status for each word.
STATUS_OF = {"queued": "queued", "running": "running", "succeeded": "success", "failed": "failed"}
# Pool sizes of one process (CHM_DB_POOL_SIZE + CHM_DB_MAX_OVERFLOW, the
# settings' defaults): the synchronous engine's, the asynchronous one's.
_POOL = Settings.model_fields
SYNC_POOL = ASYNC_POOL = int(_POOL["db_pool_size"].default) + int(_POOL["db_max_overflow"].default)


class LiveFeed:
    """One generic feed whose runs move on with a clock, served page by page.

    It is the ``pages`` of ``bench.ingest.feed`` (which answers page ``n`` of a
    cursor ``p<n>`` for any pipeline): every pipeline's feed is this one, so each
    ingest pipeline must end up storing exactly ``expected()``. Runs are listed
    oldest first and only ever appended, so a page's runs stay the same runs as
    the feed grows during a walk; a walk that sees an older state of a run is
    corrected by the next one.

    Generation ``g`` is the number of whole ``tick_s`` since ``start()`` (0
    before it), frozen by ``freeze()``. At generation ``g`` the feed holds
    ``backlog + per_tick * g`` runs; run ``n >= backlog`` is born at generation
    ``1 + (n - backlog) // per_tick``, is queued then, running a tick later and
    finished the tick after (failed one time in five). Backlog runs are finished.
    Times are on a virtual minute per generation from ``FEED_EPOCH``, so a
    state is the same whenever it is served.
    """

    def __init__(
        self,
        backlog: int = 200,
        per_tick: int = 2,
        tick_s: float = 1.0,
        page_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backlog, self.per_tick, self.tick_s, self.page_size = (
            backlog,
            per_tick,
            tick_s,
            page_size,
        )
        self.clock = clock
        self.pages_served = 0
        self._started: float | None = None
        self._frozen: int | None = None
        self._lock = threading.Lock()
        self._cached: tuple[int, list[bytes]] | None = None

    def start(self) -> None:
        with self._lock:
            self._started = self.clock()

    def freeze(self) -> int:
        """Stops the feed at its current generation, which it returns."""
        with self._lock:
            self._frozen = self._generation()
            return self._frozen

    def _generation(self) -> int:
        if self._frozen is not None:
            return self._frozen
        if self._started is None:
            return 0
        return int((self.clock() - self._started) // self.tick_s)

    def born(self, n: int) -> int:
        if n < self.backlog:
            return n - self.backlog - 2  # long finished before the feed started
        return 1 + (n - self.backlog) // self.per_tick

    def size(self, generation: int) -> int:
        return self.backlog + self.per_tick * generation

    def word(self, n: int, generation: int) -> str:
        age = generation - self.born(n)
        if age <= 0:
            return "queued"
        if age == 1:
            return "running"
        return "failed" if n % 5 == 0 else "succeeded"

    def run(self, n: int, generation: int) -> dict[str, Any]:
        born, word = self.born(n), self.word(n, generation)

        def at(g: int) -> datetime:
            return FEED_EPOCH + timedelta(minutes=g)

        changed = born + min(generation - born, 2)
        finished = word in ("succeeded", "failed")
        return {
            "run_id": f"scale-{n:06d}",
            "status": word,
            "started_at": at(born + 1).isoformat() if word != "queued" else None,
            "finished_at": (at(born + 2) + timedelta(seconds=n % 30)).isoformat()
            if finished
            else None,
            "updated_at": at(changed).isoformat(),
            "error": f"step {n % 7} failed: exit code 1" if word == "failed" else None,
            "metrics": {"rows": n * 7 % 10_000},
        }

    def changes(self, generation: int) -> int:
        """The state changes of runs born after the start, up to ``generation``
        (queued to running, running to finished): what updates can come from."""
        return sum(
            min(generation - self.born(n), 2) for n in range(self.backlog, self.size(generation))
        )

    def expected(self, generation: int) -> dict[str, str]:
        """CHM's status of every run of the feed at ``generation``, by run id."""
        return {
            f"scale-{n:06d}": STATUS_OF[self.word(n, generation)]
            for n in range(self.size(generation))
        }

    def _pages(self, generation: int) -> list[bytes]:
        if self._cached is None or self._cached[0] != generation:
            runs = [self.run(n, generation) for n in range(self.size(generation))]
            pages = []
            for first in range(0, len(runs), self.page_size):
                last = first + self.page_size
                cursor = f"p{first // self.page_size + 1}" if last < len(runs) else None
                pages.append(json.dumps({"runs": runs[first:last], "next_cursor": cursor}).encode())
            self._cached = (generation, pages)
        return self._cached[1]

    def __getitem__(self, index: int) -> bytes:
        with self._lock:
            self.pages_served += 1
            return self._pages(self._generation())[index]


def with_application_name(url: str, name: str) -> str:
    """The database URL whose connections show as ``name`` in pg_stat_activity."""
    named = make_url(url).update_query_dict({"application_name": name})
    return named.render_as_string(hide_password=False)


def _socket_ports(pids: dict[int, str], server_port: int) -> dict[int, str]:
    """Client port -> process label of the TCP connections to ``server_port``
    held by ``pids`` (Linux /proc; empty elsewhere)."""
    inodes: dict[str, str] = {}
    for pid, label in pids.items():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = label
        except OSError:
            continue
    ports: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(remote.rsplit(":", 1)[1], 16) == server_port and inode in inodes:
                ports[int(local.rsplit(":", 1)[1], 16)] = inodes[inode]
    return ports


def _spawned_children(pid: int) -> list[int]:
    """The processes ``pid`` started with multiprocessing's spawn (uvicorn's
    workers; not its resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            # the parent pid is the second field after the parenthesised name
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry))
    return found


@dataclass
class ConnectionSamples:
    max_connections: int = 0
    superuser_reserved: int = 0
    samples: int = 0
    total: list[int] = field(default_factory=list)
    server_wide: list[int] = field(default_factory=list)
    by_state: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_process: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # CPU: pid -> [kind, ticks when first seen, ticks when last seen]; a
    # process first seen after the first sample counts from its start.
    cpu: dict[int, list[Any]] = field(default_factory=dict)
    machine_busy_ticks: list[int] = field(default_factory=list)  # first and last sample
    wall_s: list[float] = field(default_factory=list)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used between the first and the last sample, by kind of
        process, and the machine's: busy (everyone's) and available."""
        used: dict[str, float] = defaultdict(float)
        for kind, first, last in self.cpu.values():
            used[kind] += (last - first) / CLOCK_TICKS
        if len(self.wall_s) == 2:
            used["machine busy"] = (
                self.machine_busy_ticks[1] - self.machine_busy_ticks[0]
            ) / CLOCK_TICKS
            used["machine available"] = (self.wall_s[1] - self.wall_s[0]) * (os.cpu_count() or 1)
        return {kind: round(seconds, 1) for kind, seconds in sorted(used.items())}

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "max": max(self.total, default=0),
            "median": statistics.median(self.total) if self.total else 0,
            "max_by_state": dict(sorted(self.by_state.items())),
            "max_by_kind": dict(sorted(self.by_kind.items())),
            "max_per_process": dict(sorted(self.by_process.items())),
            "max_server_wide": max(self.server_wide, default=0),
            "max_connections": self.max_connections,
            "superuser_reserved_connections": self.superuser_reserved,
            "cpu_seconds": self.cpu_seconds(),
        }


class ConnectionSampler(threading.Thread):
    """Every ``interval`` seconds: the connections to one database, from
    pg_stat_activity (its own connection left out), and the maximum of each
    count over the samples."""

    def __init__(
        self,
        database_url: str,
        processes: Callable[[], dict[int, str]],
        interval: float = 1.0,
    ) -> None:
        super().__init__(daemon=True)
        url = make_url(database_url)
        self.dsn = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
        self.database = url.database
        self.server_port = url.port or 5432
        self.processes = processes
        self.interval = interval
        self.result = ConnectionSamples()
        self.error: BaseException | None = None
        self._stopping = threading.Event()

    def stop(self) -> ConnectionSamples:
        self._stopping.set()
        self.join(timeout=10)
        if self.error is not None:
            raise RuntimeError(f"pg_stat_activity sampling failed: {self.error!r}")
        return self.result

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                result = self.result
                result.max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
                result.superuser_reserved = int(
                    conn.execute("SHOW superuser_reserved_connections").fetchone()[0]  # type: ignore[index]
                )
                while not self._stopping.is_set():
                    self._sample(conn, first=result.samples == 0)
                    self._stopping.wait(self.interval)
                self._sample(conn, first=False, last=True)
        except BaseException as error:  # reported by stop()
            self.error = error

    def _sample(self, conn: psycopg.Connection[Any], first: bool, last: bool = False) -> None:
        rows = conn.execute(
            "SELECT coalesce(state, 'none'), application_name, client_port, pid"
            " FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()",
            (self.database,),
        ).fetchall()
        server_wide = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()
        processes = self.processes() | {os.getpid(): "bench (load client, feed)"}
        result = self.result
        for pid, kind in [*processes.items(), *((row[3], "postgres") for row in rows)]:
            ticks = _cpu_ticks(pid)
            if ticks is not None:
                seen = result.cpu.setdefault(pid, [_kind(kind), ticks if first else 0, ticks])
                seen[2] = ticks
        if first or last:
            result.machine_busy_ticks.append(_machine_busy_ticks())
            result.wall_s.append(time.monotonic())
        if last:
            return
        ports = _socket_ports(processes, self.server_port)
        result.samples += 1
        result.total.append(len(rows))
        result.server_wide.append(int(server_wide[0]) if server_wide else 0)
        for counts, keys in (
            (result.by_state, [row[0] for row in rows]),
            (result.by_kind, [row[1] or "(none)" for row in rows]),
            (result.by_process, [ports.get(row[2], "(other)") for row in rows]),
        ):
            for key, count in _count(keys).items():
                counts[key] = max(counts[key], count)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _kind(label: str) -> str:
    """chm-serve-2 -> chm-serve: the CPU is added up by kind of process."""
    return re.sub(r"-\d+$", "", label)


def _cpu_ticks(pid: int) -> int | None:
    """User and system CPU of a process so far, in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def _machine_busy_ticks() -> int:
    """Every core's CPU time so far, idle and I/O wait left out (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def _count(keys: list[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for key in keys:
        counts[key] += 1
    return counts


@dataclass
class ScaleResult:
    seconds: float
    serve_workers: int
    chm_workers: int
    load: LoadResult
    connections: ConnectionSamples
    ingestion: dict[str, Any]
    health: dict[str, Any]
    load_average_before: tuple[float, float, float]
    load_average_after: tuple[float, float, float]
    problems: list[str]
    logged_errors: dict[str, dict[str, int]] = field(default_factory=dict)

    def requests_per_second(self) -> dict[str, float]:
        per_kind = {
            kind: len(values) / self.seconds for kind, values in self.load.latencies_ms.items()
        }
        per_kind["all"] = sum(per_kind.values())
        return {kind: round(rate, 1) for kind, rate in sorted(per_kind.items())}

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "serve_workers": self.serve_workers,
            "chm_workers": self.chm_workers,
            "load": self.load.summary(),
            "requests_per_second": self.requests_per_second(),
            "connections": self.connections.summary(),
            "pool_capacity": pool_capacity(self.serve_workers, self.chm_workers),
            "ingestion": self.ingestion,
            "health": self.health,
            "load_average_before": self.load_average_before,
            "load_average_after": self.load_average_after,
            "logged_errors": self.logged_errors,
            "problems": self.problems,
        }


def pool_capacity(serve_workers: int, chm_workers: int) -> dict[str, int]:
    """The most connections the pools may open: each serve process a
    synchronous and an asynchronous engine, each chm worker a synchronous one."""
    serve = serve_workers * (SYNC_POOL + ASYNC_POOL)
    workers = chm_workers * SYNC_POOL
    return {"serve": serve, "workers": workers, "total": serve + workers}


def _sources_file(directory: Path, feed_url: str, interval_s: float) -> Path:
    path = directory / "sources.toml"
    path.write_text(
        "[[sources]]\n"
        f'name = "{SOURCE}"\nplatform = "generic"\nenvironment = "prod"\n'
        f'base_url = "{feed_url}"\ninterval_s = {interval_s}\ntimeout_s = 10\n'
    )
    return path


def _create_ingest_pipelines(base: str, count: int) -> list[str]:
    with httpx.Client(base_url=base, timeout=30) as http:
        client = http.post("/api/v1/clients", json={"name": "scale-ingest"})
        client.raise_for_status()
        external_ids = []
        for n in range(count):
            external_id = f"feed-{n:03d}"
            http.post(
                "/api/v1/pipelines",
                json={
                    "client_id": client.json()["id"],
                    "name": external_id,
                    "platform": "generic",
                    "pipeline_type": "batch",
                    "environment": "prod",
                    "external_id": external_id,
                },
            ).raise_for_status()
            external_ids.append(external_id)
    return external_ids


def _health(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/healthz", params={"detail": 1}, timeout=30)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def _chm_workers(
    database_url: str, config: Path, directory: Path, count: int
) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    env.update(CHM_CONFIG=str(config), CHM_LOG_LEVEL="INFO")
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in range(1, count + 1):
            log = directory / f"worker-{n}.log"
            env["CHM_DATABASE_URL"] = with_application_name(database_url, f"chm-worker-{n}")
            with log.open("wb") as handle:
                process = subprocess.Popen(
                    [sys.executable, "-m", "chm.cli", "worker"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=handle,
                )
            started.append((process, log))
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _pending_pipelines(conn: psycopg.Connection[Any], frozen_at: datetime) -> int:
    """Ingest pipelines not yet ingested by an attempt that started after
    ``frozen_at`` (the engine records an attempt's start, with the source's
    counters, when it ends)."""
    row = conn.execute(
        "SELECT count(*) FROM pipelines WHERE external_id IS NOT NULL AND ("
        " last_ingest_attempt_at IS NULL OR last_ingest_attempt_at < %s)",
        (frozen_at,),
    ).fetchone()
    return int(row[0]) if row else 0


def _stored_ingestion(conn: psycopg.Connection[Any]) -> tuple[list[Any], Any]:
    """The ingest pipelines' stored runs, and the source's counters."""
    runs = conn.execute(
        "SELECT p.external_id, r.external_run_id, r.status, count(*)"
        " FROM runs r JOIN pipelines p ON p.id = r.pipeline_id"
        " WHERE p.external_id IS NOT NULL"
        " GROUP BY p.external_id, r.external_run_id, r.status"
    ).fetchall()
    counters = conn.execute(
        "SELECT runs_created, runs_updated, runs_unchanged, runs_skipped,"
        " ingestions_succeeded, ingestions_failed FROM ingestion_sources WHERE name = %s",
        (SOURCE,),
    ).fetchone()
    return runs, counters


def _logged_errors(log: Path) -> dict[str, int]:
    """The ERROR and CRITICAL lines of a CHM log, counted by their message
    (numbers left out, so that one kind of error counts as one). Lines without
    CHM's prefix (time, level, logger) count too: a serve process that uvicorn
    spawned writes the ``chm`` logger's warnings and errors bare (Python's
    last-resort handler), and a traceback is never a good sign."""
    counts: dict[str, int] = defaultdict(int)
    for line in log.read_text(errors="replace").splitlines():
        fields = line.split(" ", 3)
        prefixed = len(fields) == 4 and re.fullmatch(r"\d{4}-\d\d-\d\d", fields[0])
        if prefixed and fields[2] not in ("ERROR", "CRITICAL"):
            continue
        counts[re.sub(r"\d+", "N", fields[3] if prefixed else line)[:160]] += 1
    return dict(counts)


def run_scale(
    database_url: str,
    *,
    seconds: float = 60,
    serve_workers: int = 4,
    chm_workers: int = 2,
    writers: int = 50,
    readers: int = 50,
    ingest_pipelines: int = 20,
    interval_s: float = 2.0,
    live: LiveFeed | None = None,
    logs: Path | None = None,
) -> ScaleResult:
    """The whole run on a migrated (or empty) PostgreSQL database: servers,
    workers, feed, load, sampling, then every check (``problems``). The
    processes' logs and the sources file go to ``logs`` (kept) when given."""
    live = live or LiveFeed()
    # The bench's own checks, named apart in pg_stat_activity.
    dsn = with_application_name(
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False),
        "chm-bench",
    )
    problems: list[str] = []
    with (
        feed(live) as feed_url,  # type: ignore[arg-type]  # pages: any indexable of bytes
        tempfile.TemporaryDirectory() as tmp,
    ):
        directory = logs or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        config = _sources_file(directory, feed_url, interval_s)
        serve_log = directory / "serve.log"
        with (
            chm_server_process(
                with_application_name(database_url, "chm-serve"),
                _free_port(),
                serve_workers,
                {"CHM_CONFIG": str(config)},
                log=serve_log,
            ) as (base, server),
            # opened before the load: the checks must not need a free connection slot
            psycopg.connect(dsn, autocommit=True) as checks,
        ):
            external_ids = _create_ingest_pipelines(base, ingest_pipelines)
            with _chm_workers(database_url, config, directory, chm_workers) as workers:
                if not _wait_until(lambda: len(_health(base)["workers"]) == chm_workers, 60):
                    raise RuntimeError("the chm workers did not all register within 60 s")
                labels = {process.pid: f"chm-worker-{n}" for n, (process, _) in
                          enumerate(workers, 1)}  # fmt: skip

                def processes() -> dict[int, str]:
                    serving = {pid: f"chm-serve-{n}" for n, pid in
                               enumerate(sorted(_spawned_children(server.pid)), 1)}  # fmt: skip
                    return serving | labels

                sampler = ConnectionSampler(database_url, processes)
                load_before = os.getloadavg()
                sampler.start()
                live.start()
                load = asyncio.run(run_load(base, seconds, writers, readers))
                generation = live.freeze()
                frozen_at = datetime.now(UTC)
                settle = max(30.0, 10 * interval_s)
                settled = _wait_until(lambda: _pending_pipelines(checks, frozen_at) == 0, settle)
                settled_s = (datetime.now(UTC) - frozen_at).total_seconds()
                if not settled:
                    problems.append(
                        f"{_pending_pipelines(checks, frozen_at)} ingest pipelines not ingested"
                        f" again within {settle:g} s of the feed's freeze"
                    )
                health = _health(base)
                connections = sampler.stop()
                load_after = os.getloadavg()
                exits = []
                for process, _ in workers:
                    if process.poll() is not None:
                        problems.append(f"chm worker {process.pid} exited ({process.returncode})")
                    process.send_signal(signal.SIGTERM)
                for process, _ in workers:
                    exits.append(process.wait(timeout=30))
            walks = [len(INGESTED.findall(log.read_text(errors="replace"))) for _, log in workers]
            runs, counters = _stored_ingestion(checks)
            logged = {
                "chm serve": _logged_errors(serve_log),
                **{f"chm-worker-{n}": _logged_errors(log) for n, (_, log) in enumerate(workers, 1)},
            }
    problems += [f"chm worker {n} exited with {code} on SIGTERM" for n, code in
                 enumerate(exits, 1) if code != 0]  # fmt: skip
    problems += _load_problems(load)
    ingestion = _ingestion_figures(live, generation, external_ids, runs, counters, walks)
    ingestion["settled_s"] = round(settled_s, 1)
    problems += ingestion.pop("problems")
    problems += _health_problems(health, chm_workers)
    for name, errors in logged.items():
        if errors:
            problems.append(f"{name} logged errors: {errors}")
    if max(connections.total, default=0) > pool_capacity(serve_workers, chm_workers)["total"]:
        problems.append("more connections than the pools can open")
    if connections.samples < seconds / 2:
        problems.append(f"only {connections.samples} samples of pg_stat_activity")
    return ScaleResult(
        seconds=seconds,
        serve_workers=serve_workers,
        chm_workers=chm_workers,
        load=load,
        connections=connections,
        ingestion=ingestion,
        health={
            "source_state": [s["state"] for s in health["sources"]],
            "workers": len(health["workers"]),
            "workers_lost": health["workers_lost"],
        },
        load_average_before=load_before,
        load_average_after=load_after,
        problems=problems,
        logged_errors=logged,
    )


def _load_problems(load: LoadResult) -> list[str]:
    problems = []
    if load.server_errors:
        problems.append(f"{load.server_errors} responses 5xx")
    if load.transport_errors:
        problems.append(f"{load.transport_errors} transport errors")
    unexpected = {
        kind: {status: n for status, n in statuses.items() if status not in (200, 201)}
        for kind, statuses in load.statuses.items()
    }
    unexpected = {kind: by_status for kind, by_status in unexpected.items() if by_status}
    if unexpected:
        problems.append(f"unexpected statuses: {unexpected}")
    if load.missing or load.stored_duplicates:
        problems.append(
            f"acknowledged runs: {load.missing} missing, {load.stored_duplicates} duplicated"
        )
    if not load.acknowledged:
        problems.append("no write was acknowledged")
    return problems


def _ingestion_figures(
    live: LiveFeed,
    generation: int,
    external_ids: list[str],
    runs: list[Any],
    counters: Any,
    walks: list[int],
) -> dict[str, Any]:
    """What the workers ingested, against what the feed served at its last
    state; ``problems`` names every difference."""
    expected = live.expected(generation)
    stored: dict[str, dict[str, str]] = defaultdict(dict)
    duplicated = 0
    for external_id, run_id, status, count in runs:
        duplicated += count - 1
        if run_id in stored[external_id]:
            duplicated += 1
        stored[external_id][run_id] = status
    missing = extra = wrong_status = 0
    for external_id in external_ids:
        have = stored.get(external_id, {})
        missing += sum(1 for run_id in expected if run_id not in have)
        extra += sum(1 for run_id in have if run_id not in expected)
        wrong_status += sum(
            1 for run_id, status in have.items() if expected.get(run_id, status) != status
        )
    unknown = set(stored) - set(external_ids)
    total = sum(len(have) for have in stored.values())
    created, updated, unchanged, skipped, succeeded, failed = counters or (0, 0, 0, 0, 0, 0)
    changes = live.changes(generation) * len(external_ids)
    problems = []
    if missing or extra or duplicated or wrong_status or unknown:
        problems.append(
            f"ingested runs against the feed: {missing} missing, {extra} extra,"
            f" {duplicated} duplicated, {wrong_status} with another status,"
            f" {len(unknown)} other pipelines"
        )
    if created != total:
        problems.append(f"the source counted {created} runs created, {total} are stored")
    if updated > changes:
        problems.append(f"{updated} runs updated, but the feed changed only {changes} times")
    if failed or skipped:
        problems.append(f"{failed} ingestions failed, {skipped} runs skipped")
    if not all(walks):
        problems.append(f"a worker ingested nothing: ingestions per worker {walks}")
    return {
        "pipelines": len(external_ids),
        "feed_generation": generation,
        "feed_runs_per_pipeline": len(expected),
        "feed_pages_served": live.pages_served,
        "runs_stored": total,
        "runs_created": created,
        "runs_updated": updated,
        "runs_unchanged": unchanged,
        "feed_changes": changes,
        "ingestions": succeeded,
        "ingestions_per_worker": walks,
        "problems": problems,
    }


def _health_problems(health: dict[str, Any], chm_workers: int) -> list[str]:
    problems = []
    states = {source["name"]: source["state"] for source in health["sources"]}
    if states != {SOURCE: "ok"}:
        problems.append(f"sources' health: {states}")
    for source in health["sources"]:
        if source["consecutive_failures"] or source["last_error"]:
            problems.append(f"source {source['name']}: {source['last_error']}")
    if len(health["workers"]) != chm_workers or health["workers_lost"]:
        problems.append(
            f"workers alive {len(health['workers'])} of {chm_workers},"
            f" lost {health['workers_lost']}"
        )
    return problems


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def medians(results: list[ScaleResult]) -> dict[str, Any]:
    """The median over the repetitions of each figure the report gives."""
    kinds = sorted({kind for result in results for kind in result.load.latencies_ms})
    latency = {
        kind: {
            p: _median([result.load.percentiles(kind)[p] for result in results])
            for p in ("p50", "p95", "p99")
        }
        for kind in kinds
    }
    rates = {
        kind: _median([result.requests_per_second()[kind] for result in results])
        for kind in [*kinds, "all"]
    }
    return {
        "repetitions": len(results),
        "latency_ms": latency,
        "requests_per_second": rates,
        "max_connections_used": _median([max(r.connections.total) for r in results]),
        "runs_stored_by_ingestion": _median([r.ingestion["runs_stored"] for r in results]),
        "runs_updated_by_ingestion": _median([r.ingestion["runs_updated"] for r in results]),
        "ingestions": _median([r.ingestion["ingestions"] for r in results]),
        "acknowledged_writes": _median([len(r.load.acknowledged) for r in results]),
    }


def _print_result(result: ScaleResult) -> None:
    summary = result.summary()
    connections = summary["connections"]
    print(
        f"serve --workers {result.serve_workers} + {result.chm_workers} chm workers,"
        f" {result.seconds:g} s; load average before {result.load_average_before},"
        f" after {result.load_average_after}"
    )
    print(f"{'request':<12}{'count':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for kind, figures in summary["load"]["requests"].items():
        print(
            f"{kind:<12}{figures['count']:>8}{summary['requests_per_second'][kind]:>8.1f}"
            f"{figures['p50']:>9.1f}{figures['p95']:>9.1f}{figures['p99']:>9.1f}"
        )
    print(
        f"connections: max {connections['max']} (median {connections['median']}) of"
        f" max_connections {connections['max_connections']}; by state"
        f" {connections['max_by_state']}; by kind {connections['max_by_kind']};"
        f" per process {connections['max_per_process']}; pools could open"
        f" {summary['pool_capacity']}"
    )
    print(f"CPU seconds during the load: {connections['cpu_seconds']}")
    ingestion = summary["ingestion"]
    print(
        f"ingestion: {ingestion['ingestions']} pipeline ingestions"
        f" (per worker {ingestion['ingestions_per_worker']}), {ingestion['runs_stored']} runs"
        f" stored = {ingestion['runs_created']} created, {ingestion['runs_updated']} updated"
        f" (feed changes {ingestion['feed_changes']}), {ingestion['feed_pages_served']} pages"
    )
    print(f"problems: {result.problems or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--serve-workers", type=int, default=4)
    parser.add_argument("--chm-workers", type=int, default=2)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--ingest-pipelines", type=int, default=20)
    parser.add_argument("--interval-s", type=float, default=2.0, help="the source's interval_s")
    parser.add_argument("--tick-s", type=float, default=1.0, help="the feed moves on every")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--database", default=ADMIN_URL, help="the PostgreSQL server (admin URL)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    parser.add_argument("--logs", type=Path, help="keep each run's logs in <logs>/<n>/")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120,
        help="before each run, wait at most this long for the load average to fall below 1",
    )
    args = parser.parse_args(argv)
    results = []
    for repetition in range(args.repeat):
        if repetition:
            time.sleep(5)  # let the previous run's processes and database go
        wait_quiet(args.wait_quiet)
        with scratch_database(args.database) as url:
            result = run_scale(
                url,
                seconds=args.seconds,
                serve_workers=args.serve_workers,
                chm_workers=args.chm_workers,
                writers=args.writers,
                readers=args.readers,
                ingest_pipelines=args.ingest_pipelines,
                interval_s=args.interval_s,
                live=LiveFeed(tick_s=args.tick_s),
                logs=args.logs / str(repetition + 1) if args.logs else None,
            )
        _print_result(result)
        results.append(result)
    summary = {"runs": [r.summary() for r in results], "medians": medians(results)}
    print(json.dumps(summary["medians"], indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 1 if any(result.problems for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
