"""The ``chm`` command line: serve, db upgrade (more commands register here)."""

from __future__ import annotations

import copy
import logging
import sys
from typing import Annotated, Any

import typer

from chm.core.settings import Environment, Settings, get_settings

app = typer.Typer(
    name="chm",
    help="CHM: pipeline run-health service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def fail(message: str, code: int = 2) -> typer.Exit:
    """A plain one-line message on stderr and a non-zero exit."""
    typer.echo(f"chm: {message}", err=True)
    return typer.Exit(code)


def load_settings() -> Settings:
    """The CHM_* settings; an invalid one is a plain message and exit 2."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CHM_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"invalid settings: {problems}") from None


def configure_logging(level: str) -> None:
    from chm.core.redaction import RedactingFilter

    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging (its access log shows each query string), every
    handler behind the redacting filter (SE-002)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "chm.core.redaction.RedactingFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    return config


def require_our_database(settings: Settings) -> None:
    """Refuse a database that is not migrated or belongs to another environment
    (SE-004), with a one-line reason and exit code 1."""
    from sqlalchemy.exc import OperationalError

    from chm.core.db import create_db_engine
    from chm.core.environment import (
        DatabaseNotMigrated,
        EnvironmentMismatch,
        verify_database_environment,
    )

    try:
        engine = create_db_engine(settings.effective_database_url)
    except Exception as exc:  # a malformed URL: say so plainly
        raise fail(f"invalid CHM_DATABASE_URL: {exc}") from None
    try:
        verify_database_environment(engine, settings.env)
    except (DatabaseNotMigrated, EnvironmentMismatch) as exc:
        raise fail(str(exc), code=1) from None
    except OperationalError as exc:
        raise fail(f"cannot reach the database: {type(exc.orig).__name__}", code=1) from None
    finally:
        engine.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes", min=1)] = 1,
) -> None:
    """Serve the HTTP API (docs at /docs, schema at /openapi.json)."""
    import uvicorn

    settings = load_settings()
    problems = settings.production_problems()
    if problems:
        raise fail("; ".join(problems), code=1)
    require_our_database(settings)
    configure_logging(settings.log_level)
    if settings.env is Environment.development and settings.api_token is None:
        logging.getLogger("chm").warning(
            "development mode: the API accepts requests without a token"
        )
    uvicorn.run(
        "chm.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_log_config(),
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Create or migrate the schema of CHM_DATABASE_URL to the latest revision."""
    from sqlalchemy.exc import OperationalError

    from chm.core.db import create_db_engine
    from chm.core.environment import EnvironmentMismatch
    from chm.core.migrate import upgrade

    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        engine = create_db_engine(settings.effective_database_url)
    except Exception as exc:  # a malformed URL: say so plainly
        raise fail(f"invalid CHM_DATABASE_URL: {exc}") from None
    try:
        upgrade(engine, revision)
    except EnvironmentMismatch as exc:
        raise fail(str(exc), code=1) from None
    except OperationalError as exc:
        raise fail(f"cannot reach the database: {type(exc.orig).__name__}", code=1) from None
    finally:
        engine.dispose()
    typer.echo(f"database at revision {revision} ({engine.dialect.name}, {settings.env.value})")


@app.command()
def ingest(
    client: Annotated[str | None, typer.Option(help="Only this client's pipelines (id)")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline (id)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout")] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Re-read every run, not only what changed (backfill)")
    ] = False,
) -> None:
    """Ingest the runs of every matching active pipeline from its source (CHM_CONFIG)."""
    from chm.ingestion.cli import run_ingest

    # run_ingest checks the sources file first (exit 2), then the database.
    raise typer.Exit(run_ingest(load_settings(), client, pipeline, as_json, full=full))


@app.command()
def status(
    client: Annotated[str | None, typer.Option(help="Only this client (by name)")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="As of this time (RFC 3339; default: now)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The board as JSON on stdout")] = False,
) -> None:
    """The status board: failing now, stuck runs, changes since yesterday, counts by status."""
    from chm.reports.board import run_status_board

    settings = load_settings()
    require_our_database(settings)
    raise typer.Exit(run_status_board(settings, client, as_of, as_json))


if __name__ == "__main__":
    app()
