"""The ingestion engine: every matching pipeline, page by page, to the end (FR-011..FR-015).

For each active pipeline with an ``external_id`` and a matching source, the
engine asks the platform's connector for the first page, then follows the
cursor until none remains. Each page is fetched with no database
transaction open, then mapped, redacted and upserted in one short write
transaction that commits before the next page is asked for: an ingestion
killed midway loses nothing, and a re-run completes it (the upsert makes the
replayed pages count as unchanged). See ``chm.ingestion.rule`` for the
no-regression rule and ``chm.ingestion.store`` for the writes.

A pipeline fails alone: a source error (after retries), an unexpected page
shape, an error the source answered in its page, a cursor seen twice (a
loop) or more than ``max_pages`` pages ends that pipeline's walk, keeps the
pages already committed, records the error on the pipeline and in the
report, and the engine moves on to the next one.

**Incremental ingestion.** Where the platform filters runs by time (the
connector's ``incremental``), the walk asks only for what changed since the
pipeline's watermark less the source's ``incremental_overlap_s``. The
watermark is the time the walk started (``clock()``), or for a filter on the
run's start, the start of the oldest run still queued or running if earlier
(so that run is asked for again until it ends); it is written in the same
transaction as the walk's last page, so it only moves once every page that
justifies it is committed: a walk that fails midway leaves it where it was.
``full=True`` ignores the watermark, reads everything, and sets it anew.

**Schedules learned from the platforms.** After a pipeline's walk, when its
platform can say how it is scheduled (``Platform.schedules``), its user set
no schedule (``schedule_source`` not ``user``) and the last read is at least
``schedule_refresh_s`` old (``CHM_SCHEDULE_REFRESH_S``; never read: now), the
engine asks for it through the same ``SourceClient`` (authentication,
retries, deadline, redaction) and applies it in one short write transaction
(``chm.schedules.learn.apply_platform_schedule``, which rechecks the user's
value under the row lock). A read that fails never fails the ingestion: it is
logged and recorded as the pipeline's ``schedule_note``
(``record_schedule_error``). Not tried when the walk found the source itself
down (every request would fail alike).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from chm.core.db import make_session_factory
from chm.core.errors import ValidationFailed
from chm.core.redaction import redact_text
from chm.core.settings import get_settings
from chm.core.status import TERMINAL_STATUSES
from chm.core.timeutil import utcnow
from chm.ingestion.config import Sources
from chm.ingestion.connectors import (
    BadExternalId,
    Connector,
    Fetched,
    IncrementalMode,
    PageShapeError,
    PlatformSchedule,
    SourceRejected,
    Window,
    connector_for,
    incremental_mode,
    read_time_keys,
    schedule_reader_for,
    without_read_time,
)
from chm.ingestion.fetch import SourceClient, SourceError, SourceUnavailable
from chm.ingestion.normalize import InvalidRun, clean_text, stored_document
from chm.ingestion.report import (
    IngestionReport,
    NoProgress,
    PipelineError,
    PipelineTarget,
    Progress,
)
from chm.ingestion.rule import PageCounts, Row, snapshot_row
from chm.ingestion.sources import AnySource, SourceBase, TokenMissing
from chm.ingestion.store import PlannerStatistics, run_store
from chm.models import Client, Pipeline
from chm.models.pipeline import active_inventory
from chm.schedules.learn import USER, apply_platform_schedule, record_schedule_error

logger = logging.getLogger("chm.ingestion")


class PipelineFailed(Exception):
    """Ends one pipeline's ingestion; the message is safe to show and store."""


class Abandoned(Exception):
    """The engine was asked to stop (``should_stop``): the walk ends before its
    next page, every page before it committed, and no outcome is recorded (the
    pipeline stays due). Raised by the ``sleep`` a worker passes, too."""


def watermark_key(source: AnySource, external_id: str) -> str:
    """Whose watermark a stored one is: a new source or external id starts afresh."""
    return f"{source.name}|{external_id}"[:800]


@dataclass
class WalkWatermark:
    """The watermark one walk earns, written with its last page."""

    key: str
    mode: IncrementalMode
    value: datetime
    reset: bool

    def observe(self, rows: list[Row]) -> None:
        """A filter on the run's start must keep asking for runs still active."""
        if self.mode != "started":
            return
        for row in rows:
            started = row["started_at"]
            if row["status"] not in TERMINAL_STATUSES and started is not None:
                self.value = min(self.value, started)


