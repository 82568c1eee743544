"""The no-regression rule: which stored state of a run a snapshot may replace
(docs/ingestion.md, "Idempotent upsert and the no-regression rule").

Pure functions, rows in and rows out: no database, no I/O. The store
(``chm.ingestion.store``) reads the stored runs of a page, asks ``fold_page``
what to write, and writes it; pulled pages fold with ``merge``, OpenLineage
events with ``fold_event``.

**The rule.** A run's stored state never goes back in time:

- when both the stored run and the snapshot carry the source's own update
  time (``source_updated_at``) and the snapshot's is older, the snapshot is
  stale and ignored;
- a snapshot of an earlier attempt of the run than the stored one is stale,
  and one of a later attempt replaces it whatever the statuses, with the
  new attempt's own times (``attempt_order``: the source's attempt markers,
  ``source_attempt``, when both carry one; else a start after the stored
  end, or an end before the stored start);
- within one attempt, a snapshot that is not terminal (queued, running,
  unknown) never replaces a terminal status (success, failed, cancelled,
  skipped), unless both carry an update time and the snapshot's is strictly
  newer: the source shows the run really restarted;
- within one attempt, a terminal snapshot that ended before the stored
  terminal outcome is an older read and ignored, unless both carry an update
  time and the snapshot's is strictly newer;
- within one attempt ``started_at`` is never lost once known: a snapshot
  without one keeps the stored value; a terminal snapshot without
  ``finished_at`` keeps the stored one too; and so do the source update
  time and the attempt marker;
- the duration is the source's when it gave one, else finished - started;
- a snapshot without an update time cannot show that it is newer than a
  stored run that has one (a pull of a run its OpenLineage events told
  first): of the same attempt and the same terminal status, it only fills
  in what the stored run lacks (``fill_in``).

A stale snapshot counts as unchanged, and so does one that would change no
stored value: a replay writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chm.core.status import TERMINAL_STATUSES
from chm.core.timeutil import derived_duration
from chm.ingestion.normalize import InvalidRun, SourceRun

Row = dict[str, Any]
# How a snapshot folds into what is stored (None: stale, nothing to write).
Fold = Callable[[Row | None, Row], Row | None]

# The values a source decides: everything a replay compares.
DATA_FIELDS = (
    "status",
    "source_status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "duration_from_source",
    "metrics",
    "error_message",
    "source_payload",
    "source_updated_at",
    "source_attempt",
)


@dataclass
class PageCounts:
    """What became of each source run of a page: every run counts exactly once."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    # (external run id, reason) of the skipped runs, for the logs.
    invalid: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: PageCounts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.skipped += other.skipped
        self.invalid += other.invalid


def snapshot_row(run: SourceRun, payload: dict[str, Any] | None) -> Row:
    """The stored values a source run asks for, before it meets the stored run."""
    if run.started_at and run.finished_at and run.finished_at < run.started_at:
        raise InvalidRun("finished_at is before started_at")
    from_source = run.duration_seconds is not None
    return {
        "external_run_id": run.external_run_id,
        "status": run.status.value,
        "source_status": run.source_status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": run.duration_seconds
        if from_source
        else derived_duration(run.started_at, run.finished_at),
        "duration_from_source": from_source,
        "metrics": run.metrics,
        "error_message": run.error_message,
        "source_payload": payload,
        "source_updated_at": run.source_updated_at,
        "source_attempt": run.attempt,
    }


def _before(earlier: datetime | None, later: datetime | None) -> bool:
    return earlier is not None and later is not None and earlier < later


def attempt_order(stored: Row, snapshot: Row) -> int:
    """Whether ``snapshot`` shows a later attempt of the run than ``stored`` (1), an
    earlier one (-1), or the same one, or no evidence either way (0).

    The source's attempt markers decide when both carry one. Without them, only
    times that one attempt cannot hold do: a start after the stored run's end
    is a later attempt, an end before the stored run's start an earlier one.
    """
    new, old = snapshot["source_attempt"], stored["source_attempt"]
    if new is not None and old is not None:
        return int(new > old) - int(new < old)
    if _before(stored["finished_at"], snapshot["started_at"]):
        return 1
    if _before(snapshot["finished_at"], stored["started_at"]):
        return -1
    return 0


def is_stale(stored: Row, snapshot: Row) -> bool:
    """True when ``snapshot`` would move ``stored`` back in time (see the module rule)."""
    new, old = snapshot["source_updated_at"], stored["source_updated_at"]
    if _before(new, old):
        return True
    order = attempt_order(stored, snapshot)
    if order != 0:
        return order < 0
    if stored["status"] in TERMINAL_STATUSES and snapshot["status"] not in TERMINAL_STATUSES:
        return not _before(old, new)  # restarted in place: a strictly newer update
    if (
        stored["status"] in TERMINAL_STATUSES
        and snapshot["status"] in TERMINAL_STATUSES
        and _before(snapshot["finished_at"], stored["finished_at"])
    ):
        # An outcome that ended earlier than the stored one is an older read
        # (a repair's outcome read before a late copy of the first one),
        # unless the source says it is newer.
        return not _before(old, new)
    return False


def merge(stored: Row | None, snapshot: Row) -> Row | None:
    """The values to store for ``snapshot`` given the ``stored`` run; None when stale."""
    if stored is None:
        return snapshot
    if is_stale(stored, snapshot):
        return None
    if _untimed_copy_of_the_outcome(stored, snapshot):
        return fill_in(stored, snapshot)
    merged = dict(snapshot)
    if attempt_order(stored, snapshot) == 0:
        # The same attempt: what is known of it is kept. A new attempt brings
        # its own start and end (none yet while it is queued).
        if merged["started_at"] is None:
            merged["started_at"] = stored["started_at"]
        if merged["finished_at"] is None and snapshot["status"] in TERMINAL_STATUSES:
            merged["finished_at"] = stored["finished_at"]
        if merged["source_attempt"] is None:
            merged["source_attempt"] = stored["source_attempt"]
    if merged["source_updated_at"] is None:
        merged["source_updated_at"] = stored["source_updated_at"]
    return _with_consistent_times(merged)


