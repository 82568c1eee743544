"""The no-regression rule as pure functions: which snapshot of a run may replace
which, attempts included (``chm.ingestion.rule``: ``attempt_order``,
``is_stale``, ``merge``, ``fold_event``, ``fold_page``). No database: rows in,
rows out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chm.core.status import RunStatus
from chm.ingestion.normalize import InvalidRun, SourceRun
from chm.ingestion.rule import (
    SELF_FOLDING,
    attempt_order,
    differs,
    fold_event,
    fold_page,
    is_consistent,
    is_stale,
    merge,
    snapshot_row,
)

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def row(
    status: str,
    started: int | None = None,
    finished: int | None = None,
    *,
    attempt: int | None = None,
    updated: int | None = None,
    key: str = "r",
) -> dict[str, Any]:
    """A run as ``snapshot_row`` builds it; times in minutes after ``T0``."""
    started_at = None if started is None else at(started)
    finished_at = None if finished is None else at(finished)
    return {
        "external_run_id": key,
        "status": status,
        "source_status": status,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_seconds": (finished_at - started_at).total_seconds()
        if started_at and finished_at
        else None,
        "duration_from_source": False,
        "metrics": {},
        "error_message": None,
        "source_payload": {"state": status},
        "source_updated_at": None if updated is None else at(updated),
        "source_attempt": attempt,
    }


# --- attempt_order ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "snapshot", "order"),
    [
        (row("success", 0, 14, attempt=1), row("queued", attempt=2), 1),
        (row("queued", attempt=2), row("success", 0, 14, attempt=1), -1),
        (row("running", 0, attempt=3), row("success", 0, 14, attempt=3), 0),
        # Equal markers: one attempt, whatever the times say.
        (row("success", 0, 14, attempt=1), row("running", 30, attempt=1), 0),
    ],
)
def test_the_sources_attempt_markers_decide_when_both_carry_one(stored, snapshot, order) -> None:
    assert attempt_order(stored, snapshot) == order


@pytest.mark.parametrize(
    ("stored", "snapshot", "order"),
    [
        # Started after the stored end: a later attempt.
        (row("success", 0, 14), row("running", 30), 1),
        (row("failed", 0, 14, attempt=1), row("running", 30), 1),
        # Ended before the stored start: an earlier attempt.
        (row("running", 30), row("success", 0, 14), -1),
        (row("failed", 30, 45), row("success", 0, 14), -1),
        # Times one attempt can hold: no evidence.
        (row("running", 0), row("success", 0, 14), 0),
        (row("success", 0, 14), row("running", 0), 0),
        (row("success", 0, 14), row("running", 14), 0),
        (row("success", 0, 14), row("queued"), 0),
        (row("queued"), row("running", 5), 0),
    ],
)
def test_without_markers_only_times_one_attempt_cannot_hold_tell_attempts_apart(
    stored, snapshot, order
) -> None:
    assert attempt_order(stored, snapshot) == order


# --- is_stale and merge ----------------------------------------------------------------------


def test_a_later_attempt_replaces_a_terminal_run_with_its_own_times() -> None:
    stored = row("success", 0, 14, attempt=1)
    queued = merge(stored, row("queued", attempt=2))
    assert queued is not None
    assert (queued["status"], queued["started_at"], queued["finished_at"]) == ("queued", None, None)
    assert (queued["duration_seconds"], queued["source_attempt"]) == (None, 2)

    running = merge(queued, row("running", 30, attempt=2))
    assert running is not None
    assert (running["status"], running["started_at"], running["finished_at"]) == (
        "running", at(30), None,
    )  # fmt: skip
    failed = merge(running, row("failed", 30, 41, attempt=2))
    assert failed is not None
    assert (failed["finished_at"], failed["duration_seconds"]) == (at(41), 660.0)


def test_a_start_after_the_stored_end_is_a_new_attempt_without_markers() -> None:
    merged = merge(row("success", 0, 14), row("running", 30))
    assert merged is not None
    assert (merged["status"], merged["started_at"], merged["finished_at"]) == (
        "running", at(30), None,
    )  # fmt: skip
    assert merged["duration_seconds"] is None


@pytest.mark.parametrize(
    ("stored", "old"),
    [
        # Old pages of the first attempt, read after the re-run was stored.
        (row("queued", attempt=2), row("success", 0, 14, attempt=1)),
        (row("running", 30, attempt=2), row("success", 0, 14, attempt=1)),
        (row("running", 30, attempt=2), row("running", 0, attempt=1)),
        (row("failed", 30, 41, attempt=2), row("success", 0, 14, attempt=1)),
        # The same, where the source has no markers: the times tell.
        (row("running", 30), row("success", 0, 14)),
        (row("failed", 30, 41), row("success", 0, 14)),
        # Older pages of the re-run itself.
        (row("failed", 30, 41, attempt=2), row("queued", attempt=2)),
        (row("failed", 30, 41, attempt=2), row("running", 30, attempt=2)),
        (row("failed", 30, 41), row("running", 30)),
    ],
)
def test_an_older_attempt_or_an_older_snapshot_never_moves_a_run_back(stored, old) -> None:
    assert is_stale(stored, old)
    assert merge(stored, old) is None


def test_an_older_update_time_is_stale_even_for_a_later_attempt() -> None:
    stored = row("success", 0, 14, attempt=1, updated=15)
    assert is_stale(stored, row("queued", attempt=2, updated=10))
    assert not is_stale(stored, row("queued", attempt=2, updated=15))


def test_a_later_attempt_with_the_same_update_time_still_shows() -> None:
    # GitHub's updated_at has whole seconds: a re-run asked in the second the
    # run completed carries the same update time, and run_attempt decides.
    stored = row("success", 0, 14, attempt=1, updated=14)
    merged = merge(stored, row("queued", 14, attempt=2, updated=14))
    assert merged is not None and merged["status"] == "queued"
    assert merge(merged, row("success", 0, 14, attempt=1, updated=14)) is None


def test_within_one_attempt_a_non_terminal_snapshot_needs_a_newer_update_time() -> None:
    stored = row("failed", 0, 14, attempt=1)
    assert is_stale(stored, row("running", 0, attempt=1))
    assert is_stale(stored, row("queued"))
    timed = row("failed", 0, 14, updated=14)
    assert is_stale(timed, row("running", 0, updated=14))
    assert not is_stale(timed, row("running", 0, updated=20))


def test_within_one_attempt_an_outcome_that_ended_earlier_is_an_older_read() -> None:
    # A Databricks repair read without its repair history (no marker): the
    # repaired outcome, then a late copy of the page with the first one.
    first = row("failed", 0, 30)
    repaired = merge(first, row("success", 0, 180))
    assert repaired is not None and repaired["status"] == "success"
    assert is_stale(repaired, row("failed", 0, 30))
    assert merge(repaired, row("failed", 0, 30)) is None
    # Unless the source says the earlier end is the newer word on the run.
    timed = row("success", 0, 180, updated=180)
    assert not is_stale(timed, row("failed", 0, 30, updated=200))
    assert is_stale(timed, row("failed", 0, 30, updated=180))
    # The same end with another outcome is still a correction in place.
    assert not is_stale(row("failed", 0, 30), row("success", 0, 30))


def test_a_replay_of_the_same_snapshot_changes_nothing() -> None:
    for stored in (
        row("success", 0, 14, attempt=1),
        row("queued", attempt=2),
        row("running", 30),
        row("failed", 30, 41, updated=41),
    ):
        assert merge(stored, dict(stored)) == stored


def test_within_one_attempt_what_is_known_is_kept() -> None:
    merged = merge(row("running", 5, attempt=3, updated=6), row("success", None, 14))
    assert merged is not None
    assert merged["started_at"] == at(5)
    assert (merged["source_attempt"], merged["source_updated_at"]) == (3, at(6))
    assert merged["duration_seconds"] == 540.0
    kept = merge(row("success", 0, 14), row("failed"))
    assert kept is not None and kept["finished_at"] == at(14)


# --- snapshot_row ----------------------------------------------------------------------------


def test_a_snapshot_derives_its_duration_unless_the_source_gave_one() -> None:
    run = SourceRun("r", RunStatus.success, "done", started_at=at(0), finished_at=at(14))
    assert snapshot_row(run, {"state": "done"}) == {
        **row("success", 0, 14),
        "source_status": "done",
        "source_payload": {"state": "done"},
    }
    run.duration_seconds = 600.0
    given = snapshot_row(run, None)
    assert (given["duration_seconds"], given["duration_from_source"]) == (600.0, True)


def test_a_snapshot_that_ends_before_it_starts_is_invalid() -> None:
    run = SourceRun("r", RunStatus.success, None, started_at=at(14), finished_at=at(0))
    with pytest.raises(InvalidRun, match="finished_at is before started_at"):
        snapshot_row(run, None)


# --- fold_event (OpenLineage) ----------------------------------------------------------------


def test_a_late_start_event_still_tells_when_the_run_started() -> None:
    completed = row("success", None, 14, updated=14)
    start = row("running", 2, updated=2)
    assert merge(completed, start) is None  # stale for merge
    filled = fold_event(completed, start)
    assert filled is not None
    assert (filled["status"], filled["started_at"], filled["finished_at"]) == (
        "success", at(2), at(14),
    )  # fmt: skip
    assert filled["duration_seconds"] == 720.0
    assert fold_event(filled, start) is None  # once known, a replay changes nothing


def test_a_start_event_later_than_the_stored_end_is_invalid() -> None:
    # The same attempt (the update time says the START is older), but it
    # started after the run ended: no order of events explains it.
    with pytest.raises(InvalidRun, match="later than the run's end"):
        fold_event(row("success", None, 14, updated=30), row("running", 20, updated=20))


# --- fold_page -------------------------------------------------------------------------------


def test_a_page_writes_only_what_changes_and_counts_every_run_once() -> None:
    stored = {
        "same": row("success", 0, 14, key="same"),
        "done": row("running", 0, key="done"),
        "old": row("failed", 0, 14, key="old", updated=14),
        "bad": row("running", 5, key="bad", attempt=1),
    }
    page = [
        row("success", 0, 14, key="same"),  # a replay: unchanged
        row("success", 0, 9, key="done"),  # moves on: written
        row("running", 0, key="old", updated=10),  # stale: unchanged
        row("queued", key="new"),  # new: written, then folded again
        row("running", 3, key="new"),  # the same key again: unchanged
        row("success", None, 1, key="bad", attempt=1),  # ends before its start: skipped
    ]
    writes, counts = fold_page(stored, page)
    assert [(w["external_run_id"], w["status"]) for w in writes] == [
        ("done", "success"),
        ("new", "running"),
    ]
    assert writes[1]["started_at"] == at(3)
    assert (counts.created, counts.updated, counts.unchanged, counts.skipped) == (0, 0, 3, 1)
    assert counts.invalid == [("bad", "finished_at is before the started_at already stored")]


def test_a_page_folds_with_the_fold_it_is_given() -> None:
    stored = {"r": row("success", None, 14, updated=14)}
    start = row("running", 2, updated=2)
    assert fold_page(stored, [start])[0] == []
    writes, counts = fold_page(stored, [start], fold=fold_event)
    assert [w["started_at"] for w in writes] == [at(2)]
    assert counts.unchanged == 0


def test_an_untimed_snapshot_of_the_same_outcome_only_fills_in_what_is_missing() -> None:
    # An event told the run first (with its time); the pull of the same run has none.
    told = row("failed", 0, 10, updated=10) | {"error_message": "task extract failed: boom",
                                                 "source_payload": {"eventType": "FAIL"}}  # fmt: skip
    pulled = row("failed", 0, 10, attempt=1) | {"source_payload": {"state": "failed"}}
    merged = merge(told, pulled)
    assert merged == told | {"source_attempt": 1}
    assert merge(merged, pulled) == merged  # a replay of the pull changes nothing
    # Another outcome, or a snapshot with its own update time, still replaces it.
    assert merge(told, row("success", 0, 10))["status"] == "success"  # type: ignore[index]
    assert merge(told, row("failed", 0, 10, updated=11))["error_message"] is None  # type: ignore[index]


# --- a snapshot identical to the stored run (issue 17) ----------------------------------
#
# The store may tell, without decoding the stored run, that a snapshot holds
# exactly its values; fold_page then takes the snapshot as it is. That is only
# right because the folds it trusts fold such a snapshot into itself.

STATUSES = ["queued", "running", "success", "failed", "cancelled", "skipped", "unknown"]


@st.composite
def rows(draw: st.DrawFn, key: str | None = None) -> dict[str, Any]:
    """Any run the rule may meet: any status, times, attempt and update time;
    ``from_source`` rows carry a duration of their own."""
    started = draw(st.none() | st.integers(0, 50))
    finished = draw(st.none() | st.integers(0, 60))
    value = row(
        draw(st.sampled_from(STATUSES)),
        started,
        finished,
        attempt=draw(st.none() | st.integers(1, 3)),
        updated=draw(st.none() | st.integers(0, 70)),
        key=key if key is not None else draw(st.sampled_from(["a", "b", "c"])),
    )
    if draw(st.booleans()):
        value |= {"duration_seconds": draw(st.floats(0, 9e3)), "duration_from_source": True}
    if draw(st.booleans()):
        value |= {"metrics": {"rows": draw(st.integers(0, 3))}}
    return value


@pytest.mark.parametrize("fold", sorted(SELF_FOLDING, key=lambda fold: fold.__name__))
@given(value=rows())
@settings(max_examples=500, deadline=None)
def test_the_trusted_folds_fold_a_consistent_snapshot_equal_to_the_stored_run_into_itself(
    fold, value
) -> None:
    assume(is_consistent(value))
    folded = fold(dict(value), dict(value))
    assert folded is not None
    assert not differs(value, folded)


def test_a_run_whose_times_disagree_is_not_consistent() -> None:
    assert is_consistent(row("success", 0, 14))
    assert is_consistent(row("running", 3))
    assert not is_consistent(row("success", 0, 14) | {"duration_seconds": 5.0})
    assert is_consistent(
        row("success", 0, 14) | {"duration_seconds": 5.0, "duration_from_source": True}
    )
    assert not is_consistent(row("success", 14, 14) | {"started_at": at(20)})


@given(stored=st.lists(rows(), max_size=3), page=st.lists(rows(), max_size=6), data=st.data())
@settings(max_examples=500, deadline=None)
def test_a_page_taking_identical_snapshots_as_they_are_writes_and_counts_as_folding_them(
    stored, page, data
) -> None:
    stored_runs = {value["external_run_id"]: value for value in stored}
    # Some snapshots repeat a stored run exactly (a replay).
    page += [dict(value) for value in stored if data.draw(st.booleans())]
    page = data.draw(st.permutations(page))

    def identical(key: str, snapshot: dict[str, Any]) -> bool:
        return key in stored_runs and not differs(stored_runs[key], snapshot)

    for fold in (merge, fold_event):
        try:
            expected = fold_page(stored_runs, page, fold)
        except InvalidRun:
            continue
        assert fold_page(stored_runs, page, fold, identical=identical) == expected


def test_an_identical_snapshot_is_taken_as_it_is_and_later_ones_of_its_key_fold_into_it() -> None:
    stored = {"r": row("running", 0, key="r")}
    asked: list[str] = []

    def identical(key: str, snapshot: dict[str, Any]) -> bool:
        asked.append(key)
        return snapshot == stored[key]

    page = [row("running", 0, key="r"), row("success", 0, 9, key="r")]
    writes, counts = fold_page(stored, page, identical=identical)
    assert asked == ["r"]  # asked for the key's first snapshot only
    assert [w["status"] for w in writes] == ["success"]
    assert counts.unchanged == 1
    # A fold it does not trust is never shortened.
    asked.clear()
    fold_page(stored, page, fold=lambda s, n: merge(s, n), identical=identical)
    assert asked == []
