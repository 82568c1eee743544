"""The alert rule type missed_schedule (issue 15; docs/alerts.md): its rule
body, when it fires (missed at the tick plus its grace, late at the tick plus
its deadline while the run is still open) and resolves (the run arrives, the
run finishes, the pipeline leaves the scope or its schedule), one alert across
successive ticks, its summary and delivery, and the worker evaluating when a
tick comes due. On both databases, at fixed times, with the pipelines'
schedules dated before them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from channel_fakes import WebhookReceiver
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from chm.alerts.delivery import send_due
from chm.alerts.destinations import Destination, Destinations
from chm.alerts.evaluate import (
    EvaluationReport,
    evaluate,
    fingerprint,
    missed_schedule_statement,
    next_schedule_due,
)
from chm.alerts.summary import missed_schedule
from chm.core.settings import Settings
from chm.core.types import UTCDateTime
from chm.models import Alert, AlertDelivery, Pipeline, Run
from chm.schedules.expectation import expect
from chm.schedules.ticks import rewrite_ticks, stored_expectations, top_up
from chm.worker.alerts import Evaluation, LiveDestinations
from chm.worker.context import LiveSources, WorkerContext
from chm.worker.loop import Worker
from chm.worker.schedules import Schedules
from factories import API, make_client, make_pipeline, make_rule, ok

US = timedelta(microseconds=1)
DESTINATION = "webhook:ops"
DESTINATIONS = Destinations([Destination(name="ops", kind="webhook", url_env="OPS_URL")])
ENVIRON = {"OPS_URL": "http://127.0.0.1:9/hook"}
_external = itertools.count(1)

# orders_daily runs at 02:30 in Berlin: on 2030-06-01 (summer time, UTC+2)
# that is 00:30 UTC. Grace 30 min: a run with event time from 00:00 UTC
# answers it, and none by 01:00 UTC is missed. Deadline 90 min: a run of the
# window still open at 02:00 UTC is late.
SINCE = datetime(2030, 5, 31, 12, 0, tzinfo=UTC)  # after the 31st's 00:30 UTC tick
TICK = datetime(2030, 6, 1, 0, 30, tzinfo=UTC)
WINDOW_START = datetime(2030, 6, 1, 0, 0, tzinfo=UTC)
DUE_MISSED = datetime(2030, 6, 1, 1, 0, tzinfo=UTC)
DUE_LATE = datetime(2030, 6, 1, 2, 0, tzinfo=UTC)
WHO = "orders_daily (Acme, airflow/prod)"
MISSED = (
    f"{WHO} missed its run scheduled for 2030-06-01 02:30 Europe/Berlin (2030-06-01 00:30 UTC):"
    " none by 2030-06-01 01:00 UTC"
)
LATE = (
    f"{WHO} is late: its run scheduled for 2030-06-01 02:30 Europe/Berlin (2030-06-01 00:30 UTC)"
    " is still running past its deadline, 2030-06-01 02:00 UTC"
)


# --- helpers --------------------------------------------------------------------------


def dated(engine: Engine, pipeline: dict[str, Any], since: datetime = SINCE) -> None:
    """The pipeline created, and its schedule set, at ``since``: its ticks stored
    afresh from then (as the API stores them when a schedule is set)."""
    with Session(engine) as session, session.begin():
        row = session.get(Pipeline, int(pipeline["id"]))
        assert row is not None
        row.created_at = row.updated_at = row.schedule_set_at = since
        rewrite_ticks(session, row, since)


def add_run(
    engine: Engine,
    pipeline: dict[str, Any],
    status: str,
    started_at: datetime | None,
    created_at: datetime | None = None,
) -> int:
    """A run stored as is (created_at fixed: its event time never depends on real time)."""
    created = created_at or started_at or SINCE
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.insert(Run)
                .values(
                    pipeline_id=int(pipeline["id"]),
                    external_run_id=f"run-{next(_external)}",
                    status=status,
                    started_at=started_at,
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


def run(engine: Engine, settings: Settings, now: datetime) -> EvaluationReport:
    return evaluate(engine, now, settings, DESTINATIONS, ENVIRON)


def alerts(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Alert).order_by(Alert.id)).all())


def firing(engine: Engine) -> list[Any]:
    return [a for a in alerts(engine) if a.state == "firing"]


def deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(AlertDelivery).order_by(AlertDelivery.id)).all())


@pytest.fixture
def client(api: TestClient) -> dict[str, Any]:
    return make_client(api, "Acme")


@pytest.fixture
def pipeline(api: TestClient, engine: Engine, client: dict[str, Any]) -> dict[str, Any]:
    created = make_pipeline(
        api,
        client,
        "orders_daily",
        platform="airflow",
        environment="prod",
        schedule="30 2 * * *",
        schedule_timezone="Europe/Berlin",
        grace_minutes=30,
        deadline_minutes=90,
    )
    dated(engine, created)
    return created


@pytest.fixture
def missed_rule(api: TestClient, pipeline: dict[str, Any]) -> dict[str, Any]:
    return make_rule(
        api, pipeline_id=pipeline["id"], rule_type="missed_schedule", destination=DESTINATION
    )


def fields_of(response: Any) -> list[tuple[str, str]]:
    return sorted((e["field"], e["code"]) for e in response.json()["errors"])


# --- the rule ---------------------------------------------------------------------------


def test_the_rule_takes_no_threshold_and_no_window(
    api: TestClient, pipeline: dict[str, Any]
) -> None:
    body = {"rule_type": "missed_schedule", "pipeline_id": pipeline["id"], "destination": "x"}
    for extra, field in (
        ({"threshold": 3}, "threshold"),
        ({"window_minutes": 5}, "window_minutes"),
    ):
        response = api.post(f"{API}/alert-rules", json=body | extra)
        assert response.status_code == 422, response.text
        assert fields_of(response) == [(field, "not_used")]
    assert ok(api.get(f"{API}/alert-rules"))["items"] == [], "nothing stored"
    rule = make_rule(api, **body, threshold=None, window_minutes=None)
    assert (rule["rule_type"], rule["threshold"], rule["window_minutes"]) == (
        "missed_schedule",
        None,
        None,
    )
    assert api.post(f"{API}/alert-rules", json=body).status_code == 409


def test_a_rule_changed_to_missed_schedule_must_drop_its_parameters(
    api: TestClient, client: dict[str, Any]
) -> None:
    rule = make_rule(
        api, client_id=client["id"], rule_type="failures_in_window", threshold=5, window_minutes=30
    )
    path = f"{API}/alert-rules/{rule['id']}"
    response = api.patch(path, json={"rule_type": "missed_schedule"})
    assert response.status_code == 422
    assert fields_of(response) == [("threshold", "not_used"), ("window_minutes", "not_used")]
    assert ok(api.get(path)) == rule
    changed = ok(
        api.patch(
            path, json={"rule_type": "missed_schedule", "threshold": None, "window_minutes": None}
        )
    )
    assert (changed["rule_type"], changed["threshold"], changed["window_minutes"]) == (
        "missed_schedule",
        None,
        None,
    )


def test_the_schema_has_a_body_for_missed_schedule(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    body = document["paths"]["/api/v1/alert-rules"]["post"]["requestBody"]["content"]
    mapping = body["application/json"]["schema"]["discriminator"]["mapping"]
    variant = document["components"]["schemas"][mapping["missed_schedule"].rsplit("/", 1)[-1]]
    assert {"threshold", "window_minutes"}.isdisjoint(variant["required"])
    assert {variant["properties"][f]["type"] for f in ("threshold", "window_minutes")} == {"null"}


# --- missed ---------------------------------------------------------------------------------


def test_fires_when_missed_at_the_tick_plus_grace_and_not_a_microsecond_before(
    engine: Engine, settings: Settings, missed_rule: dict[str, Any], pipeline: dict[str, Any]
) -> None:
    assert run(engine, settings, DUE_MISSED - US).fired == 0
    assert alerts(engine) == []

    report = run(engine, settings, DUE_MISSED)
    (alert,) = alerts(engine)
    assert (report.fired, report.firing) == (1, 1)
    assert (alert.rule_id, alert.pipeline_id, alert.client_id) == (
        int(missed_rule["id"]),
        int(pipeline["id"]),
        int(pipeline["client_id"]),
    )
    assert alert.rule_type == "missed_schedule" and alert.state == "firing"
    assert alert.run_id is None, "a missed run has no run"
    assert alert.fired_at == DUE_MISSED
    assert alert.fingerprint == fingerprint(int(missed_rule["id"]), int(pipeline["id"]), DUE_MISSED)
    assert alert.summary == MISSED


@pytest.mark.parametrize(
    ("started_at", "fires"),
    [
        (WINDOW_START - US, True),  # before the window: answers an earlier tick
        (WINDOW_START, False),  # early within the grace
        (TICK, False),
        (DUE_MISSED, False),  # on the due time itself
        (DUE_MISSED + US, True),  # after now: not yet in the window
    ],
)
def test_a_run_answers_the_tick_with_its_event_time_in_the_window_both_ends_included(
    engine: Engine,
    settings: Settings,
    missed_rule: dict[str, Any],
    pipeline: dict[str, Any],
    started_at: datetime,
    fires: bool,
) -> None:
    add_run(engine, pipeline, "success", started_at)
    assert run(engine, settings, DUE_MISSED).fired == int(fires)


def test_resolves_when_the_expected_run_arrives(
    engine: Engine, settings: Settings, missed_rule: dict[str, Any], pipeline: dict[str, Any]
) -> None:
    run(engine, settings, DUE_MISSED)
    assert len(firing(engine)) == 1
    add_run(engine, pipeline, "running", DUE_MISSED + timedelta(minutes=5))
    report = run(engine, settings, DUE_MISSED + timedelta(minutes=6))
    (alert,) = alerts(engine)
    assert (report.fired, report.resolved, report.firing) == (0, 1, 0)
    assert alert.state == "resolved"
    assert alert.resolved_at == DUE_MISSED + timedelta(minutes=6)
    # Still open at its deadline: late is a new occurrence (the run is there now).
    report = run(engine, settings, DUE_LATE)
    assert report.fired == 1
    assert firing(engine)[0].summary == LATE


def test_without_a_tick_due_since_the_schedule_was_set_nothing_is_expected(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    """The 31st's tick (00:30 UTC) is before the schedule was set (12:00): not missed."""
    pipeline = make_pipeline(api, client, schedule="30 2 * * *", schedule_timezone="Europe/Berlin")
    dated(engine, pipeline)
    make_rule(api, pipeline_id=pipeline["id"], rule_type="missed_schedule", destination=DESTINATION)
    assert run(engine, settings, SINCE + timedelta(hours=6)).fired == 0
    unscheduled = make_pipeline(api, client)
    make_rule(
        api, pipeline_id=unscheduled["id"], rule_type="missed_schedule", destination=DESTINATION
    )
    assert run(engine, settings, DUE_MISSED).fired == 1
    assert [a.pipeline_id for a in firing(engine)] == [int(pipeline["id"])]