def resolve_scope(
    session: Session, client_id: int | None, pipeline_id: int | None
) -> tuple[int | None, int | None]:
    """The ``client_id``/``pipeline_id`` filters, checked: a 422 on the field naming
    a client or pipeline that does not exist, or a pipeline not of that client."""
    client = pipeline = None
    if client_id is not None:
        client = session.get(Client, client_id)
        if client is None:
            raise ValidationFailed.one(
                "client_id", "not_found", f"client '{client_id}' does not exist"
            )
    if pipeline_id is not None:
        pipeline = session.get(Pipeline, pipeline_id)
        if pipeline is None:
            raise ValidationFailed.one(
                "pipeline_id", "not_found", f"pipeline '{pipeline_id}' does not exist"
            )
        if client is not None and pipeline.client_id != client.id:
            raise ValidationFailed.one(
                "pipeline_id",
                "not_of_client",
                f"pipeline '{pipeline_id}' does not belong to client '{client_id}'",
            )
    return (client.id if client else None, pipeline.id if pipeline else None)


def select_pipelines(
    session: Session,
    client_id: int | None,
    pipeline_id: int | None,
    pipeline_ids: Collection[int] | None = None,
) -> list[PipelineTarget]:
    """Active pipelines (of active clients) that have an external id, by id."""
    query = (
        sa.select(
            Pipeline.id,
            Pipeline.name,
            Pipeline.platform,
            Pipeline.environment,
            Pipeline.external_id,
            Client.name.label("client_name"),
            Pipeline.ingest_watermark.label("watermark"),
            Pipeline.ingest_watermark_key.label("watermark_key"),
            Pipeline.schedule_source,
            Pipeline.schedule_checked_at,
        )
        .join(Client, Client.id == Pipeline.client_id)
        .where(
            active_inventory(),
            Pipeline.external_id.is_not(None),
        )
        .order_by(Pipeline.id)
    )
    if client_id is not None:
        query = query.where(Pipeline.client_id == client_id)
    if pipeline_id is not None:
        query = query.where(Pipeline.id == pipeline_id)
    if pipeline_ids is not None:
        query = query.where(Pipeline.id.in_(sorted(pipeline_ids)))
    return [PipelineTarget(**row) for row in session.execute(query).mappings()]


