"""`chm alerts` (text and --json) and the firing alerts at the top of `chm status`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chm.core.db import make_session_factory
from chm.models import Alert, AlertDelivery
from factories import API, make_client, make_pipeline, make_rule, make_run, ok

T = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
T_TEXT = "2026-03-15T12:00:00Z"
MINUTE = timedelta(minutes=1)

Run = Callable[..., Any]


def insert_alert(
    engine: Engine,
    rule: dict[str, Any],
    pipeline: dict[str, Any],
    fired_at: datetime,
    summary: str,
    *,
    resolved_at: datetime | None = None,
    acknowledged_by: str | None = None,
    statuses: tuple[str, ...] = (),
) -> str:
    """An alert as evaluation writes it, with one delivery per status in ``statuses``."""
    key = f"{rule['id']}:{pipeline['id']}:{fired_at.isoformat()}"
    with make_session_factory(engine, write=True)() as session, session.begin():
        alert = Alert(
            rule_id=int(rule["id"]),
            rule_type=rule["rule_type"],
            client_id=int(pipeline["client_id"]),
            pipeline_id=int(pipeline["id"]),
            state="resolved" if resolved_at else "firing",
            fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
            fired_at=fired_at,
            resolved_at=resolved_at,
            summary=summary,
            acknowledged_by=acknowledged_by,
            acknowledged_at=fired_at + MINUTE if acknowledged_by else None,
            last_notified_at=fired_at,
        )
        session.add(alert)
        session.flush()
        for status in statuses:
            session.add(
                AlertDelivery(
                    alert_id=alert.id,
                    destination=rule["destination"],
                    event="firing",
                    status=status,
                    attempts=1 if status in ("sent", "failed") else 0,
                    created_at=fired_at,
                    next_attempt_at=fired_at,
                )
            )
        return str(alert.id)


@pytest.fixture
def alerts(api: TestClient, engine: Engine) -> dict[str, Any]:
    """Acme's orders_daily firing (acknowledged) and billing resolved; Globex's
    warehouse_load firing, with a long summary."""
    acme, globex = make_client(api, "Acme"), make_client(api, "Globex")
    orders = make_pipeline(api, acme, "orders_daily")
    billing = make_pipeline(api, acme, "billing_sync")
    warehouse = make_pipeline(api, globex, "warehouse_load")
    acme_rule = make_rule(api, client_id=acme["id"], rule_type="consecutive_failures", threshold=3)
    globex_rule = make_rule(api, client_id=globex["id"], destination="webhook:ops")
    long_summary = (
        "warehouse_load (Globex, airflow/prod) has failed (latest run): "
        + "[ERROR] the warehouse refused the connection "
        + "again " * 12
    )
    ids = {
        "orders": insert_alert(
            engine, acme_rule, orders, T - 30 * MINUTE,
            "orders_daily (Acme, airflow/prod) failed 3 times in a row",
            acknowledged_by="ana", statuses=("sent", "failed"),
        ),
        "billing": insert_alert(
            engine, acme_rule, billing, T - 120 * MINUTE,
            "billing_sync (Acme, airflow/prod) failed 3 times in a row",
            resolved_at=T - 60 * MINUTE, statuses=("sent",),
        ),
        "warehouse": insert_alert(
            engine, globex_rule, warehouse, T - 10 * MINUTE, long_summary,
            statuses=("undeliverable",),
        ),
    }  # fmt: skip
    return {"acme": acme, "globex": globex, "ids": ids, "long_summary": long_summary}


def test_text_lists_alerts_newest_first_within_80_columns(chm, alerts):
    result = chm("alerts")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    ids = alerts["ids"]
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == [ids["warehouse"], ids["orders"], ids["billing"]]
    assert [row[1] for row in rows] == ["firing", "firing", "resolved"]
    assert rows[0][2:4] == ["2026-03-15", "11:50"]
    flat = " ".join(text.split())
    assert "orders_daily (Acme, airflow/prod) failed 3 times in a row" in flat
    assert "acknowledged by ana" in flat
    assert "deliveries: 1 failed, 1 sent" in flat
    assert "deliveries: 1 undeliverable" in flat
    # A long summary folds over lines, whole.
    assert " ".join(alerts["long_summary"].split()) in flat


def test_state_and_client_filters(chm, alerts):
    ids = alerts["ids"]

    def listed(*args: str) -> list[str]:
        result = chm("alerts", "--json", *args)
        assert result.exit_code == 0, result.output
        return [a["id"] for a in json.loads(result.stdout)["items"]]

    assert listed("--state", "firing") == [ids["warehouse"], ids["orders"]]
    assert listed("--state", "resolved") == [ids["billing"]]
    assert listed("--client", alerts["acme"]["id"]) == [ids["orders"], ids["billing"]]
    assert listed("--client", alerts["globex"]["id"], "--state", "resolved") == []
    text = chm("alerts", "--client", alerts["globex"]["id"], "--state", "resolved")
    assert text.exit_code == 0 and text.stdout.strip() == "No resolved alerts."


def test_json_is_the_apis_page(chm, api, alerts):
    result = chm("alerts", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ok(api.get(f"{API}/alerts"))
    first = json.loads(chm("alerts", "--json", "--limit", "2").stdout)
    assert first == ok(api.get(f"{API}/alerts", params={"limit": 2}))
    assert first["next_cursor"] is not None
    rest = json.loads(chm("alerts", "--json", "--cursor", first["next_cursor"]).stdout)
    assert [a["id"] for a in rest["items"]] == [alerts["ids"]["billing"]]
    assert rest["next_cursor"] is None
    text = chm("alerts", "--limit", "1")
    assert "The newest 1 shown; more with --limit" in " ".join(text.stdout.split())


def test_no_alerts_at_all(chm, api):
    result = chm("alerts")
    assert result.exit_code == 0 and result.stdout.strip() == "No alerts."
    assert json.loads(chm("alerts", "--json").stdout) == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "open"], "--state: 'open' is not one of firing, resolved"),
        (["--client", "acme"], "--client: client 'acme' does not exist"),
        (["--client", "424242"], "--client: client '424242' does not exist"),
        (["--limit", "0"], "--limit: must be between 1 and 500"),
        (["--cursor", "not-ours"], "--cursor: cursor was not issued by this server"),
    ],
)
def test_bad_options_are_a_plain_message_and_exit_2(chm, api, args, message):
    result = chm("alerts", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


# --- chm status ---


def test_status_shows_firing_alerts_first(chm, api, alerts):
    orders = ok(api.get(f"{API}/pipelines", params={"client_id": alerts["acme"]["id"]}))
    failing = next(p for p in orders["items"] if p["name"] == "orders_daily")
    make_run(api, failing, "failed", started_at="2026-03-15T11:00:00Z", error_message="boom")
    result = chm("status", "--as-of", T_TEXT)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    titles = [i for i, line in enumerate(lines) if line and not line.startswith(" ")]
    assert lines[titles[1]] == "Firing alerts (2)", "the first section after the title"
    failing_at = next(i for i, line in enumerate(lines) if line.startswith("Failing now"))
    block = " ".join(" ".join(lines[titles[1] : failing_at]).split())
    assert block.index("warehouse_load") < block.index("orders_daily")
    for expected in ("Globex", "Acme", "2026-03-15 11:50", "2026-03-15 11:30",
                     "failed 3 times in a row acknowledged by ana"):  # fmt: skip
        assert expected in block
    assert "billing_sync" not in block
    assert "[ERROR] the warehouse refused" in block


def test_status_json_has_firing_alerts_first(chm, alerts):
    result = chm("status", "--as-of", T_TEXT, "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    keys = list(board)
    assert keys.index("firing_alerts") < keys.index("failing_now")
    ids = alerts["ids"]
    assert board["firing_alerts_total"] == 2
    warehouse, orders = board["firing_alerts"]
    assert (warehouse["alert_id"], orders["alert_id"]) == (ids["warehouse"], ids["orders"])
    assert orders == {
        "alert_id": ids["orders"],
        "rule_id": orders["rule_id"],
        "rule_type": "consecutive_failures",
        "client_id": alerts["acme"]["id"],
        "client_name": "Acme",
        "pipeline_id": orders["pipeline_id"],
        "pipeline_name": "orders_daily",
        "summary": "orders_daily (Acme, airflow/prod) failed 3 times in a row",
        "fired_at": "2026-03-15T11:30:00Z",
        "acknowledged_by": "ana",
    }


def test_status_shows_the_alerts_open_at_its_time_and_of_its_client(chm, alerts):
    def firing(*args: str) -> list[str]:
        result = chm("status", "--json", *args)
        assert result.exit_code == 0, result.output
        return [a["pipeline_name"] for a in json.loads(result.stdout)["firing_alerts"]]

    # At 10:30 billing fired (10:00) and had not yet resolved (11:00).
    assert firing("--as-of", "2026-03-15T10:30:00Z") == ["billing_sync"]
    assert firing("--as-of", "2026-03-15T11:00:00Z") == []
    assert firing("--as-of", "2026-03-15T11:45:00Z") == ["orders_daily"]
    assert firing("--as-of", T_TEXT, "--client", "acme") == ["orders_daily"]
    assert firing("--as-of", T_TEXT, "--client", "Globex") == ["warehouse_load"]


def test_status_without_alerts_says_none_first(chm, api):
    make_client(api, "Acme")
    result = chm("status", "--as-of", T_TEXT)
    assert result.exit_code == 0, result.output
    titles = [line for line in result.stdout.splitlines() if line and not line.startswith(" ")]
    assert titles[1] == "Firing alerts: none"
    board = json.loads(chm("status", "--as-of", T_TEXT, "--json").stdout)
    assert (board["firing_alerts"], board["firing_alerts_total"]) == ([], 0)


def test_status_caps_the_firing_alerts_it_shows(chm, api, engine):
    from chm.reports.board import FIRING_ALERTS_SHOWN

    acme = make_client(api, "Acme")
    rule = make_rule(api, client_id=acme["id"])
    count = FIRING_ALERTS_SHOWN + 2
    for i in range(count):
        pipeline = make_pipeline(api, acme, f"p{i:02d}")
        insert_alert(engine, rule, pipeline, T - (i + 1) * MINUTE, f"p{i:02d} has failed")
    board = json.loads(chm("status", "--as-of", T_TEXT, "--json").stdout)
    assert board["firing_alerts_total"] == count
    assert [a["pipeline_name"] for a in board["firing_alerts"]] == [
        f"p{i:02d}" for i in range(FIRING_ALERTS_SHOWN)
    ]
    text = " ".join(chm("status", "--as-of", T_TEXT).stdout.split())
    assert f"Firing alerts ({count}, newest {FIRING_ALERTS_SHOWN} shown; all: chm alerts" in text
