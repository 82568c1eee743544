"""What the process tests of the worker share: ``chm worker`` started as a real
process with its log in a file, and waits on facts under a deadline."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

CHM_WORKER = [sys.executable, "-m", "chm.cli", "worker"]
POLL_S = 0.05
STARTED = re.compile(r"worker (\S+) started on")
# The engine's line when a pipeline's ingestion ended well: "pipeline 12 (name): ..."
INGESTED = re.compile(r"pipeline (\d+) \([^)]*\): ingestion complete")
# The sender's line when a message went out.
SENT = re.compile(r"message ([0-9a-f]{32}) to \S+: sent")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class RunningWorker:
    process: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_id(self) -> str | None:
        found = STARTED.search(self.stderr())
        return found.group(1) if found else None

    def ingested(self) -> list[int]:
        return [int(number) for number in INGESTED.findall(self.stderr())]

    def sent_keys(self) -> list[str]:
        return SENT.findall(self.stderr())

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


Spawn = Callable[..., RunningWorker]


def start_worker(env: dict[str, str], log: Path) -> RunningWorker:
    """``chm worker`` with stderr to a file (never a pipe that could fill up)."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            CHM_WORKER, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle
        )
    return RunningWorker(process, log)


def base_env(db_url: str, config: Path, **extra: str) -> dict[str, str]:
    """This process's environment without its CHM_* settings, and the worker's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    return env | {
        "CHM_DATABASE_URL": db_url,
        "CHM_CONFIG": str(config),
        "CHM_LOG_LEVEL": "INFO",
        "CHM_WORKER_POLL_S": str(POLL_S),
        **extra,
    }


def wait_until(
    ready: Callable[[], bool], what: str, *watched: RunningWorker, timeout: float = 60
) -> None:
    """Polls ``ready`` until it holds; fails at the deadline, or at once when a
    watched worker exits (with its log)."""
    deadline = time.monotonic() + timeout
    while not ready():
        for running in watched:
            if running.process.poll() is not None:
                pytest.fail(
                    f"worker exited ({running.process.returncode}) before {what}:\n"
                    + running.stderr()[-3000:]
                )
        if time.monotonic() > deadline:
            logs = "\n---\n".join(running.stderr()[-2000:] for running in watched)
            pytest.fail(f"timed out waiting until {what}\n{logs}")
        time.sleep(0.02)
