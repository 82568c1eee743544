"""Alert evaluation: the rules turned into alerts that fire and resolve
(monitoring contract, "Alerts"; docs/alerts.md).

One call of ``evaluate`` is one short write transaction:

1. serialize with every other evaluation, so two workers never fire the same
   alert. PostgreSQL: a transaction-scoped advisory lock, *tried*: when
   another evaluation holds it, this one is skipped (the report says
   ``skipped``; the worker tries again at its next poll) instead of queueing
   behind it to re-read what the holder is reading. SQLite: the write lock
   ``BEGIN IMMEDIATE`` takes (it waits, ``busy_timeout``);
2. make the time monotonic: ``now`` is at least the latest ``fired_at`` or
   ``resolved_at`` recorded. Each worker reads its own clock before it gets
   the lock, so evaluations may come in with times out of order; evaluating
   at an earlier time than one already recorded would otherwise undo its
   time-based decisions (resolve an alert before it fired, fire again what
   resolved);
3. one SELECT per rule type, over all enabled rules of the type and all the
   pipelines in their scope (the rule's pipeline, or every active pipeline of
   its client; only active pipelines of active clients), giving the pairs
   (rule, pipeline) whose condition holds now, with the run that shows it;
4. the open alerts read once: a pair that holds without an open alert fires
   (a new alert and its deliveries); an open alert whose pair no longer holds
   (the condition ended, or the rule was deleted, disabled, re-scoped or
   changed type, or the pipeline or client deactivated) resolves.

Evaluating twice on the same data therefore changes nothing. The database's
partial unique index (one firing alert per rule and pipeline) is the
guarantee behind the lock.

The statements are set-based: a pipeline's latest runs are correlated top-N
lookups that the ordering index (``ix_runs_pipeline_order``) answers with a
short index walk each, a window count is a range of the covering index
``ix_runs_report_pipeline``, open runs come from the partial index
``ix_runs_open``, a schedule's expected tick is a top-1 of the stored ticks'
index; no statement is issued per pipeline. Adding a rule type is
one more entry in ``CONDITIONS``: its statement and its summary.
"""

from __future__ import annotations

import hashlib
import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from chm.alerts import summary
from chm.alerts.destinations import Destinations
from chm.alerts.outbox import DeliveryPlanner, deliveries_for
from chm.core.db import make_session_factory
from chm.core.dialects import (
    DatabaseDialect,
    HasDialect,
    PostgresDialect,
    SQLiteDialect,
    dialect_for,
)
from chm.core.settings import Settings
from chm.core.status import RunStatus
from chm.core.types import NullsLowKey, UTCDateTime
from chm.models import Alert, AlertRule, Client, Pipeline, Run
from chm.models.alert_rule import RuleType
from chm.models.pipeline import active_inventory
from chm.reports.sql import ratio
from chm.schedules.ticks import EXPECTATION_COLUMNS, TICKS, expected_tick_value

RUNS: sa.Table = Run.__table__  # type: ignore[assignment]
PIPELINES: sa.Table = Pipeline.__table__  # type: ignore[assignment]
FAILED = RunStatus.failed.value
SUCCESS = RunStatus.success.value
# Literal values, not parameters: both databases then match the partial index
# on open runs (ix_runs_open), whose predicate is this.
OPEN_STATUSES: sa.BindParameter[Any] = sa.bindparam(
    "open_statuses",
    (RunStatus.queued.value, RunStatus.running.value),
    expanding=True,
    literal_execute=True,
)
FINISHED_STATUSES = (RunStatus.success.value, RunStatus.failed.value)
# duration_anomaly: the successful runs a duration is compared with, and the
# fewest that make a comparison.
ANOMALY_SAMPLE = 30
ANOMALY_MIN_SAMPLE = 10
ANOMALY_P95_FACTOR = 1.5
ANOMALY_MEDIAN_FACTOR = 3.0
# pg_try_advisory_xact_lock(class, object): "CHMA" marks the alerts' locks.
EVALUATION_LOCK = (0x43484D41, 1)


# --- what differs per database ----------------------------------------------------


class EvaluationDialect(ABC):
    """What an evaluation's transaction does first, on one database: exclude
    every other evaluation, and set what its statements need."""

    dialect: ClassVar[DatabaseDialect]

    @abstractmethod
    def prepare(self, session: Session) -> bool:
        """Exclude every other evaluation until the transaction ends: True once
        excluded, False when another evaluation runs now (this one then skips)."""


