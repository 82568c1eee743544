"""``chm serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import copy
import logging
from typing import Annotated, Any

import typer

from chm.cli.runtime import (
    EXIT_FAILED,
    LOG_FORMAT,
    configure_logging,
    fail,
    load_settings,
    open_database,
)
from chm.core.settings import Environment
from chm.metrics.multiprocess import shared_metrics


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """The logging of each server process: uvicorn's own (its access log shows
    each query string) and every other logger's (CHM's) through the root
    logger, as ``configure_logging`` sets it, every handler behind the
    redacting filter (SE-002). uvicorn applies it in each process it starts
    (``--workers N``), where ``configure_logging`` of the parent never ran."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "chm.core.redaction.RedactingFilter"}}
    config["formatters"]["chm"] = {"format": LOG_FORMAT}
    config["handlers"]["chm"] = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "chm",
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["root"] = {"handlers": ["chm"], "level": level.upper()}
    return config


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
        raise fail("; ".join(problems), code=EXIT_FAILED)
    with open_database(settings):
        pass  # only the check: migrated, and this environment's (SE-004)
    if settings.read_database_url is not None:
        with open_database(settings, read=True):
            pass  # the replica too: the same kind of database, reachable, migrated
    configure_logging(settings.log_level)
    if settings.env is Environment.development and settings.api_token is None:
        logging.getLogger("chm").warning(
            "development mode: the API accepts requests without a token"
        )
    # Several processes share their HTTP metrics through a private directory
    # they inherit, removed when they have stopped (chm.metrics.multiprocess).
    with shared_metrics(workers):
        uvicorn.run(
            "chm.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            log_config=uvicorn_log_config(settings.log_level),
            # On SIGTERM or Ctrl-C: stop accepting, let requests in flight finish
            # for this long, then cancel them, so a stalled client or request
            # cannot keep the process alive.
            timeout_graceful_shutdown=settings.shutdown_timeout_s,
            timeout_keep_alive=settings.keep_alive_s,
        )
