"""``chm db ...``: the database schema, and retention (``chm db prune``)."""

from __future__ import annotations

from typing import Annotated

import typer

from chm.cli.runtime import configure_logging, fail, load_settings, open_database

app = typer.Typer(help="Database schema and retention commands.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Create or migrate the schema of CHM_DATABASE_URL to the latest revision."""
    from chm.core.migrate import upgrade as migrate

    settings = load_settings()
    configure_logging(settings.log_level)
    # Not verified first: upgrade is what records the environment, and it
    # refuses another environment's database itself (exit 1).
    with open_database(settings, verify_environment=False) as engine:
        migrate(engine, revision)
    typer.echo(f"database at revision {revision} ({engine.dialect.name}, {settings.env.value})")


def _days(raw: str) -> int:
    """``--older-than-days``: a whole number of days, at least 1 (else exit 2)."""
    try:
        days = int(raw.strip())
    except ValueError:
        raise fail(f"--older-than-days: {raw!r} is not a whole number of days") from None
    if days < 1:
        raise fail(f"--older-than-days: must be at least 1 (got {days})")
    return days


@app.command("prune")
def prune(
    older_than_days: Annotated[
        str,
        typer.Option(
            "--older-than-days",
            metavar="DAYS",
            help="Delete runs whose event time is more than this many days ago (>= 1)",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The outcome as JSON on stdout")] = False,
) -> None:
    """Delete old runs once, in batches of CHM_RETENTION_BATCH, keeping each
    pipeline's latest run (docs/retention.md)."""
    import orjson

    from chm.core.timeutil import isoformat_z, utcnow
    from chm.worker.retention import prune as prune_runs
    from chm.worker.retention import retention_cutoff

    days = _days(older_than_days)
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        cutoff = retention_cutoff(utcnow().replace(microsecond=0), days)
    except OverflowError:
        raise fail(f"--older-than-days: {days} days ago is before year 1") from None
    with open_database(settings) as engine:
        report = prune_runs(
            engine, older_than=cutoff, batch_size=settings.retention_batch, dry_run=dry_run
        )
    if as_json:
        typer.echo(orjson.dumps(report.model_dump(mode="json")).decode())
        return
    verb = "would delete" if report.dry_run else "deleted"
    typer.echo(
        f"{verb} {report.runs_deleted} runs of {report.pipelines_touched} pipelines"
        f" with event time before {isoformat_z(report.cutoff)}"
        " (each pipeline's latest run before it is kept)"
    )
    if report.dry_run:
        typer.echo("dry run: nothing was deleted")
    else:
        typer.echo(
            f"{report.batches} batches of at most {report.batch_size} runs"
            f" in {report.elapsed_s:.1f} s"
        )
