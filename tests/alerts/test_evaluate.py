"""Alert evaluation (chm.alerts.evaluate; docs/alerts.md): every rule type fires
and resolves at its edges, the scope, idempotence, the database's guarantee,
concurrency, and set-based statements. On both databases, at fixed times."""

from __future__ import annotations

import itertools
import random
import statistics
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError

from chm.alerts.destinations import Destination, Destinations
from chm.alerts.evaluate import (
    EVALUATION_LOCK,
    EvaluationReport,
    duration_anomaly_statement,
    evaluate,
    fingerprint,
    percentile,
)
from chm.core.settings import Settings
from chm.models import Alert, AlertDelivery, Run
from chm.runs.ordering import sort_key
from factories import API, make_client, make_pipeline, make_rule, ok

# A fixed "now" with microseconds: window bounds are exact to the microsecond.
NOW = datetime(2030, 6, 1, 12, 0, 0, 250_000, tzinfo=UTC)
US = timedelta(microseconds=1)
DESTINATION = "webhook:ops"
DESTINATIONS = Destinations([Destination(name="ops", kind="webhook", url_env="OPS_URL")])
ENVIRON = {"OPS_URL": "http://127.0.0.1:9/hook"}
_external = itertools.count(1)


# --- helpers --------------------------------------------------------------------------


def add_run(
    engine: Engine,
    pipeline: dict[str, Any] | int,
    status: str,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    duration: float | None = None,
    created_at: datetime | None = None,
) -> int:
    """A run inserted as stored (created_at fixed: event_at never depends on real time)."""
    pipeline_id = int(pipeline["id"]) if isinstance(pipeline, dict) else pipeline
    created = created_at or started_at or finished_at or NOW - timedelta(days=1)
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.insert(Run)
                .values(
                    pipeline_id=pipeline_id,
                    external_run_id=f"run-{next(_external)}",
                    status=status,
                    started_at=started_at,
                    finished_at=finished_at,
                    duration_seconds=duration,
                    metrics={},
                    created_at=created,
                    updated_at=created,
                )
                .returning(Run.id)
            ).scalar_one()
        )


def set_status(engine: Engine, run_id: int, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(Run).where(Run.id == run_id).values(status=status))


def run(
    engine: Engine, settings: Settings, now: datetime = NOW, destinations: Any = DESTINATIONS
) -> EvaluationReport:
    return evaluate(engine, now, settings, destinations, ENVIRON)


def alerts(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Alert).order_by(Alert.id)).all())


def firing(engine: Engine) -> list[Any]:
    return [a for a in alerts(engine) if a.state == "firing"]


def deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(AlertDelivery).order_by(AlertDelivery.id)).all())


def rule(api: TestClient, scope: dict[str, Any], **fields: Any) -> dict[str, Any]:
    key = "pipeline_id" if "client_id" in scope else "client_id"
    return make_rule(api, **{key: scope["id"], "destination": DESTINATION, **fields})


@pytest.fixture
def client(api: TestClient) -> dict[str, Any]:
    return make_client(api, "Acme")


@pytest.fixture
def pipeline(api: TestClient, client: dict[str, Any]) -> dict[str, Any]:
    return make_pipeline(api, client, "orders_daily", platform="airflow", environment="prod")


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


# --- on_failure -------------------------------------------------------------------------


