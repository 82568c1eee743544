"""``chm ingest`` (contract: Ingestion).

Exit codes: 0 when every pipeline was ingested, 1 when some failed (the others
are still ingested and committed) or the database did, 2 on bad usage or
configuration. With ``--json`` the report is the only thing on stdout; logs
and the progress display (on a terminal) go to stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chm.cli.runtime import (
    EXIT_FAILED,
    EXIT_OK,
    configure_logging,
    fail,
    load_settings,
    open_database,
)

if TYPE_CHECKING:
    from chm.ingestion.report import IngestionReport, PipelineTarget
    from chm.ingestion.rule import PageCounts


class TerminalProgress:
    """Pipelines and pages, drawn on stderr while the engine works
    (``chm.ingestion.report.Progress``)."""

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


def _summary(report: IngestionReport) -> str:
    lines = [
        f"pipelines: {report.pipelines}  pages: {report.pages}",
        f"runs: created {report.runs_created}, updated {report.runs_updated}, "
        f"unchanged {report.runs_unchanged}, skipped {report.runs_skipped}",
    ]
    lines += [f"error: pipeline {e.pipeline_id}: {e.message}" for e in report.errors]
    return "\n".join(lines)


def ingest(
    client: Annotated[str | None, typer.Option(help="Only this client's pipelines (id)")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline (id)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout")] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Re-read every run, not only what changed (backfill)")
    ] = False,
) -> None:
    """Ingest the runs of every matching active pipeline from its source (CHM_CONFIG)."""
    import orjson

    from chm.core.db import make_session_factory
    from chm.core.errors import ValidationFailed
    from chm.core.ids import reference_id
    from chm.ingestion.config import ConfigError, load_sources
    from chm.ingestion.engine import ingest as run_ingestion
    from chm.ingestion.engine import resolve_scope

    settings = load_settings()
    stderr = Console(stderr=True)
    interactive = stderr.is_terminal
    configure_logging(
        settings.log_level,
        RichHandler(console=stderr, show_path=False, markup=False) if interactive else None,
    )
    # One line per HTTP request is noise next to the per-page log lines.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings.register_secrets()
    # The sources file first (exit 2), then the database.
    try:
        sources = load_sources(settings.config, settings.env)
    except ConfigError as error:
        raise fail(str(error)) from None
    with open_database(settings) as engine:
        try:
            with make_session_factory(engine)() as session:
                client_id, pipeline_id = resolve_scope(
                    session,
                    reference_id(client, "client_id", "client"),
                    reference_id(pipeline, "pipeline_id", "pipeline"),
                )
        except ValidationFailed as error:
            issue = error.errors[0]
            raise fail(f"--{issue.field.removesuffix('_id')}: {issue.message}") from None
        if interactive:
            with TerminalProgress(stderr) as progress:
                report = run_ingestion(
                    engine,
                    sources,
                    client_id=client_id,
                    pipeline_id=pipeline_id,
                    progress=progress,
                    full=full,
                    schedule_refresh_s=settings.schedule_refresh_s,
                )
        else:
            report = run_ingestion(
                engine,
                sources,
                client_id=client_id,
                pipeline_id=pipeline_id,
                full=full,
                schedule_refresh_s=settings.schedule_refresh_s,
            )
    if as_json:
        sys.stdout.write(orjson.dumps(report.model_dump(mode="json")).decode() + "\n")
    else:
        print(_summary(report))
    sys.stdout.flush()
    raise typer.Exit(EXIT_FAILED if report.errors else EXIT_OK)