# --- late ------------------------------------------------------------------------------------


def test_late_fires_while_the_run_still_runs_past_the_deadline_and_resolves_when_it_finishes(
    engine: Engine, settings: Settings, missed_rule: dict[str, Any], pipeline: dict[str, Any]
) -> None:
    started = add_run(engine, pipeline, "running", TICK + timedelta(minutes=1))
    later = add_run(engine, pipeline, "queued", TICK + timedelta(minutes=2))
    assert run(engine, settings, DUE_MISSED).fired == 0, "answered: not missed"
    assert run(engine, settings, DUE_LATE - US).fired == 0

    report = run(engine, settings, DUE_LATE)
    (alert,) = alerts(engine)
    assert report.fired == 1
    assert alert.run_id == started, "the oldest open run of the window"
    assert alert.summary == LATE

    set_status(engine, started, "success")
    assert run(engine, settings, DUE_LATE + timedelta(minutes=1)).resolved == 0, (
        "the queued run of the window is still open: still late"
    )
    set_status(engine, later, "failed")
    report = run(engine, settings, DUE_LATE + timedelta(minutes=2))
    (alert,) = alerts(engine)
    assert report.resolved == 1 and alert.state == "resolved"


def test_the_next_periods_run_is_not_late_for_the_tick_before(
    engine: Engine, settings: Settings, missed_rule: dict[str, Any], pipeline: dict[str, Any]
) -> None:
    # The day's run finished in time; the next day's starts on time and runs.
    # Until the next tick's grace ends, the day before's tick is the expected
    # one, and its deadline has passed: the new run was not running at that
    # deadline, so it is not late.
    done = add_run(engine, pipeline, "running", TICK + timedelta(minutes=1))
    set_status(engine, done, "success")
    next_day = TICK + timedelta(days=1)
    add_run(engine, pipeline, "running", next_day)
    assert run(engine, settings, next_day + timedelta(minutes=5)).fired == 0
    assert alerts(engine) == []


