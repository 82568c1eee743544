"""The parameters every report shares: defaults, CSV, and 422s on the named field."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from reference import AS_OF, DAY

from factories import API, ok

REPORTS = [
    "failures-over-time",
    "latest-status",
    "failures-by-client",
    "flaky-pipelines",
    "failure-rate-by-platform",
    "duration-distribution",
    "status-changes",
    "stuck-runs",
]
AS_OF_TEXT = "2026-03-15T12:00:00Z"


def _json_cell(value: Any) -> str:
    return "" if value is None else str(value)


@pytest.mark.parametrize("name", REPORTS)
def test_csv_has_a_header_and_the_same_rows_as_json(ref: Any, name: str) -> None:
    params = {"as_of": AS_OF_TEXT, "include_inactive": "true"}
    if name in ("failure-rate-by-platform", "duration-distribution", "failures-over-time"):
        params["since"] = (AS_OF - 35 * DAY).isoformat()
    as_json = ok(ref.api.get(f"{API}/reports/{name}", params=params))
    response = ref.api.get(f"{API}/reports/{name}", params={**params, "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.text)))
    assert as_json["items"], "a CSV check needs rows"
    header = list(as_json["items"][0])
    assert rows[0] == header
    assert rows[1:] == [
        [_json_cell(item[column]) for column in header] for item in as_json["items"]
    ]


def test_csv_of_an_empty_report_is_its_header(ref: Any) -> None:
    response = ref.api.get(
        f"{API}/reports/stuck-runs",
        params={"as_of": AS_OF_TEXT, "client_id": "999", "format": "csv"},
    )
    assert response.text == (
        "run_id,pipeline_id,pipeline_name,client_id,client_name,status,started_at,event_at\r\n"
    )


def test_csv_of_an_empty_duration_window_has_every_bin_at_zero(ref: Any) -> None:
    response = ref.api.get(
        f"{API}/reports/duration-distribution",
        params={"as_of": AS_OF_TEXT, "client_id": "999", "format": "csv"},
    )
    rows = list(csv.reader(io.StringIO(response.text)))
    edges = ["", "1", "5", "10", "30", "60", "120", "300", "600", "900", "1800", "3600",
             "7200", "14400", "28800", "86400", ""]  # fmt: skip
    assert rows == [
        ["gt_seconds", "le_seconds", "count"],
        *([lower, upper, "0"] for lower, upper in itertools.pairwise(edges)),
    ]


def test_defaults_as_of_now_and_a_window_ending_there(ref: Any) -> None:
    before = datetime.now(UTC)
    body = ok(ref.api.get(f"{API}/reports/failures-over-time"))
    after = datetime.now(UTC)
    as_of = datetime.fromisoformat(body["as_of"])
    assert before <= as_of <= after
    assert datetime.fromisoformat(body["until"]) == as_of
    assert datetime.fromisoformat(body["since"]) == as_of - timedelta(days=7)
    # UTC-aligned days from the one holding since: 8 of them for 7 days.
    first = datetime.fromisoformat(body["items"][0]["bucket_start"])
    assert first == (as_of - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert len(body["items"]) == 8


def test_a_timestamp_without_offset_is_utc(ref: Any) -> None:
    body = ok(ref.api.get(f"{API}/reports/latest-status", params={"as_of": "2026-03-15T12:00:00"}))
    assert body["as_of"] == AS_OF_TEXT


def test_an_unknown_client_matches_nothing(ref: Any) -> None:
    params = {"as_of": AS_OF_TEXT, "client_id": "424242"}
    assert ok(ref.api.get(f"{API}/reports/latest-status", params=params))["items"] == []
    assert ok(ref.api.get(f"{API}/reports/failures-by-client", params=params))["items"] == []
    buckets = ok(ref.api.get(f"{API}/reports/failures-over-time", params=params))["items"]
    assert len(buckets) == 8 and all(b["total_runs"] == 0 for b in buckets)


def test_status_changes_default_to_the_last_24_hours(ref: Any) -> None:
    body = ok(ref.api.get(f"{API}/reports/status-changes", params={"as_of": AS_OF_TEXT}))
    assert (body["since"], body["until"]) == ("2026-03-14T12:00:00Z", AS_OF_TEXT)
    explicit = ok(
        ref.api.get(
            f"{API}/reports/status-changes",
            params={"as_of": AS_OF_TEXT, "since": "2026-03-14T00:00:00Z"},
        )
    )
    assert (explicit["since"], explicit["until"]) == ("2026-03-14T00:00:00Z", AS_OF_TEXT)


INVALID = [
    ("failures-over-time", {"bucket": "week"}, ["bucket"]),
    (
        "failures-over-time",
        {"since": "2026-03-15T00:00:00Z", "until": "2026-03-14T00:00:00Z"},
        ["until"],
    ),
    (
        "failure-rate-by-platform",
        {"since": "2026-03-15T00:00:00Z", "until": "2026-03-15T00:00:00Z"},
        ["until"],
    ),
    # since after the default until (as_of): the window is empty.
    ("status-changes", {"as_of": AS_OF_TEXT, "since": "2026-03-16T00:00:00Z"}, ["until"]),
    (
        "failures-over-time",
        {"bucket": "hour", "since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        ["since"],
    ),
    ("latest-status", {"as_of": "yesterday"}, ["as_of"]),
    ("latest-status", {"as_of": "1969-12-31T23:59:59Z"}, ["as_of"]),
    ("latest-status", {"as_of": "9999-01-01T00:00:00Z"}, ["as_of"]),
    ("latest-status", {"status": "exploded"}, ["status"]),
    ("latest-status", {"client_id": "acme"}, ["client_id"]),
    ("latest-status", {"client_id": "-1"}, ["client_id"]),
    ("failures-by-client", {"include_inactive": "maybe"}, ["include_inactive"]),
    ("failures-by-client", {"format": "xml"}, ["format"]),
    ("flaky-pipelines", {"days": "0"}, ["days"]),
    ("flaky-pipelines", {"days": "366"}, ["days"]),
    ("flaky-pipelines", {"limit": "501"}, ["limit"]),
    ("duration-distribution", {"platform": "Air Flow"}, ["platform"]),
    ("duration-distribution", {"pipeline_id": "x"}, ["pipeline_id"]),
    ("stuck-runs", {"older_than_minutes": "0"}, ["older_than_minutes"]),
    ("stuck-runs", {"older_than_minutes": "soon"}, ["older_than_minutes"]),
    # Every offending field at once.
    (
        "flaky-pipelines",
        {"days": "-3", "limit": "0", "client_id": "?", "format": "pdf"},
        ["client_id", "format", "days", "limit"],
    ),
]


@pytest.mark.parametrize(("name", "params", "fields"), INVALID)
def test_bad_parameters_are_a_422_on_the_named_field(
    ref: Any, name: str, params: dict[str, str], fields: list[str]
) -> None:
    response = ref.api.get(f"{API}/reports/{name}", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert sorted(e["field"] for e in body["errors"]) == sorted(fields)
    assert "Traceback" not in response.text and "SELECT" not in response.text


def test_up_to_ten_thousand_buckets(ref: Any) -> None:
    params = {"since": "1970-01-01T00:00:00Z", "until": "1997-05-19T00:00:00Z"}
    body = ok(ref.api.get(f"{API}/reports/failures-over-time", params=params))
    assert len(body["items"]) == 10_000
    assert body["items"][-1]["bucket_start"] == "1997-05-18T00:00:00Z"
    params["until"] = "1997-05-19T00:00:00.000001Z"
    assert ref.api.get(f"{API}/reports/failures-over-time", params=params).status_code == 422
