"""What a manual run stores of a large failure text or payload, and when its
write transaction begins (issue 10 §7).

The rule is the one of ingestion and OpenLineage events
(chm.core.redaction.stored_text / stored_payload): redacted, then capped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import event

from chm.core.redaction import MAX_STORED_PAYLOAD_BYTES, MAX_STORED_TEXT, REDACTED
from chm.runs import service
from factories import API, make_client, make_pipeline, make_run, ok


@pytest.fixture
def pipeline(api):
    return make_pipeline(api, make_client(api, "Acme"), "orders_daily")


# 14 characters that redaction turns into 17: "Bearer [REDACTED] ".
LEAKY = "Bearer QQQQQQ "


def leaky_message() -> str:
    """A failure text the API accepts (20,000 characters) that redaction lengthens."""
    text = LEAKY * (MAX_STORED_TEXT // len(LEAKY))
    return text + "e" * (MAX_STORED_TEXT - len(text))


def test_a_payload_past_the_cap_is_stored_as_a_marker_with_its_size(api, pipeline) -> None:
    payload = {"blob": "b" * MAX_STORED_PAYLOAD_BYTES, "password": "hunter2"}
    size = len(orjson.dumps({"blob": payload["blob"], "password": REDACTED}))
    run = make_run(api, pipeline, "failed", source_payload=payload)
    marker = {"_chm_truncated": True, "original_bytes": size}
    assert run["source_payload"] == marker
    assert ok(api.get(f"{API}/runs/{run['id']}"))["source_payload"] == marker


def test_a_payload_within_the_cap_is_stored_whole_and_redacted(api, pipeline) -> None:
    payload = {"blob": "b" * (MAX_STORED_PAYLOAD_BYTES - 100), "password": "hunter2"}
    run = make_run(api, pipeline, "failed", source_payload=payload)
    stored = ok(api.get(f"{API}/runs/{run['id']}"))["source_payload"]
    assert stored == {"blob": payload["blob"], "password": REDACTED}


def test_a_failure_text_longer_once_redacted_is_cut_with_the_marker(api, pipeline) -> None:
    message = leaky_message()
    redacted_length = len(message.replace("QQQQQQ", REDACTED))
    run = make_run(api, pipeline, "failed", error_message=message)
    stored = ok(api.get(f"{API}/runs/{run['id']}"))["error_message"]
    assert len(stored) == MAX_STORED_TEXT
    assert stored.endswith(f"… [truncated, {redacted_length} characters]")
    assert "Q" not in stored


def test_a_patched_failure_text_follows_the_same_rule(api, pipeline) -> None:
    run = make_run(api, pipeline, "running")
    patched = ok(api.patch(f"{API}/runs/{run['id']}", json={"error_message": leaky_message()}))
    assert len(patched["error_message"]) == MAX_STORED_TEXT
    assert "… [truncated, " in patched["error_message"]
    assert "Q" not in patched["error_message"]


def test_a_failure_text_past_20000_characters_as_sent_is_still_a_422(api, pipeline) -> None:
    path = f"{API}/pipelines/{pipeline['id']}/runs"
    response = api.post(path, json={"status": "failed", "error_message": "e" * 20_001})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "error_message"


# --- the write lock is taken after the request's own work -----------------------------


def record_order(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """'begin' for every transaction the engine begins (SQLite: BEGIN IMMEDIATE for
    a write session), 'redact' for every redaction the run service asks for."""
    order: list[str] = []
    event.listen(engine, "begin", lambda _conn: order.append("begin"))

    def recorded(real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            order.append("redact")
            return real(*args)

        return wrapper

    monkeypatch.setattr(service, "stored_text", recorded(service.stored_text))
    monkeypatch.setattr(service, "stored_payload", recorded(service.stored_payload))
    return order


def test_a_manual_run_is_redacted_before_its_transaction_begins(
    api, engine, pipeline, monkeypatch
) -> None:
    # Recording a run is one statement on the app's write engine (its own on
    # SQLite, the async one on PostgreSQL), whose transaction begins only
    # once the body is redacted.
    write_engine = api.app.state.write_async_engine.sync_engine
    order = record_order(write_engine, monkeypatch)
    make_run(api, pipeline, "failed", error_message="boom", source_payload={"token": "t0k"})
    assert order[:3] == ["redact", "redact", "begin"], order
    assert order.count("redact") == 2


def test_a_patched_run_is_redacted_before_its_transaction_begins(
    api, engine, pipeline, monkeypatch
) -> None:
    run = make_run(api, pipeline, "running")
    order = record_order(engine, monkeypatch)
    ok(api.patch(f"{API}/runs/{run['id']}", json={"error_message": "https://u:p@host failed"}))
    assert order[:2] == ["redact", "begin"], order
    assert order.count("redact") == 1
