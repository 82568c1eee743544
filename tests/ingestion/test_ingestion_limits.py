"""What ingestion and OpenLineage events store of large failure texts and
payloads: the manual runs' rule (chm.core.redaction.stored_text /
stored_payload), redacted first, then capped (issue 10 §7)."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, sources
from sqlalchemy import Engine
from test_lineage import KEY, event, lineage_app, lineage_sources, post, the_run

from chm.app import create_app
from chm.core.redaction import MAX_STORED_PAYLOAD_BYTES, MAX_STORED_TEXT, redact, redact_text
from chm.core.settings import Settings
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

__all__ = ["lineage_app"]  # the fixture, shared with test_lineage

PASSWORD = "Q7d9f2a4c6e8b0Q7d9f2a4c6e8b0"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def message_with_a_password_at_the_cut(length: int) -> str:
    """``length`` characters whose URL password straddles where cap_text cuts: cut
    before redaction, half of it would be stored."""
    cut = MAX_STORED_TEXT - len(f"… [truncated, {length} characters]")
    text = "e" * (cut - len(" https://svc:") - 6) + f" https://svc:{PASSWORD}@warehouse/db "
    return text + "e" * (length - len(text))


def assert_capped(stored: str) -> None:
    assert len(stored) == MAX_STORED_TEXT
    assert "… [truncated, " in stored
    assert "Q7d9" not in stored


def test_ingested_texts_and_payloads_are_redacted_then_capped(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="big")
    big = generic_run(
        "r1",
        "failed",
        error=message_with_a_password_at_the_cut(50_000),
        blob="b" * MAX_STORED_PAYLOAD_BYTES,
        metrics={"rows": 1, "trace": "t" * MAX_STORED_PAYLOAD_BYTES},
    )
    small = generic_run("r2", "failed", error="https://svc:" + PASSWORD + "@warehouse failed")
    serve_generic(fake, "big", [[big, small]])
    first = ingest(engine, sources(source(fake)))
    assert first.runs_created == 2
    runs = {r["external_run_id"]: r for r in ok(api.get(f"{API}/runs"))["items"]}
    assert_capped(runs["r1"]["error_message"])
    redacted_length = len(redact_text(big["error"]))
    assert runs["r1"]["error_message"].endswith(f"… [truncated, {redacted_length} characters]")
    payload_size = len(orjson.dumps(redact(big)))  # its size once redacted
    assert runs["r1"]["source_payload"] == {"_chm_truncated": True, "original_bytes": payload_size}
    assert runs["r1"]["metrics"]["_chm_truncated"] is True
    assert runs["r2"]["error_message"] == "https://[REDACTED]@warehouse failed"
    assert runs["r2"]["source_payload"]["error"] == "https://[REDACTED]@warehouse failed"
    # The cap is a function of the payload: a replay still changes nothing.
    replay = ingest(engine, sources(source(fake)))
    assert (replay.runs_unchanged, replay.runs_updated) == (2, 0)
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"] == list(runs.values())


def failed_event(message: str, **facets: Any) -> dict[str, Any]:
    error = {"errorMessage": {"message": message, "programmingLanguage": "JAVA"}}
    return event("FAIL", "2026-03-01T10:07:30Z", str(uuid.uuid4()), **error, **facets)


def test_a_lineage_failure_text_is_redacted_and_capped(lineage_app) -> None:
    api, pipeline = lineage_app
    assert (
        post(api, failed_event("copy from https://svc:" + PASSWORD + "@s3 failed")).status_code
        == 201
    )
    assert the_run(api, pipeline)["error_message"] == "copy from https://[REDACTED]@s3 failed"  # type: ignore[index]


def test_a_long_lineage_failure_text_is_cut_after_redaction(lineage_app) -> None:
    api, pipeline = lineage_app
    assert post(api, failed_event(message_with_a_password_at_the_cut(60_000))).status_code == 201
    assert_capped(the_run(api, pipeline)["error_message"])  # type: ignore[index]


def test_a_lineage_event_past_the_payload_cap_is_stored_as_a_marker(lineage_app) -> None:
    api, pipeline = lineage_app
    body = failed_event("boom", schema={"fields": "f" * (2 * MAX_STORED_PAYLOAD_BYTES)})
    assert post(api, body, gzipped=True).status_code == 201
    run = the_run(api, pipeline)
    assert run is not None
    assert (run["status"], run["error_message"]) == ("failed", "boom")
    assert run["source_payload"]["_chm_truncated"] is True
    assert run["source_payload"]["original_bytes"] > 2 * MAX_STORED_PAYLOAD_BYTES


@pytest.fixture
def small_lineage_api(db_url, engine: Engine, tmp_path, monkeypatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    monkeypatch.setenv("BETA_OL_KEY", "unused-beta-key")
    settings = Settings(database_url=db_url, config=lineage_sources(tmp_path),  # type: ignore[call-arg]
                        max_body_bytes=64 * 1024, _env_file=None)  # fmt: skip
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        make_pipeline(
            api, make_client(api, "Acme"), platform="spark", external_id="orders_etl.load"
        )
        yield api


def test_a_lineage_event_is_bounded_by_chm_max_body_bytes_sent_and_inflated(
    small_lineage_api,
) -> None:
    api = small_lineage_api
    body = failed_event("boom", schema={"fields": "f" * (100 * 1024)})
    assert len(gzip.compress(orjson.dumps(body))) < 64 * 1024
    for gzipped in (False, True):
        response = post(api, body, gzipped=gzipped)
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "https://chm.dev/problems/payload-too-large"
    assert "uncompressed" in response.json()["detail"]
    assert ok(api.get(f"{API}/runs"))["items"] == []