def test_ticks_that_ran_out_name_no_tick_until_topped_up(
    engine: Engine, settings: Settings, missed_rule: dict[str, Any], pipeline: dict[str, Any]
) -> None:
    # The worker was down: the stored ticks end before now. An old stored tick
    # would be taken for the expected one (and any run since for its answer);
    # the pipeline waits for the top-up instead.
    with engine.begin() as conn:
        conn.execute(
            sa.update(Pipeline)
            .where(Pipeline.id == int(pipeline["id"]))
            .values(schedule_ticks_until=DUE_MISSED - timedelta(minutes=1))
        )
        expectations = stored_expectations(sa.literal(DUE_MISSED, UTCDateTime()))
        assert conn.execute(sa.select(expectations)).all() == []
    assert run(engine, settings, DUE_MISSED).fired == 0
    with Session(engine) as session, session.begin():
        assert top_up(session, DUE_MISSED) == 1
    assert run(engine, settings, DUE_MISSED).fired == 1


def test_late_says_queued_for_a_run_that_has_not_started(
    engine: Engine, settings: Settings, missed_rule: dict[str, Any], pipeline: dict[str, Any]
) -> None:
    # Queued at the tick, not started: its event time is its creation.
    queued = add_run(engine, pipeline, "queued", None, created_at=TICK)
    run(engine, settings, DUE_LATE)
    (alert,) = alerts(engine)
    assert alert.run_id == queued
    assert alert.summary == LATE.replace("still running", "still queued")


