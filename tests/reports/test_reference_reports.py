"""Every report and the client summary on the reference dataset, value by value (SC-003).

Each case compares the API's whole answer with the independent computation
of ``oracle.py``; a few hand-written expectations then pin the edge cases
the dataset was built for, so that the oracle itself is checked too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import oracle
import pytest
from reference import AS_OF, DAY, HOUR, MINUTE, Dataset

from factories import API, ok

Case = tuple[dict[str, Any], Callable[[Dataset], Any]]


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def report(ref: Any, name: str, **params: Any) -> dict[str, Any]:
    query = {
        "as_of": iso(AS_OF),
        **{k: iso(v) if isinstance(v, datetime) else v for k, v in params.items()},
    }
    return ok(ref.api.get(f"{API}/reports/{name}", params=query))


def window(body: dict[str, Any]) -> tuple[str | None, str | None, str]:
    return body["since"], body["until"], body["as_of"]


FAILURES_OVER_TIME: list[Case] = [
    ({}, lambda d: oracle.failures_over_time(d, AS_OF - 7 * DAY, AS_OF)),
    (
        {
            "bucket": "hour",
            "since": AS_OF - 30 * HOUR + 17 * MINUTE,
            "until": AS_OF - 2 * HOUR + 5 * MINUTE,
        },
        lambda d: oracle.failures_over_time(
            d, AS_OF - 30 * HOUR + 17 * MINUTE, AS_OF - 2 * HOUR + 5 * MINUTE, "hour"
        ),
    ),
    (
        {"bucket": "day", "since": AS_OF - 35 * DAY, "until": AS_OF + DAY},
        lambda d: oracle.failures_over_time(d, AS_OF - 35 * DAY, AS_OF + DAY),
    ),
    (
        {"client_id": "2"},
        lambda d: oracle.failures_over_time(d, AS_OF - 7 * DAY, AS_OF, client_id=2),
    ),
    (
        {"include_inactive": "true", "since": AS_OF - 20 * DAY},
        lambda d: oracle.failures_over_time(d, AS_OF - 20 * DAY, AS_OF, include_inactive=True),
    ),
    (
        {"client_id": "4", "bucket": "hour", "since": AS_OF - 2 * DAY},
        lambda d: oracle.failures_over_time(d, AS_OF - 2 * DAY, AS_OF, "hour", client_id=4),
    ),
]


@pytest.mark.parametrize(("params", "expected"), FAILURES_OVER_TIME)
def test_failures_over_time(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    body = report(ref, "failures-over-time", **params)
    assert body["items"] == expected(ref.data)


LATEST_STATUS: list[Case] = [
    ({}, lambda d: oracle.latest_status(d, AS_OF)),
    ({"status": "failed"}, lambda d: oracle.latest_status(d, AS_OF, status="failed")),
    ({"status": "running"}, lambda d: oracle.latest_status(d, AS_OF, status="running")),
    ({"client_id": "1"}, lambda d: oracle.latest_status(d, AS_OF, client_id=1)),
    ({"include_inactive": "true"}, lambda d: oracle.latest_status(d, AS_OF, include_inactive=True)),
    (
        {"as_of": AS_OF - 3 * DAY, "include_inactive": "true"},
        lambda d: oracle.latest_status(d, AS_OF - 3 * DAY, include_inactive=True),
    ),
    ({"as_of": AS_OF + DAY}, lambda d: oracle.latest_status(d, AS_OF + DAY)),
]


@pytest.mark.parametrize(("params", "expected"), LATEST_STATUS)
def test_latest_status(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    assert report(ref, "latest-status", **params)["items"] == expected(ref.data)


def test_latest_status_edge_cases_by_hand(ref: Any) -> None:
    body = report(ref, "latest-status")
    assert window(body) == (None, iso(AS_OF), iso(AS_OF))
    rows = {row["pipeline_name"]: row for row in body["items"]}
    # Equal started_at: the later finish, then the higher id.
    assert (rows["customers_etl"]["latest_run_id"], rows["customers_etl"]["latest_status"]) == (
        "9008",
        "unknown",
    )
    # A finished-only run sorts after every started run, however recent.
    assert rows["Billing_sync"]["latest_run_id"] == "9004"
    # A run without timestamps is never the latest of a pipeline that has others.
    assert rows["marketing_dbt"]["latest_run_id"] != "9018"
    # At as_of exactly and after it: not yet.
    assert rows["events_stream"]["latest_run_id"] == "9013"
    assert rows["never_ran"] == {
        "client_id": "2",
        "client_name": "Globex",
        "pipeline_id": "9",
        "pipeline_name": "never_ran",
        "platform": "airflow",
        "environment": "prod",
        "latest_run_id": None,
        "latest_status": None,
        "started_at": None,
        "finished_at": None,
    }
    assert rows["orders_daily"]["started_at"] == iso(AS_OF - 3 * HOUR)
    # Active inventory only, by client name then pipeline name, case-insensitively.
    assert [(r["client_name"], r["pipeline_name"]) for r in body["items"]] == [
        ("Acme", "Billing_sync"),
        ("Acme", "customers_etl"),
        ("Acme", "inventory_snap"),
        ("Acme", "orders_daily"),
        ("Globex", "events_stream"),
        ("Globex", "finance_close"),
        ("Globex", "marketing_dbt"),
        ("Globex", "never_ran"),
        ("Initech", "payroll"),
        ("Initech", "quality_checks"),
        ("Initech", "reports_weekly"),
        ("Initech", "tps_reports"),
    ]
    failing = report(ref, "latest-status", status="failed")["items"]
    # tps_reports' last run failed 15 days ago: still its latest.
    assert [r["pipeline_name"] for r in failing] == ["orders_daily", "payroll", "tps_reports"]


FAILURES_BY_CLIENT: list[Case] = [
    ({}, lambda d: oracle.failures_by_client(d, AS_OF)),
    (
        {"include_inactive": "true"},
        lambda d: oracle.failures_by_client(d, AS_OF, include_inactive=True),
    ),
    ({"client_id": "2"}, lambda d: oracle.failures_by_client(d, AS_OF, client_id=2)),
    ({"client_id": "4"}, lambda d: oracle.failures_by_client(d, AS_OF, client_id=4)),
    ({"as_of": AS_OF - 10 * DAY}, lambda d: oracle.failures_by_client(d, AS_OF - 10 * DAY)),
]


@pytest.mark.parametrize(("params", "expected"), FAILURES_BY_CLIENT)
def test_failures_by_client(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    assert report(ref, "failures-by-client", **params)["items"] == expected(ref.data)


def test_failures_by_client_by_hand(ref: Any) -> None:
    body = report(ref, "failures-by-client")
    assert window(body) == (iso(AS_OF - 7 * DAY), iso(AS_OF), iso(AS_OF))
    rows = {row["client_name"]: row for row in body["items"]}
    # Every active client, the one without pipelines too; never the inactive one.
    assert set(rows) == {"Acme", "Globex", "Initech", "bluebird"}
    assert rows["bluebird"] == {
        "client_id": "5",
        "client_name": "bluebird",
        "failed_24h": 0,
        "failed_7d": 0,
        "total_24h": 0,
        "total_7d": 0,
    }
    # Acme in the last 24 h: 9002, Billing_sync's finished-only 9005 and 9007
    # failed (legacy_export's 9010 is inactive); 9004, 9006, 9008, 9012 ran
    # too, and the queued 9011 counts at its created_at.
    assert (rows["Acme"]["failed_24h"], rows["Acme"]["total_24h"]) == (3, 8)
    assert body["items"][0]["client_name"] == "Acme"


FLAKY: list[Case] = [
    ({}, lambda d: oracle.flaky_pipelines(d, AS_OF)),
    ({"days": 7}, lambda d: oracle.flaky_pipelines(d, AS_OF, days=7)),
    ({"days": 35, "limit": 3}, lambda d: oracle.flaky_pipelines(d, AS_OF, days=35, limit=3)),
    (
        {"include_inactive": "true", "limit": 500},
        lambda d: oracle.flaky_pipelines(d, AS_OF, limit=500, include_inactive=True),
    ),
    ({"client_id": "3"}, lambda d: oracle.flaky_pipelines(d, AS_OF, client_id=3)),
]


@pytest.mark.parametrize(("params", "expected"), FLAKY)
def test_flaky_pipelines(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    assert report(ref, "flaky-pipelines", **params)["items"] == expected(ref.data)


def test_flaky_status_changes_by_hand(ref: Any) -> None:
    body = report(ref, "flaky-pipelines", client_id="3")
    assert window(body) == (iso(AS_OF - 30 * DAY), iso(AS_OF), iso(AS_OF))
    tps = next(row for row in body["items"] if row["pipeline_name"] == "tps_reports")
    # S F F S (tie with the second F, higher id: after it) [cancelled] S F,
    # 31 days ago's F is outside the window: S>F, F>S, S>F.
    assert tps == {
        "pipeline_id": "12",
        "pipeline_name": "tps_reports",
        "client_id": "3",
        "client_name": "Initech",
        "platform": "adf",
        "total_runs": 7,
        "failed_runs": 3,
        "success_runs": 3,
        "failure_rate": 3 / 7,
        "status_changes": 3,
    }


PLATFORM: list[Case] = [
    ({}, lambda d: oracle.failure_rate_by_platform(d, AS_OF - 7 * DAY, AS_OF)),
    (
        {"since": AS_OF - 35 * DAY},
        lambda d: oracle.failure_rate_by_platform(d, AS_OF - 35 * DAY, AS_OF),
    ),
    (
        {"since": AS_OF - 35 * DAY, "until": AS_OF + DAY, "include_inactive": "true"},
        lambda d: oracle.failure_rate_by_platform(
            d, AS_OF - 35 * DAY, AS_OF + DAY, include_inactive=True
        ),
    ),
    (
        {"client_id": "2"},
        lambda d: oracle.failure_rate_by_platform(d, AS_OF - 7 * DAY, AS_OF, client_id=2),
    ),
]


@pytest.mark.parametrize(("params", "expected"), PLATFORM)
def test_failure_rate_by_platform(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    assert report(ref, "failure-rate-by-platform", **params)["items"] == expected(ref.data)


# The histogram's fixed bins (gt_seconds, le_seconds), written out: the open one last.
FIXED_BINS = [
    (None, 1), (1, 5), (5, 10), (10, 30), (30, 60), (60, 120), (120, 300), (300, 600),
    (600, 900), (900, 1800), (1800, 3600), (3600, 7200), (7200, 14400), (14400, 28800),
    (28800, 86400), (86400, None),
]  # fmt: skip

DURATIONS: list[Case] = [
    ({}, lambda d: oracle.durations(d, AS_OF - 7 * DAY, AS_OF)),
    ({"since": AS_OF - 35 * DAY}, lambda d: oracle.durations(d, AS_OF - 35 * DAY, AS_OF)),
    (
        {"since": AS_OF - 35 * DAY, "platform": "airflow"},
        lambda d: oracle.durations(d, AS_OF - 35 * DAY, AS_OF, platform="airflow"),
    ),
    (
        {"since": AS_OF - 35 * DAY, "pipeline_id": "10"},
        lambda d: oracle.durations(d, AS_OF - 35 * DAY, AS_OF, pipeline_id=10),
    ),
    (
        {"since": AS_OF - 35 * DAY, "include_inactive": "true", "client_id": "4"},
        lambda d: oracle.durations(d, AS_OF - 35 * DAY, AS_OF, client_id=4, include_inactive=True),
    ),
    (
        {"since": AS_OF - 20 * DAY, "pipeline_id": "12"},
        lambda d: oracle.durations(d, AS_OF - 20 * DAY, AS_OF, pipeline_id=12),
    ),
    ({"pipeline_id": "9"}, lambda d: oracle.durations(d, AS_OF - 7 * DAY, AS_OF, pipeline_id=9)),
]


@pytest.mark.parametrize(("params", "expected"), DURATIONS)
def test_duration_distribution(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    body = report(ref, "duration-distribution", **params)
    assert {k: v for k, v in body.items() if k not in ("since", "until", "as_of")} == expected(
        ref.data
    )


def test_duration_distribution_by_hand(ref: Any) -> None:
    # tps_reports over 20 days, 9023 (at exactly since) to 9029: 60 s six
    # times and 120 s once. Nearest rank of 7: p50 -> 4th, p90 and p99 -> 7th.
    body = report(ref, "duration-distribution", since=AS_OF - 20 * DAY, pipeline_id="12")
    assert (body["count"], body["p50"], body["p90"], body["p99"], body["max"]) == (
        7,
        60.0,
        120.0,
        120.0,
        120.0,
    )
    assert [(i["gt_seconds"], i["le_seconds"], i["count"]) for i in body["items"]] == [
        (None, 1, 0), (1, 5, 0), (5, 10, 0), (10, 30, 0), (30, 60, 6), (60, 120, 1),
        (120, 300, 0), (300, 600, 0), (600, 900, 0), (900, 1800, 0), (1800, 3600, 0),
        (3600, 7200, 0), (7200, 14400, 0), (14400, 28800, 0), (28800, 86400, 0), (86400, None, 0),
    ]  # fmt: skip
    empty = report(ref, "duration-distribution", pipeline_id="9")
    assert empty | {"since": None, "until": None, "as_of": None} == {
        "count": 0,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "max": None,
        "items": [
            {"gt_seconds": lower, "le_seconds": upper, "count": 0} for lower, upper in FIXED_BINS
        ],
        "since": None,
        "until": None,
        "as_of": None,
    }
    # Twenty durations 10..200 s: ranks 10, 18, 19 and 20.
    quality = report(ref, "duration-distribution", since=AS_OF - 35 * DAY, pipeline_id="15")
    assert [quality[k] for k in ("count", "p50", "p90", "p95", "p99", "max")] == [
        20,
        100.0,
        180.0,
        190.0,
        200.0,
        200.0,
    ]
    payroll = report(ref, "duration-distribution", pipeline_id="10")
    assert payroll["max"] == 86400.5
    assert payroll["items"][-1] == {"gt_seconds": 86400, "le_seconds": None, "count": 1}


@pytest.mark.parametrize(("params", "expected"), DURATIONS)
def test_duration_histogram_has_every_bin_ending_with_the_open_one(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    items = report(ref, "duration-distribution", **params)["items"]
    assert [(i["gt_seconds"], i["le_seconds"]) for i in items] == FIXED_BINS
    assert items[-1]["le_seconds"] is None
    assert sum(i["count"] for i in items) == expected(ref.data)["count"]


def test_an_empty_duration_bin_between_populated_ones_is_a_zero_row(ref: Any) -> None:
    # payroll, 7 days: runs in (0, 1], (1, 5], (30, 60], (60, 120], (120, 300]
    # and one of 86400.5 s; the bins in between hold nothing and are still there.
    items = report(ref, "duration-distribution", pipeline_id="10")["items"]
    counts = {(i["gt_seconds"], i["le_seconds"]): i["count"] for i in items}
    assert counts[(1, 5)] > 0 and counts[(30, 60)] > 0 and counts[(86400, None)] == 1
    assert counts[(5, 10)] == counts[(10, 30)] == 0
    assert [counts[b] for b in FIXED_BINS[7:15]] == [0] * 8


STATUS_CHANGES: list[Case] = [
    ({}, lambda d: oracle.status_changes(d, AS_OF - DAY, AS_OF)),
    (
        {"since": AS_OF - 3 * DAY, "until": AS_OF - DAY},
        lambda d: oracle.status_changes(d, AS_OF - 3 * DAY, AS_OF - DAY),
    ),
    (
        {"include_inactive": "true"},
        lambda d: oracle.status_changes(d, AS_OF - DAY, AS_OF, include_inactive=True),
    ),
    (
        {"client_id": "1", "since": AS_OF - 10 * DAY},
        lambda d: oracle.status_changes(d, AS_OF - 10 * DAY, AS_OF, client_id=1),
    ),
    ({"until": AS_OF + DAY}, lambda d: oracle.status_changes(d, AS_OF, AS_OF + DAY)),
]


@pytest.mark.parametrize(("params", "expected"), STATUS_CHANGES)
def test_status_changes(
    ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]
) -> None:
    assert report(ref, "status-changes", **params)["items"] == expected(ref.data)


def test_status_changes_by_hand(ref: Any) -> None:
    body = report(ref, "status-changes")
    assert window(body) == (iso(AS_OF - DAY), iso(AS_OF), iso(AS_OF))
    rows = {row["pipeline_name"]: row for row in body["items"]}
    assert (rows["orders_daily"]["previous_status"], rows["orders_daily"]["current_status"]) == (
        "success",
        "failed",
    )
    assert rows["orders_daily"]["changed_at"] == iso(AS_OF - 3 * HOUR)
    assert (rows["Billing_sync"]["previous_status"], rows["Billing_sync"]["current_status"]) == (
        "failed",
        "success",
    )
    assert (
        rows["reports_weekly"]["previous_status"],
        rows["reports_weekly"]["current_status"],
    ) == (None, "success")
    assert (rows["finance_close"]["previous_status"], rows["finance_close"]["current_status"]) == (
        "cancelled",
        "running",
    )
    assert "never_ran" not in rows and "legacy_export" not in rows and "tps_reports" not in rows


STUCK: list[Case] = [
    ({}, lambda d: oracle.stuck_runs(d, AS_OF, timedelta(minutes=360))),
    ({"older_than_minutes": 60}, lambda d: oracle.stuck_runs(d, AS_OF, timedelta(minutes=60))),
    (
        {"include_inactive": "true"},
        lambda d: oracle.stuck_runs(d, AS_OF, timedelta(minutes=360), include_inactive=True),
    ),
    (
        {"client_id": "2", "older_than_minutes": 1},
        lambda d: oracle.stuck_runs(d, AS_OF, timedelta(minutes=1), client_id=2),
    ),
]


@pytest.mark.parametrize(("params", "expected"), STUCK)
def test_stuck_runs(ref: Any, params: dict[str, Any], expected: Callable[[Dataset], Any]) -> None:
    assert report(ref, "stuck-runs", **params)["items"] == expected(ref.data)


def test_stuck_runs_by_hand(ref: Any) -> None:
    body = report(ref, "stuck-runs")
    assert window(body) == (None, iso(AS_OF - 6 * HOUR), iso(AS_OF))
    assert [row["run_id"] for row in body["items"]] == ["9011", "9016"]
    assert body["items"][0]["started_at"] is None
    assert body["items"][0]["event_at"] == iso(AS_OF - 8 * HOUR)
    assert body["items"][1]["started_at"] == "2026-03-15T05:00:00.250000Z"
    everything = report(ref, "stuck-runs", include_inactive="true", older_than_minutes=60)
    assert [row["run_id"] for row in everything["items"]] == [
        "9009",
        "9031",
        "9011",
        "9016",
        "9012",
    ]


SUMMARY_WINDOWS = [
    (AS_OF - DAY, AS_OF),
    (AS_OF - 35 * DAY, AS_OF + DAY),
    (AS_OF - 3 * DAY, AS_OF - 2 * DAY),
    (AS_OF - 7 * DAY - timedelta(microseconds=1), AS_OF - 7 * DAY + timedelta(microseconds=1)),
]


@pytest.mark.parametrize(("since", "until"), SUMMARY_WINDOWS)
def test_client_summary(ref: Any, since: datetime, until: datetime) -> None:
    for client in ref.data.clients:
        body = ok(
            ref.api.get(
                f"{API}/clients/{client.id}/summary",
                params={"since": iso(since), "until": iso(until)},
            )
        )
        expected = oracle.client_summary(ref.data, client.id, since, until)
        for row in body["pipelines"]:
            if row["latest_run"] is not None:
                row["latest_run"] = {
                    k: row["latest_run"][k] for k in oracle.run_fields(ref.data.runs[0])
                }
        assert body == expected, client.name


def test_client_summary_by_hand(ref: Any) -> None:
    body = ok(
        ref.api.get(
            f"{API}/clients/1/summary", params={"since": iso(AS_OF - DAY), "until": iso(AS_OF)}
        )
    )
    assert body["total_runs"] == 8  # Acme's last day without its inactive pipeline
    assert body["status_counts"] == {
        "queued": 1,
        "running": 1,
        "success": 2,
        "failed": 3,
        "cancelled": 0,
        "skipped": 0,
        "unknown": 1,
    }
    names = [row["pipeline_name"] for row in body["pipelines"]]
    assert names == ["Billing_sync", "customers_etl", "inventory_snap", "orders_daily"]
