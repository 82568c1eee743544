"""Retention (issue 13): ``prune`` deletes runs older than a cutoff in bounded
batches, never a pipeline's latest run, and leaves every report over the kept
range as it was. On both databases, with fixed times only."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from chm.models import Run
from chm.worker.retention import prune, retention_cutoff
from factories import API, make_client, make_pipeline, ok

CUTOFF = datetime(2021, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class StoredRun:
    id: int
    pipeline_id: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime = CUTOFF - 30 * DAY
    status: str = "success"

    @property
    def event_at(self) -> datetime:
        """The contract's event time, computed here apart from the database's column."""
        return self.started_at or self.finished_at or self.created_at

    def rank(self) -> tuple[Any, ...]:
        """The ordering rule, written out again: the greatest rank is the latest run
        (started_at desc, finished_at desc, a missing time last, then id desc)."""
        return (
            self.started_at is not None,
            self.started_at or CUTOFF,
            self.finished_at is not None,
            self.finished_at or CUTOFF,
            self.id,
        )


def store(engine: Engine, runs: Iterable[StoredRun]) -> list[StoredRun]:
    """Insert ``runs`` as stored rows, ids and created_at exactly as given."""
    runs = list(runs)
    rows = []
    for run in runs:
        duration = (
            (run.finished_at - run.started_at).total_seconds()
            if run.started_at and run.finished_at
            else None
        )
        rows.append(
            {
                "id": run.id,
                "pipeline_id": run.pipeline_id,
                "external_run_id": f"run-{run.id}",
                "status": run.status,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "duration_seconds": duration,
                "duration_from_source": False,
                "metrics": {},
                "created_at": run.created_at,
                "updated_at": run.created_at,
            }
        )
    with engine.begin() as connection:
        connection.execute(sa.insert(Run.__table__), rows)  # type: ignore[arg-type]
    return runs


def stored_ids(engine: Engine) -> set[int]:
    with engine.connect() as connection:
        return set(connection.scalars(sa.select(Run.id)))


def survivors(runs: list[StoredRun], cutoff: datetime) -> set[int]:
    """What a prune at ``cutoff`` must leave: every run at or after the cutoff,
    and each pipeline's latest run (by the rule) among those before it."""
    kept = {run.id for run in runs if run.event_at >= cutoff}
    for pipeline_id in {run.pipeline_id for run in runs}:
        old = [run for run in runs if run.pipeline_id == pipeline_id and run.event_at < cutoff]
        if old:
            kept.add(max(old, key=StoredRun.rank).id)
    return kept


def latest_of_each_pipeline(runs: list[StoredRun]) -> set[int]:
    by_pipeline: dict[int, StoredRun] = {}
    for run in runs:
        best = by_pipeline.get(run.pipeline_id)
        if best is None or run.rank() > best.rank():
            by_pipeline[run.pipeline_id] = run
    return {run.id for run in by_pipeline.values()}


def pipelines(api: TestClient, count: int) -> list[int]:
    client = make_client(api)
    return [make_pipeline(api, client)["id"] for _ in range(count)]


@pytest.fixture
def pipeline_ids(api: TestClient) -> list[int]:
    return pipelines(api, 6)


def random_history(pipeline_ids: list[int], seed: int, per_pipeline: int) -> list[StoredRun]:
    """Runs on a coarse grid of times around the cutoff, so that times tie, with
    missing started_at, missing finished_at and runs with no time at all."""
    rng = random.Random(seed)
    grid = [CUTOFF + k * 6 * HOUR for k in range(-40, 12)]
    runs, next_id = [], 1
    for pipeline_id in pipeline_ids:
        for _ in range(per_pipeline):
            start = rng.choice(grid)
            end = None if rng.random() < 0.2 else start + rng.choice((0, 1, 2)) * HOUR
            shape = rng.random()
            if shape < 0.1:  # no time at all: the event time is created_at
                run = StoredRun(next_id, pipeline_id, created_at=rng.choice(grid))
            elif shape < 0.25:  # not started: the event time is finished_at
                run = StoredRun(next_id, pipeline_id, finished_at=start)
            else:
                run = StoredRun(next_id, pipeline_id, start, end)
            runs.append(run)
            next_id += 1
    rng.shuffle(runs)  # ids are not in time order
    return runs


