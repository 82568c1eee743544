"""Ingestion throughput: 100,000 runs in pages of 1,000 from a local fake generic feed,
first ingest then an identical replay, on SQLite and PostgreSQL (issue 3).

    .venv/bin/python bench/ingest.py [--runs 100000] [--page-size 1000] [--backend sqlite]
        [--profile [N]]

The feed is a threading HTTP server on 127.0.0.1 answering pre-encoded pages,
so the figures measure CHM: HTTP client, JSON decoding, mapping, redaction and
the batched upsert with one commit per page. PostgreSQL runs in a scratch
database created on postgresql://postgres@127.0.0.1:5432 and dropped after.
``--profile`` runs each pass under cProfile (which slows it: the figures are
then only for comparing shares) and prints its N entries of most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import sqlalchemy as sa

from chm.core.db import create_db_engine, make_session_factory
from chm.core.migrate import upgrade
from chm.ingestion.config import parse_sources
from chm.ingestion.engine import ingest
from chm.models import Client, Pipeline, Run

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EXTERNAL_ID = "bench-feed"
STATUSES = ("succeeded", "failed", "running", "queued", "cancelled")


def make_pages(runs: int, page_size: int) -> list[bytes]:
    """The feed's pages, encoded once: a realistic run object per entry."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    pages = []
    for first in range(0, runs, page_size):
        items = []
        for n in range(first, min(first + page_size, runs)):
            began = start + timedelta(minutes=n)
            status = STATUSES[n % len(STATUSES)]
            items.append(
                {
                    "run_id": f"run-{n:07d}",
                    "status": status,
                    "started_at": began.isoformat(),
                    "finished_at": (began + timedelta(seconds=30 + n % 600)).isoformat()
                    if status in ("succeeded", "failed", "cancelled")
                    else None,
                    "error": "task 3 failed: division by zero" if status == "failed" else None,
                    "metrics": {"rows": n * 7 % 100_000, "bytes": n * 1024},
                    "attempt": 1,
                    "trigger": {"kind": "schedule", "cron": "*/5 * * * *"},
                }
            )
        index = first // page_size
        next_cursor = f"p{index + 1}" if first + page_size < runs else None
        pages.append(json.dumps({"runs": items, "next_cursor": next_cursor}).encode())
    return pages


@contextmanager
def feed(pages: list[bytes]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def do_GET(self) -> None:
            cursor = parse_qs(urlsplit(self.path).query).get("cursor", ["p0"])[0]
            body = pages[int(cursor[1:])]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    name = f"chm_bench_ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def profiled(call: Any, entries: int) -> tuple[Any, str]:
    """``call()`` under cProfile: its result, and its ``entries`` functions of most own time."""
    profile = cProfile.Profile()
    result = profile.runcall(call)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(entries)
    return result, text.getvalue()


def measure(backend: str, base_url: str, runs: int, profile: int = 0) -> dict[str, Any]:
    with scratch_database(backend) as url:
        engine = create_db_engine(url)
        upgrade(engine)
        with make_session_factory(engine, write=True).begin() as session:
            client = Client(name="Bench")
            session.add(client)
            session.flush()
            session.add(
                Pipeline(client_id=client.id, name="bench", platform="generic",
                         pipeline_type="batch", environment="prod", external_id=EXTERNAL_ID)
            )  # fmt: skip
        sources = parse_sources(
            {"sources": [{"name": "bench", "platform": "generic", "environment": "prod",
                          "base_url": base_url, "timeout_s": 60}]},
            "bench",
        )  # fmt: skip
        result: dict[str, Any] = {"backend": backend}
        for label in ("first", "replay"):
            started = time.perf_counter()
            if profile:
                report, top = profiled(lambda: ingest(engine, sources), profile)
                print(f"--- {backend} {label}: cProfile, {profile} entries of most own time\n{top}")
            else:
                report = ingest(engine, sources)
            elapsed = time.perf_counter() - started
            assert report.errors == [], report.errors
            result[label] = {
                "seconds": round(elapsed, 2),
                "runs_per_second": round(runs / elapsed),
                "created": report.runs_created,
                "unchanged": report.runs_unchanged,
                "pages": report.pages,
            }
        with engine.connect() as connection:
            stored = connection.scalar(sa.select(sa.func.count()).select_from(Run))
        assert stored == runs, stored
        assert result["first"]["created"] == runs
        assert result["replay"]["unchanged"] == runs
        engine.dispose()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--profile", type=int, nargs="?", const=25, default=0, metavar="N",
        help="run under cProfile and print the N functions of most own time (default 25)",
    )  # fmt: skip
    args = parser.parse_args()
    pages = make_pages(args.runs, args.page_size)
    results = []
    with feed(pages) as base_url:
        for backend in args.backend or ("sqlite", "postgresql"):
            results.append(measure(backend, base_url, args.runs, args.profile))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.runs:,} runs in pages of {args.page_size:,}")
    print(f"{'backend':<12}{'pass':<8}{'seconds':>9}{'runs/s':>10}")
    for result in results:
        for label in ("first", "replay"):
            figures = result[label]
            print(
                f"{result['backend']:<12}{label:<8}{figures['seconds']:>9.2f}"
                f"{figures['runs_per_second']:>10,}"
            )


if __name__ == "__main__":
    main()
