"""Where each pipeline stands: latest status (OB-002), what changed, stuck runs.

"Latest as of T" is the first run by the ordering rule (``chm.runs.ordering``)
among the pipeline's runs whose event time is before T. It is a correlated
top-1 per pipeline, which both databases answer from the ordering index
``ix_runs_pipeline_order``: one short index walk per pipeline, whatever the
size of the history.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from chm.core.status import RunStatus
from chm.models import Client, Pipeline, Run
from chm.reports.params import ReportContext, sql_window
from chm.reports.schemas import LatestStatusRow, Report, StatusChangeRow, StuckRunRow
from chm.reports.sql import Clock, Query, Scope, TimeExpr, Window, rows_as
from chm.runs.ordering import ORDER_BY

DEFAULT_CHANGES_WINDOW = timedelta(hours=24)
STUCK_STATUSES = (RunStatus.queued.value, RunStatus.running.value)


def latest_run_id(before: TimeExpr) -> sa.ScalarSelect[Any]:
    """The id of the pipeline's latest run with event time before ``before``."""
    return (
        sa.select(Run.id)
        .where(Run.pipeline_id == Pipeline.id, Run.event_at < before)
        .order_by(*ORDER_BY)
        .limit(1)
        .correlate(Pipeline)
        .scalar_subquery()
    )


def _inventory(scope: Scope, **latest: sa.ScalarSelect[Any]) -> sa.Subquery:
    """The pipelines in scope with their client, and the given latest-run ids."""
    return (
        sa.select(
            Client.id.label("client_id"),
            Client.name.label("client_name"),
            Client.name_key.label("client_key"),
            Pipeline.id.label("pipeline_id"),
            Pipeline.name.label("pipeline_name"),
            Pipeline.name_key.label("pipeline_key"),
            Pipeline.platform.label("platform"),
            Pipeline.environment.label("environment"),
            *(run_id.label(name) for name, run_id in latest.items()),
        )
        .select_from(Pipeline)
        .join(Client, Client.id == Pipeline.client_id)
        .where(*scope.filters())
        .subquery("inventory")
    )


def _by_client_then_pipeline(inventory: sa.Subquery) -> list[Any]:
    c = inventory.c
    return [c.client_key, c.client_id, c.pipeline_key, c.pipeline_id]


def latest_status_query(clock: Clock, scope: Scope, status: RunStatus | None = None) -> Query:
    """One row per pipeline in scope, with its latest run before ``as_of`` (or nulls)."""
    inventory = _inventory(scope, latest_run_id=latest_run_id(clock.at()))
    latest = aliased(Run, name="latest_run")
    query = (
        sa.select(
            inventory.c.client_id,
            inventory.c.client_name,
            inventory.c.pipeline_id,
            inventory.c.pipeline_name,
            inventory.c.platform,
            inventory.c.environment,
            latest.id.label("latest_run_id"),
            latest.status.label("latest_status"),
            latest.started_at.label("started_at"),
            latest.finished_at.label("finished_at"),
        )
        .select_from(inventory)
        .outerjoin(latest, latest.id == inventory.c.latest_run_id)
        .order_by(*_by_client_then_pipeline(inventory))
    )
    if status is not None:
        query = query.where(latest.status == status.value)
    return query


def latest_status(
    session: Session, clock: Clock, scope: Scope, status: RunStatus | None = None
) -> list[LatestStatusRow]:
    return rows_as(LatestStatusRow, session.execute(latest_status_query(clock, scope, status)))


def pipeline_states_query(clock: Clock, since: TimeExpr, scope: Scope) -> Query:
    """One row per pipeline in scope, by client then pipeline: the id and status
    of its latest run before ``as_of`` (nulls when none, as
    ``latest_status_query``) and the status of its latest run before ``since``
    (``status_changes_query``'s previous status).

    The status board reads the latest statuses and the changes since
    yesterday from this one statement: the latest run before ``as_of`` is the
    current run of the changes, so each pipeline's index is walked twice, not
    three times. It carries ids, statuses and the client's name only; the
    board reads the other names and the times of the few rows it shows by run
    id afterwards.
    """
    inventory = _inventory(
        scope, latest_run_id=latest_run_id(clock.at()), previous_run_id=latest_run_id(since)
    )
    latest = aliased(Run, name="latest_run")
    previous = aliased(Run, name="previous_run")
    return (
        sa.select(
            inventory.c.client_id,
            inventory.c.client_name,
            inventory.c.pipeline_id,
            latest.id.label("latest_run_id"),
            latest.status.label("latest_status"),
            previous.status.label("previous_status"),
        )
        .select_from(inventory)
        .outerjoin(latest, latest.id == inventory.c.latest_run_id)
        .outerjoin(previous, previous.id == inventory.c.previous_run_id)
        .order_by(*_by_client_then_pipeline(inventory))
    )