@pytest.mark.parametrize("seed", [1, 2])
def test_prune_removes_exactly_the_runs_before_the_cutoff_but_each_kept_run(
    engine: Engine, pipeline_ids: list[int], seed: int
) -> None:
    runs = store(engine, random_history(pipeline_ids, seed, per_pipeline=30))
    expected = survivors(runs, CUTOFF)
    latest = latest_of_each_pipeline(runs)
    deleted = {run.id for run in runs} - expected
    assert len(deleted) > 100 and len(expected) > 30  # the data reaches both sides

    report = prune(engine, older_than=CUTOFF, batch_size=7)

    assert stored_ids(engine) == expected
    assert latest <= expected
    assert report.runs_deleted == len(deleted)
    assert report.pipelines_touched == len({r.pipeline_id for r in runs if r.id in deleted})
    assert (report.cutoff, report.dry_run, report.stopped) == (CUTOFF, False, False)
    assert report.batches == len(deleted) // 7 + 1
    again = prune(engine, older_than=CUTOFF, batch_size=7)
    assert (again.runs_deleted, again.batches, stored_ids(engine)) == (0, 1, expected)


def test_a_pipeline_whose_runs_are_all_old_keeps_its_latest_by_the_ordering_rule(
    engine: Engine, pipeline_ids: list[int]
) -> None:
    p = pipeline_ids
    old = CUTOFF - 10 * DAY
    cases = {
        # Distinct starts: the latest start.
        p[0]: ([StoredRun(1, p[0], old, old + HOUR), StoredRun(2, p[0], old + DAY)], 2),
        # Same start and finish: the greater id.
        p[1]: ([StoredRun(12, p[1], old, old + HOUR), StoredRun(11, p[1], old, old + HOUR)], 12),
        # Same start: a finish beats a missing finish (missing times last).
        p[2]: ([StoredRun(21, p[2], old, old + HOUR), StoredRun(22, p[2], old, None)], 21),
        # A missing start ranks below any start, even an earlier event time.
        p[3]: ([StoredRun(31, p[3], old), StoredRun(32, p[3], None, old + 5 * DAY)], 31),
        # No start anywhere: the latest finish; a run with no time at all is last.
        p[4]: (
            [
                StoredRun(41, p[4], None, old),
                StoredRun(42, p[4], None, old + DAY),
                StoredRun(43, p[4], created_at=old + 2 * DAY),
            ],
            42,
        ),
        # No time at all: the greater id, whatever its created_at.
        p[5]: (
            [StoredRun(52, p[5], created_at=old + DAY), StoredRun(51, p[5], created_at=old)],
            52,
        ),
    }
    runs = store(engine, [run for history, _ in cases.values() for run in history])
    assert survivors(runs, CUTOFF) == {kept for _, kept in cases.values()}
    assert latest_of_each_pipeline(runs) == {kept for _, kept in cases.values()}

    report = prune(engine, older_than=CUTOFF, batch_size=2)

    assert stored_ids(engine) == {kept for _, kept in cases.values()}
    assert (report.runs_deleted, report.pipelines_touched) == (len(runs) - 6, 6)


