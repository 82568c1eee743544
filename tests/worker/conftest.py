"""The worker's tests use the ingestion tests' fake platforms and the alert
tests' fake receivers, over real sockets."""

from __future__ import annotations

import sys
from pathlib import Path

for folder in ("ingestion", "alerts"):
    path = str(Path(__file__).resolve().parent.parent / folder)
    if path not in sys.path:
        sys.path.insert(0, path)


import pytest  # noqa: E402
from worker_processes import RunningWorker, Spawn, start_worker  # noqa: E402


@pytest.fixture
def spawn(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Starts ``chm worker`` processes; any still running at the end are killed."""
    started: list[RunningWorker] = []

    def start(env: dict[str, str], name: str = "worker") -> RunningWorker:
        running = start_worker(env, tmp_path / f"{name}-{len(started)}.log")
        started.append(running)
        return running

    spawn_: Spawn = start
    yield spawn_
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=10)
