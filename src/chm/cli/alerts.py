"""``chm alerts``: the alerts, newest first, as ``GET /api/v1/alerts`` lists them.

A table fitted to the terminal, or with ``--json`` the API's page (``items``,
``next_cursor``) on stdout. Exit codes as every command: 2 for a bad option,
1 when the database fails.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chm.cli.runtime import fail, load_settings, open_database
from chm.core.timeutil import as_utc

if TYPE_CHECKING:
    from chm.alerts.service import AlertRecord

STATES = ("firing", "resolved")
_STATE_STYLES = {"firing": "bold red", "resolved": "green"}


def _deliveries(record: AlertRecord) -> str:
    """``deliveries: 2 sent, 1 failed``: how the alert was told, in words."""
    counts = Counter(delivery.status for delivery in record.deliveries)
    return "deliveries: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _table(records: list[AlertRecord]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("ID", no_wrap=True, justify="right")
    table.add_column("State", no_wrap=True)
    table.add_column("Fired (UTC)", no_wrap=True)
    table.add_column("Summary", overflow="fold", ratio=1)
    for record in records:
        alert = record.alert
        state = Text(alert.state, style=_STATE_STYLES.get(alert.state, ""))
        summary = Text(alert.summary)
        if alert.acknowledged_by:
            summary.append(f"\nacknowledged by {alert.acknowledged_by}")
        if record.deliveries:
            summary.append("\n" + _deliveries(record), style="dim")
        table.add_row(
            str(alert.id), state, as_utc(alert.fired_at).strftime("%Y-%m-%d %H:%M"), summary
        )
    return table


def alerts(
    state: Annotated[
        str | None, typer.Option(help="Only alerts in this state: firing or resolved")
    ] = None,
    client: Annotated[str | None, typer.Option(help="Only this client's alerts (id)")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first (1..500)")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Go on after a page: its next_cursor (--json)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The API's page as JSON on stdout")
    ] = False,
) -> None:
    """The alerts, newest first, with how each was delivered."""
    from chm.alerts.schemas import AlertOut
    from chm.alerts.service import list_alerts
    from chm.core.db import make_session_factory
    from chm.core.errors import ValidationFailed
    from chm.core.ids import reference_id
    from chm.core.pagination import MAX_LIMIT, Page
    from chm.models import Client

    if state is not None and state not in STATES:
        raise fail(f"--state: {state!r} is not one of {', '.join(STATES)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise fail(f"--limit: must be between 1 and {MAX_LIMIT}")
    try:
        client_id = reference_id(client, "client_id", "client")
    except ValidationFailed as error:
        raise fail(f"--client: {error.errors[0].message}") from None
    settings = load_settings()
    with open_database(settings) as engine, make_session_factory(engine)() as session:
        if client_id is not None and session.get(Client, client_id) is None:
            raise fail(f"--client: client {client!r} does not exist")
        try:
            records, next_cursor = list_alerts(
                session, state=state, client_id=client_id, limit=limit, cursor=cursor
            )
        except ValidationFailed as error:
            raise fail(f"--cursor: {error.errors[0].message}") from None
        if as_json:
            page = Page[AlertOut](
                items=[AlertOut.of(r.alert, r.deliveries) for r in records],
                next_cursor=next_cursor,
            )
            print(json.dumps(page.model_dump(mode="json"), indent=2))
            return
        console = Console(highlight=False)
        if not records:
            console.print("No alerts." if state is None else f"No {state} alerts.")
            return
        console.print(_table(records))
        if next_cursor is not None:
            console.print(
                f"The newest {len(records)} shown; more with --limit (up to {MAX_LIMIT}),"
                " or --cursor with the next_cursor of --json."
            )