class SQLiteEvaluation(EvaluationDialect):
    dialect = SQLiteDialect()

    def prepare(self, session: Session) -> bool:
        # The write transaction began with BEGIN IMMEDIATE (chm.core.dialects):
        # it holds the database's one write lock already (it waited for it).
        return True


class PostgresEvaluation(EvaluationDialect):
    dialect = PostgresDialect()

    def prepare(self, session: Session) -> bool:
        # Tried, not waited for: the holder is evaluating the same data now;
        # workers queueing behind it would each evaluate it again, one by one.
        locked = sa.func.pg_try_advisory_xact_lock(*EVALUATION_LOCK)
        if not session.execute(sa.select(locked)).scalar_one():
            return False
        # The statements are thousands of short index walks whose estimated
        # cost crosses jit_above_cost: compiling them (0.5 to 1.5 s measured on
        # the bench data set) would take longer than running them.
        session.execute(sa.text("SET LOCAL jit = off"))
        return True


_DIALECTS: dict[str, EvaluationDialect] = {
    each.dialect.name: each for each in (SQLiteEvaluation(), PostgresEvaluation())
}


def evaluation_dialect(bind: HasDialect) -> EvaluationDialect:
    """The evaluation's per-database part for ``bind``'s database."""
    return _DIALECTS[dialect_for(bind).name]


# --- SQL building blocks -------------------------------------------------------------


