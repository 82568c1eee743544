"""Timestamps, durations, Retry-After and redaction of what sources send (FR-013, SE-003)."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chm.core.redaction import MAX_STORED_PAYLOAD_BYTES, Redactor, redact
from chm.core.timeutil import retry_after_seconds
from chm.ingestion.connectors.generic import GenericConnector
from chm.ingestion.engine import IngestionEngine
from chm.ingestion.normalize import (
    InvalidRun,
    canonical_json,
    duration_seconds,
    from_epoch_ms,
    parse_timestamp,
    run_identity,
    stored_document,
)

AT = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-01T10:00:00Z", AT),
        ("2026-03-01T10:00:00+00:00", AT),
        ("2026-03-01T12:00:00+02:00", AT),
        ("2026-03-01T05:00:00-05:00", AT),
        ("2026-03-01T10:00:00", AT),
        ("2026-03-01 10:00:00", AT),
        ("2026-03-01T10:00:00.6257014Z", AT.replace(microsecond=625701)),
        ("2026-03-01T10:00:00.5Z", AT.replace(microsecond=500000)),
        (1_772_359_200_000, AT),
        (1_772_359_200, AT),
        (1_772_359_200.25, AT.replace(microsecond=250000)),
        (None, None),
        ("", None),
    ],
)
def test_timestamps_from_every_platform_format_become_aware_utc(raw, expected) -> None:
    parsed = parse_timestamp(raw, "started_at")
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        "2026-13-01T00:00:00Z",
        True,
        [2026],
        {"t": 1},
        "1969-12-31T23:59:59Z",
        float("nan"),
    ],
)
def test_unreadable_timestamps_are_invalid_runs(raw) -> None:
    with pytest.raises(InvalidRun, match="started_at"):
        parse_timestamp(raw, "started_at")


def test_epoch_milliseconds_with_zero_meaning_not_yet() -> None:
    assert from_epoch_ms(1_772_359_200_000, "end_time") == AT
    assert from_epoch_ms(0, "end_time", zero_is_none=True) is None
    assert from_epoch_ms(None, "end_time") is None
    with pytest.raises(InvalidRun, match="end_time"):
        from_epoch_ms("soon", "end_time")


def test_durations_and_identities() -> None:
    assert duration_seconds(28105, "durationInMs", scale=0.001) == 28.105
    assert duration_seconds(None, "d") is None
    for bad in (-1, "10", True):
        with pytest.raises(InvalidRun):
            duration_seconds(bad, "d")
    assert run_identity(123456789012345) == "123456789012345"
    assert run_identity("  r-1 ") == "r-1"
    for bad in (None, "", "  ", True, 1.5, "x" * 501):
        with pytest.raises(InvalidRun):
            run_identity(bad)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(" 5 ", now) == 5
    later = email.utils.format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, now) == 90
    earlier = email.utils.format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(earlier, now) == 0
    assert retry_after_seconds("Sun, 01 Mar 2026 10:00:30", now) == 30
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
    assert retry_after_seconds("-3", now) is None


def test_stored_documents_have_sorted_keys_and_no_nul_characters() -> None:
    document = {"b": 1, "a": {"d": ["x\x00y"], "c": None}}
    assert list(canonical_json(document)) == ["a", "b"]
    assert canonical_json(document) == {"a": {"c": None, "d": ["xy"]}, "b": 1}


def test_payload_redaction_goes_through_nested_objects_lists_urls_and_known_tokens() -> None:
    payload = {
        "parameters": {
            "sourceUrl": "https://acct.blob.core.windows.net/c/f.csv?sv=2022-11-02&sig=abc%2Bdef&sp=r",
            "connection": "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=Zm9v==;",
            "warehouse": "snowflake://etl:pa55@acme/db",
        },
        "tasks": [{"PrivateKey": "-----BEGIN", "credentials": {"user": "x"}, "count": 2}],
        "Authorization": "Bearer abc",
        "message": "retrying with Bearer eyJhbGciOi.payload.sig",
        "note": "the token was xyz-known-token-123",
        "access_key": "",
    }
    redacted = redact(payload, ("xyz-known-token-123",))
    assert redacted["parameters"] == {
        "sourceUrl": "https://acct.blob.core.windows.net/c/f.csv?sv=2022-11-02&sig=[REDACTED]&sp=r",
        "connection": "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=[REDACTED];",
        "warehouse": "snowflake://[REDACTED]@acme/db",
    }
    assert redacted["tasks"] == [
        {"PrivateKey": "[REDACTED]", "credentials": "[REDACTED]", "count": 2}
    ]
    assert redacted["Authorization"] == "[REDACTED]"
    assert redacted["message"] == "retrying with Bearer [REDACTED]"
    assert redacted["note"] == "the token was [REDACTED]"
    assert redacted["access_key"] == ""


@pytest.mark.parametrize("raw", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"])
def test_timestamps_past_utcs_calendar_are_an_invalid_run_not_a_crash(raw) -> None:
    from chm.ingestion.normalize import InvalidRun, parse_timestamp

    with pytest.raises(InvalidRun, match="out of range"):
        parse_timestamp(raw, "started_at")


# --- a document as stored: one look at its JSON (issue 17) ------------------------------

_DOCUMENT_TEXTS = st.text(max_size=12) | st.sampled_from(
    ["a\x00b", "https://u:pw@host", "pwd=x", "Bearer abcdefgh", "tok-0123456789"]
)
_DOCUMENTS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _DOCUMENT_TEXTS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            _DOCUMENT_TEXTS | st.sampled_from(["password", "k\x00"]), children, max_size=3
        )
    ),
    max_leaves=10,
)


@given(value=_DOCUMENTS, secret=st.sampled_from(["", "tok-0123456789"]))
@settings(max_examples=800, deadline=None)
def test_a_document_is_stored_as_redacting_capping_and_cleaning_it_would_store_it(
    value, secret
) -> None:
    redactor = Redactor([secret])
    stored = stored_document(value, redactor)
    assert stored == canonical_json(redactor.stored_payload(value))
    if stored is value and isinstance(value, (dict, list)):  # kept: nothing to redact or clean
        assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
            canonical_json(value), option=orjson.OPT_SORT_KEYS
        )


def test_a_document_larger_than_the_cap_is_replaced_by_the_marker() -> None:
    value = {"blob": "b" * MAX_STORED_PAYLOAD_BYTES}
    assert stored_document(value, Redactor()) == {
        "_chm_truncated": True,
        "original_bytes": MAX_STORED_PAYLOAD_BYTES + len('{"blob":""}'),
    }


def test_metrics_taken_from_a_clean_payload_are_kept_and_others_are_redacted() -> None:
    class Client:
        redactor = Redactor()

    connector = GenericConnector.__new__(GenericConnector)
    clean = {"run_id": "r1", "status": "ok", "metrics": {"rows": 3}}
    row = IngestionEngine._snapshot(connector, frozenset(), Client(), clean)  # type: ignore[arg-type]
    assert row["metrics"] is clean["metrics"]
    assert row["source_payload"] is clean
    secret = {"run_id": "r2", "status": "ok", "metrics": {"rows": 3, "api_key": "k-123"}}
    row = IngestionEngine._snapshot(connector, frozenset(), Client(), secret)  # type: ignore[arg-type]
    assert row["metrics"] == {"api_key": "[REDACTED]", "rows": 3}
    assert row["source_payload"]["metrics"] == {"api_key": "[REDACTED]", "rows": 3}