def _with_consistent_times(row: Row) -> Row:
    """``row`` once its times are combined: never an end before its start, and
    the duration derived from them unless the source gave one."""
    started, finished = row["started_at"], row["finished_at"]
    if started is not None and finished is not None and finished < started:
        raise InvalidRun("finished_at is before the started_at already stored")
    if not row["duration_from_source"]:
        row["duration_seconds"] = derived_duration(started, finished)
    return row


def _untimed_copy_of_the_outcome(stored: Row, snapshot: Row) -> bool:
    return (
        stored["source_updated_at"] is not None
        and snapshot["source_updated_at"] is None
        and stored["status"] in TERMINAL_STATUSES
        and snapshot["status"] == stored["status"]
        and attempt_order(stored, snapshot) == 0
    )


def fill_in(stored: Row, snapshot: Row) -> Row:
    """``stored``, with what only ``snapshot`` knows of the same attempt: its times,
    failure text, metrics, attempt marker and the source's duration where the
    stored run has none. Nothing the stored run says is replaced."""
    filled = dict(stored)
    for name in ("started_at", "finished_at", "error_message", "metrics", "source_attempt"):
        if filled[name] is None:
            filled[name] = snapshot[name]
    if filled["duration_seconds"] is None and snapshot["duration_from_source"]:
        filled["duration_seconds"] = snapshot["duration_seconds"]
        filled["duration_from_source"] = True
    return _with_consistent_times(filled)


def fold_event(stored: Row | None, snapshot: Row) -> Row | None:
    """``merge``, for OpenLineage events that each tell part of a run, plus: a START
    that arrives after a later event still tells when the run started, if nothing
    stored says so yet."""
    merged = merge(stored, snapshot)
    if merged is not None or stored is None:
        return merged
    started = snapshot["started_at"]
    if stored["started_at"] is not None or started is None:
        return None
    filled = dict(stored, started_at=started)
    if filled["finished_at"] is not None and filled["finished_at"] < started:
        raise InvalidRun("the START event is later than the run's end")
    if not filled["duration_from_source"]:
        filled["duration_seconds"] = derived_duration(started, filled["finished_at"])
    return filled


def differs(stored: Row, target: Row) -> bool:
    """Whether storing ``target`` would change a value the source decides."""
    return any(stored[name] != target[name] for name in DATA_FIELDS)


def is_consistent(row: Row) -> bool:
    """Whether ``row``'s times agree with each other as the rule leaves them: an
    end not before the start, and a duration derived from them unless the
    source gave one (what ``snapshot_row`` builds)."""
    started, finished = row["started_at"], row["finished_at"]
    if started is None or finished is None:  # no duration to derive
        return bool(row["duration_from_source"]) or row["duration_seconds"] is None
    if finished < started:
        return False
    return bool(row["duration_from_source"]) or row["duration_seconds"] == derived_duration(
        started, finished
    )


def fold_page(
    stored: Mapping[str, Row],
    snapshots: Iterable[Row],
    fold: Fold = merge,
    *,
    identical: Callable[[str, Row], bool] | None = None,
) -> tuple[list[Row], PageCounts]:
    """What one page changes given the ``stored`` runs of its keys: the rows to
    write (one per key, in key order) and the counts of the runs that need no
    write (stale, repeated, unchanged) or cannot be stored (skipped).

    A key seen again in the same page is folded into the page's own target for
    it, by the same rule as against the stored run; the key's first snapshot
    carries the outcome and every later one counts as unchanged.

    ``identical(key, snapshot)`` (the store's) may tell, more cheaply than
    comparing values, that a snapshot says exactly what is stored for its key:
    a consistent snapshot folds into an equal stored run as itself with
    ``merge`` and ``fold_event`` (``SELF_FOLDING``; see ``is_consistent``), so
    it is taken as its own target without folding: unchanged, as a fold
    would find it."""
    counts = PageCounts()
    targets: dict[str, Row] = {}
    # The snapshots taken as their key's target because identical to the stored run.
    as_stored: dict[str, Row] = {}
    shortcut = identical if fold in SELF_FOLDING else None
    for snapshot in snapshots:
        key = snapshot["external_run_id"]
        seen = key in targets
        if (
            not seen
            and shortcut is not None
            and shortcut(key, snapshot)
            and is_consistent(snapshot)
        ):
            targets[key] = as_stored[key] = snapshot
            continue
        try:
            merged = fold(targets[key] if seen else stored.get(key), snapshot)
        except InvalidRun as error:
            counts.skipped += 1
            counts.invalid.append((key, str(error)))
            continue
        if seen or merged is None:
            counts.unchanged += 1
        if merged is not None:
            targets[key] = merged
    writes = []
    for key in sorted(targets):
        target = targets[key]
        if as_stored.get(key) is target or (key in stored and not differs(stored[key], target)):
            counts.unchanged += 1
            continue
        writes.append(target)
    return writes, counts


# The folds for which a consistent snapshot equal to the stored run folds into
# itself (fold(x, x) differs from x in no DATA field): tested by property
# (tests/ingestion/test_no_regression_rule.py).
SELF_FOLDING: frozenset[Fold] = frozenset({merge, fold_event})
