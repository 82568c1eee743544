"""POST/GET /silences, GET/DELETE /silences/{id} (monitoring contract, "Alerts"),
judged at a fixed request time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from chm.alerts.router import request_time
from chm.alerts.service import SilenceEnded, end_silence
from chm.core.db import make_session_factory
from factories import API, make_client, make_pipeline, make_rule, make_run, ok, walk

T = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SILENCE_FIELDS = {
    "id", "client_id", "pipeline_id", "rule_id", "starts_at", "ends_at", "reason",
    "created_by", "created_at", "active",
}  # fmt: skip


def z(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(api: TestClient) -> Iterator[Clock]:
    """The time the API judges requests at: T until a test moves it."""
    clock = Clock()
    api.app.dependency_overrides[request_time] = clock  # type: ignore[attr-defined]
    yield clock
    api.app.dependency_overrides.clear()  # type: ignore[attr-defined]


@pytest.fixture
def acme(api: TestClient) -> dict[str, Any]:
    return make_client(api, "Acme")


@pytest.fixture
def orders(api: TestClient, acme: dict[str, Any]) -> dict[str, Any]:
    return make_pipeline(api, acme, "orders_daily")


@pytest.fixture
def silence(api: TestClient, clock: Clock) -> Callable[..., dict[str, Any]]:
    def create(**fields: Any) -> dict[str, Any]:
        body = {"ends_at": z(T + HOUR), "reason": "maintenance", "created_by": "ana", **fields}
        return ok(api.post(f"{API}/silences", json=body), 201)

    return create


def errors_of(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return sorted((e["field"], e["code"]) for e in response.json()["errors"])


def test_create_answers_201_with_location_and_starts_now_by_default(api, clock, acme, orders):
    rule = make_rule(api, client_id=acme["id"])
    body = {
        "client_id": acme["id"],
        "pipeline_id": orders["id"],
        "rule_id": rule["id"],
        "ends_at": "2026-03-15T15:00:00+02:00",
        "reason": "  warehouse upgrade ",
        "created_by": "ana@example.com",
    }
    response = api.post(f"{API}/silences", json=body)
    assert response.status_code == 201
    created = response.json()
    assert set(created) == SILENCE_FIELDS
    assert response.headers["location"] == f"{API}/silences/{created['id']}"
    assert created == {
        "id": created["id"],
        "client_id": acme["id"],
        "pipeline_id": orders["id"],
        "rule_id": rule["id"],
        "starts_at": "2026-03-15T12:00:00Z",
        "ends_at": "2026-03-15T13:00:00Z",
        "reason": "warehouse upgrade",
        "created_by": "ana@example.com",
        "created_at": "2026-03-15T12:00:00Z",
        "active": True,
    }
    assert ok(api.get(response.headers["location"])) == created


def test_one_scope_is_enough_and_a_start_may_be_given(silence, acme, orders):
    by_client = silence(client_id=acme["id"])
    assert (by_client["pipeline_id"], by_client["rule_id"]) == (None, None)
    by_pipeline = silence(pipeline_id=orders["id"])
    assert (by_pipeline["client_id"], by_pipeline["pipeline_id"]) == (None, orders["id"])
    later = silence(pipeline_id=orders["id"], starts_at=z(T + HOUR), ends_at=z(T + 2 * HOUR))
    assert later["starts_at"] == "2026-03-15T13:00:00Z" and later["active"] is False
    began = silence(client_id=acme["id"], starts_at=z(T - HOUR))
    assert began["active"] is True


def test_a_silence_needs_a_scope_naming_the_three_fields(api, clock):
    for scope in ({}, {"client_id": None, "pipeline_id": None, "rule_id": None}):
        body = {"ends_at": z(T + HOUR), "reason": "r", "created_by": "ana", **scope}
        assert errors_of(api.post(f"{API}/silences", json=body)) == [
            ("client_id", "scope_required"),
            ("pipeline_id", "scope_required"),
            ("rule_id", "scope_required"),
        ]


def test_references_must_exist_and_agree(api, clock, acme, orders):
    base = {"ends_at": z(T + HOUR), "reason": "r", "created_by": "ana"}
    unknown = {"client_id": "999999", "pipeline_id": "999998", "rule_id": "999997"}
    assert errors_of(api.post(f"{API}/silences", json=base | unknown)) == [
        ("client_id", "not_found"),
        ("pipeline_id", "not_found"),
        ("rule_id", "not_found"),
    ]
    malformed = api.post(f"{API}/silences", json=base | {"rule_id": "rule-1"})
    assert errors_of(malformed) == [("rule_id", "not_found")]
    globex = make_client(api, "Globex")
    mismatch = api.post(
        f"{API}/silences", json=base | {"client_id": globex["id"], "pipeline_id": orders["id"]}
    )
    assert errors_of(mismatch) == [("pipeline_id", "not_of_client")]
    rule = make_rule(api, client_id=acme["id"])
    ok(api.delete(f"{API}/alert-rules/{rule['id']}"), 204)
    deleted = api.post(f"{API}/silences", json=base | {"rule_id": rule["id"]})
    assert errors_of(deleted) == [("rule_id", "not_found")]
    assert ok(api.get(f"{API}/silences"))["items"] == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"ends_at": z(T)}, [("ends_at", "not_in_future")]),
        ({"ends_at": z(T - HOUR)}, [("ends_at", "not_in_future")]),
        ({"ends_at": "2026-03-15T12:30:00+01:00"}, [("ends_at", "not_in_future")]),
        (
            {"starts_at": z(T + 2 * HOUR), "ends_at": z(T + HOUR)},
            [("ends_at", "not_after_starts_at")],
        ),
        (
            {"starts_at": z(T + HOUR), "ends_at": z(T + HOUR)},
            [("ends_at", "not_after_starts_at")],
        ),
        ({"ends_at": None}, [("ends_at", "invalid_datetime")]),
        ({"ends_at": "tomorrow"}, [("ends_at", "invalid_datetime")]),
        ({"starts_at": 1773576000}, [("starts_at", "invalid_datetime")]),
        ({"reason": ""}, [("reason", "too_short")]),
        ({"reason": "  "}, [("reason", "too_short")]),
        ({"created_by": "x" * 201}, [("created_by", "too_long")]),
        ({"active": True}, [("active", "unknown_field")]),
    ],
)
def test_times_and_texts_are_validated(api, clock, acme, fields, expected):
    body = {
        "client_id": acme["id"],
        "ends_at": z(T + HOUR),
        "reason": "r",
        "created_by": "ana",
    } | fields
    assert errors_of(api.post(f"{API}/silences", json=body)) == expected


def test_required_fields_are_named_at_once(api, clock, acme):
    response = api.post(f"{API}/silences", json={"client_id": acme["id"]})
    assert errors_of(response) == [
        ("created_by", "required"),
        ("ends_at", "required"),
        ("reason", "required"),
    ]


def test_list_is_newest_first_and_filters_on_active_at_the_request_time(
    api, clock, silence, acme, orders
):
    ended_soon = silence(client_id=acme["id"], ends_at=z(T + HOUR))
    pending = silence(pipeline_id=orders["id"], starts_at=z(T + HOUR), ends_at=z(T + 3 * HOUR))
    long = silence(client_id=acme["id"], ends_at=z(T + 5 * HOUR))

    def ids(**params: Any) -> list[str]:
        return [s["id"] for s in walk(api, "/silences", **params)]

    assert ids() == [long["id"], pending["id"], ended_soon["id"]]
    assert ids(limit=1) == ids(limit=2) == ids()
    assert ids(active="true") == [long["id"], ended_soon["id"]]
    assert ids(active="false") == [pending["id"]]
    clock.now = T + 2 * HOUR  # the first has ended, the second has begun
    assert ids(active="true") == [long["id"], pending["id"]]
    assert ids(active="false") == [ended_soon["id"]]
    assert ok(api.get(f"{API}/silences/{ended_soon['id']}"))["active"] is False
    assert {s["id"]: s["active"] for s in walk(api, "/silences")} == {
        long["id"]: True,
        pending["id"]: True,
        ended_soon["id"]: False,
    }


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"active": "maybe"}, "active", "bool_parsing"),
        ({"limit": "0"}, "limit", "too_small"),
        ({"cursor": "not-ours"}, "cursor", "invalid_cursor"),
    ],
)
def test_bad_list_parameters_are_422(api, clock, params, field, code):
    assert errors_of(api.get(f"{API}/silences", params=params)) == [(field, code)]


def test_unknown_or_malformed_silence_ids_are_404(api, clock, silence, acme):
    created = silence(client_id=acme["id"])
    for bad in (str(int(created["id"]) + 1), "abc", "0", "01"):
        for response in (api.get(f"{API}/silences/{bad}"), api.delete(f"{API}/silences/{bad}")):
            assert response.status_code == 404, bad
            assert response.headers["content-type"] == "application/problem+json"


def test_delete_ends_it_now_and_a_second_delete_is_a_409(api, clock, silence, acme):
    created = silence(client_id=acme["id"], starts_at=z(T - HOUR), ends_at=z(T + 5 * HOUR))
    clock.now = T + HOUR
    response = api.delete(f"{API}/silences/{created['id']}")
    assert response.status_code == 200
    ended = response.json()
    assert ended == created | {"ends_at": "2026-03-15T13:00:00Z", "active": False}
    assert ok(api.get(f"{API}/silences/{created['id']}")) == ended
    assert [s["id"] for s in walk(api, "/silences", active="false")] == [created["id"]]
    clock.now = T + 2 * HOUR
    again = api.delete(f"{API}/silences/{created['id']}")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert "already ended at 2026-03-15T13:00:00Z" in again.json()["detail"]
    assert ok(api.get(f"{API}/silences/{created['id']}")) == ended


def test_deleting_a_silence_that_has_not_begun_ends_it_before_it_begins(api, clock, silence, acme):
    created = silence(client_id=acme["id"], starts_at=z(T + HOUR), ends_at=z(T + 2 * HOUR))
    ended = ok(api.delete(f"{API}/silences/{created['id']}"))
    assert ended["ends_at"] == "2026-03-15T12:00:00Z"
    assert ended["starts_at"] == "2026-03-15T11:59:59.999999Z"
    assert ended["active"] is False
    clock.now = T + 90 * timedelta(minutes=1)  # inside the window it was created for
    assert ok(api.get(f"{API}/silences/{created['id']}"))["active"] is False
    assert api.delete(f"{API}/silences/{created['id']}").status_code == 409


def test_a_silence_that_ended_by_itself_cannot_be_deleted(api, clock, silence, acme):
    created = silence(client_id=acme["id"], ends_at=z(T + HOUR))
    clock.now = T + HOUR
    response = api.delete(f"{API}/silences/{created['id']}")
    assert response.status_code == 409
    assert ok(api.get(f"{API}/silences/{created['id']}"))["ends_at"] == "2026-03-15T13:00:00Z"


def test_silences_keep_their_scope_when_inventory_is_disabled(api, clock, silence, acme, orders):
    created = silence(pipeline_id=orders["id"])
    ok(api.delete(f"{API}/pipelines/{orders['id']}"))
    assert ok(api.get(f"{API}/silences/{created['id']}"))["pipeline_id"] == orders["id"]
    # An inactive client or pipeline may still be silenced (it may come back).
    assert silence(client_id=acme["id"], pipeline_id=orders["id"])["active"] is True


@pytest.mark.postgres_only
def test_of_two_concurrent_ends_the_second_is_a_409(api, clock, silence, acme, engine):
    """The row is locked while a silence is ended: the second end waits for the
    first to commit, then sees it ended (never a second 200 moving ends_at)."""
    silence_id = int(silence(client_id=acme["id"], ends_at=z(T + 5 * HOUR))["id"])
    factory = make_session_factory(engine, write=True)
    outcome: dict[str, str] = {}

    def second_end() -> None:
        with factory() as session, session.begin():
            try:
                end_silence(session, silence_id, T + 2 * HOUR)
                outcome["second"] = "ended"
            except SilenceEnded:
                outcome["second"] = "409"

    with factory() as first, first.begin():
        end_silence(first, silence_id, T + HOUR)
        thread = threading.Thread(target=second_end)
        thread.start()
        waiting = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
        deadline = time.monotonic() + 10
        with engine.connect() as probe:
            while probe.execute(waiting).scalar() == 0:
                assert time.monotonic() < deadline, "the second end never waited"
                time.sleep(0.01)
    thread.join(10)
    assert outcome == {"second": "409"}
    assert ok(api.get(f"{API}/silences/{silence_id}"))["ends_at"] == "2026-03-15T13:00:00Z"


def test_a_silence_made_here_silences_what_evaluation_then_sends(
    api, clock, silence, settings, engine, acme, orders
):
    """End to end: the silence's scope and window as evaluation reads them."""
    from chm.alerts.evaluate import evaluate

    billing = make_pipeline(api, acme, "billing_sync")
    make_rule(api, client_id=acme["id"], destination="slack:#data-alerts")
    for pipeline in (orders, billing):
        make_run(api, pipeline, "failed", started_at=z(T - HOUR))
    quiet = silence(pipeline_id=orders["id"], reason="orders backfill")
    evaluate(engine, T, settings, None)
    deliveries = {
        alert["pipeline_id"]: alert["deliveries"] for alert in walk(api, "/alerts", state="firing")
    }
    [silenced] = deliveries[orders["id"]]
    assert (silenced["status"], silenced["last_error"]) == (
        "silenced",
        f"silenced by silence {quiet['id']}: orders backfill",
    )
    # Out of its scope: not silenced (undeliverable here: no Slack token is set).
    assert [d["status"] for d in deliveries[billing["id"]]] == ["undeliverable"]
    # Ended, it silences nothing more: the resolution goes out.
    clock.now = T + timedelta(minutes=5)
    ok(api.delete(f"{API}/silences/{quiet['id']}"))
    make_run(api, orders, "success", started_at=z(T + timedelta(minutes=6)))
    evaluate(engine, T + timedelta(minutes=10), settings, None)
    [resolved] = walk(api, "/alerts", pipeline_id=orders["id"])
    assert resolved["state"] == "resolved"
    # The firing was never delivered: no resolution is owed (docs/alerts.md).
    assert [(d["event"], d["status"]) for d in resolved["deliveries"]] == [
        ("firing", "silenced"),
        ("resolved", "superseded"),
    ]