def test_without_a_deadline_an_open_run_is_never_late(
    api: TestClient, engine: Engine, settings: Settings, missed_rule: dict[str, Any],
    pipeline: dict[str, Any],
) -> None:  # fmt: skip
    ok(api.patch(f"{API}/pipelines/{pipeline['id']}", json={"deadline_minutes": None}))
    dated(engine, pipeline)
    add_run(engine, pipeline, "running", TICK)
    assert run(engine, settings, DUE_LATE + timedelta(hours=5)).fired == 0


# --- one alert, and the scope --------------------------------------------------------------


def test_a_pipeline_that_stays_overdue_across_ticks_stays_one_alert(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    hourly = make_pipeline(api, client, "hourly", schedule="0 * * * *", grace_minutes=10)
    dated(engine, hourly)
    make_rule(api, client_id=client["id"], rule_type="missed_schedule", destination=DESTINATION)
    first_due = SINCE + timedelta(minutes=10)  # the 12:00 tick, as the schedule was set
    for hour in range(5):
        report = run(engine, settings, first_due + timedelta(hours=hour))
        assert report.fired == (1 if hour == 0 else 0) and report.resolved == 0
    (alert,) = alerts(engine)
    assert alert.fired_at == first_due and alert.state == "firing"
    assert alert.summary == (
        "hourly (Acme, airflow/prod) missed its run scheduled for 2030-05-31 12:00 UTC:"
        " none by 2030-05-31 12:10 UTC"
    )
    assert [(d.event, d.status) for d in deliveries(engine)] == [("firing", "pending")]

    # A run answers its own tick only: the next tick without one fires again.
    add_run(engine, hourly, "success", first_due + timedelta(hours=4))
    later = first_due + timedelta(hours=5)
    assert run(engine, settings, later - US).resolved == 1, "the run answers the 16:00 tick"
    assert run(engine, settings, later).fired == 1, "not the 17:00 one: a new occurrence"


@pytest.mark.parametrize("what", ["pipeline", "client", "rule"])
def test_an_inactive_pipeline_or_client_or_a_disabled_rule_resolves(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    missed_rule: dict[str, Any],
    pipeline: dict[str, Any],
    what: str,
) -> None:
    run(engine, settings, DUE_MISSED)
    assert len(firing(engine)) == 1
    if what == "rule":
        ok(api.post(f"{API}/alert-rules/{missed_rule['id']}/disable"))
    else:
        owner = pipeline if what == "pipeline" else {"id": pipeline["client_id"]}
        ok(api.patch(f"{API}/{what}s/{owner['id']}", json={"is_active": False}))
    report = run(engine, settings, DUE_MISSED + timedelta(minutes=1))
    assert (report.resolved, report.firing) == (1, 0)


def test_a_schedule_removed_resolves(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    missed_rule: dict[str, Any],
    pipeline: dict[str, Any],
) -> None:
    run(engine, settings, DUE_MISSED)
    assert len(firing(engine)) == 1
    ok(api.patch(f"{API}/pipelines/{pipeline['id']}", json={"schedule": None}))
    report = run(engine, settings, DUE_MISSED + timedelta(minutes=1))
    assert (report.resolved, report.firing) == (1, 0)


def test_a_schedule_changed_to_one_not_yet_due_resolves(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    missed_rule: dict[str, Any],
    pipeline: dict[str, Any],
) -> None:
    run(engine, settings, DUE_MISSED)
    ok(api.patch(f"{API}/pipelines/{pipeline['id']}", json={"schedule": "30 4 * * *"}))
    dated(engine, pipeline, DUE_MISSED)  # set then: its first tick is 02:30 UTC
    assert run(engine, settings, DUE_MISSED + timedelta(minutes=1)).resolved == 1
    assert run(engine, settings, datetime(2030, 6, 1, 3, 0, tzinfo=UTC)).fired == 1


# --- the expected tick ---------------------------------------------------------------------

# (cron, zone, grace, deadline): daylight-saving nights in Berlin (spring) and
# New York (autumn), a weekday schedule in Tokyo, a frequent one in UTC.
SCHEDULES = [
    ("30 2 * * *", "Europe/Berlin", 30, None),
    ("30 1 * * *", "America/New_York", 20, 60),
    ("0 9 * * MON-FRI", "Asia/Tokyo", 0, None),
    ("*/20 * * * *", "UTC", 5, 10),
]
SPRING = datetime(2030, 3, 31, 1, 30, tzinfo=UTC)  # Berlin's 02:30 is 03:00 CEST: 01:00 UTC
AS_OF = [
    datetime(2030, 3, 30, 12, 0, tzinfo=UTC),
    SPRING - US,
    SPRING,
    datetime(2030, 3, 31, 7, 0, tzinfo=UTC),
    datetime(2030, 11, 3, 5, 50, tzinfo=UTC),  # New York's first 01:30 (EDT), plus grace
    datetime(2030, 11, 3, 6, 50, tzinfo=UTC),  # and its second (EST)
    datetime(2030, 11, 4, 0, 1, tzinfo=UTC),
]


def test_the_expected_tick_is_the_stored_expectations_and_the_contracts(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    """Three readings of one definition agree: the statement's expected tick,
    chm.schedules.ticks.stored_expectations (the view's) and
    chm.schedules.expectation.expect (Python, the contract's definition)."""
    since = datetime(2030, 3, 29, 18, 0, tzinfo=UTC)
    pipelines: dict[int, tuple[str, str, int, int | None]] = {}
    for cron, zone, grace, deadline in SCHEDULES:
        created = make_pipeline(
            api, client, schedule=cron, schedule_timezone=zone, grace_minutes=grace,
            deadline_minutes=deadline,
        )  # fmt: skip
        dated(engine, created, since)
        pipelines[int(created["id"])] = (cron, zone, grace, deadline)
    make_rule(api, client_id=client["id"], rule_type="missed_schedule", destination=DESTINATION)
    for as_of in AS_OF:
        with Session(engine) as session, session.begin():
            top_up(session, as_of)  # as the worker keeps them before it evaluates
        with engine.connect() as conn:
            statement = {
                row.pipeline_id: row.expected_at
                for row in conn.execute(missed_schedule_statement(as_of))
            }  # no runs: every pipeline with an expected tick is missed
            stored = stored_expectations(sa.literal(as_of, UTCDateTime()))
            view = {row.pipeline_id: row.expected_at for row in conn.execute(sa.select(stored))}
        contract = {
            pipeline_id: expectation.expected_at
            for pipeline_id, (cron, zone, grace, deadline) in pipelines.items()
            if (expectation := expect(cron, zone, grace, deadline, since, as_of)) is not None
        }
        assert statement == view == contract, as_of
    assert len(contract) == len(SCHEDULES)


# --- the summary and its delivery -----------------------------------------------------------


def test_the_summary_names_the_state_the_tick_in_its_zone_and_in_utc_and_the_due_time() -> None:
    autumn = datetime(2030, 11, 3, 5, 30, tzinfo=UTC)  # 01:30 EST, the repeated hour's second
    assert missed_schedule("p (c, x/y)", "missed", autumn, "America/New_York", autumn, None) == (
        "p (c, x/y) missed its run scheduled for 2030-11-03 01:30 America/New_York"
        " (2030-11-03 05:30 UTC): none by 2030-11-03 05:30 UTC"
    )
    assert missed_schedule("p", "late", TICK, "UTC", DUE_LATE, "running") == (
        "p is late: its run scheduled for 2030-06-01 00:30 UTC is still running"
        " past its deadline, 2030-06-01 02:00 UTC"
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def test_the_firing_is_delivered_with_its_summary(
    engine: Engine,
    settings: Settings,
    missed_rule: dict[str, Any],
    pipeline: dict[str, Any],
    receiver: WebhookReceiver,
) -> None:
    config = settings.model_copy(update={"alert_group_wait_s": 0})
    environ = {"OPS_URL": receiver.endpoint}
    evaluate(engine, DUE_MISSED, config, DESTINATIONS, environ)
    (delivery,) = deliveries(engine)
    assert (delivery.event, delivery.status, delivery.destination) == (
        "firing",
        "pending",
        DESTINATION,
    )
    with httpx.Client() as http:
        report = send_due(
            engine,
            owner="test",
            now=DUE_MISSED,
            settings=config,
            destinations=DESTINATIONS,
            environ=environ,
            http=http,
        )
    assert report.messages_sent == 1 and receiver.problems == []
    (body,) = receiver.delivered.values()
    (alert,) = body["alerts"]
    assert alert["labels"]["alertname"] == "chm_missed_schedule"
    assert alert["annotations"]["summary"] == MISSED


# --- set-based --------------------------------------------------------------------------------


def count_statements(engine: Engine, action: Any) -> int:
    """The queries ``action()`` sends (SQLite's explicit BEGIN aside)."""
    statements = 0

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal statements
        statements += not statement.startswith("BEGIN")

    event.listen(engine, "before_cursor_execute", counted)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", counted)
    return statements


def test_one_statement_for_every_pair_however_many_pipelines(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    make_rule(api, client_id=client["id"], rule_type="missed_schedule", destination=DESTINATION)

    def scheduled(count: int) -> None:
        for _ in range(count):
            dated(engine, make_pipeline(api, client, schedule="0 * * * *", grace_minutes=10))

    def statements() -> int:
        with engine.connect() as conn:
            holding: list[Any] = []
            count = count_statements(
                engine, lambda: holding.extend(conn.execute(missed_schedule_statement(DUE_MISSED)))
            )
            assert len(holding) == pipelines
            return count

    pipelines = 3
    scheduled(3)
    assert statements() == 1
    pipelines = 33
    scheduled(30)
    assert statements() == 1


# --- when the worker evaluates ----------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_the_worker_evaluates_when_a_tick_comes_due_not_at_its_next_period(
    engine: Engine,
    db_url: str,
    missed_rule: dict[str, Any],
    pipeline: dict[str, Any],
) -> None:
    options = Settings(
        database_url=db_url, evaluate_every_s=3600, worker_poll_s=0.01, _env_file=None
    )  # type: ignore[call-arg]
    clock = Clock(DUE_MISSED - timedelta(minutes=30))
    ctx = WorkerContext(
        engine, options, f"test:{os.getpid()}", clock, LiveSources(None, options.env)
    )
    evaluation = Evaluation(ctx, LiveDestinations(None))
    worker = Worker(ctx, tasks=[Schedules(ctx), evaluation])
    worker.run_until_idle()
    with Session(engine) as session:
        assert next_schedule_due(session, clock.now) == DUE_MISSED

    clock.now = DUE_MISSED - US
    idle = count_statements(engine, evaluation.step)
    assert idle == 1, "an idle poll is one read of what changed"
    assert alerts(engine) == []

    clock.now = DUE_MISSED
    worker.run_until_idle()
    (alert,) = alerts(engine)
    assert alert.fired_at == DUE_MISSED and alert.summary == MISSED

    # The run arrives (a change: evaluated at the next poll), and stays open:
    # the next wake-up is its deadline.
    add_run(engine, pipeline, "running", DUE_MISSED + timedelta(minutes=1))
    clock.now = DUE_MISSED + timedelta(minutes=1)
    worker.run_until_idle()
    assert firing(engine) == []
    with Session(engine) as session:
        assert next_schedule_due(session, clock.now) == DUE_LATE
    clock.now = DUE_LATE - US
    worker.run_until_idle()
    assert firing(engine) == []
    clock.now = DUE_LATE
    worker.run_until_idle()
    (_, late) = alerts(engine)
    assert late.state == "firing" and late.summary == LATE and late.fired_at == DUE_LATE


def test_without_a_missed_schedule_rule_there_is_nothing_to_wake_for(
    api: TestClient, engine: Engine, pipeline: dict[str, Any]
) -> None:
    make_rule(api, pipeline_id=pipeline["id"], destination=DESTINATION)  # on_failure
    with Session(engine) as session:
        assert next_schedule_due(session, SINCE) is None
