"""A pipeline's schedule fields through the API (monitoring contract,
"Schedules"): validation, ownership, and the stored ticks kept with them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from chm.models import ScheduleTick
from chm.schedules import ticks as stored
from factories import API, make_client, make_pipeline, ok


def _patch(api, pipeline, **fields):
    return api.patch(f"{API}/pipelines/{pipeline['id']}", json=fields)


def _ticks(engine, pipeline_id):
    with engine.connect() as conn:
        query = (
            sa.select(ScheduleTick.tick_at)
            .where(ScheduleTick.pipeline_id == pipeline_id)
            .order_by(ScheduleTick.tick_at)
        )
        return list(conn.scalars(query))


def test_defaults_without_a_schedule(api, engine):
    pipeline = make_pipeline(api, make_client(api), "orders")
    assert pipeline["schedule"] is None
    assert pipeline["schedule_timezone"] == "UTC"
    assert pipeline["grace_minutes"] == 30
    assert pipeline["deadline_minutes"] is None
    assert pipeline["schedule_source"] is None
    assert pipeline["schedule_set_at"] is None and pipeline["schedule_note"] is None
    assert _ticks(engine, int(pipeline["id"])) == []


def test_a_schedule_is_normalized_owned_by_the_user_and_its_ticks_stored(api, engine):
    pipeline = make_pipeline(
        api,
        make_client(api),
        "orders",
        schedule="  30   2 * *  mon-fri ",
        schedule_timezone="Europe/Berlin",
        grace_minutes=45,
        deadline_minutes=90,
    )
    assert pipeline["schedule"] == "30 2 * * MON-FRI"
    assert pipeline["schedule_source"] == "user"
    assert pipeline["schedule_set_at"] is not None
    ticks = _ticks(engine, int(pipeline["id"]))
    assert ticks, "the ticks ahead are stored with the schedule"
    for tick in ticks:
        local = tick.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) in ((2, 30), (3, 0)) and local.weekday() < 5


@pytest.mark.parametrize(
    ("expression", "stored_as"),
    [("@daily", "0 0 * * *"), ("@HOURLY", "0 * * * *"), ("0 0 L * *", "0 0 L * *")],
)
def test_presets_and_extensions(api, expression, stored_as):
    pipeline = make_pipeline(api, make_client(api), "p", schedule=expression)
    assert pipeline["schedule"] == stored_as


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "* * * * * *", "61 * * * *", "0 0 30 2 *", "@reboot", "x"]
)
def test_a_cron_that_does_not_parse_is_a_422_on_its_field(api, expression):
    client = make_client(api)
    body = {
        "client_id": client["id"],
        "name": "p",
        "platform": "airflow",
        "pipeline_type": "batch",
        "environment": "prod",
        "schedule": expression,
    }
    response = api.post(f"{API}/pipelines", json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["schedule"]
    pipeline = make_pipeline(api, client, "q")
    response = _patch(api, pipeline, schedule=expression)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["schedule"]
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}")) == pipeline


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/berlin ", "../../etc/passwd", "", "EST5"])
def test_a_zone_that_does_not_exist_is_a_422_on_its_field(api, zone):
    pipeline = make_pipeline(api, make_client(api), "p")
    response = _patch(api, pipeline, schedule="0 1 * * *", schedule_timezone=zone)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["schedule_timezone"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grace_minutes", -1),
        ("grace_minutes", 43_201),
        ("grace_minutes", "30"),
        ("grace_minutes", 1.5),
        ("deadline_minutes", 0),
        ("deadline_minutes", 1.5),
        ("schedule_source", "someone"),
    ],
)
def test_out_of_range_fields_are_422(api, field, value):
    pipeline = make_pipeline(api, make_client(api), "p")
    response = _patch(api, pipeline, **{field: value})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_null_zone_and_grace_mean_the_defaults(api):
    pipeline = make_pipeline(
        api,
        make_client(api),
        "p",
        schedule="0 1 * * *",
        schedule_timezone="Asia/Tokyo",
        grace_minutes=5,
    )
    changed = ok(_patch(api, pipeline, schedule_timezone=None, grace_minutes=None))
    assert (changed["schedule_timezone"], changed["grace_minutes"]) == ("UTC", 30)


def test_clearing_the_schedule_hands_it_back_unless_pinned(api, engine):
    pipeline = make_pipeline(api, make_client(api), "p", schedule="0 1 * * *")
    cleared = ok(_patch(api, pipeline, schedule=None))
    assert cleared["schedule"] is None and cleared["schedule_source"] is None
    assert _ticks(engine, int(pipeline["id"])) == []
    pinned = ok(_patch(api, pipeline, schedule=None, schedule_source="user"))
    assert pinned["schedule"] is None and pinned["schedule_source"] == "user"
    handed = ok(_patch(api, pipeline, schedule_source="platform"))
    assert handed["schedule_source"] == "platform"


def test_a_changed_schedule_restarts_the_expectation_and_rewrites_the_ticks(api, engine):
    pipeline = make_pipeline(api, make_client(api), "p", schedule="0 1 * * *")
    first_set = pipeline["schedule_set_at"]
    grace = ok(_patch(api, pipeline, grace_minutes=10))
    assert grace["schedule_set_at"] == first_set, "grace does not restart the expectation"
    moved = ok(_patch(api, pipeline, schedule="0 5 * * *"))
    assert moved["schedule_set_at"] > first_set
    assert {t.hour for t in _ticks(engine, int(pipeline["id"]))} == {5}
    same = ok(_patch(api, pipeline, schedule="0  5 * * *"))
    assert same["updated_at"] == moved["updated_at"], "the same schedule is no change"


def test_ticks_are_topped_up_and_pruned(engine):
    from sqlalchemy.orm import Session

    from chm.models import Client, Pipeline

    created = datetime(2026, 3, 1, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        client = Client(name="c", created_at=created, updated_at=created)
        session.add(client)
        session.flush()
        pipeline = Pipeline(
            client_id=client.id,
            name="p",
            platform="airflow",
            pipeline_type="batch",
            environment="prod",
            schedule="*/5 * * * *",
            schedule_timezone="UTC",
            grace_minutes=5,
            created_at=created,
            updated_at=created,
        )
        session.add(pipeline)
        session.flush()
        stored.rewrite_ticks(session, pipeline, created + timedelta(hours=1))
        pipeline_id = pipeline.id
    ticks = _ticks(engine, pipeline_id)
    # Created at 00:00, the 00:55 tick is the latest due at 01:00 with 5 minutes' grace.
    assert ticks[0] == datetime(2026, 3, 1, 0, 55, tzinfo=UTC)
    assert len(ticks) == stored.MAX_AHEAD + 1
    later = ticks[-1] - timedelta(minutes=30)
    with Session(engine) as session, session.begin():
        assert stored.top_up(session, later) == 1
        assert stored.top_up(session, later) == 0
        assert stored.prune(session, later + stored.PRUNE_AFTER) > 0
    ticks = _ticks(engine, pipeline_id)
    assert ticks[0] <= later + stored.PRUNE_AFTER - timedelta(minutes=5)
    assert ticks[-1] >= later + stored.TOP_UP_AHEAD
    steps = {b - a for a, b in itertools.pairwise(ticks)}
    assert steps == {timedelta(minutes=5)}, "no tick is lost or doubled"


def test_whole_numbers_written_as_floats_are_integers(api):
    # JSON Schema's integer: 45.0 is one (the OpenAPI document promises it).
    pipeline = make_pipeline(api, make_client(api), "p", grace_minutes=45.0, deadline_minutes=60.0)
    assert (pipeline["grace_minutes"], pipeline["deadline_minutes"]) == (45, 60)


def test_correcting_the_zone_of_a_platform_schedule_makes_it_the_users(api, engine):
    from sqlalchemy.orm import Session

    from chm.schedules.learn import apply_platform_schedule

    pipeline = make_pipeline(api, make_client(api), "p")
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        apply_platform_schedule(
            session, int(pipeline["id"]), cron="0 2 * * *", timezone="UTC", note=None, now=now
        )
    fixed = ok(_patch(api, pipeline, schedule_timezone="Europe/Berlin"))
    assert (fixed["schedule"], fixed["schedule_source"]) == ("0 2 * * *", "user")
    with Session(engine) as session, session.begin():
        assert not apply_platform_schedule(
            session, int(pipeline["id"]), cron="0 2 * * *", timezone="UTC", note=None, now=now
        )
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}"))["schedule_timezone"] == "Europe/Berlin"
    # Without a schedule, a zone alone pins nothing.
    other = make_pipeline(api, make_client(api), "q")
    assert ok(_patch(api, other, schedule_timezone="Asia/Tokyo"))["schedule_source"] is None