def status_changes_query(window: Window, scope: Scope) -> Query:
    """Pipelines whose latest status as of ``since`` differs from that as of ``until``."""
    inventory = _inventory(
        scope,
        previous_run_id=latest_run_id(window.since),
        current_run_id=latest_run_id(window.until),
    )
    previous = aliased(Run, name="previous_run")
    current = aliased(Run, name="current_run")
    return (
        sa.select(
            inventory.c.pipeline_id,
            inventory.c.pipeline_name,
            inventory.c.client_id,
            inventory.c.client_name,
            previous.status.label("previous_status"),
            current.status.label("current_status"),
            current.event_at.label("changed_at"),
        )
        .select_from(inventory)
        # The current run exists whenever the previous one does (it is
        # chosen among a superset), so an inner join drops only pipelines
        # with no run at all, which cannot have changed.
        .join(current, current.id == inventory.c.current_run_id)
        .outerjoin(previous, previous.id == inventory.c.previous_run_id)
        .where(previous.status.is_distinct_from(current.status))
        .order_by(*_by_client_then_pipeline(inventory))
    )


def status_changes(session: Session, window: Window, scope: Scope) -> list[StatusChangeRow]:
    return rows_as(StatusChangeRow, session.execute(status_changes_query(window, scope)))


def stuck_runs_query(clock: Clock, older_than: timedelta, scope: Scope) -> Query:
    """Runs still queued or running whose event time is before ``as_of - older_than``."""
    return (
        sa.select(
            Run.id.label("run_id"),
            Pipeline.id.label("pipeline_id"),
            Pipeline.name.label("pipeline_name"),
            Client.id.label("client_id"),
            Client.name.label("client_name"),
            Run.status.label("status"),
            Run.started_at.label("started_at"),
            Run.event_at.label("event_at"),
        )
        .select_from(Run)
        .join(Pipeline, Pipeline.id == Run.pipeline_id)
        .join(Client, Client.id == Pipeline.client_id)
        .where(
            *scope.filters(),
            # Literal values, not parameters: both databases then match the
            # partial index on open runs (ix_runs_open), whose predicate is this.
            Run.status.in_(
                sa.bindparam("open_statuses", STUCK_STATUSES, expanding=True, literal_execute=True)
            ),
            Run.event_at < clock.at(-older_than),
        )
        .order_by(Run.event_at, Run.id)
    )


def stuck_runs(
    session: Session, clock: Clock, older_than: timedelta, scope: Scope
) -> list[StuckRunRow]:
    return rows_as(StuckRunRow, session.execute(stuck_runs_query(clock, older_than, scope)))


def latest_status_report(
    session: Session, ctx: ReportContext, status: RunStatus | None
) -> Report[LatestStatusRow]:
    items = latest_status(session, ctx.clock, ctx.scope, status)
    return Report[LatestStatusRow](items=items, since=None, until=ctx.as_of, as_of=ctx.as_of)


def status_changes_report(
    session: Session, ctx: ReportContext, since: datetime | None, until: datetime | None
) -> Report[StatusChangeRow]:
    since, until = ctx.window(since, until, DEFAULT_CHANGES_WINDOW)
    items = status_changes(session, sql_window(since, until), ctx.scope)
    return Report[StatusChangeRow](items=items, since=since, until=until, as_of=ctx.as_of)


def stuck_runs_report(
    session: Session, ctx: ReportContext, older_than: timedelta
) -> Report[StuckRunRow]:
    items = stuck_runs(session, ctx.clock, older_than, ctx.scope)
    return Report[StuckRunRow](
        items=items, since=None, until=ctx.as_of - older_than, as_of=ctx.as_of
    )
