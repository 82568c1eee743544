"""The inventory's metrics, computed from the database at scrape time.

``InventoryCollector`` is a prometheus_client custom collector: each scrape
reads the database once per family, with a few set-based statements (never
one per row), so every server process answers the same values and nothing is
kept in memory between scrapes. The statements are the reports' where one
fits (latest status, stuck runs: ``chm.reports.status``; overdue pipelines:
``chm.reports.overdue``) and the sources' health (``chm.ingestion.health``),
so the numbers are those of the JSON API at the same time.

Every label is bounded by configuration or a fixed vocabulary: a client's
name, a platform, a run status, a source's name (the sources file, or
``api:batch`` for the runs recorded by batches), a channel kind, a job
status. None is a run, pipeline or alert id, a pipeline's name, an error
text or a path.

A database that cannot be read answers ``chm_database_up 0`` without the
inventory's metrics (the scrape still succeeds, with the HTTP metrics): the
cause goes to the log.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from chm import __version__
from chm.alerts.channels.base import Undeliverable, kinds
from chm.alerts.destinations import split_destination
from chm.core.db import database_answers
from chm.core.dialects import dialect_for
from chm.core.settings import Settings
from chm.core.status import RunStatus
from chm.ingestion.batch import BATCH_SOURCE
from chm.ingestion.config import ConfigError, Sources
from chm.ingestion.health import HealthDetail, SourceState, source_health
from chm.ingestion.sources_cache import SourcesCache
from chm.models import Alert, AlertDelivery, Client, IngestionJob, IngestionSource
from chm.models.ingestion_job import JOB_STATUSES
from chm.reports.overdue import computed_expectations, overdue_query
from chm.reports.schemas import OverdueState
from chm.reports.sql import ACTIVE_INVENTORY, FixedClock
from chm.reports.status import latest_status_query, stuck_runs_query

logger = logging.getLogger("chm.metrics")

# The status of a pipeline without any run (chm_pipelines).
NO_RUNS = "none"
PIPELINE_STATUSES = (*(status.value for status in RunStatus), NO_RUNS)
# The kind of a delivery whose destination names no registered channel.
UNKNOWN_KIND = "unknown"
# The outcomes of a source run ingested (chm_ingested_runs_total), and the
# ingestion_sources counter of each.
RUN_OUTCOMES = {
    "created": IngestionSource.runs_created,
    "updated": IngestionSource.runs_updated,
    "unchanged": IngestionSource.runs_unchanged,
    "skipped": IngestionSource.runs_skipped,
}
INGESTION_RESULTS = {
    "succeeded": IngestionSource.ingestions_succeeded,
    "failed": IngestionSource.ingestions_failed,
}


def _timestamp(value: datetime) -> float:
    return value.timestamp()


def firing_alerts(connection: Connection) -> Metric:
    """``chm_alerts_firing{client}``: one sample per active client (0 when none
    of its alerts fires) and per inactive client with a firing alert."""
    firing = sa.func.count(Alert.id)
    rows = connection.execute(
        sa.select(Client.name, firing)
        .select_from(Client)
        .outerjoin(Alert, sa.and_(Alert.client_id == Client.id, Alert.state == "firing"))
        .group_by(Client.id, Client.name, Client.is_active)
        .having(sa.or_(Client.is_active.is_(True), firing > 0))
        .order_by(Client.name)
    )
    family = GaugeMetricFamily(
        "chm_alerts_firing",
        "Alerts firing now, by client (every active client, 0 when none fires)",
        labels=["client"],
    )
    for name, count in rows:
        family.add_metric([name], count)
    return family


def pipelines_by_status(connection: Connection, now: datetime) -> Metric:
    """``chm_pipelines{platform, status}``: the active pipelines (of active clients)
    by their latest run's status at ``now`` (the latest-status report's rows),
    ``none`` for a pipeline without runs; every status of a platform that has a
    pipeline, 0 included."""
    latest = (
        latest_status_query(FixedClock(now), ACTIVE_INVENTORY).order_by(None).subquery("latest")
    )
    status = sa.func.coalesce(latest.c.latest_status, NO_RUNS)
    rows = connection.execute(
        sa.select(latest.c.platform, status, sa.func.count()).group_by(latest.c.platform, status)
    )
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for platform, pipeline_status, count in rows:
        counts[platform][pipeline_status] = count
    family = GaugeMetricFamily(
        "chm_pipelines",
        "Active pipelines of active clients by platform and latest run status ('none': no run yet)",
        labels=["platform", "status"],
    )
    for platform in sorted(counts):
        for pipeline_status in PIPELINE_STATUSES:
            family.add_metric([platform, pipeline_status], counts[platform].get(pipeline_status, 0))
    return family


def stuck_runs(connection: Connection, now: datetime, older_than: timedelta) -> Metric:
    """``chm_stuck_runs``: the stuck-runs report's row count at ``now``."""
    stuck = stuck_runs_query(FixedClock(now), older_than, ACTIVE_INVENTORY).order_by(None)
    count = connection.execute(sa.select(sa.func.count()).select_from(stuck.subquery())).scalar()
    return GaugeMetricFamily(
        "chm_stuck_runs",
        "Runs of active pipelines still queued or running past CHM_STUCK_AFTER_MINUTES "
        "(the stuck-runs report)",
        value=count or 0,
    )


