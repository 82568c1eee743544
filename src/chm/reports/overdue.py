"""Overdue pipelines: a schedule expected a run that is missed or late.

The monitoring contract ("Schedules"), for an active pipeline of an active
client with a schedule, at ``as_of``: T is the latest tick with
``T + grace <= as_of`` (none, or one before the pipeline was created or its
schedule last set: nothing is expected);

- ``missed``: no run of the pipeline has its event time in
  ``[T - grace, as_of]``; due by ``T + grace``;
- ``late``: the pipeline has a deadline, ``T + deadline <= as_of``, and a
  run in that window is still ``queued`` or ``running``; due by
  ``T + deadline``.

A cron schedule in a time zone cannot be evaluated in SQL, so the statement
(``overdue_query``, one builder for the API, its CSV, the BI view and
``chm status``) takes the expectations as a relation ``(pipeline_id,
expected_at, window_start, due_missed, due_late)``, one row per pipeline
expecting a run. It comes from one of two places:

- computed in Python (``chm.schedules.expectation.expect``, exact for any
  ``as_of``) for the scheduled pipelines in scope, read in one query, and
  handed to the statement as one JSON document (``reports.sql.json_rows``):
  the API and ``chm status``;
- the stored ticks (``chm.schedules.ticks.stored_expectations``) at the
  database's own clock: the view ``chm_overdue_pipelines``.

Per pipeline, the facts are index probes of ``runs (pipeline_id, event_at)``
(does a run answer the tick; is one of those still open), and the latest run
(one walk of the ordering index) is looked up for the overdue rows only: no
run history is read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement, FromClause

from chm.core.errors import ValidationFailed
from chm.core.status import RunStatus
from chm.core.types import UTCDateTime
from chm.models import Client, Pipeline, Run
from chm.reports.params import ReportContext
from chm.reports.schemas import OverdueRow, OverdueState, Report
from chm.reports.sql import Clock, FixedClock, Query, Scope, TimeExpr, head_as, json_rows, rows_as
from chm.runs.ordering import ORDER_BY
from chm.schedules.expectation import expect, since_of

OPEN_STATUSES = (RunStatus.queued.value, RunStatus.running.value)
# The expectations relation the statement takes (chm.schedules.expectation.Expectation).
EXPECTATION_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "pipeline_id": sa.BigInteger(),
    "expected_at": UTCDateTime(),
    "window_start": UTCDateTime(),
    "due_missed": UTCDateTime(),
    "due_late": UTCDateTime(),
}


def answers(expectations: FromClause, as_of: TimeExpr, run: Any = Run) -> ColumnElement[bool]:
    """``run`` answers its pipeline's expected tick: its event time is in
    ``[window_start, as_of]`` (both ends included)."""
    e = expectations.c
    return sa.and_(
        run.pipeline_id == e.pipeline_id, run.event_at >= e.window_start, run.event_at <= as_of
    )


def is_open(run: Any = Run) -> ColumnElement[bool]:
    """``run`` is still queued or running (literal values: a stable plan)."""
    condition: ColumnElement[bool] = run.status.in_(
        sa.bindparam("open_statuses", OPEN_STATUSES, expanding=True, literal_execute=True)
    )
    return condition


def overdue_state(expectations: FromClause, as_of: TimeExpr) -> ColumnElement[str | None]:
    """``'missed'``, ``'late'`` or null, per expectation row: two index probes
    of the pipeline's runs in the window, the second only when a deadline has
    passed and a run answered."""
    e = expectations.c
    answered = sa.exists().where(answers(expectations, as_of))
    # Still open AT the deadline: the run's event time is at or before it (a
    # run of the next period, started after the deadline, was not running then).
    still_open = sa.exists().where(
        answers(expectations, as_of), Run.event_at <= e.due_late, is_open()
    )
    return sa.case(
        (~answered, OverdueState.missed.value),
        (sa.and_(e.due_late <= as_of, still_open), OverdueState.late.value),
        else_=sa.null(),
    )


def _platform_filter(platform: str | None) -> list[ColumnElement[bool]]:
    return [] if platform is None else [Pipeline.platform == platform]


def latest_run_id_at(pipeline_id: ColumnElement[Any], as_of: TimeExpr) -> sa.ScalarSelect[Any]:
    """The id of the pipeline's latest run by the ordering rule among those
    whose event time is at or before ``as_of``."""
    return (
        sa.select(Run.id)
        .where(Run.pipeline_id == pipeline_id, Run.event_at <= as_of)
        .order_by(*ORDER_BY)
        .limit(1)
        .scalar_subquery()
    )


def overdue_query(
    expectations: FromClause, clock: Clock, scope: Scope, platform: str | None = None
) -> Query:
    """The report's rows: the pipelines in scope (active inventory) whose
    expectation in ``expectations`` is missed or late at the clock's
    ``as_of``, ordered by ``due_by`` then ``pipeline_id``."""
    as_of = clock.at()
    e = expectations.c
    facts = (
        sa.select(
            Pipeline.id.label("pipeline_id"),
            Pipeline.name.label("pipeline_name"),
            Client.id.label("client_id"),
            Client.name.label("client_name"),
            Pipeline.platform.label("platform"),
            Pipeline.schedule.label("schedule"),
            Pipeline.schedule_timezone.label("schedule_timezone"),
            e.expected_at,
            e.due_missed,
            e.due_late,
            overdue_state(expectations, as_of).label("state"),
        )
        .select_from(expectations)
        .join(Pipeline, Pipeline.id == e.pipeline_id)
        .join(Client, Client.id == Pipeline.client_id)
        .where(
            Pipeline.schedule.is_not(None),
            e.due_missed <= as_of,
            *scope.filters(),
            *_platform_filter(platform),
        )
        .subquery("facts")
    )
    f = facts.c
    due_by = sa.case((f.state == OverdueState.missed.value, f.due_missed), else_=f.due_late)
    overdue = (
        sa.select(
            f.pipeline_id,
            f.pipeline_name,
            f.client_id,
            f.client_name,
            f.platform,
            f.schedule,
            f.schedule_timezone,
            f.state,
            f.expected_at,
            due_by.label("due_by"),
            latest_run_id_at(f.pipeline_id, as_of).label("last_run_id"),
        )
        .where(f.state.is_not(None))
        .subquery("overdue")
    )
    o = overdue.c
    last = aliased(Run, name="last_run")
    return (
        sa.select(
            o.pipeline_id,
            o.pipeline_name,
            o.client_id,
            o.client_name,
            o.platform,
            o.schedule,
            o.schedule_timezone,
            o.state,
            o.expected_at,
            o.due_by,
            last.event_at.label("last_run_at"),
            last.status.label("last_status"),
        )
        .select_from(overdue)
        .outerjoin(last, last.id == o.last_run_id)
        .order_by(o.due_by, o.pipeline_id)
    )


def computed_expectations(
    session: Session, as_of: datetime, scope: Scope, platform: str | None = None
) -> sa.Subquery:
    """The expectation at ``as_of`` of every scheduled pipeline in scope,
    computed in Python from its schedule fields (one query), as a relation."""
    query = (
        sa.select(
            Pipeline.id,
            Pipeline.schedule,
            Pipeline.schedule_timezone,
            Pipeline.grace_minutes,
            Pipeline.deadline_minutes,
            Pipeline.created_at,
            Pipeline.schedule_set_at,
        )
        .join(Client, Client.id == Pipeline.client_id)
        .where(Pipeline.schedule.is_not(None), *scope.filters(), *_platform_filter(platform))
    )
    rows: list[dict[str, Any]] = []
    for pipeline_id, cron, zone, grace, deadline, created_at, set_at in session.execute(query):
        assert cron is not None  # the query reads scheduled pipelines only
        expectation = expect(cron, zone, grace, deadline, since_of(created_at, set_at), as_of)
        if expectation is not None:
            rows.append(
                {
                    "pipeline_id": pipeline_id,
                    "expected_at": expectation.expected_at,
                    "window_start": expectation.window_start,
                    "due_missed": expectation.due_missed,
                    "due_late": expectation.due_late,
                }
            )
    return json_rows("expectations", EXPECTATION_COLUMNS, rows)


def overdue_pipelines(
    session: Session, as_of: datetime, scope: Scope, platform: str | None = None
) -> list[OverdueRow]:
    """The pipelines in scope that are missed or late at ``as_of``, by due_by."""
    return rows_as(OverdueRow, session.execute(_overdue_at(session, as_of, scope, platform)))


def overdue_head(
    session: Session, as_of: datetime, scope: Scope, rows: int | None
) -> tuple[list[OverdueRow], int]:
    """The first ``rows`` of ``overdue_pipelines`` (all when None), and how many there are."""
    return head_as(OverdueRow, session.execute(_overdue_at(session, as_of, scope, None)), rows)


def _overdue_at(session: Session, as_of: datetime, scope: Scope, platform: str | None) -> Query:
    expectations = computed_expectations(session, as_of, scope, platform)
    return overdue_query(expectations, FixedClock(as_of), scope, platform)


def overdue_report(
    session: Session, ctx: ReportContext, platform: str | None
) -> Report[OverdueRow]:
    if ctx.scope.include_inactive:
        raise ValidationFailed.one(
            "include_inactive",
            "unsupported",
            "the overdue report lists active pipelines of active clients only; "
            "include_inactive=true is not supported here",
        )
    items = overdue_pipelines(session, ctx.as_of, ctx.scope, platform)
    return Report[OverdueRow](items=items, since=None, until=None, as_of=ctx.as_of)
