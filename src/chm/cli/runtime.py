"""What every ``chm`` command shares: settings, redacted logging, the database.

Exit codes, the same for every command: 0 done, 1 the work or the database
failed (unreachable, not migrated, another environment's), 2 bad usage or
configuration (an invalid setting, a malformed ``CHM_DATABASE_URL``, a bad
option). Failures are one plain ``chm: ...`` line on stderr, never a trace.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from chm.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """A plain one-line message on stderr and a non-zero exit (raise the answer)."""
    typer.echo(f"chm: {message}", err=True)
    return typer.Exit(code)


def load_settings() -> Settings:
    """The CHM_* settings; an invalid one is a plain message and exit 2."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"CHM_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise fail(f"invalid settings: {problems}") from None


def configure_logging(level: str, handler: logging.Handler | None = None) -> None:
    """Every log line to stderr (or through ``handler``) behind the redacting
    filter (SE-002), whoever logs it."""
    from chm.core.redaction import RedactingFilter

    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@contextmanager
def open_database(
    settings: Settings, *, verify_environment: bool = True, read: bool = False
) -> Iterator[Engine]:
    """The engine of CHM_DATABASE_URL (with ``read``: of the report reads,
    CHM_READ_DATABASE_URL when set), disposed on leaving; the database's
    failures inside the block become a plain message and an exit code.

    With ``verify_environment`` the database must be migrated and belong to
    this process's environment (SE-004) before the block runs. A malformed
    URL exits 2; an unreachable, unmigrated or foreign database, or any
    database error in the block, exits 1 (the error's class, never its SQL
    or the URL).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from chm.core.db import create_db_engine, normalize_database_url, read_database_url
    from chm.core.environment import (
        DatabaseNotMigrated,
        EnvironmentMismatch,
        verify_database_environment,
    )

    try:
        primary = normalize_database_url(settings.effective_database_url)
    except Exception as exc:  # a malformed URL: say so plainly
        raise fail(f"invalid CHM_DATABASE_URL: {exc}") from None
    url, variable = settings.effective_database_url, "CHM_DATABASE_URL"
    if read and settings.read_database_url is not None:
        url, variable = settings.effective_read_database_url, "CHM_READ_DATABASE_URL"
    try:
        read_database_url(url, primary)
        engine = create_db_engine(url, **settings.pool_options)
    except Exception as exc:
        raise fail(f"invalid {variable}: {exc}") from None
    try:
        if verify_environment:
            verify_database_environment(engine, settings.env)
        yield engine
    except (DatabaseNotMigrated, EnvironmentMismatch) as exc:
        raise fail(str(exc), code=EXIT_FAILED) from None
    except SQLAlchemyError as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
        raise fail(
            f"cannot reach or read the database ({cause}); is it up, and its schema at head"
            " (chm db upgrade)?",
            code=EXIT_FAILED,
        ) from None
    finally:
        engine.dispose()
