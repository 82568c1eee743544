"""GET /alerts, GET /alerts/{id}, POST /alerts/{id}/acknowledge, and alert rules
of the types evaluation added (monitoring contract, "Alerts"). Alerts and
deliveries are written straight to the database, as evaluation writes them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chm.alerts.router import request_time
from chm.app import create_app
from chm.core.db import make_session_factory
from chm.core.settings import Environment, Settings
from chm.models import Alert, AlertDelivery
from factories import API, make_client, make_pipeline, make_rule, ok, walk

T = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

ALERT_FIELDS = {
    "id", "rule_id", "rule_type", "client_id", "pipeline_id", "state", "fingerprint",
    "fired_at", "resolved_at", "summary", "run_id", "acknowledged_at", "acknowledged_by",
    "acknowledgement_note", "deliveries",
}  # fmt: skip
DELIVERY_FIELDS = {
    "id", "destination", "event", "status", "attempts", "last_error", "created_at",
    "next_attempt_at", "sent_at",
}  # fmt: skip


def z(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def insert_alert(
    engine: Engine,
    rule: dict[str, Any],
    pipeline: dict[str, Any],
    fired_at: datetime,
    *,
    resolved_at: datetime | None = None,
    run_id: str | None = None,
    deliveries: tuple[dict[str, Any], ...] = (),
) -> str:
    """One alert as evaluation writes it, with ``deliveries`` (column values)."""
    fingerprint = hashlib.sha256(
        f"{rule['id']}:{pipeline['id']}:{fired_at.isoformat()}".encode()
    ).hexdigest()[:32]
    with make_session_factory(engine, write=True)() as session, session.begin():
        alert = Alert(
            rule_id=int(rule["id"]),
            rule_type=rule["rule_type"],
            client_id=int(pipeline["client_id"]),
            pipeline_id=int(pipeline["id"]),
            state="resolved" if resolved_at else "firing",
            fingerprint=fingerprint,
            fired_at=fired_at,
            resolved_at=resolved_at,
            summary=f"{pipeline['name']} has failed (latest run)",
            run_id=int(run_id) if run_id else None,
            last_notified_at=fired_at,
        )
        session.add(alert)
        session.flush()
        for values in deliveries:
            session.add(
                AlertDelivery(
                    alert_id=alert.id,
                    **{
                        "destination": rule["destination"],
                        "event": "firing",
                        "status": "pending",
                        "attempts": 0,
                        "created_at": fired_at,
                        "next_attempt_at": fired_at + timedelta(seconds=30),
                    }
                    | values,
                )
            )
        return str(alert.id)


@pytest.fixture
def at_t(api: TestClient) -> Iterator[TestClient]:
    """The API judging requests at T."""
    api.app.dependency_overrides[request_time] = lambda: T  # type: ignore[attr-defined]
    yield api
    api.app.dependency_overrides.clear()  # type: ignore[attr-defined]


@pytest.fixture
def acme(api: TestClient) -> dict[str, Any]:
    return make_client(api, "Acme")


@pytest.fixture
def orders(api: TestClient, acme: dict[str, Any]) -> dict[str, Any]:
    return make_pipeline(api, acme, "orders_daily")


@pytest.fixture
def rule(api: TestClient, acme: dict[str, Any]) -> dict[str, Any]:
    return make_rule(api, client_id=acme["id"], destination="webhook:ops")


def fields_of(response: Any) -> list[tuple[str, str]]:
    return sorted((e["field"], e["code"]) for e in response.json()["errors"])


# --- reading alerts ---


def test_an_alert_reads_with_every_field_and_its_deliveries_oldest_first(api, engine, rule, orders):
    run = ok(
        api.post(
            f"{API}/pipelines/{orders['id']}/runs",
            json={"status": "failed", "started_at": z(T - 5 * MINUTE)},
        ),
        201,
    )
    alert_id = insert_alert(
        engine,
        rule,
        orders,
        T,
        run_id=run["id"],
        deliveries=(
            {"status": "sent", "attempts": 2, "last_error": "HTTP 503", "sent_at": T + MINUTE},
            {"destination": "email:ops@example.com", "status": "undeliverable",
             "last_error": "CHM_SMTP_URL is not set"},
        ),
    )  # fmt: skip
    alert = ok(api.get(f"{API}/alerts/{alert_id}"))
    assert set(alert) == ALERT_FIELDS
    assert alert["id"] == alert_id and alert["rule_id"] == rule["id"]
    assert (alert["client_id"], alert["pipeline_id"]) == (orders["client_id"], orders["id"])
    assert alert["rule_type"] == "on_failure" and alert["state"] == "firing"
    assert alert["fired_at"] == "2026-03-15T12:00:00Z" and alert["resolved_at"] is None
    assert alert["run_id"] == run["id"] and len(alert["fingerprint"]) == 32
    assert alert["summary"] == "orders_daily has failed (latest run)"
    assert (alert["acknowledged_at"], alert["acknowledged_by"]) == (None, None)
    assert alert["acknowledgement_note"] is None
    sent, undeliverable = alert["deliveries"]
    assert set(sent) == DELIVERY_FIELDS and int(sent["id"]) < int(undeliverable["id"])
    assert sent == {
        "id": sent["id"],
        "destination": "webhook:ops",
        "event": "firing",
        "status": "sent",
        "attempts": 2,
        "last_error": "HTTP 503",
        "created_at": "2026-03-15T12:00:00Z",
        "next_attempt_at": "2026-03-15T12:00:30Z",
        "sent_at": "2026-03-15T12:01:00Z",
    }
    assert (undeliverable["status"], undeliverable["last_error"]) == (
        "undeliverable",
        "CHM_SMTP_URL is not set",
    )
    # The list shows the same document.
    assert ok(api.get(f"{API}/alerts"))["items"] == [alert]


def test_unknown_or_malformed_alert_ids_are_404_problems(api, engine, rule, orders):
    alert_id = insert_alert(engine, rule, orders, T)
    for bad in (str(int(alert_id) + 1), "abc", "0", "-1", "9" * 30):
        for response in (
            api.get(f"{API}/alerts/{bad}"),
            api.post(f"{API}/alerts/{bad}/acknowledge", json={"by": "ana"}),
        ):
            assert response.status_code == 404, bad
            assert response.headers["content-type"] == "application/problem+json"


def test_list_is_newest_first_with_ties_broken_by_id_and_pages_walk_every_alert_once(
    api, engine, acme, rule
):
    pipelines = [make_pipeline(api, acme, f"p{i}") for i in range(4)]
    fired = [T - 3 * MINUTE, T, T - MINUTE, T, T - 2 * MINUTE, T - MINUTE, T]
    ids = [
        insert_alert(engine, rule, pipelines[i % 4], when, resolved_at=when + MINUTE)
        for i, when in enumerate(fired)
    ]
    expected = [
        alert_id
        for _, alert_id in sorted(
            zip(fired, ids, strict=True), key=lambda p: (p[0], int(p[1])), reverse=True
        )
    ]
    first = ok(api.get(f"{API}/alerts"))
    assert [a["id"] for a in first["items"]] == expected and first["next_cursor"] is None
    for limit in (1, 2, 3):
        assert [a["id"] for a in walk(api, "/alerts", limit=limit)] == expected
    # A page boundary inside a run of equal fired_at, then new alerts arrive:
    # the walk goes on where it was, each alert once.
    page = ok(api.get(f"{API}/alerts", params={"limit": 2}))
    assert [a["id"] for a in page["items"]] == expected[:2]
    insert_alert(engine, rule, pipelines[0], T + MINUTE)
    rest = ok(api.get(f"{API}/alerts", params={"limit": 500, "cursor": page["next_cursor"]}))
    assert [a["id"] for a in rest["items"]] == expected[2:]


def test_the_page_reads_every_alerts_deliveries_in_one_query(api, engine, rule, acme):
    for i in range(5):
        pipeline = make_pipeline(api, acme, f"p{i}")
        insert_alert(
            engine,
            rule,
            pipeline,
            T - i * MINUTE,
            resolved_at=T,
            deliveries=({}, {"event": "resolved", "created_at": T}),
        )
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        page = ok(api.get(f"{API}/alerts"))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert [len(a["deliveries"]) for a in page["items"]] == [2] * 5
    assert [[d["event"] for d in a["deliveries"]] for a in page["items"]] == [
        ["firing", "resolved"]
    ] * 5
    assert sum("FROM alert_deliveries" in s for s in statements) == 1, statements


def test_filters_state_client_pipeline_rule_and_fired_at_window(api, engine, acme, orders, rule):
    globex = make_client(api, "Globex")
    billing = make_pipeline(api, globex, "billing")
    other_rule = make_rule(api, pipeline_id=billing["id"], rule_type="consecutive_failures",
                           threshold=3)  # fmt: skip
    a = insert_alert(engine, rule, orders, T - 60 * MINUTE, resolved_at=T - 30 * MINUTE)
    b = insert_alert(engine, rule, orders, T - 10 * MINUTE)
    c = insert_alert(engine, other_rule, billing, T - 30 * MINUTE)
    d = insert_alert(engine, other_rule, billing, T - 90 * MINUTE, resolved_at=T - 80 * MINUTE)

    def ids(**params: Any) -> list[str]:
        return [alert["id"] for alert in walk(api, "/alerts", **params)]

    assert ids() == [b, c, a, d]
    assert ids(state="firing") == [b, c]
    assert ids(state="resolved") == [a, d]
    assert ids(client_id=acme["id"]) == [b, a]
    assert ids(pipeline_id=billing["id"]) == [c, d]
    assert ids(rule_id=other_rule["id"], state="firing") == [c]
    assert ids(client_id=globex["id"], pipeline_id=orders["id"]) == []
    assert ids(client_id="999999") == []
    # Half-open on fired_at: since <= fired_at < until.
    assert ids(since=z(T - 60 * MINUTE), until=z(T - 10 * MINUTE)) == [c, a]
    assert ids(since=z(T - 30 * MINUTE)) == [b, c]
    assert ids(until=z(T - 60 * MINUTE)) == [d]
    assert ids(since="2026-03-15T11:00:00+01:00") == [b, c, a, d]  # 10:00 UTC


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"since": z(T), "until": z(T)}, "until", "not_after_since"),
        ({"since": z(T), "until": z(T - MINUTE)}, "until", "not_after_since"),
        ({"since": "yesterday"}, "since", "invalid_datetime"),
        ({"until": "1700000000"}, "until", "invalid_datetime"),
        ({"state": "open"}, "state", "invalid_choice"),
        ({"client_id": "acme"}, "client_id", "invalid_id"),
        ({"pipeline_id": "0"}, "pipeline_id", "invalid_id"),
        ({"rule_id": "-3"}, "rule_id", "invalid_id"),
        ({"limit": "0"}, "limit", "too_small"),
        ({"limit": "501"}, "limit", "too_large"),
        ({"cursor": "bm90LW91cnM"}, "cursor", "invalid_cursor"),
    ],
)
def test_bad_filters_are_422_on_the_parameter(api, params, field, code):
    response = api.get(f"{API}/alerts", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert fields_of(response) == [(field, code)]


def test_another_listings_cursor_is_refused(api, acme):
    for name in ("a", "b"):
        make_client(api, name)
    cursor = ok(api.get(f"{API}/clients", params={"limit": 1}))["next_cursor"]
    assert cursor is not None
    response = api.get(f"{API}/alerts", params={"cursor": cursor})
    assert response.status_code == 422 and fields_of(response) == [("cursor", "invalid_cursor")]


# --- acknowledgement ---


def test_acknowledge_a_firing_alert_answers_it_taken(at_t, engine, rule, orders):
    alert_id = insert_alert(engine, rule, orders, T - 10 * MINUTE, deliveries=({},))
    taken = ok(
        at_t.post(
            f"{API}/alerts/{alert_id}/acknowledge",
            json={"by": "  ana@example.com ", "note": "looking into it"},
        )
    )
    assert taken["state"] == "firing"
    assert taken["acknowledged_by"] == "ana@example.com"
    assert taken["acknowledgement_note"] == "looking into it"
    assert taken["acknowledged_at"] == "2026-03-15T12:00:00Z"
    assert len(taken["deliveries"]) == 1
    assert ok(at_t.get(f"{API}/alerts/{alert_id}")) == taken


def test_acknowledge_without_a_note(at_t, engine, rule, orders):
    alert_id = insert_alert(engine, rule, orders, T - 10 * MINUTE)
    taken = ok(at_t.post(f"{API}/alerts/{alert_id}/acknowledge", json={"by": "ana"}))
    assert (taken["acknowledged_by"], taken["acknowledgement_note"]) == ("ana", None)
    again = ok(at_t.post(f"{API}/alerts/{alert_id}/acknowledge", json={"by": "bo", "note": " "}))
    assert (again["acknowledged_by"], again["acknowledgement_note"]) == ("bo", None)


def test_acknowledge_answers_the_pending_repeat_superseded(at_t, engine, rule, orders):
    alert_id = insert_alert(
        engine,
        rule,
        orders,
        T - 300 * MINUTE,
        deliveries=(
            {"status": "sent", "attempts": 1, "sent_at": T - 299 * MINUTE},
            {"event": "repeat", "created_at": T - MINUTE, "next_attempt_at": T + MINUTE},
        ),
    )
    taken = ok(at_t.post(f"{API}/alerts/{alert_id}/acknowledge", json={"by": "ana"}))
    assert [(d["event"], d["status"]) for d in taken["deliveries"]] == [
        ("firing", "sent"),
        ("repeat", "superseded"),
    ]


def test_acknowledging_a_resolved_alert_is_a_409_that_changes_nothing(at_t, engine, rule, orders):
    alert_id = insert_alert(engine, rule, orders, T - 10 * MINUTE, resolved_at=T - MINUTE)
    before = ok(at_t.get(f"{API}/alerts/{alert_id}"))
    response = at_t.post(f"{API}/alerts/{alert_id}/acknowledge", json={"by": "ana"})
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert ok(at_t.get(f"{API}/alerts/{alert_id}")) == before


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({}, "by", "required"),
        ({"by": ""}, "by", "too_short"),
        ({"by": "   "}, "by", "too_short"),
        ({"by": None}, "by", "string_type"),
        ({"by": "x" * 201}, "by", "too_long"),
        ({"by": "ana", "note": 5}, "note", "string_type"),
        ({"by": "ana", "extra": 1}, "extra", "unknown_field"),
    ],
)
def test_acknowledge_body_is_validated(at_t, engine, rule, orders, body, field, code):
    alert_id = insert_alert(engine, rule, orders, T - 10 * MINUTE)
    response = at_t.post(f"{API}/alerts/{alert_id}/acknowledge", json=body)
    assert response.status_code == 422
    assert fields_of(response) == [(field, code)]
    assert ok(at_t.get(f"{API}/alerts/{alert_id}"))["acknowledged_at"] is None


def test_acknowledge_body_that_is_not_json_is_400(at_t, engine, rule, orders):
    alert_id = insert_alert(engine, rule, orders, T - 10 * MINUTE)
    response = at_t.post(
        f"{API}/alerts/{alert_id}/acknowledge",
        content=b"{by:",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400


# --- production mode ---

TOKEN = "prod-token-alerts-7c1e"


def test_production_needs_the_token_for_alerts_and_silences(db_url, engine, api, rule, orders):
    alert_id = insert_alert(engine, rule, orders, T)
    settings = Settings(env=Environment.production, database_url=db_url, api_token=TOKEN)
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as prod:
        for method, path in (
            ("GET", "/alerts"),
            ("GET", f"/alerts/{alert_id}"),
            ("POST", f"/alerts/{alert_id}/acknowledge"),
            ("GET", "/silences"),
            ("POST", "/silences"),
            ("GET", "/silences/1"),
            ("DELETE", "/silences/1"),
        ):
            response = prod.request(method, f"{API}{path}", json={"by": "ana"})
            assert response.status_code == 401, (method, path)
            assert TOKEN not in response.text
        authorized = prod.get(f"{API}/alerts", headers={"Authorization": f"Bearer {TOKEN}"})
        assert [a["id"] for a in ok(authorized)["items"]] == [alert_id]
    assert ok(api.get(f"{API}/alerts/{alert_id}"))["acknowledged_at"] is None


# --- alert rules of the new types ---


def test_consecutive_failures_and_long_running_need_a_threshold(api, acme):
    for rule_type in ("consecutive_failures", "long_running"):
        body = {"rule_type": rule_type, "client_id": acme["id"], "destination": "slack:#ops"}
        missing = api.post(f"{API}/alert-rules", json=body)
        assert missing.status_code == 422
        assert [(e["field"], e["code"], e["message"]) for e in missing.json()["errors"]] == [
            ("threshold", "required", f"threshold is required for {rule_type} rules")
        ]
        for bad in (0, -1, "3", 2.5, None):
            response = api.post(f"{API}/alert-rules", json=body | {"threshold": bad})
            assert response.status_code == 422 and fields_of(response)[0][0] == "threshold", bad
        window = api.post(f"{API}/alert-rules", json=body | {"threshold": 3, "window_minutes": 60})
        assert [(e["field"], e["code"], e["message"]) for e in window.json()["errors"]] == [
            ("window_minutes", "not_used", f"window_minutes is not used by {rule_type} rules")
        ]
        rule = make_rule(api, **body, threshold=3, window_minutes=None)
        assert (rule["rule_type"], rule["threshold"], rule["window_minutes"]) == (
            rule_type,
            3,
            None,
        )
        assert ok(api.get(f"{API}/alert-rules/{rule['id']}")) == rule


def test_duration_anomaly_takes_no_parameters(api, acme, orders):
    body = {"rule_type": "duration_anomaly", "pipeline_id": orders["id"], "destination": "x"}
    for extra, field in (
        ({"threshold": 3}, "threshold"),
        ({"window_minutes": 5}, "window_minutes"),
    ):
        response = api.post(f"{API}/alert-rules", json=body | extra)
        assert response.status_code == 422
        assert fields_of(response) == [(field, "not_used")]
    rule = make_rule(api, **body, threshold=None)
    assert (rule["threshold"], rule["window_minutes"], rule["effective_scope"]) == (
        None,
        None,
        "pipeline",
    )
    # The same type and destination on the same scope, enabled, is a duplicate.
    assert api.post(f"{API}/alert-rules", json=body).status_code == 409


def test_changing_a_rules_type_is_validated_as_a_whole(api, acme):
    rule = make_rule(
        api, client_id=acme["id"], rule_type="failures_in_window", threshold=5, window_minutes=30
    )
    path = f"{API}/alert-rules/{rule['id']}"
    response = api.patch(path, json={"rule_type": "duration_anomaly"})
    assert response.status_code == 422
    assert fields_of(response) == [("threshold", "not_used"), ("window_minutes", "not_used")]
    response = api.patch(path, json={"rule_type": "long_running"})
    assert fields_of(response) == [("window_minutes", "not_used")]
    running = ok(api.patch(path, json={"rule_type": "long_running", "window_minutes": None}))
    assert (running["rule_type"], running["threshold"], running["window_minutes"]) == (
        "long_running",
        5,
        None,
    )
    response = api.patch(path, json={"threshold": None})
    assert [(e["field"], e["code"], e["message"]) for e in response.json()["errors"]] == [
        ("threshold", "required", "threshold is required for long_running rules")
    ]
    anomaly = ok(api.patch(path, json={"rule_type": "duration_anomaly", "threshold": None}))
    assert (anomaly["threshold"], anomaly["window_minutes"]) == (None, None)
    listed = walk(api, "/alert-rules", rule_type="duration_anomaly")
    assert [r["id"] for r in listed] == [rule["id"]]


def test_the_schema_has_a_body_per_rule_type(api):
    document = api.get("/openapi.json").json()
    body = document["paths"]["/api/v1/alert-rules"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    components = document["components"]["schemas"]
    variants = {
        tag: components[ref.rsplit("/", 1)[-1]]
        for tag, ref in schema["discriminator"]["mapping"].items()
    }
    assert set(variants) == {
        "on_failure",
        "failures_in_window",
        "consecutive_failures",
        "long_running",
        "duration_anomaly",
        "missed_schedule",
    }
    for tag in ("consecutive_failures", "long_running"):
        assert "threshold" in variants[tag]["required"]
        assert variants[tag]["properties"]["window_minutes"]["type"] == "null"
    anomaly = variants["duration_anomaly"]
    assert {"threshold", "window_minutes"}.isdisjoint(anomaly["required"])
    assert {anomaly["properties"][f]["type"] for f in ("threshold", "window_minutes")} == {"null"}
    rule_types = components["AlertRuleOut"]["properties"]["rule_type"]
    enum = components[rule_types["$ref"].rsplit("/", 1)[-1]]["enum"]
    assert set(enum) == set(variants)
