"""What each page shows, read through the statements the API, the reports and
``chm status`` already use: a fixed number of queries per page, none per row.

- now: the status board (``chm.reports.board.build_board``, the data of
  ``chm status``) and each source's ingestion health (``chm.ingestion.health``);
- a client: its summary (``chm.clients.summary``) and its part of the board;
- a pipeline: its run history (``chm.runs.service.list_runs``, the keyset of
  the ordering rule), the latest runs for the strip and the duration chart,
  its alerts (``chm.alerts.service.list_alerts``), its schedule and whether
  the overdue report's statement (``chm.reports.overdue.overdue_query``)
  finds it overdue now;
- alerts: firing and recent alerts, active and other silences
  (``chm.alerts.service``).

Nothing here writes, and nothing shown is a secret: errors are the stored,
redacted texts; no source URL, token or delivery destination is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from chm.alerts.service import AlertRecord, list_alerts, list_silences
from chm.clients.summary import client_summary
from chm.core.cron import ticks_after
from chm.core.lookup import not_found
from chm.core.settings import Settings
from chm.ingestion.config import ConfigError, Sources
from chm.ingestion.health import HealthDetail, source_health
from chm.ingestion.sources_cache import SourcesCache
from chm.models import Alert, Client, Pipeline, Silence
from chm.reports.board import (
    BoardLimits,
    FailingClient,
    FailingPipeline,
    StatusBoard,
    build_board,
)
from chm.reports.overdue import EXPECTATION_COLUMNS, overdue_query
from chm.reports.schemas import OverdueRow
from chm.reports.sql import FixedClock, Scope, json_rows
from chm.runs.serialize import RunRow
from chm.runs.service import list_runs
from chm.schedules.expectation import Expectation, expect, since_of
from chm.web.chart import DurationChart, duration_chart

HISTORY_PAGE = 50  # runs per history page
STRIP_RUNS = 50  # runs in the status strip and the duration chart
PIPELINE_ALERTS = 20  # a pipeline's latest alerts shown on its page
FIRING_SHOWN = 100  # firing alerts on the alerts page (the rest: the API)
RECENT_PAGE = 50  # resolved alerts per page on the alerts page
SILENCES_SHOWN = 50
CLIENT_WINDOW = timedelta(hours=24)  # the client summary's window
# The now page shows the head of each long list (the headings count them
# all); a client's page shows all of its own. 10,000 pipelines can fail at
# once, and a page of thousands of rows, sent again at every refresh, helps
# nobody.
FAILING_PER_CLIENT = 10
ROWS_SHOWN = 50


# --- the now page -------------------------------------------------------------


FAILING_CLIENTS = 20  # clients whose failing pipelines the now page lists
NOW_LIMITS = BoardLimits(
    rows=ROWS_SHOWN, failing_per_client=FAILING_PER_CLIENT, failing_clients=FAILING_CLIENTS
)


@dataclass
class ClientGroup:
    client_id: str
    client_name: str
    pipelines: list[FailingPipeline]  # the first FAILING_PER_CLIENT
    total: int  # all of this client's failing pipelines


@dataclass
class NowPage:
    board: StatusBoard
    failing_by_client: list[ClientGroup]
    # The clients with failing pipelines the page lists none of (past FAILING_CLIENTS).
    more_failing_clients: list[FailingClient]
    health: HealthDetail
    rows_shown: int = ROWS_SHOWN


def group_by_client(board: StatusBoard) -> tuple[list[ClientGroup], list[FailingClient]]:
    """The board's failing pipelines (already by client, then pipeline) in one
    group per client, in the same order, with each client's total; and the
    clients with failing pipelines the board kept none of."""
    totals = {client.client_id: client.failing for client in board.failing_clients}
    groups: list[ClientGroup] = []
    for row in board.failing_now:
        if not groups or groups[-1].client_id != row.client_id:
            total = totals.get(row.client_id, 0)
            groups.append(ClientGroup(row.client_id, row.client_name, [], total))
        groups[-1].pipelines.append(row)
    shown = {group.client_id for group in groups}
    return groups, [c for c in board.failing_clients if c.client_id not in shown]


def sources_of(cache: SourcesCache, settings: Settings) -> tuple[Sources, str | None]:
    """The sources file as the server has it; one that cannot be loaded gives
    no sources and says why (as ``GET /healthz?detail=1`` does); none set,
    no sources and nothing to say."""
    if settings.config is None:
        return Sources([]), None
    try:
        return cache.load(settings.config, settings.env), None
    except ConfigError as error:
        return Sources([]), str(error)


def now_page(
    connection: Connection,
    as_of: datetime,
    settings: Settings,
    sources: Sources,
    sources_error: str | None,
) -> NowPage:
    with Session(bind=connection) as session:
        stuck_after = timedelta(minutes=settings.stuck_after_minutes)
        board = build_board(session, as_of, stuck_after, limits=NOW_LIMITS)
        health = source_health(session, sources, as_of, lease_s=settings.worker_lease_s)
    health.sources_error = sources_error
    groups, more = group_by_client(board)
    return NowPage(board, groups, more, health, rows_shown=NOW_LIMITS.rows)


# --- a client -----------------------------------------------------------------


@dataclass
class ClientPage:
    client_id: str
    name: str
    is_active: bool
    summary: dict[str, Any]  # chm.clients.summary's ClientSummary document
    board: StatusBoard


async def client_page(
    conn: AsyncConnection, client_id: int, as_of: datetime, settings: Settings
) -> ClientPage:
    found = (
        await conn.execute(
            sa.select(Client.id, Client.name, Client.is_active).where(Client.id == client_id)
        )
    ).first()
    if found is None:
        raise not_found("client", client_id)
    summary = await client_summary(conn, client_id, as_of - CLIENT_WINDOW, as_of)
    stuck_after = timedelta(minutes=settings.stuck_after_minutes)

    def board(connection: Connection) -> StatusBoard:
        with Session(bind=connection) as session:
            return build_board(session, as_of, stuck_after, (str(found.id), found.name))

    return ClientPage(
        str(found.id), found.name, found.is_active, summary, await conn.run_sync(board)
    )


# --- a pipeline ---------------------------------------------------------------


@dataclass
class ScheduleView:
    """The pipeline's schedule fields, the tick it expects a run for now, the
    next ticks, and its overdue row when the overdue report lists it now."""

    cron: str | None
    timezone: str
    grace_minutes: int
    deadline_minutes: int | None
    source: str | None
    note: str | None
    expectation: Expectation | None
    next_ticks: list[datetime]
    overdue: OverdueRow | None


@dataclass
class AlertView:
    """An alert with the names of its client and pipeline, and how its
    deliveries stand (counts by status; destinations are never shown)."""

    alert: Alert
    client_name: str
    pipeline_name: str
    deliveries: dict[str, int] = field(default_factory=dict)


@dataclass
class PipelinePage:
    pipeline_id: str
    name: str
    client_id: str
    client_name: str
    platform: str
    environment: str
    pipeline_type: str
    external_id: str | None
    is_active: bool
    client_is_active: bool
    last_ingested_at: datetime | None
    last_ingestion_error: str | None
    runs: list[RunRow]  # this history page, newest first
    next_cursor: str | None
    latest: list[RunRow]  # the latest STRIP_RUNS runs, newest first
    chart: DurationChart
    alerts: list[AlertView]
    schedule: ScheduleView


NEXT_TICKS = 3


def schedule_view(connection: Connection, pipeline: Any, as_of: datetime) -> ScheduleView:
    """The overdue report's own statement over this one pipeline's expectation
    (none: nothing is expected now, so it cannot be overdue)."""
    expectation, overdue, next_ticks = None, None, []
    if pipeline.schedule is not None:
        expectation = expect(
            pipeline.schedule,
            pipeline.schedule_timezone,
            pipeline.grace_minutes,
            pipeline.deadline_minutes,
            since_of(pipeline.created_at, pipeline.schedule_set_at),
            as_of,
        )
        next_ticks = ticks_after(
            pipeline.schedule,
            pipeline.schedule_timezone,
            as_of,
            as_of + timedelta(days=366),
            NEXT_TICKS,
        )
    if expectation is not None:
        relation = json_rows(
            "expectations",
            EXPECTATION_COLUMNS,
            [
                {
                    "pipeline_id": pipeline.id,
                    "expected_at": expectation.expected_at,
                    "window_start": expectation.window_start,
                    "due_missed": expectation.due_missed,
                    "due_late": expectation.due_late,
                }
            ],
        )
        query = overdue_query(relation, FixedClock(as_of), Scope(client_id=pipeline.client_id))
        row = connection.execute(query).mappings().first()
        overdue = OverdueRow.model_validate(dict(row)) if row is not None else None
    return ScheduleView(
        cron=pipeline.schedule,
        timezone=pipeline.schedule_timezone,
        grace_minutes=pipeline.grace_minutes,
        deadline_minutes=pipeline.deadline_minutes,
        source=pipeline.schedule_source,
        note=pipeline.schedule_note,
        expectation=expectation,
        next_ticks=next_ticks,
        overdue=overdue,
    )


def _names(session: Session, model: Any, ids: set[int]) -> dict[int, str]:
    """The names of ``ids`` in one query."""
    if not ids:
        return {}
    return dict(session.execute(sa.select(model.id, model.name).where(model.id.in_(ids))).all())


def alert_views(session: Session, records: list[AlertRecord]) -> list[AlertView]:
    """Alerts with their client's and pipeline's names: two queries for the lot."""
    clients = _names(session, Client, {r.alert.client_id for r in records})
    pipelines = _names(session, Pipeline, {r.alert.pipeline_id for r in records})
    return [
        AlertView(
            alert=r.alert,
            client_name=clients.get(r.alert.client_id, f"client {r.alert.client_id}"),
            pipeline_name=pipelines.get(r.alert.pipeline_id, f"pipeline {r.alert.pipeline_id}"),
            deliveries=dict(Counter(d.status for d in r.deliveries)),
        )
        for r in records
    ]


async def pipeline_page(
    conn: AsyncConnection, pipeline_id: int, cursor: str | None, as_of: datetime
) -> PipelinePage:
    pipeline = (
        await conn.execute(
            sa.select(
                Pipeline.id,
                Pipeline.name,
                Pipeline.client_id,
                Client.name.label("client_name"),
                Client.is_active.label("client_is_active"),
                Pipeline.platform,
                Pipeline.environment,
                Pipeline.pipeline_type,
                Pipeline.external_id,
                Pipeline.is_active,
                Pipeline.last_ingested_at,
                Pipeline.last_ingestion_error,
                Pipeline.schedule,
                Pipeline.schedule_timezone,
                Pipeline.grace_minutes,
                Pipeline.deadline_minutes,
                Pipeline.schedule_source,
                Pipeline.schedule_note,
                Pipeline.schedule_set_at,
                Pipeline.created_at,
            )
            .join(Client, Client.id == Pipeline.client_id)
            .where(Pipeline.id == pipeline_id)
        )
    ).first()
    if pipeline is None:
        raise not_found("pipeline", pipeline_id)
    runs, next_cursor = await list_runs(
        conn, pipeline_id=pipeline_id, limit=HISTORY_PAGE, cursor=cursor
    )
    if cursor is None and HISTORY_PAGE >= STRIP_RUNS:
        latest = runs[:STRIP_RUNS]
    else:
        latest, _ = await list_runs(conn, pipeline_id=pipeline_id, limit=STRIP_RUNS, cursor=None)

    def read(connection: Connection) -> tuple[list[AlertView], ScheduleView]:
        with Session(bind=connection) as session:
            records, _ = list_alerts(
                session, pipeline_id=pipeline_id, limit=PIPELINE_ALERTS, cursor=None
            )
            alerts = alert_views(session, records)
        return alerts, schedule_view(connection, pipeline, as_of)

    alerts, schedule = await conn.run_sync(read)
    return PipelinePage(
        pipeline_id=str(pipeline.id),
        name=pipeline.name,
        client_id=str(pipeline.client_id),
        client_name=pipeline.client_name,
        platform=pipeline.platform,
        environment=pipeline.environment,
        pipeline_type=pipeline.pipeline_type,
        external_id=pipeline.external_id,
        is_active=pipeline.is_active,
        client_is_active=pipeline.client_is_active,
        last_ingested_at=pipeline.last_ingested_at,
        last_ingestion_error=pipeline.last_ingestion_error,
        runs=runs,
        next_cursor=next_cursor,
        latest=latest,
        chart=duration_chart(latest),
        alerts=alerts,
        schedule=schedule,
    )


# --- alerts -------------------------------------------------------------------


@dataclass
class SilenceView:
    silence: Silence
    client_name: str | None
    pipeline_name: str | None


@dataclass
class AlertsPage:
    firing: list[AlertView]
    firing_more: bool  # more firing alerts than FIRING_SHOWN
    recent: list[AlertView]  # resolved, newest first (a page of them)
    next_cursor: str | None
    active_silences: list[SilenceView]
    other_silences: list[SilenceView]  # ended or not begun, newest first


def _silence_views(session: Session, silences: list[Silence]) -> list[SilenceView]:
    clients = _names(session, Client, {s.client_id for s in silences if s.client_id})
    pipelines = _names(session, Pipeline, {s.pipeline_id for s in silences if s.pipeline_id})
    return [
        SilenceView(
            s,
            clients.get(s.client_id) if s.client_id else None,
            pipelines.get(s.pipeline_id) if s.pipeline_id else None,
        )
        for s in silences
    ]


def alerts_page(connection: Connection, cursor: str | None, as_of: datetime) -> AlertsPage:
    with Session(bind=connection) as session:
        firing, more = list_alerts(session, state="firing", limit=FIRING_SHOWN, cursor=None)
        recent, next_cursor = list_alerts(
            session, state="resolved", limit=RECENT_PAGE, cursor=cursor
        )
        views = alert_views(session, firing + recent)
        active, _ = list_silences(
            session, active=True, now=as_of, limit=SILENCES_SHOWN, cursor=None
        )
        other, _ = list_silences(
            session, active=False, now=as_of, limit=SILENCES_SHOWN, cursor=None
        )
        silences = _silence_views(session, active + other)
    return AlertsPage(
        firing=views[: len(firing)],
        firing_more=more is not None,
        recent=views[len(firing) :],
        next_cursor=next_cursor,
        active_silences=silences[: len(active)],
        other_silences=silences[len(active) :],
    )
