"""The ``chm`` command line: one Typer app, a module per command group.

``runtime`` holds what every command shares (settings, redacted logging, the
database and the exit codes); ``serve``, ``db``, ``ingest``, ``status``,
``alerts`` and ``worker`` are the commands. A new command is a module here and one line below.
"""

from __future__ import annotations

import typer

from chm.cli import alerts, db, ingest, serve, status, worker

app = typer.Typer(
    name="chm",
    help="CHM: pipeline run-health service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve.serve)
app.add_typer(db.app, name="db")
app.command()(ingest.ingest)
app.command()(status.status)
app.command()(alerts.alerts)
app.command()(worker.worker)

__all__ = ["app"]
