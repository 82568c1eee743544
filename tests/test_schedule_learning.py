"""Schedules learned from a platform (chm.schedules.learn): taken only where the
user left the schedule alone, and the stored ticks kept with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.models import Client, Pipeline, ScheduleTick
from chm.schedules.learn import apply_platform_schedule, record_schedule_error

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_names = count()


def _pipeline(engine, **fields) -> int:
    created = NOW - timedelta(days=30)
    with Session(engine) as session, session.begin():
        client = Client(name=f"c{next(_names)}", created_at=created, updated_at=created)
        session.add(client)
        session.flush()
        pipeline = Pipeline(
            client_id=client.id,
            name="p",
            platform="databricks",
            pipeline_type="batch",
            environment="prod",
            created_at=created,
            updated_at=created,
            **fields,
        )
        session.add(pipeline)
        session.flush()
        return pipeline.id


def _apply(engine, pipeline_id, now=NOW, **schedule) -> bool:
    with Session(engine) as session, session.begin():
        return apply_platform_schedule(session, pipeline_id, now=now, **schedule)


def _read(engine, pipeline_id):
    with Session(engine) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        ticks = session.scalars(
            sa.select(ScheduleTick.tick_at).where(ScheduleTick.pipeline_id == pipeline_id)
        ).all()
        session.expunge_all()
        return pipeline, ticks


def test_a_platform_schedule_fills_an_empty_one(engine):
    pipeline_id = _pipeline(engine)
    assert _apply(engine, pipeline_id, cron="0 3 * * *", timezone="Europe/Berlin", note=None)
    pipeline, ticks = _read(engine, pipeline_id)
    assert (pipeline.schedule, pipeline.schedule_timezone) == ("0 3 * * *", "Europe/Berlin")
    assert pipeline.schedule_source == "platform"
    assert pipeline.schedule_set_at == NOW and pipeline.schedule_checked_at == NOW
    assert ticks, "the ticks are stored with the learned schedule"
    later = NOW + timedelta(hours=1)
    assert not _apply(
        engine, pipeline_id, now=later, cron="0 3 * * *", timezone="Europe/Berlin", note=None
    ), "the same schedule again changes nothing"
    pipeline, _ = _read(engine, pipeline_id)
    assert pipeline.schedule_set_at == NOW and pipeline.schedule_checked_at == later


def test_a_users_schedule_always_wins(engine):
    pipeline_id = _pipeline(engine, schedule="0 1 * * *", schedule_source="user")
    assert not _apply(engine, pipeline_id, cron="0 3 * * *", timezone="UTC", note=None)
    with Session(engine) as session, session.begin():
        record_schedule_error(session, pipeline_id, note="could not read", now=NOW)
    pipeline, _ = _read(engine, pipeline_id)
    assert (pipeline.schedule, pipeline.schedule_source) == ("0 1 * * *", "user")
    assert pipeline.schedule_note is None and pipeline.schedule_checked_at is None
    pinned_empty = _pipeline(engine, schedule=None, schedule_source="user")
    assert not _apply(engine, pinned_empty, cron="0 3 * * *", timezone="UTC", note=None)
    assert _read(engine, pinned_empty)[0].schedule is None


def test_a_paused_schedule_clears_the_learned_one(engine):
    pipeline_id = _pipeline(engine)
    _apply(engine, pipeline_id, cron="0 3 * * *", timezone="Asia/Tokyo", note=None)
    later = NOW + timedelta(days=1)
    assert _apply(
        engine, pipeline_id, now=later, cron=None, timezone="UTC", note="the schedule is paused"
    )
    pipeline, ticks = _read(engine, pipeline_id)
    assert pipeline.schedule is None and pipeline.schedule_source is None
    assert pipeline.schedule_note == "the schedule is paused"
    assert pipeline.schedule_timezone == "Asia/Tokyo", "the zone is kept for when it resumes"
    assert pipeline.schedule_set_at == later and ticks == []


def test_a_read_error_is_recorded_and_keeps_the_schedule(engine):
    pipeline_id = _pipeline(engine)
    _apply(engine, pipeline_id, cron="0 3 * * *", timezone="UTC", note=None)
    later = NOW + timedelta(hours=2)
    with Session(engine) as session, session.begin():
        record_schedule_error(session, pipeline_id, note="HTTP 503 from the platform", now=later)
    pipeline, ticks = _read(engine, pipeline_id)
    assert pipeline.schedule == "0 3 * * *" and ticks
    assert (pipeline.schedule_note, pipeline.schedule_checked_at) == (
        "HTTP 503 from the platform",
        later,
    )
