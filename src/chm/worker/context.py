"""What every task of the worker shares: the database, the settings, the clock,
the stop flag, this worker's id and the sources file as last validly read."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from chm.core.db import make_session_factory
from chm.core.settings import Environment, Settings
from chm.ingestion.config import ConfigError, Sources
from chm.ingestion.engine import Abandoned
from chm.ingestion.sources_cache import SourcesCache

logger = logging.getLogger("chm.worker")


class LiveSources:
    """The sources file, reloaded when it changes: an invalid change is refused
    (logged once, with the reason) and the last valid file stays in force."""

    def __init__(self, path: Path | None, environment: Environment) -> None:
        self.path = path
        self.environment = environment
        self._cache = SourcesCache()
        self._valid: Sources | None = None
        self._refused: str | None = None

    def load_initial(self) -> Sources | None:
        """The file at start: ``ConfigError`` when it is invalid (the worker then
        does not start); None when CHM_CONFIG is not set."""
        if self.path is None:
            return None
        self._valid = self._cache.load(self.path, self.environment)
        return self._valid

    def current(self) -> Sources | None:
        if self.path is None:
            return None
        try:
            sources = self._cache.load(self.path, self.environment)
        except ConfigError as error:
            reason = str(error)
            if reason != self._refused:
                self._refused = reason
                logger.error(
                    "the sources file changed and is refused, the previous valid one stays "
                    "in force: %s",
                    reason,
                )
            return self._valid
        if sources is not self._valid:
            if self._valid is not None:
                logger.info("sources file reloaded: %d sources", len(sources.all))
            self._valid = sources
            self._refused = None
        return sources


@dataclass
class WorkerContext:
    engine: Engine
    settings: Settings
    worker_id: str
    clock: Callable[[], datetime]
    sources: LiveSources
    stop: threading.Event = field(default_factory=threading.Event)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def __post_init__(self) -> None:
        self.write_sessions: sessionmaker[Session] = make_session_factory(self.engine, write=True)
        self.read_sessions: sessionmaker[Session] = make_session_factory(self.engine)
        # What the work thread holds right now: the heartbeat renews these
        # leases only, so a lease left behind by a failed release expires and
        # passes to any worker, this one included.
        self._held_lock = threading.Lock()
        self._held_pipelines: set[int] = set()
        self._held_job: int | None = None

    def hold(self, pipeline_ids: Iterable[int] = (), job_id: int | None = None) -> None:
        with self._held_lock:
            self._held_pipelines.update(pipeline_ids)
            if job_id is not None:
                self._held_job = job_id

    def drop(self, pipeline_ids: Iterable[int] = (), job_id: int | None = None) -> None:
        with self._held_lock:
            self._held_pipelines.difference_update(pipeline_ids)
            if job_id is not None and self._held_job == job_id:
                self._held_job = None

    def held(self) -> tuple[list[int], int | None]:
        with self._held_lock:
            return sorted(self._held_pipelines), self._held_job

    def stopping(self) -> bool:
        return self.stop.is_set()

    def sleep(self, seconds: float) -> None:
        """A wait that a stop cuts short: the engine's retry backoff and the
        worker's own waits end at once when the worker is asked to stop."""
        if self.stop.wait(seconds):
            raise Abandoned


class Task(Protocol):
    """One kind of the worker's work (scheduled ingestion, jobs, retention, and
    the alerts' evaluation and delivery to come)."""

    name: str

    def step(self) -> bool:
        """Do one unit of due work, if any; True when there was some (the loop
        then asks again at once instead of waiting)."""
        ...
