"""Fake platform APIs over real sockets, speaking each platform's documented shapes.

A ``FakeServer`` is a threading HTTP server on 127.0.0.1 (an OS-chosen port).
Each ``serve_*`` helper registers one pipeline's pages in its platform's
protocol; ``script`` queues answers (429, 503, slow ones...) that a given page
gives before its normal one. Every request is recorded, headers included.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from chm.ingestion.config import Sources, parse_sources


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Faults in the body: sent ``trickle`` bytes at a time, ``trickle_delay``
    # seconds apart; or cut by a TCP reset after ``reset_after`` bytes.
    trickle: int = 0
    trickle_delay: float = 0.0
    reset_after: int | None = None
    # A fault before the body: the status line and headers sent one byte at
    # a time, this many seconds apart.
    head_trickle_delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    # The client's port (one per connection) and when the request arrived.
    port: int = 0
    at: float = 0.0


Handler = Callable[[Seen], Reply]


def reset_connection(connection: socket.socket) -> None:
    """Close with a TCP reset (RST), as a crashing proxy does, not a clean FIN."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.routes: dict[tuple[str, str], Handler] = {}
        self.scripts: dict[tuple[str, str | None], deque[Reply]] = defaultdict(deque)
        self.page_delay = 0.0
        self.lock = threading.Lock()
        # When set, no request is answered until this many distinct client
        # connections have arrived (or a few seconds passed): concurrent
        # clients then provably overlap, whatever their start-up times.
        self.gate_clients = 0
        self._gate_seen: set[int] = set()
        self._gate_open = threading.Event()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY,
            # Nagle and the client's delayed ACK add ~40 ms to each answer.
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                    self.client_address[1],
                    time.monotonic(),
                )
                server.wait_at_gate(seen.port)
                reply = server.answer(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    for name, value in {
                        "content-type": "application/json",
                        **reply.headers,
                    }.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    if reply.head_trickle_delay:
                        self._trickle_head(reply.head_trickle_delay)
                    else:
                        self.end_headers()
                    if reply.reset_after is not None:
                        self.wfile.write(payload[: reply.reset_after])
                        self.wfile.flush()
                        reset_connection(self.connection)
                        self.close_connection = True
                    elif reply.trickle:
                        for start in range(0, len(payload), reply.trickle):
                            self.wfile.write(payload[start : start + reply.trickle])
                            self.wfile.flush()
                            time.sleep(reply.trickle_delay)
                    else:
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _trickle_head(self, delay: float) -> None:
                """``end_headers`` one byte at a time: the status line and headers
                that ``send_response`` and ``send_header`` buffered, then the
                blank line."""
                head = b"".join(self._headers_buffer) + b"\r\n"
                self._headers_buffer = []
                for i in range(len(head)):
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                    time.sleep(delay)

            do_GET = do_POST = _serve  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, seen: Seen) -> Reply:
        with self.lock:
            self.requests.append(seen)
            handler = self.routes.get((seen.method, seen.path))
        if handler is None:
            return Reply(404, {"error": "no such path"})
        return handler(seen)

    def wait_at_gate(self, port: int, timeout: float = 30.0) -> None:
        if not self.gate_clients:
            return
        with self.lock:
            self._gate_seen.add(port)
            if len(self._gate_seen) >= self.gate_clients:
                self._gate_open.set()
        self._gate_open.wait(timeout)

    def script(self, path: str, cursor: str | None, *replies: Reply) -> None:
        """Answers the page at ``path`` with ``cursor`` gives before its normal one."""
        self.scripts[(path, cursor)].extend(replies)

    def scripted(self, path: str, cursor: str | None) -> Reply | None:
        with self.lock:
            queue = self.scripts.get((path, cursor))
            return queue.popleft() if queue else None

    def hits(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]