class IngestionEngine:
    """One ingestion over a database: ``run()`` answers the report."""

    def __init__(
        self,
        engine: Engine,
        sources: Sources,
        *,
        environ: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = utcnow,
        full: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        skip_failing_sources: bool = False,
        acquire: Callable[[PipelineTarget], None] | None = None,
        schedule_refresh_s: float | None = None,
    ) -> None:
        self.read_sessions = make_session_factory(engine)
        self.write_sessions = make_session_factory(engine, write=True)
        self.sources = sources
        self.environ = os.environ if environ is None else environ
        self.progress = progress or NoProgress()
        self.sleep = sleep
        self.clock = clock
        self.full = full
        # Checked before each page: a worker asked to stop ends the walk there.
        self.should_stop = should_stop
        # The worker's: once a source itself failed, its other pipelines of
        # this run are not tried (they stay due; the worker backs it off).
        self.skip_failing_sources = skip_failing_sources
        # Called before each pipeline's walk: a worker takes the pipeline's
        # lease there (waiting for another worker to finish it; it may raise
        # Abandoned). The lease is the worker's to release.
        self.acquire = acquire
        # How old a pipeline's last schedule read must be to read it again.
        self.schedule_refresh = timedelta(
            seconds=get_settings().schedule_refresh_s
            if schedule_refresh_s is None
            else schedule_refresh_s
        )
        self.abandoned = False
        self._failed_sources: set[str] = set()
        self._clients: dict[str, SourceClient] = {}
        self._store = run_store(engine)
        self._statistics = PlannerStatistics(engine)

    def run(
        self,
        client_id: int | None = None,
        pipeline_id: int | None = None,
        *,
        pipeline_ids: Collection[int] | None = None,
    ) -> IngestionReport:
        """Ingest the matching pipelines (also only ``pipeline_ids``, the worker's
        claimed batch); ``abandoned`` tells whether it stopped early."""
        report = IngestionReport()
        with self.read_sessions() as session:
            targets = select_pipelines(session, client_id, pipeline_id, pipeline_ids)
        matched = []
        for target in targets:
            source = self.sources.for_pipeline(
                target.platform, target.environment, target.client_name
            )
            if source is None:
                logger.info("%s: no source for platform %r, environment %r; skipped",
                            target.describe(), target.platform, target.environment)  # fmt: skip
            elif not source.pulls:
                logger.info("%s: source %r is push-only (OpenLineage); skipped",
                            target.describe(), source.name)  # fmt: skip
            else:
                matched.append((target, source))
        report.pipelines = len(matched)
        self.progress.pipelines_found(len(matched))
        with _collections_spare_what_exists():
            try:
                for target, source in matched:
                    if self.skip_failing_sources and source.name in self._failed_sources:
                        logger.info("%s: not tried: source %r failed just now",
                                    target.describe(), source.name)  # fmt: skip
                        continue
                    if self.acquire is not None:
                        self.acquire(target)
                    self._ingest_pipeline(target, source, report)
            except Abandoned:
                self.abandoned = True
                logger.info("ingestion stopped before its end, as asked")
            finally:
                for client in self._clients.values():
                    client.close()
                self._clients.clear()
        return report

    def _client(self, source: SourceBase) -> SourceClient:
        client = self._clients.get(source.name)
        if client is None:
            credentials = source.credentials(self.environ)
            client = SourceClient(source, credentials, sleep=self.sleep)
            self._clients[source.name] = client
        return client

    def _ingest_pipeline(
        self, target: PipelineTarget, source: AnySource, report: IngestionReport
    ) -> None:
        self.progress.pipeline_started(target, source.name)
        logger.info("%s: ingesting from source %r", target.describe(), source.name)
        attempted_at = self.clock()
        error: str | None = None
        source_failed = source_down = False
        # What this pipeline's committed pages did, for the source's counters.
        ingested = PageCounts()
        try:
            self._walk(target, source, report, ingested)
        except Abandoned:
            self._count_abandoned(target, source, ingested)
            raise
        except (SourceUnavailable, TokenMissing) as failure:
            error = f"source {source.name!r}: {failure}"
            source_down = True
            # One failure of the source per run, however many of its pipelines
            # found it down (its backoff grows by runs, not by pipelines).
            source_failed = source.name not in self._failed_sources
            self._failed_sources.add(source.name)
        except (PipelineFailed, SourceError) as failure:
            error = f"source {source.name!r}: {failure}"
        except SQLAlchemyError as failure:
            cause = type(getattr(failure, "orig", None) or failure).__name__
            error = f"database error while storing runs ({cause})"
        except Exception as failure:
            # A bug must not stop the other pipelines; the trace goes to the log.
            logger.exception("%s: unexpected error", target.describe())
            error = f"unexpected error ({type(failure).__name__})"
        if error is not None:
            client = self._clients.get(source.name)
            # A platform's error text may hold NULs, which PostgreSQL refuses.
            error = clean_text(client.redactor.text(error) if client else error)
            logger.error("%s: ingestion failed: %s", target.describe(), error)
            report.errors.append(PipelineError(pipeline_id=str(target.id), message=error))
        else:
            logger.info("%s: ingestion complete", target.describe())
        now = self.clock()
        try:
            with self.write_sessions.begin() as session:
                self._store.record_outcome(
                    session, target.id, now, error, attempted_at=attempted_at
                )
                self._store.record_source_outcome(
                    session, source.name, now, error, source_failed=source_failed, counts=ingested
                )
        except SQLAlchemyError as failure:
            # The outcome could not be stored (a value the database refuses):
            # at least the attempt is, so the pipeline is not retried at once
            # ahead of every other; a database that is down raises here again.
            cause = type(getattr(failure, "orig", None) or failure).__name__
            logger.error("%s: could not record the outcome (%s)", target.describe(), cause)
            with self.write_sessions.begin() as session:
                self._store.record_outcome(
                    session,
                    target.id,
                    now,
                    f"could not record the outcome ({cause})",
                    attempted_at=attempted_at,
                )
                self._store.count_ingested(session, source.name, ingested)
        if not source_down:
            self._learn_schedule(target, source)
        self.progress.pipeline_finished(target, error)

    def _count_abandoned(
        self, target: PipelineTarget, source: AnySource, ingested: PageCounts
    ) -> None:
        """The pages an abandoned walk committed still count for its source."""
        if not (ingested.created or ingested.updated or ingested.unchanged or ingested.skipped):
            return
        try:
            with self.write_sessions.begin() as session:
                self._store.count_ingested(session, source.name, ingested)
        except SQLAlchemyError as failure:
            cause = type(getattr(failure, "orig", None) or failure).__name__
            logger.error("%s: could not count the runs ingested (%s)", target.describe(), cause)

    def _learn_schedule(self, target: PipelineTarget, source: AnySource) -> None:
        """Read the platform's schedule of ``target`` when due, and apply it; a
        failure is logged and recorded on the pipeline, never raised."""
        if target.schedule_source == USER or self.should_stop():
            return
        checked = target.schedule_checked_at
        if checked is not None and self.clock() - checked < self.schedule_refresh:
            return
        client = self._clients.get(source.name)
        schedule: PlatformSchedule | None = None
        failure: str | None = None
        try:
            reader = schedule_reader_for(source, target.external_id)
            if reader is None:
                return
            client = self._client(source)
            context = f"{target.describe()} source {source.name!r} schedule"
            answer = client.fetch(reader.schedule_request(), context)
            schedule = reader.read_schedule(Fetched(answer.body, answer.headers))
        except Abandoned:
            raise
        except (SourceError, TokenMissing, BadExternalId, SourceRejected) as error:
            failure = str(error)
        except PageShapeError as shape:
            failure = f"the answer is not the expected shape: {shape}"
        except Exception as error:
            logger.exception("%s: unexpected error reading the schedule", target.describe())
            failure = f"unexpected error ({type(error).__name__})"
        redact = client.redactor.text if client is not None else redact_text
        now = self.clock()
        try:
            with self.write_sessions.begin() as session:
                if schedule is None:
                    why = clean_text(redact(f"could not read the platform's schedule: {failure}"))
                    logger.warning("%s: %s", target.describe(), why)
                    record_schedule_error(session, target.id, note=why, now=now)
                    return
                note = None if schedule.note is None else clean_text(redact(schedule.note))
                changed = apply_platform_schedule(
                    session, target.id, cron=schedule.cron, timezone=schedule.timezone,
                    note=note, now=now,
                )  # fmt: skip
        except SQLAlchemyError as error:
            cause = type(getattr(error, "orig", None) or error).__name__
            logger.error("%s: could not record the platform's schedule (%s)",
                         target.describe(), cause)  # fmt: skip
            return
        if schedule.cron is not None:
            logger.info("%s: platform schedule %r (%s)%s", target.describe(), schedule.cron,
                        schedule.timezone, ", changed" if changed else "")  # fmt: skip
        else:
            logger.info("%s: no platform schedule: %s", target.describe(), note)

    def _walk(
        self,
        target: PipelineTarget,
        source: AnySource,
        report: IngestionReport,
        ingested: PageCounts,
    ) -> None:
        client = self._client(source)
        now = self.clock()
        watermark = self._walk_watermark(target, source, now)
        since = None
        if watermark is not None and not watermark.reset:
            assert target.watermark is not None
            since = target.watermark - timedelta(seconds=source.incremental_overlap_s)
            logger.info("%s: incremental, changes since %s", target.describe(), since.isoformat())
        try:
            connector = connector_for(source, target.external_id, Window(now, since))
        except BadExternalId as bad:
            raise PipelineFailed(str(bad)) from None
        read_time = read_time_keys(source)
        followed: set[str] = set()
        cursor: str | None = None
        page_number = 0
        # Whether the previous page found most of its runs stored (a replay):
        # a hint to the store, which then compares at once.
        expect_stored = False
        while True:
            if self.should_stop():
                raise Abandoned
            if page_number >= source.max_pages:
                raise PipelineFailed(f"stopped after max_pages={source.max_pages} pages")
            page_number += 1
            context = f"{target.describe()} source {source.name!r} page {page_number}"
            answer = client.fetch(connector.page_request(cursor), context)
            try:
                page = connector.read_page(Fetched(answer.body, answer.headers, cursor))
            except PageShapeError as shape:
                raise PipelineFailed(
                    f"page {page_number} is not the expected shape: {shape}"
                ) from None
            except SourceRejected as rejected:
                raise PipelineFailed(
                    f"the source answered page {page_number} with an error: {rejected}"
                ) from None
            last = watermark if page.next_cursor is None else None
            counts = self._store_page(
                target, connector, read_time, client, page.runs, watermark, last, expect_stored
            )
            expect_stored = counts.created < counts.updated + counts.unchanged
            report.add_page(counts)
            ingested.add(
                PageCounts(counts.created, counts.updated, counts.unchanged, counts.skipped)
            )
            logger.info(
                "%s: %d runs (created %d, updated %d, unchanged %d, skipped %d)",
                context, len(page.runs), counts.created, counts.updated, counts.unchanged,
                counts.skipped,
            )  # fmt: skip
            for key, reason in counts.invalid:
                logger.warning("%s: run %r skipped: %s", context, key, reason)
            self.progress.page_stored(target, page_number, counts)
            if page.next_cursor is None:
                return
            if cursor is not None:
                followed.add(cursor)
            if page.next_cursor in followed:
                raise PipelineFailed(
                    f"page {page_number} returned a cursor already followed (a cursor loop)"
                )
            cursor = page.next_cursor

    def _walk_watermark(
        self, target: PipelineTarget, source: AnySource, now: datetime
    ) -> WalkWatermark | None:
        """The watermark this walk will earn; ``reset`` when there is none to start
        from (first walk, ``full``, or one of another source or external id)."""
        mode = incremental_mode(source)
        if mode is None:
            return None
        key = watermark_key(source, target.external_id)
        usable = target.watermark is not None and target.watermark_key == key
        return WalkWatermark(key, mode, now, reset=self.full or not usable)

    def _store_page(
        self,
        target: PipelineTarget,
        connector: Connector,
        read_time: frozenset[str],
        client: SourceClient,
        runs: list[Any],
        watermark: WalkWatermark | None = None,
        last: WalkWatermark | None = None,
        expect_stored: bool = False,
    ) -> PageCounts:
        snapshots: list[Row] = []
        rejected = PageCounts()
        snapshot = self._snapshot
        for index, raw in enumerate(runs):
            try:
                snapshots.append(snapshot(connector, read_time, client, raw))
            except InvalidRun as invalid:
                rejected.skipped += 1
                identity = client.redactor.text(_raw_identity(raw, index))
                rejected.invalid.append((identity, client.redactor.text(str(invalid))))
        if watermark is not None:
            watermark.observe(snapshots)
        with self.write_sessions.begin() as session:
            counts = self._store.upsert_page(
                session, target.id, snapshots, self.clock(), expect_stored=expect_stored
            )
            if last is not None:
                # The walk's last page: every page before it is committed.
                self._store.advance_watermark(
                    session, target.id, last.key, last.value, reset=last.reset
                )
        self._statistics.rows_created(counts.created)
        counts.add(rejected)
        return counts

    @staticmethod
    def _snapshot(
        connector: Connector, read_time: frozenset[str], client: SourceClient, raw: Any
    ) -> Row:
        if not isinstance(raw, dict):
            raise InvalidRun("the run is not a JSON object")
        run = connector.map_run(raw)
        # Redacted, then capped: the one rule of every path that stores runs
        # (chm.core.redaction.Redactor), with the secrets of this source.
        redactor = client.redactor
        # Values the platform computes at read time are no part of the run.
        stable = without_read_time(raw, read_time) if read_time else raw
        payload = stored_document(stable, redactor)
        # Metrics taken whole from a payload stored as it is are clean too (each
        # of their keys and strings is one of the payload's, within its size).
        if not (payload is stable and _is_member(run.metrics, stable)):
            run.metrics = stored_document(run.metrics, redactor)
        if run.error_message is not None:
            run.error_message = redactor.stored_text(run.error_message)
        return snapshot_row(run, payload)


