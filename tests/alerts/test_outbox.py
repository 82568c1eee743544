"""The outbox (chm.alerts.outbox; docs/alerts.md): the deliveries written with an
alert's state change (pending after the group wait, silenced, undeliverable,
superseded), repeats and acknowledgement. On both databases, at fixed times."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chm.alerts.channels.base import Undeliverable
from chm.alerts.destinations import Destination, Destinations, resolve
from chm.alerts.evaluate import evaluate
from chm.alerts.outbox import (
    AlertNotFound,
    AlertResolved,
    acknowledge,
    create_deliveries,
    create_repeats,
)
from chm.core.db import make_session_factory
from chm.core.errors import Conflict, NotFound
from chm.core.settings import Settings
from chm.models import Alert, AlertDelivery, AlertRule, Run, Silence
from factories import API, make_client, make_pipeline, make_rule, ok

NOW = datetime(2030, 6, 1, 12, 0, 0, 250_000, tzinfo=UTC)
US = timedelta(microseconds=1)
DESTINATION = "webhook:ops"
DESTINATIONS = Destinations([Destination(name="ops", kind="webhook", url_env="OPS_URL")])
ENVIRON = {"OPS_URL": "http://127.0.0.1:9/hook"}
_external = itertools.count(1)


# --- helpers --------------------------------------------------------------------------


def add_run(engine: Engine, pipeline: dict[str, Any], status: str, started_at: datetime) -> int:
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
                    created_at=started_at,
                    updated_at=started_at,
                )
                .returning(Run.id)
            ).scalar_one()
        )


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def run(engine: Engine, settings: Settings, now: datetime = NOW, environ: Any = ENVIRON) -> Any:
    return evaluate(engine, now, settings, DESTINATIONS, environ)


def deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(AlertDelivery).order_by(AlertDelivery.id)).all())


def the_alert(engine: Engine) -> Any:
    with engine.connect() as conn:
        (alert,) = conn.execute(sa.select(Alert)).all()
    return alert


def update_deliveries(engine: Engine, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(AlertDelivery).values(**values))


def add_silence(
    engine: Engine,
    starts_at: datetime = NOW - timedelta(hours=1),
    ends_at: datetime = NOW + timedelta(hours=1),
    reason: str = "maintenance",
    **scope: Any,
) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.insert(Silence)
                .values(
                    starts_at=starts_at,
                    ends_at=ends_at,
                    reason=reason,
                    created_by="ops",
                    created_at=starts_at,
                    **scope,
                )
                .returning(Silence.id)
            ).scalar_one()
        )


def with_settings(settings: Settings, **values: Any) -> Settings:
    return settings.model_copy(update=values)


@pytest.fixture
def client(api: TestClient) -> dict[str, Any]:
    return make_client(api, "Acme")


@pytest.fixture
def pipeline(api: TestClient, client: dict[str, Any]) -> dict[str, Any]:
    return make_pipeline(api, client, "orders_daily")


@pytest.fixture
def failing(
    api: TestClient, engine: Engine, pipeline: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """An on_failure rule to ``webhook:ops`` and a failed run: the alert fires at NOW."""
    rule = make_rule(api, pipeline_id=pipeline["id"], destination=DESTINATION)
    return rule, add_run(engine, pipeline, "failed", started_at=at(-600))


def recover(engine: Engine, pipeline: dict[str, Any], seconds: float) -> None:
    add_run(engine, pipeline, "success", started_at=at(seconds))


# --- creation: pending, silenced, undeliverable ----------------------------------------------


@pytest.mark.parametrize("wait", [30.0, 0.0])
def test_a_firing_delivery_is_pending_until_the_group_wait(
    engine: Engine, settings: Settings, failing: Any, wait: float
) -> None:
    run(engine, with_settings(settings, alert_group_wait_s=wait))
    (delivery,) = deliveries(engine)
    alert = the_alert(engine)
    assert (delivery.alert_id, delivery.destination, delivery.event) == (
        alert.id,
        DESTINATION,
        "firing",
    )
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 0, None)
    assert delivery.created_at == NOW
    assert delivery.next_attempt_at == NOW + timedelta(seconds=wait)
    assert (delivery.sent_at, delivery.message_key, delivery.lease_owner) == (None, None, None)


SCOPES = {
    "client": ({"client": True}, True),
    "pipeline": ({"pipeline": True}, True),
    "rule": ({"rule": True}, True),
    "client and rule": ({"client": True, "rule": True}, True),
    "every field": ({"client": True, "pipeline": True, "rule": True}, True),
    "another client": ({"client": False}, False),
    "client, another rule": ({"client": True, "rule": False}, False),
    "another pipeline of the client": ({"pipeline": False}, False),
}


@pytest.mark.parametrize("scope", list(SCOPES))
def test_an_active_silence_matching_every_field_it_sets_silences_the_delivery(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    client: dict[str, Any],
    pipeline: dict[str, Any],
    failing: Any,
    scope: str,
) -> None:
    rule, _ = failing
    other_rule = make_rule(  # never fires here
        api, client_id=client["id"], rule_type="long_running", threshold=600, destination="x:y"
    )
    fields, matches = SCOPES[scope]
    values = {
        "client": (client["id"], make_client(api)["id"]),
        "pipeline": (pipeline["id"], make_pipeline(api, client)["id"]),
        "rule": (rule["id"], other_rule["id"]),
    }
    silence = add_silence(
        engine,
        reason="warehouse upgrade",
        **{f"{name}_id": int(values[name][0 if same else 1]) for name, same in fields.items()},
    )
    report = run(engine, settings)
    assert report.fired == 1  # a silence never stops an alert from firing
    (delivery,) = deliveries(engine)
    if matches:
        assert delivery.status == "silenced"
        assert delivery.last_error == f"silenced by silence {silence}: warehouse upgrade"
    else:
        assert (delivery.status, delivery.last_error) == ("pending", None)


@pytest.mark.parametrize(
    ("starts", "ends", "active"),
    [
        (0, 3600, True),  # starts_at <= now
        (-3600, 1e-6, True),  # now < ends_at
        (-3600, 0, False),  # ended at now
        (1e-6, 3600, False),  # not started yet
    ],
)
def test_a_silence_is_active_from_its_start_until_before_its_end(
    engine: Engine,
    settings: Settings,
    pipeline: dict[str, Any],
    failing: Any,
    starts: float,
    ends: float,
    active: bool,
) -> None:
    add_silence(engine, at(starts), at(ends), pipeline_id=int(pipeline["id"]))
    run(engine, settings)
    assert deliveries(engine)[0].status == ("silenced" if active else "pending")


@pytest.mark.parametrize(
    ("destination", "environ"),
    [
        ("webhook:nowhere", ENVIRON),  # no such named destination
        ("pigeon:coop", ENVIRON),  # no such kind
        ("webhook:ops", {}),  # its variable is not set
        ("email:ops@example.com", ENVIRON),  # no SMTP server configured
        ("not a destination", ENVIRON),
    ],
)
def test_a_destination_that_does_not_resolve_is_undeliverable_with_the_reason(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    pipeline: dict[str, Any],
    destination: str,
    environ: dict[str, str],
) -> None:
    rule = make_rule(api, pipeline_id=pipeline["id"], destination=DESTINATION)
    # Written behind the API's back: a rule stored before the API checked the
    # destination's form, or a kind no longer registered.
    with engine.begin() as conn:
        conn.execute(
            sa.update(AlertRule)
            .where(AlertRule.id == int(rule["id"]))
            .values(destination=destination)
        )
    add_run(engine, pipeline, "failed", started_at=at(-600))
    report = run(engine, settings, environ=environ)
    assert report.fired == 1  # the alert itself still fires
    (delivery,) = deliveries(engine)
    with pytest.raises(Undeliverable) as refused:
        resolve(destination, DESTINATIONS, settings, environ)
    assert delivery.status == "undeliverable"
    assert delivery.last_error == str(refused.value)
    assert delivery.last_error
    assert report.deliveries == {"undeliverable": 1}


def test_a_silence_is_decided_before_the_destination(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any]
) -> None:
    make_rule(api, pipeline_id=pipeline["id"], destination="webhook:nowhere")
    add_run(engine, pipeline, "failed", started_at=at(-600))
    silence = add_silence(engine, pipeline_id=int(pipeline["id"]))
    run(engine, settings)
    (delivery,) = deliveries(engine)
    assert (delivery.status, delivery.last_error) == (
        "silenced",
        f"silenced by silence {silence}: maintenance",
    )


# --- resolving: where it goes, and fire-then-resolve within the wait ---------------------------


def test_fire_then_resolve_within_the_group_wait_sends_nothing(
    engine: Engine, settings: Settings, pipeline: dict[str, Any], failing: Any
) -> None:
    waiting = with_settings(settings, alert_group_wait_s=30)
    run(engine, waiting)
    recover(engine, pipeline, -60)
    report = run(engine, waiting, at(10))
    assert report.resolved == 1 and report.deliveries == {"superseded": 1}
    assert [(d.event, d.status, d.last_error) for d in deliveries(engine)] == [
        ("firing", "superseded", "resolved within the group wait"),
        ("resolved", "superseded", "resolved within the group wait"),
    ]


@pytest.mark.parametrize(
    "firing_state",
    [
        {"status": "sent", "attempts": 1, "message_key": "k" * 32},
        # Claimed by a sender (its key written before sending): it may be on the wire.
        {"message_key": "k" * 32, "lease_owner": "worker-1"},
        # Attempted once and waiting for a retry.
        {"attempts": 1, "message_key": "k" * 32, "last_error": "HTTP 503"},
    ],
)
def test_a_resolve_is_sent_once_the_firing_may_have_been(
    engine: Engine,
    settings: Settings,
    pipeline: dict[str, Any],
    failing: Any,
    firing_state: dict[str, Any],
) -> None:
    waiting = with_settings(settings, alert_group_wait_s=30)
    run(engine, waiting)
    update_deliveries(engine, **firing_state)
    recover(engine, pipeline, -60)
    run(engine, waiting, at(10))
    firing_delivery, resolved = deliveries(engine)
    assert firing_delivery.status == firing_state.get("status", "pending")
    assert (resolved.event, resolved.status, resolved.destination) == (
        "resolved",
        "pending",
        DESTINATION,
    )
    assert resolved.next_attempt_at == at(40)


NOT_NOTIFIED = "the firing notification was not delivered"


@pytest.mark.parametrize(
    "firing_state",
    [
        {"status": "silenced", "last_error": "silenced by silence 1: maintenance"},
        {"status": "undeliverable", "last_error": "OPS_URL is not set"},
        {"status": "failed", "attempts": 8, "message_key": "k" * 32, "last_error": "HTTP 410"},
        {"status": "superseded", "last_error": "resolved within the group wait"},
    ],
)
def test_no_resolve_is_sent_where_the_firing_never_went(
    engine: Engine,
    settings: Settings,
    pipeline: dict[str, Any],
    failing: Any,
    firing_state: dict[str, Any],
) -> None:
    # The receiver never heard the trigger: a RESOLVED for it is noise.
    run(engine, settings)
    update_deliveries(engine, **firing_state)
    recover(engine, pipeline, -60)
    report = run(engine, settings, at(10))
    assert report.deliveries == {"superseded": 1}
    firing_delivery, resolved = deliveries(engine)
    assert (firing_delivery.status, firing_delivery.last_error) == (
        firing_state["status"],
        firing_state["last_error"],
    )
    assert (resolved.event, resolved.status, resolved.last_error) == (
        "resolved",
        "superseded",
        NOT_NOTIFIED,
    )


def test_a_resolve_is_sent_where_a_repeat_went_though_the_firing_did_not(
    engine: Engine, settings: Settings, pipeline: dict[str, Any], failing: Any
) -> None:
    # Silenced when it fired; repeated (and sent) once the silence ended.
    hourly = with_settings(settings, alert_repeat_s=3600)
    run(engine, hourly)
    update_deliveries(engine, status="silenced", last_error="silenced by silence 1: x")
    repeats(engine, hourly, at(3600))
    with engine.begin() as conn:
        conn.execute(
            sa.update(AlertDelivery)
            .where(AlertDelivery.event == "repeat")
            .values(status="sent", attempts=1, message_key="r" * 32)
        )
    recover(engine, pipeline, 3000)
    run(engine, hourly, at(3610))
    assert [(d.event, d.status) for d in deliveries(engine)] == [
        ("firing", "silenced"),
        ("repeat", "sent"),
        ("resolved", "pending"),
    ]


def test_a_resolve_goes_where_the_firing_went_after_the_rule_changed_destination(
    api: TestClient, engine: Engine, settings: Settings, pipeline: dict[str, Any], failing: Any
) -> None:
    rule, _ = failing
    run(engine, settings)
    update_deliveries(engine, status="sent", attempts=1, message_key="k" * 32)
    ok(api.patch(f"{API}/alert-rules/{rule['id']}", json={"destination": "slack:#elsewhere"}))
    recover(engine, pipeline, -60)
    run(engine, settings, at(10))
    assert [(d.event, d.destination) for d in deliveries(engine)] == [
        ("firing", DESTINATION),
        ("resolved", DESTINATION),
    ]


@pytest.mark.parametrize(
    "firing_state",
    [
        {"status": "sent", "attempts": 1, "message_key": "k" * 32},
        {"attempts": 1, "message_key": "k" * 32, "last_error": "HTTP 503"},
    ],
)
def test_a_resolve_during_a_silence_is_sent_where_the_trigger_went(
    engine: Engine,
    settings: Settings,
    pipeline: dict[str, Any],
    failing: Any,
    firing_state: dict[str, Any],
) -> None:
    # The receiver heard (or may hear) the trigger: it must learn the alert
    # ended, or a PagerDuty incident stays open for ever.
    run(engine, settings)
    update_deliveries(engine, **firing_state)
    add_silence(engine, pipeline_id=int(pipeline["id"]))
    recover(engine, pipeline, -60)
    run(engine, settings, at(10))
    resolved = deliveries(engine)[1]
    assert (resolved.event, resolved.status, resolved.last_error) == ("resolved", "pending", None)
    assert resolved.next_attempt_at == at(10 + settings.alert_group_wait_s)


# --- the group wait: per destination, not per delivery -------------------------------------------


def test_alerts_firing_within_the_group_wait_join_its_group(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    # Alertmanager's group wait: four pipelines failing 5 s apart are one
    # message at t=30, not four at 30, 35, 40 and 45.
    waiting = with_settings(settings, alert_group_wait_s=30)
    make_rule(api, client_id=client["id"], destination=DESTINATION)
    pipelines = [make_pipeline(api, client) for _ in range(6)]
    for n, pipeline in enumerate(pipelines[:4]):
        add_run(engine, pipeline, "failed", started_at=at(5 * n - 1))
        run(engine, waiting, at(5 * n))
    assert [(d.created_at, d.next_attempt_at) for d in deliveries(engine)] == [
        (at(5 * n), at(30)) for n in range(4)
    ]
    # Once a sender claimed the group, a new alert opens a group of its own.
    update_deliveries(engine, message_key="k" * 32, lease_owner="worker-1")
    add_run(engine, pipelines[4], "failed", started_at=at(39))
    run(engine, waiting, at(40))
    assert deliveries(engine)[-1].next_attempt_at == at(70)
    # An open group already due (no worker sent it yet): a newcomer joins it
    # now, never in the past.
    with engine.begin() as conn:
        conn.execute(
            sa.update(AlertDelivery)
            .where(AlertDelivery.id == deliveries(engine)[-1].id)
            .values(next_attempt_at=at(50))
        )
    add_run(engine, pipelines[5], "failed", started_at=at(59))
    run(engine, waiting, at(60))
    assert deliveries(engine)[-1].next_attempt_at == at(60)


# --- repeats -------------------------------------------------------------------------------


def repeats(engine: Engine, settings: Settings, now: datetime, environ: Any = ENVIRON) -> int:
    with make_session_factory(engine, write=True).begin() as session:
        return create_repeats(session, now, settings, DESTINATIONS, environ)


def test_a_firing_alert_is_repeated_every_alert_repeat_s(
    engine: Engine, settings: Settings, failing: Any
) -> None:
    hourly = with_settings(settings, alert_repeat_s=3600, alert_group_wait_s=30)

    def sent(event: str) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.update(AlertDelivery)
                .where(AlertDelivery.event == event, AlertDelivery.status == "pending")
                .values(status="sent", attempts=1, message_key="k" * 32)
            )

    run(engine, hourly)
    sent("firing")
    assert repeats(engine, hourly, at(3600) - US) == 0
    assert repeats(engine, hourly, at(3600)) == 1
    assert repeats(engine, hourly, at(3600)) == 0  # once per period, however often asked
    sent("repeat")
    assert repeats(engine, hourly, at(7199)) == 0
    assert repeats(engine, hourly, at(7200)) == 1
    assert the_alert(engine).last_notified_at == at(7200)
    firing_delivery, first, second = deliveries(engine)
    assert firing_delivery.event == "firing"
    for delivery, when, status in ((first, at(3600), "sent"), (second, at(7200), "pending")):
        assert (delivery.event, delivery.status, delivery.destination) == (
            "repeat",
            status,
            DESTINATION,
        )
        assert (delivery.created_at, delivery.next_attempt_at) == (
            when,
            when + timedelta(seconds=30),
        )


def test_no_repeat_when_acknowledged_resolved_or_alert_repeat_s_is_zero(
    engine: Engine, settings: Settings, pipeline: dict[str, Any], failing: Any
) -> None:
    never = with_settings(settings, alert_repeat_s=0)
    hourly = with_settings(settings, alert_repeat_s=3600)
    run(engine, hourly)
    assert repeats(engine, never, at(10 * 86400)) == 0
    with make_session_factory(engine, write=True).begin() as session:
        acknowledge(session, the_alert(engine).id, "dana", None, at(60))
    assert repeats(engine, hourly, at(3600)) == 0
    with engine.begin() as conn:  # not acknowledged any more, but resolved
        conn.execute(sa.update(Alert).values(acknowledged_at=None))
    recover(engine, pipeline, -60)
    run(engine, hourly, at(120))
    assert repeats(engine, hourly, at(7200)) == 0
    assert [d.event for d in deliveries(engine)] == ["firing", "resolved"]


def test_a_repeat_follows_silences_and_destinations_at_its_time(
    engine: Engine, settings: Settings, pipeline: dict[str, Any], failing: Any
) -> None:
    hourly = with_settings(settings, alert_repeat_s=3600)
    run(engine, hourly)
    silence = add_silence(engine, at(3000), at(4000), pipeline_id=int(pipeline["id"]))
    assert repeats(engine, hourly, at(3600)) == 1
    assert repeats(engine, hourly, at(7200), environ={}) == 1
    _, silenced, undeliverable = deliveries(engine)
    assert (silenced.status, silenced.last_error) == (
        "silenced",
        f"silenced by silence {silence}: maintenance",
    )
    assert undeliverable.status == "undeliverable"
    assert "OPS_URL" in undeliverable.last_error


def test_a_repeat_not_yet_claimed_is_superseded_when_the_alert_resolves(
    engine: Engine, settings: Settings, pipeline: dict[str, Any], failing: Any
) -> None:
    hourly = with_settings(settings, alert_repeat_s=3600, alert_group_wait_s=30)
    run(engine, hourly)
    update_deliveries(engine, status="sent", attempts=1, message_key="k" * 32)
    repeats(engine, hourly, at(3600))
    recover(engine, pipeline, -60)
    run(engine, hourly, at(3610))
    assert [(d.event, d.status, d.last_error) for d in deliveries(engine)] == [
        ("firing", "sent", None),
        ("repeat", "superseded", "resolved before the repeat was sent"),
        ("resolved", "pending", None),
    ]


@pytest.mark.postgres_only
def test_two_workers_creating_repeats_at_once_repeat_each_alert_once(
    api: TestClient, engine: Engine, settings: Settings, client: dict[str, Any]
) -> None:
    make_rule(api, client_id=client["id"], destination=DESTINATION)
    for _ in range(10):
        add_run(engine, make_pipeline(api, client), "failed", started_at=at(-600))
    hourly = with_settings(settings, alert_repeat_s=3600)
    assert run(engine, hourly).fired == 10
    barrier = threading.Barrier(3)
    created: list[int] = []

    def repeat_once() -> None:
        barrier.wait()
        created.append(repeats(engine, hourly, at(3600)))

    threads = [threading.Thread(target=repeat_once) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(created) == 10
    assert sum(d.event == "repeat" for d in deliveries(engine)) == 10


# --- acknowledgement -----------------------------------------------------------------------


def test_acknowledging_records_who_and_supersedes_the_repeats_not_yet_claimed(
    engine: Engine, settings: Settings, failing: Any
) -> None:
    hourly = with_settings(settings, alert_repeat_s=3600)
    run(engine, hourly)
    repeats(engine, hourly, at(3600))
    repeats(engine, hourly, at(7200))
    with engine.begin() as conn:  # the first repeat is in a sender's hands
        first_repeat = min(d.id for d in deliveries(engine) if d.event == "repeat")
        conn.execute(
            sa.update(AlertDelivery)
            .where(AlertDelivery.id == first_repeat)
            .values(message_key="k" * 32, lease_owner="worker-1")
        )
    alert_id = the_alert(engine).id
    with make_session_factory(engine, write=True).begin() as session:
        alert = acknowledge(session, alert_id, "dana", "looking into it", at(7300))
        assert (alert.acknowledged_at, alert.acknowledged_by, alert.acknowledgement_note) == (
            at(7300),
            "dana",
            "looking into it",
        )
    assert [(d.event, d.status, d.last_error) for d in deliveries(engine)] == [
        ("firing", "pending", None),
        ("repeat", "pending", None),
        ("repeat", "superseded", "acknowledged"),
    ]
    with make_session_factory(engine, write=True).begin() as session:
        again = acknowledge(session, alert_id, "lee", None, at(7400))
        assert (again.acknowledged_at, again.acknowledged_by, again.acknowledgement_note) == (
            at(7400),
            "lee",
            None,
        )
    assert the_alert(engine).state == "firing"  # acknowledged, still firing


def test_acknowledging_a_resolved_alert_is_409_and_a_missing_one_404(
    engine: Engine, settings: Settings, pipeline: dict[str, Any], failing: Any
) -> None:
    run(engine, settings)
    recover(engine, pipeline, -60)
    run(engine, settings, at(60))
    alert_id = the_alert(engine).id
    with make_session_factory(engine, write=True).begin() as session:
        with pytest.raises(AlertResolved) as resolved:
            acknowledge(session, alert_id, "dana", None, at(120))
        with pytest.raises(AlertNotFound) as missing:
            acknowledge(session, alert_id + 1000, "dana", None, at(120))
    assert isinstance(resolved.value, Conflict) and resolved.value.status == 409
    assert isinstance(missing.value, NotFound) and missing.value.status == 404
    assert the_alert(engine).acknowledged_at is None


# --- create_deliveries, called alone -------------------------------------------------------------


def test_create_deliveries_for_an_alert_event(
    engine: Engine, settings: Settings, failing: Any
) -> None:
    run(engine, settings)
    with make_session_factory(engine, write=True).begin() as session:
        alert = session.scalars(sa.select(Alert)).one()
        made = create_deliveries(session, alert, "repeat", at(60), settings, DESTINATIONS, ENVIRON)
        assert [(d.event, d.destination, d.status) for d in made] == [
            ("repeat", DESTINATION, "pending")
        ]
        assert made[0].id is not None
        made = create_deliveries(session, alert, "firing", at(60), settings, None, ENVIRON)
        assert [(d.event, d.status) for d in made] == [("firing", "undeliverable")]
        with pytest.raises(ValueError, match="unknown delivery event"):
            create_deliveries(session, alert, "exploded", at(60), settings, None, ENVIRON)
    assert len(deliveries(engine)) == 3