def _paged(
    server: FakeServer,
    path: str,
    pages: list[list[dict[str, Any]]],
    cursor_of: Callable[[Seen], str | None],
    page_body: Callable[[list[dict[str, Any]], str | None], Any],
    prefix: str,
) -> None:
    def handler(seen: Seen) -> Reply:
        cursor = cursor_of(seen)
        scripted = server.scripted(path, cursor)
        if scripted is not None:
            return scripted
        index = 0 if cursor is None else int(cursor.rsplit("-", 1)[1])
        if index >= len(pages):
            return Reply(400, {"error": f"unknown cursor {cursor}"})
        next_cursor = f"{prefix}-{index + 1}" if index + 1 < len(pages) else None
        return Reply(body=page_body(pages[index], next_cursor), delay=server.page_delay)

    server.routes[("POST" if "queryPipelineRuns" in path else "GET", path)] = handler


def generic_path(external_id: str) -> str:
    return f"/pipelines/{quote(external_id, safe='')}/runs"


def serve_generic(server: FakeServer, external_id: str, pages: list[list[dict[str, Any]]]) -> str:
    """The contract's partner feed; answers the path it serves."""
    path = generic_path(external_id)
    _paged(
        server,
        path,
        pages,
        lambda seen: seen.query.get("cursor"),
        lambda runs, nxt: {"runs": runs, "next_cursor": nxt},
        f"g{external_id}",
    )
    return path


def serve_databricks(
    server: FakeServer, job_id: str, pages: list[list[dict[str, Any]]], version: str = "2.2"
) -> str:
    """Jobs API runs/list: runs, has_more, next_page_token (runs left out when empty)."""
    path = f"/api/{version}/jobs/runs/list"

    def body(runs: list[dict[str, Any]], nxt: str | None) -> dict[str, Any]:
        page: dict[str, Any] = {"has_more": nxt is not None}
        if runs:
            page["runs"] = runs
        if nxt:
            page["next_page_token"] = nxt
        return page

    def cursor(seen: Seen) -> str | None:
        assert seen.query["job_id"] == job_id
        return seen.query.get("page_token")

    _paged(server, path, pages, cursor, body, f"d{job_id}")
    return path


ADF_FACTORY = (
    "/subscriptions/sub-1/resourceGroups/rg-data/providers/Microsoft.DataFactory/factories/acme-adf"
)


def serve_adf(server: FakeServer, pipeline_name: str, pages: list[list[dict[str, Any]]]) -> str:
    """queryPipelineRuns: value + continuationToken, the same body re-posted."""
    path = f"{ADF_FACTORY}/queryPipelineRuns"

    def cursor(seen: Seen) -> str | None:
        assert seen.query["api-version"] == "2018-06-01"
        assert seen.body["filters"] == [
            {"operand": "PipelineName", "operator": "Equals", "values": [pipeline_name]}
        ]
        return seen.body.get("continuationToken")

    _paged(
        server,
        path,
        pages,
        cursor,
        lambda runs, nxt: {"value": runs, "continuationToken": nxt},
        "a",
    )
    return path


def generic_run(run_id: str, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": status,
        "started_at": "2026-03-01T10:00:00Z",
        "finished_at": "2026-03-01T10:05:00Z",
        "error": None,
        "metrics": {"rows": 10},
        **fields,
    }


def source(server: FakeServer, platform: str = "generic", **fields: Any) -> dict[str, Any]:
    """A sources-file entry pointing at ``server``, with tiny backoff for tests."""
    entry: dict[str, Any] = {
        "name": f"{platform}-prod",
        "platform": platform,
        "environment": "prod",
        "base_url": server.url,
        "timeout_s": 2,
        "max_retries": 3,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.01,
    }
    if platform == "adf":
        entry |= {
            "subscription_id": "sub-1",
            "resource_group": "rg-data",
            "factory_name": "acme-adf",
        }
    return entry | fields


def sources(*entries: dict[str, Any]) -> Sources:
    return parse_sources({"sources": list(entries)}, "test-sources.toml")


def toml_text(*entries: dict[str, Any]) -> str:
    """The same entries as a sources file."""
    lines = []
    for entry in entries:
        lines.append("[[sources]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
        lines.append("")
    return "\n".join(lines)


class SleepRecorder:
    """Stands in for time.sleep in the engine: records the waits, sleeps none."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