def test_on_failure_fires_on_a_failed_latest_run_and_resolves_on_a_success(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    r = rule(api, pipeline)
    add_run(engine, pipeline, "success", started_at=at(-120))
    failed = add_run(engine, pipeline, "failed", started_at=at(-60))

    report = run(engine, settings)
    (alert,) = alerts(engine)
    assert (report.fired, report.resolved, report.firing) == (1, 0, 1)
    assert alert.state == "firing" and alert.resolved_at is None
    assert (alert.rule_id, alert.pipeline_id, alert.client_id) == (
        int(r["id"]),
        int(pipeline["id"]),
        int(pipeline["client_id"]),
    )
    assert alert.rule_type == "on_failure" and alert.run_id == failed
    assert alert.fired_at == NOW and alert.last_notified_at == NOW
    assert alert.fingerprint == fingerprint(int(r["id"]), int(pipeline["id"]), NOW)
    assert len(alert.fingerprint) == 32
    assert alert.summary == "orders_daily (Acme, airflow/prod) has failed (latest run)"

    add_run(engine, pipeline, "success", started_at=at(-1))
    later = at(5)
    report = run(engine, settings, later)
    (alert,) = alerts(engine)
    assert (report.fired, report.resolved, report.firing) == (0, 1, 0)
    assert alert.state == "resolved" and alert.resolved_at == later


def test_on_failure_without_runs_or_with_a_success_latest_does_not_fire(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    empty, recovered = make_pipeline(api, client), make_pipeline(api, client)
    rule(api, client)
    add_run(engine, recovered, "failed", started_at=at(-60))
    add_run(engine, recovered, "success", started_at=at(-30))
    assert run(engine, settings).fired == 0
    assert alerts(engine) == [] and empty


# Layouts of (status, started minutes, finished minutes) in insertion order;
# the latest by the ordering rule (started desc, finished desc, nulls last in
# both, then id desc) decides.
LAYOUTS = {
    "a run without start is older than any started one": [
        ("failed", None, -1),
        ("success", -100, -90),
    ],
    "without finish is older among equal starts": [
        ("success", -100, -90),
        ("failed", -100, None),
    ],
    "equal starts: the later finish wins": [
        ("failed", -100, -50),
        ("success", -100, -90),
    ],
    "equal keys: the higher id wins": [
        ("success", -100, -90),
        ("failed", -100, -90),
    ],
    "no timestamps at all: the higher id wins": [
        ("success", None, None),
        ("failed", None, None),
    ],
    "the latest started run failed, a later-created one did not start": [
        ("failed", -10, None),
        ("success", None, None),
    ],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_on_failure_follows_the_ordering_rule_with_missing_timestamps(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any], layout: str
) -> None:
    rule(api, pipeline)
    ids = []
    for status, started, finished in LAYOUTS[layout]:
        ids.append(
            add_run(
                engine,
                pipeline,
                status,
                started_at=None if started is None else at(started),
                finished_at=None if finished is None else at(finished),
                created_at=at(-200),
            )
        )
    with engine.connect() as conn:
        stored = conn.execute(sa.select(Run).where(Run.id.in_(ids))).all()
    latest = max(stored, key=sort_key)
    run(engine, settings)
    found = alerts(engine)
    if latest.status == "failed":
        assert [a.run_id for a in found] == [latest.id]
    else:
        assert found == []


# --- failures_in_window ------------------------------------------------------------------


def test_failures_in_window_counts_failures_in_now_minus_window_excluded_to_now_included(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="failures_in_window", threshold=2, window_minutes=60)
    add_run(engine, pipeline, "failed", started_at=at(-60))  # the window's open end: out
    add_run(engine, pipeline, "failed", started_at=NOW + timedelta(seconds=1))  # after now: out
    add_run(engine, pipeline, "success", started_at=at(-30))  # not a failure
    inside = add_run(engine, pipeline, "failed", started_at=at(-60) + US)  # in
    assert run(engine, settings).fired == 0

    at_now = add_run(engine, pipeline, "failed", started_at=NOW)  # the closed end: in
    assert run(engine, settings).fired == 1
    (alert,) = alerts(engine)
    assert alert.run_id == at_now
    assert alert.summary == "orders_daily (Acme, airflow/prod) failed twice in the last 60 minutes"

    # One microsecond later the oldest failure leaves the window.
    report = run(engine, settings, NOW + US)
    assert report.resolved == 1 and inside


def test_failures_in_window_uses_the_event_time_of_runs_without_start(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="failures_in_window", threshold=2, window_minutes=10)
    add_run(engine, pipeline, "failed", finished_at=at(-5))  # event time = finished
    add_run(engine, pipeline, "failed", created_at=at(-3))  # event time = created
    add_run(engine, pipeline, "failed", started_at=at(-20), finished_at=at(-1))  # started: out
    assert run(engine, settings).fired == 1
    (alert,) = alerts(engine)
    assert "failed twice in the last 10 minutes" in alert.summary


# --- consecutive_failures -----------------------------------------------------------------


def test_consecutive_failures_fires_at_the_threshold_and_never_with_fewer_runs(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="consecutive_failures", threshold=3)
    add_run(engine, pipeline, "failed", started_at=at(-30))
    add_run(engine, pipeline, "failed", started_at=at(-20))
    assert run(engine, settings).fired == 0  # two runs only, both failed
    latest = add_run(engine, pipeline, "failed", started_at=at(-10))
    assert run(engine, settings, at(1)).fired == 1  # every run failed: exactly three
    (alert,) = alerts(engine)
    assert alert.run_id == latest
    assert alert.summary == "orders_daily (Acme, airflow/prod) failed 3 times in a row"
    add_run(engine, pipeline, "success", started_at=at(-5))
    assert run(engine, settings, at(2)).resolved == 1


def test_consecutive_failures_counts_since_the_latest_run_that_did_not_fail(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="consecutive_failures", threshold=2)
    add_run(engine, pipeline, "failed", started_at=at(-50))
    add_run(engine, pipeline, "cancelled", started_at=at(-40))  # not a failure
    add_run(engine, pipeline, "failed", started_at=at(-30))
    assert run(engine, settings).fired == 0
    add_run(engine, pipeline, "failed", started_at=at(-20))
    add_run(engine, pipeline, "failed", started_at=at(-10))
    assert run(engine, settings, at(1)).fired == 1
    assert "failed 3 times in a row" in alerts(engine)[0].summary


def test_consecutive_failures_orders_runs_without_start_last(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="consecutive_failures", threshold=3)
    add_run(engine, pipeline, "success", started_at=at(-90))
    # Finished last, but without a start: the oldest by the ordering rule.
    add_run(engine, pipeline, "failed", finished_at=at(-1))
    add_run(engine, pipeline, "failed", started_at=at(-60))
    add_run(engine, pipeline, "failed", started_at=at(-30))
    # Latest three: failed (-30), failed (-60), success (-90).
    assert run(engine, settings).fired == 0
    add_run(engine, pipeline, "failed", started_at=at(-10))
    assert run(engine, settings).fired == 1


# --- long_running --------------------------------------------------------------------------


def test_long_running_fires_for_a_run_older_than_the_threshold(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="long_running", threshold=120)
    add_run(engine, pipeline, "running", started_at=at(-120))  # exactly 120 min: not over
    add_run(engine, pipeline, "success", started_at=at(-500))  # finished: never
    assert run(engine, settings).fired == 0
    oldest = add_run(engine, pipeline, "queued", created_at=at(-130) - US)  # no start yet
    add_run(engine, pipeline, "running", started_at=at(-125))
    assert run(engine, settings).fired == 1
    (alert,) = alerts(engine)
    assert alert.run_id == oldest
    assert alert.summary == (
        "orders_daily (Acme, airflow/prod) has been queued for 2 h 10 min (over 120 min)"
    )
    set_status(engine, oldest, "success")
    # Still firing (another run is over the threshold): the same alert stays open.
    assert run(engine, settings, at(1)).fired == 0 and len(firing(engine)) == 1


def test_long_running_resolves_when_the_run_ends(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="long_running", threshold=30)
    stuck = add_run(engine, pipeline, "running", started_at=at(-30) - US)
    assert run(engine, settings).fired == 1
    assert "has been running for 30 min (over 30 min)" in alerts(engine)[0].summary
    set_status(engine, stuck, "failed")
    assert run(engine, settings, at(1)).resolved == 1


# --- duration_anomaly -----------------------------------------------------------------------


def add_history(
    engine: Engine, pipeline: dict[str, Any], durations: list[float], start: datetime
) -> datetime:
    """Successful runs an hour apart from ``start``; answers the next start."""
    for duration in durations:
        add_run(
            engine,
            pipeline,
            "success",
            started_at=start,
            finished_at=start + timedelta(seconds=duration),
            duration=duration,
        )
        start += timedelta(hours=1)
    return start


@pytest.mark.parametrize(("prior", "fires"), [(9, False), (10, True)])
def test_duration_anomaly_needs_ten_successful_runs_before(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    pipeline: dict[str, Any],
    prior: int,
    fires: bool,
) -> None:
    rule(api, pipeline, rule_type="duration_anomaly")
    start = add_history(engine, pipeline, [600.0] * prior, at(-60 * 48))
    add_run(engine, pipeline, "failed", started_at=start, duration=5.0)  # not a success: no sample
    latest = add_run(engine, pipeline, "success", started_at=at(-60), duration=2460.0)
    assert run(engine, settings).fired == int(fires)
    if fires:
        (alert,) = alerts(engine)
        assert alert.run_id == latest
        assert alert.summary == (
            "orders_daily (Acme, airflow/prod) took 41 min, over 3\u00d7 its usual 10 min"
        )


def test_duration_anomaly_fires_strictly_above_both_bounds(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    # Ten runs of 100 s: median 100, p95 100; the bound is max(150, 300) = 300.
    at_bound, over_bound = make_pipeline(api, client, "at"), make_pipeline(api, client, "over")
    rule(api, client, rule_type="duration_anomaly")
    for each, duration in ((at_bound, 300.0), (over_bound, 300.5)):
        start = add_history(engine, each, [100.0] * 10, at(-60 * 24))
        add_run(engine, each, "failed", started_at=start, duration=duration)  # failed counts
    assert run(engine, settings).fired == 1
    (alert,) = alerts(engine)
    assert alert.pipeline_id == int(over_bound["id"])


def test_duration_anomaly_names_the_p95_bound_when_it_is_the_higher(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    # Median 60 s (3 x = 180 s) but p95 well above: 1.5 x p95 is the bound.
    durations = [60.0] * 8 + [600.0, 600.0, 600.0]
    rule(api, pipeline, rule_type="duration_anomaly")
    start = add_history(engine, pipeline, durations, at(-60 * 24))
    add_run(engine, pipeline, "success", started_at=start, duration=3600.0)
    assert run(engine, settings).fired == 1
    assert alerts(engine)[0].summary == (
        "orders_daily (Acme, airflow/prod) took 1 h, over 1.5\u00d7 its 95th percentile"
        " of 10 min (usual 60 s)"
    )


def test_duration_anomaly_compares_with_the_latest_finished_run_with_a_duration(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="duration_anomaly")
    start = add_history(engine, pipeline, [60.0] * 12, at(-60 * 24))
    slow = add_run(engine, pipeline, "failed", started_at=start, duration=1000.0)
    # Newer, but not finished, or finished without a duration: not "the latest finished run".
    add_run(engine, pipeline, "running", started_at=start + timedelta(minutes=30))
    add_run(engine, pipeline, "success", started_at=start + timedelta(minutes=40))
    add_run(engine, pipeline, "cancelled", started_at=start + timedelta(minutes=50), duration=9e3)
    assert run(engine, settings).fired == 1
    assert alerts(engine)[0].run_id == slow


def oracle(runs: list[Any]) -> tuple[Any, float, float, int] | None:
    """The contract's rule in Python: the latest finished run (ordering rule) with a
    duration, and the median and p95 (statistics' inclusive quantiles, i.e.
    linear interpolation) of the 30 successful runs with a duration before it."""
    ordered = sorted(runs, key=sort_key, reverse=True)
    finished = [
        r for r in ordered if r.status in ("success", "failed") and r.duration_seconds is not None
    ]
    if not finished:
        return None
    last = finished[0]
    before = ordered[ordered.index(last) + 1 :]
    sample = [r.duration_seconds for r in before if r.status == "success"]
    sample = [d for d in sample if d is not None][:30]
    if len(sample) < 2:
        return None
    p95 = statistics.quantiles(sample, n=100, method="inclusive")[94]
    return last, p95, statistics.median(sample), len(sample)


def test_duration_anomaly_percentiles_match_a_python_oracle(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    rng = random.Random(14)
    pipelines = [make_pipeline(api, client, f"p{i}") for i in range(12)]
    rule(api, client, rule_type="duration_anomaly")
    for index, each in enumerate(pipelines):
        start = at(-60 * 24 * 5)
        for _ in range(rng.randint(8, 60)):
            start += timedelta(minutes=rng.randint(1, 90))
            status = rng.choice(["success"] * 6 + ["failed", "cancelled", "running"])
            started = None if rng.random() < 0.1 else start
            finished = None if rng.random() < 0.1 else start + timedelta(minutes=5)
            duration = None if rng.random() < 0.1 else round(rng.lognormvariate(5, 0.6), 3)
            if started is None and finished is None and rng.random() < 0.5:
                finished = start
            add_run(engine, each, status, started, finished, duration, created_at=start)
        # The latest run, far slower than usual, for half of them.
        slow = 10_000.0 if index % 2 == 0 else 1.0
        add_run(engine, each, "success", start + timedelta(hours=1), duration=slow)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(Run)).all()
        rows = {row.pipeline_id: row for row in conn.execute(duration_anomaly_statement(NOW))}
    expected = {}
    for each in pipelines:
        found = oracle([r for r in stored if r.pipeline_id == int(each["id"])])
        if found is None:
            continue
        last, p95, median, n = found
        if n >= 10 and last.duration_seconds > max(1.5 * p95, 3 * median):
            expected[int(each["id"])] = (last.id, p95, median, n)
    assert expected, "the data set must make some pipelines fire"
    assert set(rows) == set(expected)
    for pipeline_id, (run_id, p95, median, n) in expected.items():
        row = rows[pipeline_id]
        assert (row.run_id, row.sampled) == (run_id, n)
        assert row.p95 == pytest.approx(p95, rel=1e-12)
        assert row.median == pytest.approx(median, rel=1e-12)
    assert run(engine, settings).fired == len(expected)


def test_percentile_is_linear_interpolation() -> None:
    values = [float(v) for v in (15, 20, 35, 40, 50, 7, 1, 99, 3, 12, 18)]
    for numerator in (50, 95):
        q = statistics.quantiles(values, n=100, method="inclusive")[numerator - 1]
        assert percentile(values, numerator) == pytest.approx(q, rel=1e-15)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0


# --- scope -------------------------------------------------------------------------------


def test_a_client_rule_covers_every_active_pipeline_of_the_client(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    failing = [make_pipeline(api, client) for _ in range(3)]
    healthy = make_pipeline(api, client)
    inactive = make_pipeline(api, client)
    other_client = make_pipeline(api, make_client(api))
    for each in (*failing, inactive, other_client):
        add_run(engine, each, "failed", started_at=at(-10))
    add_run(engine, healthy, "success", started_at=at(-10))
    ok(api.delete(f"{API}/pipelines/{inactive['id']}"))
    rule(api, client)
    assert run(engine, settings).fired == 3
    assert {a.pipeline_id for a in alerts(engine)} == {int(p["id"]) for p in failing}


def test_a_rule_with_client_and_pipeline_covers_the_pipeline_only(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    one, other = make_pipeline(api, client), make_pipeline(api, client)
    for each in (one, other):
        add_run(engine, each, "failed", started_at=at(-10))
    make_rule(api, client_id=client["id"], pipeline_id=one["id"], destination=DESTINATION)
    run(engine, settings)
    assert [a.pipeline_id for a in alerts(engine)] == [int(one["id"])]


@pytest.mark.parametrize(
    "change",
    ["pipeline_inactive", "client_inactive", "rule_disabled", "rule_deleted", "rule_rescoped"],
)
def test_an_alert_resolves_when_its_pair_leaves_the_scope(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    client: dict[str, Any],
    pipeline: dict[str, Any],
    change: str,
) -> None:
    other = make_pipeline(api, client)
    r = rule(api, pipeline)
    add_run(engine, pipeline, "failed", started_at=at(-10))
    assert run(engine, settings).fired == 1
    if change == "pipeline_inactive":
        ok(api.delete(f"{API}/pipelines/{pipeline['id']}"))
    elif change == "client_inactive":
        ok(api.delete(f"{API}/clients/{client['id']}"))
    elif change == "rule_disabled":
        ok(api.post(f"{API}/alert-rules/{r['id']}/disable"))
    elif change == "rule_deleted":
        ok(api.delete(f"{API}/alert-rules/{r['id']}"), 204)
    else:
        ok(api.patch(f"{API}/alert-rules/{r['id']}", json={"pipeline_id": other["id"]}))
    report = run(engine, settings, at(1))
    assert (report.fired, report.resolved) == (0, 1)
    (alert,) = alerts(engine)
    assert alert.state == "resolved" and alert.resolved_at == at(1)
    # The resolved notice goes where the firing one went, even with the rule gone.
    assert [(d.event, d.destination) for d in deliveries(engine)] == [
        ("firing", DESTINATION),
        ("resolved", DESTINATION),
    ]


def test_inactive_pipelines_and_clients_never_fire(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    inactive_pipeline = make_pipeline(api, client)
    gone = make_client(api)
    of_inactive_client = make_pipeline(api, gone)
    for each in (inactive_pipeline, of_inactive_client):
        add_run(engine, each, "failed", started_at=at(-10))
    rule(api, inactive_pipeline)
    rule(api, gone)
    ok(api.delete(f"{API}/pipelines/{inactive_pipeline['id']}"))
    ok(api.delete(f"{API}/clients/{gone['id']}"))
    assert run(engine, settings).fired == 0


def test_a_rule_that_changes_type_resolves_its_alert_and_fires_the_new_condition(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    r = rule(api, pipeline)
    for minutes in (-30, -20, -10):
        add_run(engine, pipeline, "failed", started_at=at(minutes))
    assert run(engine, settings).fired == 1
    body = {"rule_type": "consecutive_failures", "threshold": 3}
    ok(api.patch(f"{API}/alert-rules/{r['id']}", json=body))
    report = run(engine, settings, at(1))
    assert (report.fired, report.resolved) == (1, 1)
    old, new = alerts(engine)
    assert (old.rule_type, old.state, new.rule_type, new.state) == (
        "on_failure",
        "resolved",
        "consecutive_failures",
        "firing",
    )


# --- lifecycle and guarantees ------------------------------------------------------------


def test_evaluating_twice_on_the_same_data_changes_nothing(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    pipelines = [make_pipeline(api, client) for _ in range(4)]
    rule(api, client)
    rule(api, client, rule_type="consecutive_failures", threshold=1)
    rule(api, client, rule_type="long_running", threshold=10)
    for each in pipelines:
        add_run(engine, each, "running", started_at=at(-40))
        add_run(engine, each, "failed", started_at=at(-30))
    first = run(engine, settings)
    assert first.fired == 12 and first.deliveries == {"pending": 12}
    before = (alerts(engine), deliveries(engine))
    for later in (NOW, at(1), at(5)):
        again = run(engine, settings, later)
        assert (again.fired, again.resolved, again.firing, again.deliveries) == (0, 0, 12, {})
    assert (alerts(engine), deliveries(engine)) == before


def test_a_new_occurrence_after_a_resolve_opens_a_new_alert(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline)
    add_run(engine, pipeline, "failed", started_at=at(-30))
    run(engine, settings)
    add_run(engine, pipeline, "success", started_at=at(-20))
    run(engine, settings, at(1))
    again = add_run(engine, pipeline, "failed", started_at=at(-10))
    assert run(engine, settings, at(2)).fired == 1
    first, second = alerts(engine)
    assert (first.state, second.state) == ("resolved", "firing")
    assert second.fired_at == at(2) and second.run_id == again
    assert first.fingerprint != second.fingerprint


# --- time never goes backwards ----------------------------------------------------------------


SECOND = timedelta(seconds=1)


def test_an_evaluation_at_an_earlier_time_does_not_resolve_what_fired_later(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    # Workers read their own clocks: one evaluates at NOW + 1 s, another then at NOW - 1 s.
    rule(api, pipeline, rule_type="long_running", threshold=30)
    add_run(engine, pipeline, "running", started_at=at(-30))  # over 30 min only after NOW
    assert run(engine, settings, NOW + SECOND).fired == 1
    late = run(engine, settings, NOW - SECOND)
    assert (late.fired, late.resolved, late.firing, late.deliveries) == (0, 0, 1, {})
    (alert,) = alerts(engine)
    assert (alert.state, alert.fired_at, alert.resolved_at) == ("firing", NOW + SECOND, None)
    assert len(deliveries(engine)) == 1


def test_an_evaluation_at_an_earlier_time_does_not_fire_again_what_resolved_later(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline, rule_type="failures_in_window", threshold=1, window_minutes=60)
    add_run(engine, pipeline, "failed", started_at=at(-60))  # in the window only before NOW
    assert run(engine, settings, NOW - 2 * SECOND).fired == 1
    assert run(engine, settings, NOW + SECOND).resolved == 1
    late = run(engine, settings, NOW - SECOND)
    assert (late.fired, late.resolved, late.firing, late.deliveries) == (0, 0, 0, {})
    (alert,) = alerts(engine)
    assert (alert.state, alert.resolved_at) == ("resolved", NOW + SECOND)
    # Deliveries: its firing one and its resolved one, nothing more.
    assert [d.event for d in deliveries(engine)] == ["firing", "resolved"]


def test_the_database_refuses_a_second_firing_alert_for_a_rule_and_pipeline(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline)
    add_run(engine, pipeline, "failed", started_at=at(-30))
    run(engine, settings)
    (alert,) = alerts(engine)
    copy = {c.name: getattr(alert, c.name) for c in Alert.__table__.columns if c.name != "id"}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(Alert).values(**{**copy, "fingerprint": "another"}))
    with engine.begin() as conn:  # a resolved one beside it is fine
        conn.execute(
            sa.insert(Alert).values(
                **{**copy, "fingerprint": "old", "state": "resolved", "resolved_at": NOW}
            )
        )


@pytest.mark.postgres_only
def test_two_concurrent_evaluations_fire_one_alert(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    pipelines = [make_pipeline(api, client) for _ in range(20)]
    rule(api, client)
    for each in pipelines:
        add_run(engine, each, "failed", started_at=at(-30))
    barrier = threading.Barrier(4)
    reports: list[EvaluationReport] = []
    errors: list[BaseException] = []

    def evaluate_once() -> None:
        barrier.wait()
        try:
            reports.append(run(engine, settings))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=evaluate_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(r.fired for r in reports) == [0, 0, 0, 20]
    assert len(alerts(engine)) == 20 and len(deliveries(engine)) == 20


@pytest.mark.postgres_only
def test_an_evaluation_skips_while_another_holds_the_lock(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    rule(api, pipeline)
    add_run(engine, pipeline, "failed", started_at=at(-30))
    with engine.connect() as other:
        other.execute(sa.select(sa.func.pg_advisory_xact_lock(*EVALUATION_LOCK)))
        done: list[EvaluationReport] = []
        # In a thread, so a wait for the lock (the old behaviour) fails the test
        # instead of hanging it.
        worker = threading.Thread(target=lambda: done.append(run(engine, settings)))
        worker.start()
        worker.join(10)
        assert done, "the evaluation waited for the lock instead of skipping"
        (skipped,) = done
        assert skipped.skipped is True
        assert (skipped.fired, skipped.resolved, skipped.deliveries) == (0, 0, {})
        assert alerts(engine) == []
        other.rollback()  # the other evaluation ends
    again = run(engine, settings)
    assert again.skipped is False and again.fired == 1


def test_the_report_counts_deliveries_by_status(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    one, two = make_pipeline(api, client), make_pipeline(api, client)
    rule(api, one)
    rule(api, two, destination="webhook:nowhere")
    for each in (one, two):
        add_run(engine, each, "failed", started_at=at(-30))
    report = run(engine, settings)
    assert report.deliveries == {"pending": 1, "undeliverable": 1}
    assert report.elapsed_s > 0


# --- set-based -----------------------------------------------------------------------------


def count_statements(engine: Engine, action: Any) -> int:
    """How many statements ``action()`` sends to the database."""
    statements = 0

    def counted(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(engine, "before_cursor_execute", counted)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", counted)
    return statements


def failing_everywhere(api: TestClient, engine: Engine, count: int) -> dict[str, Any]:
    """A client whose ``count`` pipelines make every rule type fire, and its rules."""
    client = make_client(api)
    ids = [int(make_pipeline(api, client)["id"]) for _ in range(count)]
    rows: list[dict[str, Any]] = []
    for pipeline_id in ids:
        runs = [("success", at(-600 + 10 * i), 100.0) for i in range(10)]
        runs += [("running", at(-30), None), ("failed", at(-20), 1e4), ("failed", at(-10), 1e4)]
        for status, started, duration in runs:
            rows.append(
                {
                    "pipeline_id": pipeline_id,
                    "external_run_id": f"run-{next(_external)}",
                    "status": status,
                    "started_at": started,
                    "duration_seconds": duration,
                    "metrics": {},
                    "created_at": started,
                    "updated_at": started,
                }
            )
    with engine.begin() as conn:
        conn.execute(sa.insert(Run), rows)
    rule(api, client)
    rule(api, client, rule_type="failures_in_window", threshold=2, window_minutes=60)
    rule(api, client, rule_type="consecutive_failures", threshold=2)
    rule(api, client, rule_type="long_running", threshold=10)
    rule(api, client, rule_type="duration_anomaly")
    return client


def test_evaluation_is_set_based_its_statements_do_not_grow_with_pipelines(
    api: TestClient, engine: Engine, settings: Settings
) -> None:
    failing_everywhere(api, engine, 10)
    fire_10 = count_statements(engine, lambda: run(engine, settings))
    steady_10 = count_statements(engine, lambda: run(engine, settings))
    assert len(firing(engine)) == 50
    failing_everywhere(api, engine, 100)
    fire_100 = count_statements(engine, lambda: run(engine, settings))
    steady_110 = count_statements(engine, lambda: run(engine, settings))
    assert len(firing(engine)) == 550
    assert fire_100 == fire_10
    assert steady_110 == steady_10
