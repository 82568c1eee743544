"""`chm serve` stops within a bounded time on SIGTERM (CHM_SHUTDOWN_TIMEOUT_S),
even with a request in flight that never finishes, and at once when idle."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest
from sqlalchemy import Engine

from live import free_port, start_chm_server

SHUTDOWN_TIMEOUT_S = 1
# Generous: the bound is there to tell "stops" from "waits forever", not to
# time the shutdown.
EXIT_BOUND_S = SHUTDOWN_TIMEOUT_S + 20


def start_server(db_url: str, port: int, shutdown_timeout_s: int) -> subprocess.Popen[str]:
    return start_chm_server(
        db_url, port, stderr=subprocess.PIPE, CHM_SHUTDOWN_TIMEOUT_S=str(shutdown_timeout_s)
    )


def stop(server: subprocess.Popen[str]) -> str:
    """SIGTERM, then the server's stderr once it has exited (killed if it hangs)."""
    server.send_signal(signal.SIGTERM)
    try:
        _, stderr = server.communicate(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()
        raise AssertionError(f"chm serve still running {EXIT_BOUND_S} s after SIGTERM") from None
    return stderr


def test_sigterm_cancels_a_request_that_never_finishes_after_the_timeout(db_url: str) -> None:
    port = free_port()
    server = start_server(db_url, port, SHUTDOWN_TIMEOUT_S)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=EXIT_BOUND_S) as stalled:
            stalled.sendall(
                b"POST /api/v1/clients HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            # The server says 100 Continue once the application reads the
            # body: from here the request is in flight, waiting for the rest.
            assert stalled.recv(64).startswith(b"HTTP/1.1 100 Continue")
            stalled.sendall(b'{"name": "Ac')
            stderr = stop(server)
            # The request was cancelled, and told so: a 503 problem+json to
            # retry, never a bare 500 nor a 201.
            answer = stalled.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"application/problem+json" in answer and b"retry-after: 5" in answer.lower()
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert "timeout graceful shutdown exceeded" in stderr


@pytest.mark.postgres_only  # only PostgreSQL shows who waits on a lock
def test_sigterm_does_not_wait_for_a_request_stuck_in_a_worker_thread(
    db_url: str, engine: Engine
) -> None:
    """A request whose handler blocks in a thread (here on a lock this test
    holds) cannot be cancelled; the server exits without waiting for it."""
    port = free_port()
    server = start_server(db_url, port, SHUTDOWN_TIMEOUT_S)
    request: threading.Thread | None = None
    try:
        with engine.connect() as holder, holder.begin():
            holder.exec_driver_sql("LOCK TABLE clients IN ACCESS EXCLUSIVE MODE")

            def create_client() -> None:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(
                        f"http://127.0.0.1:{port}/api/v1/clients",
                        json={"name": "Acme"},
                        timeout=EXIT_BOUND_S,
                    )

            request = threading.Thread(target=create_client, daemon=True)
            request.start()
            deadline = time.monotonic() + 30
            with engine.connect() as watcher:
                # In flight: the server's connection waits on this test's lock.
                while not watcher.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).scalar_one():
                    assert time.monotonic() < deadline, "the request never reached the lock"
                    time.sleep(0.05)
            stderr = stop(server)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
        if request is not None:
            request.join(timeout=EXIT_BOUND_S)
    assert "timeout graceful shutdown exceeded" in stderr


def test_an_idle_server_exits_on_sigterm_without_waiting_out_the_timeout(db_url: str) -> None:
    port = free_port()
    # A timeout far longer than the bound: an idle server must not wait for it.
    server = start_server(db_url, port, shutdown_timeout_s=10 * EXIT_BOUND_S)
    try:
        # A keep-alive connection left open between requests is idle too.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert http.get("/api/v1/clients").status_code == 200
            stderr = stop(server)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert "Traceback" not in stderr