def overdue_pipelines(connection: Connection, now: datetime) -> Metric:
    """``chm_overdue_pipelines{state}``: the overdue report's rows at ``now`` by
    state (``missed``, ``late``), counted by the database."""
    with Session(bind=connection) as session:
        expectations = computed_expectations(session, now, ACTIVE_INVENTORY)
    overdue = overdue_query(expectations, FixedClock(now), ACTIVE_INVENTORY).order_by(None)
    rows = overdue.subquery("overdue")
    counts: dict[str, int] = {
        state: count
        for state, count in connection.execute(
            sa.select(rows.c.state, sa.func.count()).group_by(rows.c.state)
        )
    }
    family = GaugeMetricFamily(
        "chm_overdue_pipelines",
        "Scheduled pipelines whose expected run is missed or late (the overdue report)",
        labels=["state"],
    )
    for state in OverdueState:
        family.add_metric([state.value], counts.get(state.value, 0))
    return family


def ingestion_jobs(connection: Connection) -> Metric:
    """``chm_ingestion_jobs{status}``: ingestion jobs by status, 0 included."""
    rows = connection.execute(
        sa.select(IngestionJob.status, sa.func.count()).group_by(IngestionJob.status)
    )
    counts: dict[str, int] = {status: count for status, count in rows}
    family = GaugeMetricFamily(
        "chm_ingestion_jobs",
        "Ingestion jobs (POST /api/v1/ingestions with Prefer: respond-async) by status",
        labels=["status"],
    )
    for status in JOB_STATUSES:
        family.add_metric([status], counts.get(status, 0))
    return family


def delivery_kind(destination: str, registered: Sequence[str]) -> str:
    """A destination's channel kind (``slack`` of ``slack:#ops``); ``unknown``
    for a kind no channel registers or a malformed destination: a rule's
    free text never becomes a label."""
    try:
        kind = split_destination(destination).kind
    except Undeliverable:
        return UNKNOWN_KIND
    return kind if kind in registered else UNKNOWN_KIND


def deliveries(connection: Connection) -> list[Metric]:
    """``chm_alert_delivery_failures_total{kind}``: failed send attempts (every
    attempt of a delivery but the one that sent it), and
    ``chm_alert_deliveries{kind, status}``: deliveries by status; both by the
    channel kind of the destination, every registered kind, 0 included."""
    rows = connection.execute(
        sa.select(
            AlertDelivery.destination,
            AlertDelivery.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(AlertDelivery.attempts), 0),
        ).group_by(AlertDelivery.destination, AlertDelivery.status)
    )
    registered = kinds()
    failures: dict[str, int] = dict.fromkeys(registered, 0)
    by_status: dict[tuple[str, str], int] = {}
    for destination, status, count, attempts in rows:
        kind = delivery_kind(destination, registered)
        # A sent delivery's last attempt succeeded; every other attempt failed.
        failures[kind] = failures.get(kind, 0) + int(attempts) - (count if status == "sent" else 0)
        by_status[kind, status] = by_status.get((kind, status), 0) + count
    failed = CounterMetricFamily(
        "chm_alert_delivery_failures",
        "Failed attempts to send an alert delivery (retried or given up), by channel kind",
        labels=["kind"],
    )
    for kind in sorted(failures):
        failed.add_metric([kind], failures[kind])
    states = GaugeMetricFamily(
        "chm_alert_deliveries",
        "Alert deliveries stored, by channel kind and status (pending: still to send)",
        labels=["kind", "status"],
    )
    for kind, status in sorted(by_status):
        states.add_metric([kind, status], by_status[kind, status])
    return [failed, states]


def source_counters(
    connection: Connection, names: Sequence[str], pushed: Sequence[str] = ()
) -> list[Metric]:
    """``chm_ingested_runs_total{source, outcome}`` and
    ``chm_source_ingestions_total{source, result}`` of the pulling sources
    ``names``, and the runs alone of the ``pushed`` counters (runs recorded
    through the API, ingested by no walk: ``api:batch``); 0 for one never
    ingested: one ``IN`` query."""
    counted = [*names, *(name for name in pushed if name not in names)]
    columns = [*RUN_OUTCOMES.values(), *INGESTION_RESULTS.values()]
    stored: dict[str, Sequence[int]] = {}
    if counted:
        rows = connection.execute(
            sa.select(IngestionSource.name, *columns).where(IngestionSource.name.in_(counted))
        )
        stored = {row[0]: row[1:] for row in rows}
    runs = CounterMetricFamily(
        "chm_ingested_runs",
        "Source runs ingested by pulling, and runs recorded by POST /api/v1/runs:batch "
        "(source api:batch), by source and outcome (created, updated, unchanged: already "
        "stored as read, skipped: could not be stored)",
        labels=["source", "outcome"],
    )
    walks = CounterMetricFamily(
        "chm_source_ingestions",
        "Pipelines ingested from the source, by result (failed: the walk ended in an error)",
        labels=["source", "result"],
    )
    zeros = [0] * len(columns)
    for name in counted:
        values = stored.get(name, zeros)
        for index, outcome in enumerate(RUN_OUTCOMES):
            runs.add_metric([name, outcome], values[index])
    for name in names:
        values = stored.get(name, zeros)
        for index, result in enumerate(INGESTION_RESULTS, start=len(RUN_OUTCOMES)):
            walks.add_metric([name, result], values[index])
    return [runs, walks]