@contextmanager
def _collections_spare_what_exists() -> Iterator[None]:
    """Python's full garbage collections skip every object that exists when the
    ingestion starts, until it ends.

    A full collection walks every object of the process (about 130,000 once
    CHM is imported: 40 ms and more each), and a walk's pages of short-lived
    objects set several off: on 100,000 runs they cost about a tenth of the
    time. ``gc.freeze`` sets the objects that exist aside for collections;
    ``gc.unfreeze`` puts them back at the end, so nothing stays out of
    collection (an ingestion running alongside merely loses the saving).
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _is_member(value: Any, document: dict[str, Any]) -> bool:
    """Whether ``value`` is one of ``document``'s own values (the same object)."""
    for member in document.values():  # noqa: SIM110 (a loop: any() over a generator costs more)
        if member is value:
            return True
    return False


def _raw_identity(raw: Any, index: int) -> str:
    for key in ("run_id", "runId"):
        if isinstance(raw, dict) and isinstance(raw.get(key), (str, int)):
            return str(raw[key])[:100]
    return f"#{index + 1} of the page"


def ingest(
    engine: Engine,
    sources: Sources,
    *,
    client_id: int | None = None,
    pipeline_id: int | None = None,
    **options: Any,
) -> IngestionReport:
    """Ingest every matching active pipeline; see ``IngestionEngine`` for ``options``."""
    return IngestionEngine(engine, sources, **options).run(client_id, pipeline_id)