@contextmanager
def statements_on(engine: Engine) -> Iterator[list[str]]:
    """Each statement's first word and the commits, while inside."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.lstrip().split()[0].upper())

    def commit(conn: Any) -> None:
        seen.append("COMMIT")

    event.listen(engine, "after_cursor_execute", record)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", record)
        event.remove(engine, "commit", commit)


def test_batches_are_bounded_and_each_its_own_transaction(
    engine: Engine, pipeline_ids: list[int]
) -> None:
    runs = store(
        engine,
        [StoredRun(i, pipeline_ids[i % 2], CUTOFF - i * HOUR) for i in range(1, 23)]
        + [StoredRun(100, pipeline_ids[0], CUTOFF + HOUR)],
    )
    expected = survivors(runs, CUTOFF)
    assert len(runs) - len(expected) == 20  # 22 old runs, one kept per pipeline
    stored_before_each_batch: list[int] = []

    def count_and_go_on() -> bool:
        stored_before_each_batch.append(len(stored_ids(engine)))
        return False

    with statements_on(engine) as seen:
        report = prune(engine, older_than=CUTOFF, batch_size=3, should_stop=count_and_go_on)

    counts = [*stored_before_each_batch, len(stored_ids(engine))]
    assert [before - after for before, after in itertools.pairwise(counts)] == [3] * 6 + [2]
    # One DELETE per batch, each committed before the next one starts.
    assert [verb for verb in seen if verb in ("DELETE", "COMMIT")] == ["DELETE", "COMMIT"] * 7
    assert report.batches == 7
    assert report.runs_deleted == 20
    assert stored_ids(engine) == expected


def test_a_dry_run_deletes_nothing_and_counts_what_the_prune_then_deletes(
    engine: Engine, pipeline_ids: list[int]
) -> None:
    runs = store(engine, random_history(pipeline_ids, seed=3, per_pipeline=20))
    everything = stored_ids(engine)

    dry = prune(engine, older_than=CUTOFF, batch_size=4, dry_run=True)

    assert stored_ids(engine) == everything
    assert (dry.dry_run, dry.batches, dry.stopped) == (True, 0, False)
    real = prune(engine, older_than=CUTOFF, batch_size=4)
    assert dry.runs_deleted == real.runs_deleted == len(everything - survivors(runs, CUTOFF))
    assert dry.pipelines_touched == real.pipelines_touched == len(pipeline_ids)
    after = prune(engine, older_than=CUTOFF, batch_size=4, dry_run=True)
    assert (after.runs_deleted, after.pipelines_touched) == (0, 0)


def test_should_stop_ends_the_prune_between_batches(
    engine: Engine, pipeline_ids: list[int]
) -> None:
    runs = store(engine, [StoredRun(i, pipeline_ids[0], CUTOFF - i * DAY) for i in range(1, 12)])
    asked: list[int] = []

    def stop_after_two_batches() -> bool:
        asked.append(1)
        return len(asked) > 2

    report = prune(engine, older_than=CUTOFF, batch_size=3, should_stop=stop_after_two_batches)

    assert (report.stopped, report.batches, report.runs_deleted) == (True, 2, 6)
    assert len(stored_ids(engine)) == 11 - 6
    rest = prune(engine, older_than=CUTOFF, batch_size=3)
    assert (rest.stopped, rest.runs_deleted) == (False, 4)
    assert stored_ids(engine) == survivors(runs, CUTOFF) == {1}
    stopped_at_once = prune(engine, older_than=CUTOFF, batch_size=3, should_stop=lambda: True)
    assert (stopped_at_once.stopped, stopped_at_once.batches) == (True, 0)


def test_prune_refuses_a_naive_cutoff_and_an_empty_batch(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        prune(engine, older_than=datetime(2021, 3, 1), batch_size=10)
    with pytest.raises(ValueError, match="batch_size"):
        prune(engine, older_than=CUTOFF, batch_size=0)
    assert retention_cutoff(CUTOFF, 30) == CUTOFF - 30 * DAY
    with pytest.raises(ValueError, match="at least 1 day"):
        retention_cutoff(CUTOFF, 0)


def test_the_tables_that_reference_runs_are_the_ones_a_prune_handles(engine: Engine) -> None:
    # A table that points at runs by foreign key would make a prune fail (or
    # lose rows silently): adding one must decide what a prune does with it.
    inspector = sa.inspect(engine)
    referencing = {
        (table, tuple(fk["constrained_columns"]), fk.get("options", {}).get("ondelete"))
        for table in inspector.get_table_names()
        for fk in inspector.get_foreign_keys(table)
        if fk["referred_table"] == "runs"
    }
    assert referencing == set()
    assert {"runs", "pipelines"} <= set(inspector.get_table_names())


# --- reports over the kept range -----------------------------------------------


def report_history(engine: Engine, api: TestClient) -> list[StoredRun]:
    """Two clients, pipelines on two platforms, runs before and after the cutoff,
    failures on both sides; one pipeline whose first run after the cutoff comes
    days later, one whose run after the cutoff has no start."""
    first, second = make_client(api), make_client(api)
    ids = [
        make_pipeline(api, first, platform="airflow")["id"],
        make_pipeline(api, first, platform="dbt_cloud")["id"],
        make_pipeline(api, second, platform="airflow")["id"],
        make_pipeline(api, second, platform="dbt_cloud")["id"],
    ]
    rng = random.Random(7)
    runs: list[StoredRun] = []

    def add(pipeline_id: int, start: datetime | None, finish: datetime | None) -> None:
        status = "failed" if rng.random() < 0.3 else "success"
        runs.append(StoredRun(len(runs) + 1, pipeline_id, start, finish, status=status))

    for n, pipeline_id in enumerate(ids):
        first_after = CUTOFF + (5 * DAY if n == 3 else 2 * HOUR)
        for day in range(20):
            start = CUTOFF - (20 - day) * DAY + n * HOUR
            add(pipeline_id, start, start + (10 + 7 * n + day) * timedelta(minutes=1))
        for day in range(8):
            start = first_after + day * DAY
            add(pipeline_id, start, start + (12 + 5 * n + day) * timedelta(minutes=1))
    add(ids[2], None, CUTOFF + 2 * DAY)  # no start: ranks below every started run
    return store(engine, runs)


LATER = CUTOFF + 30 * DAY  # as_of of the windowed reports (their answer carries it)
KEPT_RANGE_REPORTS = [
    ("latest-status", {"as_of": CUTOFF}),
    ("latest-status", {"as_of": CUTOFF + 3 * DAY}),
    ("latest-status", {"as_of": LATER}),
    ("status-changes", {"since": CUTOFF, "until": CUTOFF + 4 * DAY, "as_of": LATER}),
    ("status-changes", {"since": CUTOFF + DAY, "until": CUTOFF + 9 * DAY, "as_of": LATER}),
    (
        "failures-over-time",
        {"since": CUTOFF, "until": CUTOFF + 10 * DAY, "bucket": "day", "as_of": LATER},
    ),
    (
        "failures-over-time",
        {"since": CUTOFF, "until": CUTOFF + 2 * DAY, "bucket": "hour", "as_of": LATER},
    ),
    ("failure-rate-by-platform", {"since": CUTOFF, "until": CUTOFF + 10 * DAY, "as_of": LATER}),
    ("duration-distribution", {"since": CUTOFF, "until": CUTOFF + 10 * DAY, "as_of": LATER}),
    ("flaky-pipelines", {"as_of": CUTOFF + 10 * DAY, "days": 10}),
    ("failures-by-client", {"as_of": CUTOFF + 7 * DAY}),
]


def kept_range_reports(api: TestClient) -> list[Any]:
    answers = []
    for name, params in KEPT_RANGE_REPORTS:
        query = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
        answers.append(ok(api.get(f"{API}/reports/{name}", params=query)))
    return answers


def latest_status_view(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM chm_latest_status")).mappings().all()
    # as_of is the database's clock at the query: the rest is the data.
    return sorted(
        ({k: v for k, v in row.items() if k != "as_of"} for row in rows),
        key=lambda row: row["pipeline_id"],
    )


def test_reports_and_views_over_the_kept_range_are_unchanged_by_a_prune(
    engine: Engine, api: TestClient
) -> None:
    runs = report_history(engine, api)
    before, view_before = kept_range_reports(api), latest_status_view(engine)
    # Not vacuous: the reports hold runs on both sides of the cutoff, and
    # latest-status as of the cutoff names old runs that are not their
    # pipeline's latest (a prune that kept only the latest would change it).
    as_of_cutoff = {int(row["latest_run_id"]) for row in before[0]["items"]}
    old = {run.id for run in runs if run.event_at < CUTOFF}
    assert as_of_cutoff <= old and not as_of_cutoff & latest_of_each_pipeline(runs)
    assert any(int(row["latest_run_id"]) in old for row in before[1]["items"])
    assert any(row["previous_status"] is not None for row in before[3]["items"])
    assert sum(bucket["failed_runs"] for bucket in before[5]["items"]) > 0

    report = prune(engine, older_than=CUTOFF, batch_size=5)

    assert report.runs_deleted == len(old) - 4
    assert kept_range_reports(api) == before
    assert latest_status_view(engine) == view_before