def source_health_metrics(health: HealthDetail, now: datetime) -> list[Metric]:
    """Each source's health as ``/healthz?detail=1`` shows it at ``now``, and the
    workers alive."""
    last_success = GaugeMetricFamily(
        "chm_source_last_success_timestamp_seconds",
        "When the source's last successful ingestion ended (Unix time); absent when "
        "it never succeeded",
        labels=["source"],
    )
    age = GaugeMetricFamily(
        "chm_source_last_success_age_seconds",
        "Seconds since the source's last successful ingestion; absent when it never succeeded",
        labels=["source"],
    )
    failures = GaugeMetricFamily(
        "chm_source_consecutive_failures",
        "Failures of the source itself (unreachable, refusing CHM) since its last success",
        labels=["source"],
    )
    state = GaugeMetricFamily(
        "chm_source_state",
        "The source's ingestion state (1 for its state, 0 for the others; docs/health.md)",
        labels=["source", "state"],
    )
    for source in health.sources:
        if source.last_success_at is not None:
            last_success.add_metric([source.name], _timestamp(source.last_success_at))
            age.add_metric([source.name], (now - source.last_success_at).total_seconds())
        failures.add_metric([source.name], source.consecutive_failures)
        for each in SourceState:
            state.add_metric([source.name, each.value], 1 if each is source.state else 0)
    workers = GaugeMetricFamily(
        "chm_workers_alive", "chm worker processes whose heartbeat is current",
        value=len(health.workers),
    )  # fmt: skip
    lost = GaugeMetricFamily(
        "chm_workers_lost",
        "chm worker processes that stopped without saying so in the last day",
        value=health.workers_lost,
    )
    return [last_success, age, failures, state, workers, lost]


class InventoryCollector:
    """The database-derived metrics of one scrape at ``now`` (a prometheus_client
    collector: registered for one scrape, ``collect`` reads the database)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        sources: SourcesCache,
        now: datetime,
        read_engine: Engine | None = None,
    ) -> None:
        self.engine = engine
        # The read database's (CHM_READ_DATABASE_URL), when there is one.
        self.read_engine = read_engine
        self.settings = settings
        self.sources = sources
        self.now = now

    def describe(self) -> list[Metric]:
        # Registering the collector must not read the database.
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        info = GaugeMetricFamily(
            "chm_build_info", "The running CHM's version (always 1)", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        try:
            sources, sources_valid = self._load_sources()
            with self.engine.connect() as connection:
                # The report statements, read as the reports read (no JIT).
                for statement in dialect_for(connection).report_reads:
                    connection.exec_driver_sql(statement)
                families = self._inventory(connection, sources)
            database_up = 1
        except SQLAlchemyError as error:
            cause = type(getattr(error, "orig", None) or error).__name__
            logger.error("metrics: the database could not be read (%s)", cause)
            families, database_up = [], 0
        yield GaugeMetricFamily(
            "chm_database_up",
            "1 when the database answered this scrape's queries; 0 when it did not (the "
            "inventory's metrics are then absent, the log says why)",
            value=database_up,
        )
        if self.read_engine is not None:
            yield GaugeMetricFamily(
                "chm_read_database_up",
                "1 when the read database (CHM_READ_DATABASE_URL), which the reports and "
                "pages read, answered this scrape; 0 when it did not (the log says why)",
                value=int(database_answers(self.read_engine)),
            )
        if database_up:
            yield GaugeMetricFamily(
                "chm_sources_file_valid",
                "1 when the sources file (CHM_CONFIG) loads; 0 when it is missing or invalid "
                "(GET /healthz?detail=1 says why)",
                value=sources_valid,
            )
        yield from families
        yield GaugeMetricFamily(
            "chm_metrics_collect_seconds",
            "Time this scrape took to compute CHM's metrics from the database",
            value=time.perf_counter() - started,
        )

    def _load_sources(self) -> tuple[Sources, int]:
        try:
            return self.sources.load(self.settings.config, self.settings.env), 1
        except ConfigError:
            return Sources([]), 0

    def _inventory(self, connection: Connection, sources: Sources) -> list[Metric]:
        now = self.now
        health = source_health(connection, sources, now, lease_s=self.settings.worker_lease_s)
        pulling = [source.name for source in sources.all if source.pulls]
        return [
            firing_alerts(connection),
            pipelines_by_status(connection, now),
            stuck_runs(connection, now, timedelta(minutes=self.settings.stuck_after_minutes)),
            overdue_pipelines(connection, now),
            *source_counters(connection, pulling, pushed=[BATCH_SOURCE]),
            *source_health_metrics(health, now),
            *deliveries(connection),
            ingestion_jobs(connection),
        ]
