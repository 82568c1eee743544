"""The HTTP metrics of several server processes, added up (``chm serve --workers N``).

Each of uvicorn's worker processes counts the requests it answers; a scrape
is answered by one of them. prometheus_client's multiprocess mode makes that
one answer for all: with ``PROMETHEUS_MULTIPROC_DIR`` set before the
processes import prometheus_client, each writes its metrics to its own files
in that directory, and a scrape reads every file (``MultiProcessCollector``).

``chm serve`` owns the variable (``shared_metrics``): with more than one
worker it points it at a fresh private directory (mode 0700) that the worker
processes inherit, and removes it once they have all stopped, so a restart
never adds an old run's counts. With one worker it drops any inherited value:
the one process keeps its metrics in memory (the default registry).

This module imports prometheus_client only when a scrape needs it: the
library picks its storage (memory or files) from the variable when first
imported, so ``chm serve`` must set the variable before anything imports it.

The HTTP metrics are counters and a histogram only: a worker that dies keeps
its counts in the totals (a counter never goes down), so there is no "live"
gauge whose files ``mark_process_dead`` would have to remove.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics(workers: int) -> Iterator[Path | None]:
    """The environment of a server of ``workers`` processes, for the time it
    runs: a fresh private multiprocess directory when there are several
    (yielded, removed afterwards), none when there is one."""
    inherited = os.environ.pop(MULTIPROC_DIR_ENV, None)
    directory = Path(tempfile.mkdtemp(prefix="chm-metrics-")) if workers > 1 else None
    try:
        if directory is not None:
            os.environ[MULTIPROC_DIR_ENV] = str(directory)
        yield directory
    finally:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        if inherited is not None:
            os.environ[MULTIPROC_DIR_ENV] = inherited
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def scrape_registry(*collectors: Collector) -> CollectorRegistry:
    """What one scrape reads: the HTTP metrics of every server process (the
    multiprocess directory's files) or of this one (the default registry),
    and ``collectors``."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if path:
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    for collector in collectors:
        registry.register(collector)
    return registry