class MinutesBefore(ColumnElement[datetime]):
    """``at`` minus ``minutes`` (an integer column) minutes, as a stored time.

    PostgreSQL: timestamptz arithmetic. SQLite keeps UTC times as fixed-width
    text (``YYYY-MM-DD HH:MM:SS.ffffff``): the whole seconds are shifted by
    ``strftime`` and ``at``'s own microseconds appended (a shift by whole
    minutes keeps them), so the bound is exact to the microsecond.
    """

    inherit_cache = True
    type = UTCDateTime()
    _traverse_internals = [
        ("at", InternalTraversal.dp_clauseelement),
        ("whole_seconds", InternalTraversal.dp_clauseelement),
        ("fraction", InternalTraversal.dp_clauseelement),
        ("minutes", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, at: datetime, minutes: ColumnElement[Any]) -> None:
        at = at.astimezone(UTC)
        self.at = sa.literal(at, UTCDateTime())
        whole = at.replace(microsecond=0, tzinfo=None).isoformat(" ")
        self.whole_seconds = sa.literal(whole, sa.String())
        self.fraction = sa.literal(f".{at.microsecond:06d}", sa.String())
        self.minutes = minutes

    @property
    def _from_objects(self) -> list[Any]:
        return self.minutes._from_objects


@compiles(MinutesBefore, "postgresql")
def _minutes_before_pg(element: MinutesBefore, compiler: Any, **kw: Any) -> str:
    at = compiler.process(element.at, **kw)
    minutes = compiler.process(element.minutes, **kw)
    return f"(CAST({at} AS TIMESTAMP WITH TIME ZONE) - make_interval(mins => {minutes}))"


@compiles(MinutesBefore)
def _minutes_before_sqlite(element: MinutesBefore, compiler: Any, **kw: Any) -> str:
    whole = compiler.process(element.whole_seconds, **kw)
    fraction = compiler.process(element.fraction, **kw)
    minutes = compiler.process(element.minutes, **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%S', {whole}, '-' || {minutes} || ' minutes') || {fraction})"


def _keys(runs: sa.FromClause) -> tuple[ColumnElement[Any], ...]:
    """The ordering rule's keys (chm.runs.ordering) of ``runs`` or an alias of it."""
    return (NullsLowKey(runs.c.started_at), NullsLowKey(runs.c.finished_at), runs.c.id)


def _newest_first(runs: sa.FromClause) -> list[ColumnElement[Any]]:
    return [key.desc() for key in _keys(runs)]


def _older_than(runs: sa.FromClause, bound: tuple[ColumnElement[Any], ...]) -> ColumnElement[bool]:
    """Runs after ``bound`` in the ordering rule (older). The row-value comparison
    is the rule; the bound on the first key lets SQLite, which does not seek
    with row values, start its index range there (as chm.core.keyset does)."""
    keys = _keys(runs)
    return sa.and_(keys[0] <= bound[0], sa.tuple_(*keys) < sa.tuple_(*bound))


def _newer_than(runs: sa.FromClause, bound: tuple[ColumnElement[Any], ...]) -> ColumnElement[bool]:
    keys = _keys(runs)
    return sa.and_(keys[0] >= bound[0], sa.tuple_(*keys) > sa.tuple_(*bound))


def _at(now: datetime) -> ColumnElement[datetime]:
    return sa.literal(now, UTCDateTime())


def _scope(rule_type: RuleType) -> sa.Subquery:
    """The enabled rules of ``rule_type`` and the pipelines in their scope: the
    rule's pipeline when it names one, else every pipeline of its client; only
    active pipelines of active clients. One row per (rule, pipeline): every
    statement below computes its facts per row and carries the row along, so
    no plan joins the scope twice."""
    columns = (
        AlertRule.id.label("rule_id"),
        Pipeline.id.label("pipeline_id"),
        AlertRule.destination.label("destination"),
        Pipeline.client_id.label("client_id"),
        Client.name.label("client_name"),
        Pipeline.name.label("pipeline_name"),
        Pipeline.platform.label("platform"),
        Pipeline.environment.label("environment"),
        AlertRule.threshold.label("threshold"),
        AlertRule.window_minutes.label("window_minutes"),
    )
    enabled = (AlertRule.rule_type == rule_type.value, AlertRule.is_enabled.is_(True))
    by_pipeline = (
        sa.select(*columns)
        .select_from(AlertRule)
        .join(Pipeline, Pipeline.id == AlertRule.pipeline_id)
        .join(Client, Client.id == Pipeline.client_id)
        .where(*enabled, active_inventory())
    )
    by_client = (
        sa.select(*columns)
        .select_from(AlertRule)
        .join(Pipeline, Pipeline.client_id == AlertRule.client_id)
        .join(Client, Client.id == Pipeline.client_id)
        .where(*enabled, AlertRule.pipeline_id.is_(None), active_inventory())
    )
    return sa.union_all(by_pipeline, by_client).subquery(f"scope_{rule_type.value}")


# What every condition's statement selects of its pair, besides its own facts.
PAIR_COLUMNS = (
    "rule_id",
    "pipeline_id",
    "destination",
    "client_id",
    "client_name",
    "pipeline_name",
    "platform",
    "environment",
    "threshold",
    "window_minutes",
)


def _materialized(query: sa.Select[Any], name: str) -> sa.CTE:
    """``query`` as a CTE computed once (``AS MATERIALIZED``, on both databases):
    each row's facts, correlated subqueries over the runs, are then computed
    once per row, however often later steps read them. Without it SQLite
    would flatten the query and run such a subquery again at each mention
    (in a WHERE, in each comparison of a range), and PostgreSQL may repeat it
    as well."""
    return query.cte(name).prefix_with("MATERIALIZED")


def _pair(source: sa.FromClause) -> list[ColumnElement[Any]]:
    return [source.c[name] for name in PAIR_COLUMNS]


def _latest_run(
    column: ColumnElement[Any], pipeline_id: ColumnElement[Any], *where: ColumnElement[bool]
) -> Any:
    """``column`` of the pipeline's latest run (ordering rule) among those ``where``
    says: a correlated top-1 of the ordering index.

    Each value of a run a statement needs is one such subquery, never a join
    of the runs table on a computed id: PostgreSQL's planner, misjudging the
    cost of the subquery, may hash-join the whole table instead."""
    runs = column.table
    return (
        sa.select(column)
        .where(runs.c.pipeline_id == pipeline_id, *where)
        .order_by(*_newest_first(runs))
        .limit(1)
        .scalar_subquery()
    )


def _latest_run_id(pipeline_id: ColumnElement[Any], *where: ColumnElement[bool]) -> Any:
    """The id of the pipeline's latest run (ordering rule) among those ``where`` says."""
    return _latest_run(RUNS.c.id, pipeline_id, *where)


# --- the conditions, one statement per rule type ----------------------------------------


def on_failure_statement(now: datetime) -> sa.Select[Any]:
    """The pipeline's latest run is failed; run_id = that run."""
    scope = _scope(RuleType.on_failure)
    latest = _materialized(
        sa.select(
            *_pair(scope),
            _latest_run_id(scope.c.pipeline_id).label("run_id"),
            _latest_run(RUNS.c.status, scope.c.pipeline_id).label("run_status"),
        ),
        "latest",
    )
    return sa.select(*_pair(latest), latest.c.run_id).where(latest.c.run_status == FAILED)


def failures_in_window_statement(now: datetime) -> sa.Select[Any]:
    """Failed runs with event time in (now - window, now] are at least threshold;
    run_id = the latest of them (ordering rule)."""
    scope = _scope(RuleType.failures_in_window)

    def in_window(pairs: sa.FromClause) -> tuple[ColumnElement[bool], ...]:
        return (
            RUNS.c.status == FAILED,
            RUNS.c.event_at > MinutesBefore(now, pairs.c.window_minutes),
            RUNS.c.event_at <= _at(now),
        )

    failures = (
        sa.select(sa.func.count())
        .select_from(RUNS)
        .where(RUNS.c.pipeline_id == scope.c.pipeline_id, *in_window(scope))
        .scalar_subquery()
    )
    counted = _materialized(sa.select(*_pair(scope), failures.label("failures")), "counted")
    latest_failed = _latest_run_id(counted.c.pipeline_id, *in_window(counted))
    return sa.select(*_pair(counted), latest_failed.label("run_id"), counted.c.failures).where(
        counted.c.failures >= counted.c.threshold
    )


def consecutive_failures_statement(now: datetime) -> sa.Select[Any]:
    """The latest ``threshold`` runs are all failed: the runs newer than the
    latest run that did not fail (all runs, when every run failed) are at least
    ``threshold``; run_id = the latest run."""
    scope = _scope(RuleType.consecutive_failures)
    ends = _materialized(
        sa.select(
            *_pair(scope),
            _latest_run_id(scope.c.pipeline_id).label("run_id"),
            _latest_run_id(scope.c.pipeline_id, RUNS.c.status != FAILED).label("last_not_failed"),
        ),
        "ends",
    )
    newer, boundary = RUNS.alias("newer"), RUNS.alias("boundary")
    since_last_not_failed = (
        sa.select(sa.func.count())
        .select_from(newer)
        .join(boundary, boundary.c.id == ends.c.last_not_failed)
        .where(newer.c.pipeline_id == ends.c.pipeline_id, _newer_than(newer, _keys(boundary)))
        .scalar_subquery()
    )
    every_run = (
        sa.select(sa.func.count())
        .select_from(RUNS)
        .where(RUNS.c.pipeline_id == ends.c.pipeline_id)
        .scalar_subquery()
    )
    streak = sa.case((ends.c.last_not_failed.is_(None), every_run), else_=since_last_not_failed)
    streaks = _materialized(
        sa.select(*_pair(ends), ends.c.run_id, streak.label("streak")), "streaks"
    )
    return sa.select(*_pair(streaks), streaks.c.run_id, streaks.c.streak).where(
        streaks.c.streak >= streaks.c.threshold
    )


def long_running_statement(now: datetime) -> sa.Select[Any]:
    """A queued or running run's event time is older than ``threshold`` minutes
    (strictly before now - threshold); run_id = the oldest such run.

    The open runs are few, and all in the partial index ``ix_runs_open``: each
    pipeline's oldest is ranked there, then joined to the scope."""
    scope = _scope(RuleType.long_running)
    rank = sa.func.row_number().over(
        partition_by=RUNS.c.pipeline_id, order_by=(RUNS.c.event_at, RUNS.c.id)
    )
    open_runs = (
        sa.select(RUNS.c.id, RUNS.c.pipeline_id, RUNS.c.status, RUNS.c.event_at, rank.label("rank"))
        .where(RUNS.c.status.in_(OPEN_STATUSES))
        .subquery("open_runs")
    )
    return (
        sa.select(
            *_pair(scope),
            open_runs.c.id.label("run_id"),
            open_runs.c.status.label("run_status"),
            open_runs.c.event_at.label("since"),
        )
        .select_from(scope)
        .join(open_runs, open_runs.c.pipeline_id == scope.c.pipeline_id)
        .where(open_runs.c.rank == 1, open_runs.c.event_at < MinutesBefore(now, scope.c.threshold))
    )


def _interpolated(samples: sa.Subquery, numerator: int) -> ColumnElement[Any]:
    """The percentile ``numerator``/100 of ``samples``' durations (an aggregate) by linear
    interpolation (Hyndman and Fan's type 7, numpy's default): with the n
    values sorted v[0..n-1] and h = (n - 1) * p, v[floor(h)] + (h - floor(h))
    * (v[floor(h) + 1] - v[floor(h)]). h is integer arithmetic, so both
    databases pick the same ranks, and the rest is the same double-precision
    arithmetic in the same order as ``chm.alerts.evaluate.percentile``."""
    scaled = (samples.c.n - 1) * numerator
    low = scaled.op("/", return_type=sa.Integer)(100)
    remainder = scaled - low * 100

    def value_at(rank: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.func.max(sa.case((samples.c.rank == rank, samples.c.duration)))

    low_value = value_at(low)
    high_value = sa.func.coalesce(value_at(low + 1), low_value)
    fraction = sa.func.max(ratio(remainder, sa.literal(100)))
    return low_value + fraction * (high_value - low_value)


def percentile(values: list[float], numerator: int) -> float:
    """The statement's percentile in Python (its definition; tests compare them)."""
    ordered = sorted(values)
    scaled = (len(ordered) - 1) * numerator
    low, remainder = divmod(scaled, 100)
    high = ordered[low + 1] if low + 1 < len(ordered) else ordered[low]
    return ordered[low] + (remainder / 100) * (high - ordered[low])


def _sample_statistic(last: sa.CTE, statistic: str) -> Any:
    """A statistic of the sample of ``last``'s pair (a correlated scalar subquery):
    the 30 successful runs with a duration before the pair's last finished run
    in the ordering rule, a top-30 walk of the ordering index.

    ``statistic``: ``n`` (the sample's size), ``p95``, ``median``, or ``bound``:
    max(1.5 x p95, 3 x median) when the sample holds at least 10 runs, else
    null (so a comparison with it never holds)."""
    sample = RUNS.alias("sample_run")
    upper = (
        NullsLowKey(last.c.last_started_at),
        NullsLowKey(last.c.last_finished_at),
        last.c.run_id,
    )
    newest = (
        sa.select(sample.c.duration_seconds.label("duration"))
        .where(
            sample.c.pipeline_id == last.c.pipeline_id,
            sample.c.status == SUCCESS,
            sample.c.duration_seconds.is_not(None),
            _older_than(sample, upper),
        )
        .order_by(*_newest_first(sample))
        .limit(ANOMALY_SAMPLE)
        .correlate(last)
        .subquery("sample")
    )
    ranked = sa.select(
        newest.c.duration,
        (sa.func.row_number().over(order_by=newest.c.duration) - 1).label("rank"),
        sa.func.count().over().label("n"),
    ).subquery("ranked")
    p95, median = _interpolated(ranked, 95), _interpolated(ranked, 50)
    by_p95 = sa.literal(ANOMALY_P95_FACTOR, sa.Float()) * p95
    by_median = sa.literal(ANOMALY_MEDIAN_FACTOR, sa.Float()) * median
    value = {
        "n": sa.func.max(ranked.c.n),
        "p95": p95,
        "median": median,
        "bound": sa.case(
            (
                sa.func.max(ranked.c.n) >= ANOMALY_MIN_SAMPLE,
                sa.case((by_p95 >= by_median, by_p95), else_=by_median),
            ),
            else_=sa.null(),
        ),
    }[statistic]
    return sa.select(value).scalar_subquery()


def duration_anomaly_statement(now: datetime) -> sa.Select[Any]:
    """The latest finished run (success or failed, with a duration) took longer
    than max(1.5 x p95, 3 x median) of the 30 successful runs (with a duration)
    before it in the ordering rule; never with fewer than 10 of them. run_id =
    that run.

    Per pair, walks of the ordering index: the latest finished run (a top-1
    for each of its values), then the sample before it (a top-30), ranked by
    duration for the bound. The percentiles a summary shows are computed again for the few
    pairs that fire only."""
    scope = _scope(RuleType.duration_anomaly)
    finished = (RUNS.c.status.in_(FINISHED_STATUSES), RUNS.c.duration_seconds.is_not(None))
    lasts = _materialized(
        sa.select(
            *_pair(scope),
            *(
                _latest_run(RUNS.c[column], scope.c.pipeline_id, *finished).label(label)
                for column, label in (
                    ("id", "run_id"),
                    ("duration_seconds", "run_duration"),
                    ("started_at", "last_started_at"),
                    ("finished_at", "last_finished_at"),
                )
            ),
        ),
        "last_finished",
    )
    bounded = _materialized(
        sa.select(*lasts.c, _sample_statistic(lasts, "bound").label("bound")), "bounded"
    )
    return sa.select(
        *_pair(bounded),
        bounded.c.run_id,
        bounded.c.run_duration,
        _sample_statistic(bounded, "p95").label("p95"),
        _sample_statistic(bounded, "median").label("median"),
        _sample_statistic(bounded, "n").label("sampled"),
    ).where(bounded.c.run_duration > bounded.c.bound)


def missed_schedule_statement(now: datetime) -> sa.Select[Any]:
    """The pipeline's expected tick T (its latest stored tick with T + grace <=
    now) is ``missed``, no run with event time in [T - grace, now], or
    ``late``, the deadline T + deadline <= now and a run of that window is
    still queued or running. run_id: null when missed, the oldest open run of
    the window (event time, then id) when late.

    Per pair: the expected tick's values, top-1s of the ticks' index
    (pipeline_id, due_missed); a run in the window, a top-1 of the covering
    ``ix_runs_report_pipeline`` over (pipeline_id, event_at); and, only once
    the deadline is past, the oldest open run of the window, a walk of the same
    index over the window's few runs. A pipeline without a schedule, or
    without a tick due since its schedule was set, has no expected tick."""
    scope = _scope(RuleType.missed_schedule)
    ticks = _materialized(
        sa.select(
            *_pair(scope),
            # The stored ticks' expectation (chm.schedules.ticks), value by value.
            *(
                expected_tick_value(label, scope.c.pipeline_id, _at(now)).label(label)
                for label in EXPECTATION_COLUMNS
            ),
        ),
        "expected_ticks",
    )

    def in_window(*where: ColumnElement[bool]) -> Any:
        return (
            sa.select(RUNS.c.id)
            .where(
                RUNS.c.pipeline_id == ticks.c.pipeline_id,
                RUNS.c.event_at >= ticks.c.window_start,
                RUNS.c.event_at <= _at(now),
                *where,
            )
            .order_by(RUNS.c.event_at, RUNS.c.id)
            .limit(1)
            .scalar_subquery()
        )

    past_deadline = sa.and_(ticks.c.due_late.is_not(None), ticks.c.due_late <= _at(now))
    # The stored ticks reach now (stored_expectations' rule): ticks that ran
    # out, the worker down for a day, would name an old tick, and every run
    # since as its answer; such a pipeline waits for the top-up.
    ticks_complete = (
        sa.select(PIPELINES.c.id)
        .where(
            PIPELINES.c.id == ticks.c.pipeline_id,
            PIPELINES.c.schedule_ticks_until >= _at(now),
        )
        .exists()
    )
    zone = (
        sa.select(PIPELINES.c.schedule_timezone)
        .where(PIPELINES.c.id == ticks.c.pipeline_id)
        .scalar_subquery()
    )
    facts = _materialized(
        sa.select(
            *_pair(ticks),
            ticks.c.expected_at,
            ticks.c.due_missed,
            ticks.c.due_late,
            zone.label("schedule_timezone"),
            in_window().label("answering_run"),
            sa.case(
                # Open AT the deadline: a run of the next period, started
                # after it, was not running then.
                (
                    past_deadline,
                    in_window(
                        RUNS.c.status.in_(OPEN_STATUSES), RUNS.c.event_at <= ticks.c.due_late
                    ),
                ),
                else_=sa.null(),
            ).label("run_id"),
        ).where(ticks.c.expected_at.is_not(None), ticks_complete),
        "expected",
    )
    late_status = sa.select(RUNS.c.status).where(RUNS.c.id == facts.c.run_id).scalar_subquery()
    return sa.select(
        *_pair(facts),
        facts.c.run_id,
        late_status.label("run_status"),
        facts.c.expected_at,
        facts.c.due_missed,
        facts.c.due_late,
        facts.c.schedule_timezone,
    ).where(sa.or_(facts.c.answering_run.is_(None), facts.c.run_id.is_not(None)))


def next_schedule_due(session: Session, after: datetime) -> datetime | None:
    """The earliest time after ``after`` at which a ``missed_schedule`` pair may
    start to hold, or None: a stored tick's ``due_missed``, or the deadline
    (``due_late``) of the tick expected at ``after``, over the pipelines in the
    scope of an enabled missed_schedule rule. The worker evaluates again then,
    not only every CHM_EVALUATE_EVERY_S. A later tick's deadline is read once
    its own due_missed has passed (the evaluation then asks again).

    Per pipeline in scope, two top-1s of the ticks' index (pipeline_id,
    due_missed); nothing at all without such a rule."""
    scope = _scope(RuleType.missed_schedule)
    pipelines = sa.select(scope.c.pipeline_id).distinct().subquery("scheduled")
    next_tick = (
        sa.select(TICKS.c.due_missed)
        .where(TICKS.c.pipeline_id == pipelines.c.pipeline_id, TICKS.c.due_missed > _at(after))
        .order_by(TICKS.c.due_missed)
        .limit(1)
        .scalar_subquery()
    )
    ahead = _materialized(
        sa.select(
            next_tick.label("next_due"),
            expected_tick_value("due_late", pipelines.c.pipeline_id, _at(after)).label("deadline"),
        ).select_from(pipelines),
        "ahead",
    )
    deadline_ahead = sa.case((ahead.c.deadline > _at(after), ahead.c.deadline), else_=sa.null())
    due = session.execute(
        sa.select(sa.func.min(ahead.c.next_due), sa.func.min(deadline_ahead))
    ).one()
    times: list[datetime] = [at for at in due if at is not None]
    return min(times, default=None)


# --- summaries ------------------------------------------------------------------------


def _who(row: Any) -> str:
    return summary.subject(row.pipeline_name, row.client_name, row.platform, row.environment)


def _missed_schedule_summary(row: Any) -> str:
    # A late pair has its open run; a missed one has none.
    if row.run_id is not None:
        state, due_by = "late", row.due_late
    else:
        state, due_by = "missed", row.due_missed
    return summary.missed_schedule(
        _who(row), state, row.expected_at, row.schedule_timezone, due_by, row.run_status
    )


@dataclass(frozen=True)
class Condition:
    """One rule type: the statement of the pairs for which it holds at ``now``,
    and the summary of one of its rows."""

    rule_type: RuleType
    statement: Callable[[datetime], sa.Select[Any]]
    summary: Callable[[Any, datetime], str]


CONDITIONS: tuple[Condition, ...] = (
    Condition(
        RuleType.on_failure,
        on_failure_statement,
        lambda row, now: summary.on_failure(_who(row)),
    ),
    Condition(
        RuleType.failures_in_window,
        failures_in_window_statement,
        lambda row, now: summary.failures_in_window(_who(row), row.failures, row.window_minutes),
    ),
    Condition(
        RuleType.consecutive_failures,
        consecutive_failures_statement,
        lambda row, now: summary.consecutive_failures(_who(row), row.streak),
    ),
    Condition(
        RuleType.long_running,
        long_running_statement,
        lambda row, now: summary.long_running(
            _who(row), row.run_status, row.since, now, row.threshold
        ),
    ),
    Condition(
        RuleType.duration_anomaly,
        duration_anomaly_statement,
        lambda row, now: summary.duration_anomaly(_who(row), row.run_duration, row.median, row.p95),
    ),
    Condition(
        RuleType.missed_schedule,
        missed_schedule_statement,
        lambda row, now: _missed_schedule_summary(row),
    ),
)


# --- evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """A (rule, pipeline) pair whose condition holds now."""

    rule_id: int
    rule_type: str
    pipeline_id: int
    client_id: int
    run_id: int | None
    destination: str
    summary: str


@dataclass(frozen=True)
class EvaluationReport:
    """What one evaluation did. ``deliveries``: the deliveries it created, by status.
    ``skipped``: another evaluation was running (PostgreSQL), so this one did
    nothing and counted nothing; evaluate again later."""

    fired: int
    resolved: int
    firing: int  # open alerts after the evaluation
    deliveries: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    skipped: bool = False


def fingerprint(rule_id: int, pipeline_id: int, fired_at: datetime) -> str:
    """Stable for one occurrence: PagerDuty's dedup_key, Alertmanager's fingerprint."""
    text = f"{rule_id}:{pipeline_id}:{fired_at.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def holding_pairs(session: Session, now: datetime) -> dict[tuple[int, int], Holding]:
    """Every (rule, pipeline) whose condition holds at ``now``: one statement per rule type."""
    holding: dict[tuple[int, int], Holding] = {}
    for condition in CONDITIONS:
        for row in session.execute(condition.statement(now)):
            holding[(row.rule_id, row.pipeline_id)] = Holding(
                rule_id=row.rule_id,
                rule_type=condition.rule_type.value,
                pipeline_id=row.pipeline_id,
                client_id=row.client_id,
                run_id=row.run_id,
                destination=row.destination,
                summary=condition.summary(row, now),
            )
    return holding


def monotonic_now(session: Session, now: datetime) -> datetime:
    """``now``, or the latest time an evaluation recorded if that is later: a
    ``fired_at`` (a top-1 of its index) or a ``resolved_at`` (a scan of the
    alerts, a small table; no index for it). Read under the evaluation's lock,
    so no evaluation acts at a time before one already acted on."""
    latest = session.execute(
        sa.select(
            sa.select(sa.func.max(Alert.fired_at)).scalar_subquery(),
            sa.select(sa.func.max(Alert.resolved_at)).scalar_subquery(),
        )
    ).one()
    recorded: list[datetime] = [at for at in latest if at is not None]
    return max([now, *recorded])


def _resolve(session: Session, alert_ids: list[int], now: datetime) -> list[sa.Row[Any]]:
    """Resolve the open alerts ``alert_ids``; answers them (id, rule, client, pipeline)."""
    table: sa.Table = Alert.__table__  # type: ignore[assignment]
    resolved: list[sa.Row[Any]] = []
    for start in range(0, len(alert_ids), 1000):
        resolved += session.execute(
            sa.update(table)
            .where(table.c.id.in_(alert_ids[start : start + 1000]), table.c.state == "firing")
            .values(state="resolved", resolved_at=now)
            .returning(table.c.id, table.c.rule_id, table.c.client_id, table.c.pipeline_id)
        ).all()
    return resolved


def _fire(session: Session, pairs: list[Holding], now: datetime) -> list[sa.Row[Any]]:
    """Open an alert for each of ``pairs``; answers them (id, rule, client, pipeline),
    in any order. One INSERT, batched by the driver, on both databases."""
    table: sa.Table = Alert.__table__  # type: ignore[assignment]
    rows = [
        {
            "rule_id": pair.rule_id,
            "rule_type": pair.rule_type,
            "client_id": pair.client_id,
            "pipeline_id": pair.pipeline_id,
            "state": "firing",
            "fingerprint": fingerprint(pair.rule_id, pair.pipeline_id, now),
            "fired_at": now,
            "summary": pair.summary,
            "run_id": pair.run_id,
            "last_notified_at": now,
        }
        for pair in pairs
    ]
    returning = (table.c.id, table.c.rule_id, table.c.client_id, table.c.pipeline_id)
    return list(session.execute(sa.insert(table).returning(*returning), rows))


def evaluate(
    engine: Engine,
    now: datetime,
    settings: Settings,
    destinations: Destinations | None,
    environ: Mapping[str, str] = os.environ,
) -> EvaluationReport:
    """Fire and resolve every rule's alerts at ``now`` (an aware time; never
    earlier than the latest time recorded), with their deliveries, in one write
    transaction; skipped when another evaluation runs. See the module doc."""
    if now.tzinfo is None:
        raise ValueError("evaluate needs an aware time")
    now = now.astimezone(UTC)
    started = time.perf_counter()
    created: Counter[str] = Counter()
    with make_session_factory(engine, write=True).begin() as session:
        if not evaluation_dialect(engine).prepare(session):
            return EvaluationReport(
                fired=0, resolved=0, firing=0, elapsed_s=time.perf_counter() - started, skipped=True
            )
        now = monotonic_now(session, now)
        holding = holding_pairs(session, now)
        open_alerts = session.execute(
            sa.select(Alert.id, Alert.rule_id, Alert.pipeline_id, Alert.rule_type).where(
                Alert.state == "firing"
            )
        ).all()
        resolving: list[int] = []
        still_open: set[tuple[int, int]] = set()
        for alert in open_alerts:
            pair = holding.get((alert.rule_id, alert.pipeline_id))
            if pair is None or pair.rule_type != alert.rule_type:
                resolving.append(alert.id)
            else:
                still_open.add((alert.rule_id, alert.pipeline_id))
        firing = [pair for key, pair in holding.items() if key not in still_open]
        planner = DeliveryPlanner(session, now, settings, destinations, environ)
        if resolving:
            # Before the new alerts: a rule that changed type resolves its old
            # alert and fires a new one for the same pipeline.
            resolved = _resolve(session, resolving, now)
            created.update(d.status for d in deliveries_for(session, resolved, "resolved", planner))
        if firing:
            fired = _fire(session, firing, now)
            targets = {
                alert.id: [holding[(alert.rule_id, alert.pipeline_id)].destination]
                for alert in fired
            }
            created.update(
                d.status for d in deliveries_for(session, fired, "firing", planner, targets=targets)
            )
    return EvaluationReport(
        fired=len(firing),
        resolved=len(resolving),
        firing=len(still_open) + len(firing),
        deliveries=dict(created),
        elapsed_s=time.perf_counter() - started,
    )
