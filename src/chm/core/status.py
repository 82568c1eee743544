"""The run-status vocabulary every part of CHM speaks (contract: Runs).

A word list, not a table: the connectors map each platform's words to it,
the ``runs`` table holds one of them (a CHECK constraint built from
``RUN_STATUSES``), and the services, reports and schemas read it. It lives
below all of them so that none has to import another to share it.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    success = "success"
    failed = "failed"
    cancelled = "cancelled"
    skipped = "skipped"
    unknown = "unknown"


RUN_STATUSES = tuple(s.value for s in RunStatus)
# The states a run ends in: its outcome is known and it will not change alone.
TERMINAL_STATUSES = frozenset(
    {RunStatus.success, RunStatus.failed, RunStatus.cancelled, RunStatus.skipped}
)
