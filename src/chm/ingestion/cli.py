"""``chm ingest``: the command behind ``chm.cli``'s ``ingest`` (contract: Ingestion).

Exit codes: 0 when every pipeline was ingested, 1 when some failed (the others
are still ingested and committed), 2 on bad usage or configuration. With
``--json`` the report is the only thing on stdout; logs and the progress
display (on a terminal) go to stderr.
"""

from __future__ import annotations

import logging
import sys

import orjson
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from chm.core.db import create_db_engine, make_session_factory
from chm.core.environment import (
    DatabaseNotMigrated,
    EnvironmentMismatch,
    verify_database_environment,
)
from chm.core.errors import ValidationFailed
from chm.core.redaction import RedactingFilter
from chm.core.settings import Settings
from chm.ingestion.config import ConfigError, load_sources
from chm.ingestion.engine import ingest, resolve_scope
from chm.ingestion.report import IngestionReport, NoProgress, PipelineTarget
from chm.ingestion.upsert import PageCounts

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage or configuration: exit 2 with this message."""


class TerminalProgress(NoProgress):
    """Pipelines and pages, drawn on stderr while the engine works."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[pages]} pages, {task.fields[runs]} runs"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task("pipelines", total=0, pages=0, runs=0)

    def __enter__(self) -> TerminalProgress:
        self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.bar.stop()

    def pipelines_found(self, count: int) -> None:
        self.bar.update(self.task, total=count)

    def pipeline_started(self, target: PipelineTarget, source_name: str) -> None:
        self.bar.update(self.task, description=f"{target.describe()} <- {source_name}")

    def page_stored(self, target: PipelineTarget, page: int, counts: PageCounts) -> None:
        task = self.bar.tasks[0]
        runs = counts.created + counts.updated + counts.unchanged + counts.skipped
        self.bar.update(self.task, pages=task.fields["pages"] + 1, runs=task.fields["runs"] + runs)

    def pipeline_finished(self, target: PipelineTarget, error: str | None) -> None:
        self.bar.advance(self.task)


def _configure_logging(level: str, console: Console | None) -> None:
    handler: logging.Handler
    if console is not None:
        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # One line per HTTP request is noise next to the per-page log lines.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _summary(report: IngestionReport) -> str:
    lines = [
        f"pipelines: {report.pipelines}  pages: {report.pages}",
        f"runs: created {report.runs_created}, updated {report.runs_updated}, "
        f"unchanged {report.runs_unchanged}, skipped {report.runs_skipped}",
    ]
    lines += [f"error: pipeline {e.pipeline_id}: {e.message}" for e in report.errors]
    return "\n".join(lines)


def run_ingest(
    settings: Settings,
    client_id: str | None,
    pipeline_id: str | None,
    as_json: bool,
    *,
    full: bool = False,
) -> int:
    """Run ``chm ingest``; answers the exit code."""
    stderr = Console(stderr=True)
    interactive = stderr.is_terminal
    _configure_logging(settings.log_level, stderr if interactive else None)
    settings.register_secrets()
    try:
        sources = load_sources(settings.config, settings.env)
    except ConfigError as error:
        return _usage(str(error))
    try:
        engine = create_db_engine(settings.effective_database_url)
    except Exception as error:  # a malformed URL: say so plainly
        return _usage(f"invalid CHM_DATABASE_URL: {error}")
    try:
        verify_database_environment(engine, settings.env)
        with make_session_factory(engine)() as session:
            client, pipeline = resolve_scope(session, client_id, pipeline_id)
        if interactive:
            with TerminalProgress(stderr) as progress:
                report = ingest(engine, sources, client_id=client, pipeline_id=pipeline,
                                progress=progress, full=full)  # fmt: skip
        else:
            report = ingest(engine, sources, client_id=client, pipeline_id=pipeline, full=full)
    except (DatabaseNotMigrated, EnvironmentMismatch) as error:
        print(f"chm: {error}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except ValidationFailed as error:
        issue = error.errors[0]
        return _usage(f"--{issue.field.removesuffix('_id')}: {issue.message}")
    except SQLAlchemyError as error:
        # Unreachable, or never migrated: say so, without SQL text.
        cause = type(getattr(error, "orig", None) or error).__name__
        print(f"chm: database error ({cause}): is the database reachable and its schema "
              "at head (chm db upgrade)?", file=sys.stderr)  # fmt: skip
        return EXIT_SOME_FAILED
    finally:
        engine.dispose()
    if as_json:
        sys.stdout.write(orjson.dumps(report.model_dump(mode="json")).decode() + "\n")
    else:
        print(_summary(report))
    sys.stdout.flush()
    return EXIT_SOME_FAILED if report.errors else EXIT_OK


def _usage(message: str) -> int:
    print(f"chm: {message}", file=sys.stderr)
    return EXIT_USAGE
