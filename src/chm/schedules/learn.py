"""Schedules learned from the platforms (ingestion; monitoring contract,
"Schedules"): a platform's schedule fills ``schedule`` for a pipeline whose
user left it alone, and says so in ``schedule_source``. A user's value always
wins: it is checked here, under the pipeline's row lock, not by the caller."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.models import Pipeline
from chm.schedules.ticks import rewrite_ticks

USER = "user"
PLATFORM = "platform"


def _locked(session: Session, pipeline_id: int) -> Pipeline | None:
    query = sa.select(Pipeline).where(Pipeline.id == pipeline_id).with_for_update()
    return session.scalars(query).one_or_none()


def apply_platform_schedule(
    session: Session,
    pipeline_id: int,
    *,
    cron: str | None,
    timezone: str,
    note: str | None,
    now: datetime,
) -> bool:
    """Take the platform's schedule (``cron`` None: the platform expects no run:
    paused, manual only, or not expressible, ``note`` says why) for the pipeline
    unless its user set one. True when the pipeline's schedule changed."""
    pipeline = _locked(session, pipeline_id)
    if pipeline is None or pipeline.schedule_source == USER:
        return False
    pipeline.schedule_checked_at = now
    pipeline.schedule_note = note
    source = PLATFORM if cron is not None else None
    zone = timezone if cron is not None else pipeline.schedule_timezone
    changed = (pipeline.schedule, pipeline.schedule_timezone) != (cron, zone)
    if changed:
        pipeline.schedule = cron
        pipeline.schedule_timezone = zone
        pipeline.schedule_set_at = now
        pipeline.updated_at = now
    pipeline.schedule_source = source
    if changed:
        rewrite_ticks(session, pipeline, now)
    session.flush()
    return changed


def record_schedule_error(session: Session, pipeline_id: int, *, note: str, now: datetime) -> None:
    """The platform's schedule could not be read: say so on the pipeline and
    keep what it had (the next read is after the refresh interval)."""
    pipeline = _locked(session, pipeline_id)
    if pipeline is None or pipeline.schedule_source == USER:
        return
    pipeline.schedule_checked_at = now
    pipeline.schedule_note = note
    session.flush()
