"""Pipelines: recurring job definitions, each under exactly one client (FR-003)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.core.changes import apply_changes
from chm.core.errors import Conflict, ValidationFailed
from chm.core.keyset import Keyset, SortKey, keyset_page
from chm.core.lookup import flush_or_conflict, get_or_404
from chm.core.timeutil import utcnow
from chm.models import Client, Pipeline
from chm.models.base import name_key
from chm.models.pipeline import DEFAULT_GRACE_MINUTES, active_inventory
from chm.pipelines.schemas import PipelineCreate, PipelineUpdate, ScheduleFields
from chm.schedules.ticks import rewrite_ticks

# The fields whose change makes the stored ticks stale (chm.schedules.ticks),
# and those whose change restarts the expectation (ticks before it expect nothing).
TICK_FIELDS = ("schedule", "schedule_timezone", "grace_minutes", "deadline_minutes")
SETTING_FIELDS = ("schedule", "schedule_timezone")

# By name across clients; the id makes the order total (names repeat across clients).
KEYSET = Keyset("pipelines", (SortKey(Pipeline.name_key, str), SortKey(Pipeline.id, int)))


class DuplicatePipeline(Conflict):
    title = "Duplicate pipeline"
    type_slug = "duplicate-name"


def get_pipeline(session: Session, pipeline_id: int) -> Pipeline:
    return get_or_404(session, Pipeline, pipeline_id, "pipeline")


def _check_unique(
    session: Session,
    *,
    client_id: int,
    name: str,
    platform: str,
    external_id: str | None,
    exclude_id: int | None = None,
) -> None:
    others = sa.select(Pipeline.id).where(Pipeline.client_id == client_id)
    if exclude_id is not None:
        others = others.where(Pipeline.id != exclude_id)
    if session.scalar(others.where(Pipeline.name_key == name_key(name)).limit(1)) is not None:
        raise DuplicatePipeline(f"the client already has a pipeline named {name!r}")
    if external_id is not None:
        same_mapping = others.where(
            Pipeline.platform == platform, Pipeline.external_id == external_id
        )
        if session.scalar(same_mapping.limit(1)) is not None:
            raise DuplicatePipeline(
                f"the client already maps {platform} external id {external_id!r} to a pipeline"
            )


def _flush_or_conflict(session: Session) -> None:
    flush_or_conflict(
        session, DuplicatePipeline("a pipeline with the same name or external id already exists")
    )


def _schedule_changes(sent: dict[str, Any], current_schedule: str | None = None) -> dict[str, Any]:
    """The stored values of the schedule fields a request sent: a null zone or
    grace is the default; writing ``schedule``, or the zone of a schedule,
    makes the user its owner (or nobody, when it is cleared) unless the
    request names the owner."""
    changes: dict[str, Any] = {}
    if "schedule_timezone" in sent:
        changes["schedule_timezone"] = sent["schedule_timezone"] or "UTC"
    if "grace_minutes" in sent:
        grace = sent["grace_minutes"]
        changes["grace_minutes"] = DEFAULT_GRACE_MINUTES if grace is None else grace
    if "deadline_minutes" in sent:
        changes["deadline_minutes"] = sent["deadline_minutes"]
    if "schedule" in sent:
        changes["schedule"] = sent["schedule"]
        owner = "user" if sent["schedule"] is not None else None
        changes["schedule_source"] = sent.get("schedule_source", owner)
    elif "schedule_source" in sent:
        changes["schedule_source"] = sent["schedule_source"]
    elif "schedule_timezone" in sent and current_schedule is not None:
        # Correcting the zone of a schedule (the platform's) makes it the
        # user's: the platform's next read would put its own zone back.
        changes["schedule_source"] = "user"
    return changes


def _schedule_changed(
    session: Session, pipeline: Pipeline, before: tuple[Any, ...], now: datetime
) -> None:
    """After a write: restart the expectation and rewrite the ticks as needed."""
    after = tuple(getattr(pipeline, name) for name in TICK_FIELDS)
    if after == before:
        return
    if after[: len(SETTING_FIELDS)] != before[: len(SETTING_FIELDS)]:
        pipeline.schedule_set_at = now
    rewrite_ticks(session, pipeline, now)


def create_pipeline(session: Session, data: PipelineCreate) -> Pipeline:
    client = session.get(Client, data.client_id)
    if client is None:
        raise ValidationFailed.one(
            "client_id", "not_found", f"client '{data.client_id}' does not exist"
        )
    if not client.is_active:
        raise ValidationFailed.one(
            "client_id", "inactive", f"client '{data.client_id}' is inactive"
        )
    _check_unique(
        session,
        client_id=client.id,
        name=data.name,
        platform=data.platform,
        external_id=data.external_id,
    )
    pipeline = Pipeline(
        client_id=client.id,
        name=data.name,
        platform=data.platform,
        pipeline_type=data.pipeline_type,
        environment=data.environment,
        external_id=data.external_id,
        is_active=data.is_active,
        schedule_timezone="UTC",
        grace_minutes=DEFAULT_GRACE_MINUTES,
    )
    schedule = _schedule_changes(data.model_dump(exclude_unset=True))
    for name, value in schedule.items():
        setattr(pipeline, name, value)
    session.add(pipeline)
    _flush_or_conflict(session)
    if pipeline.schedule is not None:
        now = utcnow()
        pipeline.schedule_set_at = now
        rewrite_ticks(session, pipeline, now)
    return pipeline


def update_pipeline(session: Session, pipeline_id: int, data: PipelineUpdate) -> Pipeline:
    # Locked: ingestion may be taking the platform's schedule for this row now
    # (chm.schedules.learn locks it too); the ticks are rewritten from what
    # this transaction read, so it must read the latest.
    pipeline = get_or_404(session, Pipeline, pipeline_id, "pipeline", for_update=True)
    sent = data.model_dump(exclude_unset=True)
    changes = {k: v for k, v in sent.items() if k not in ScheduleFields.model_fields}
    changes.update(_schedule_changes(sent, pipeline.schedule))
    before = tuple(getattr(pipeline, name) for name in TICK_FIELDS)
    _check_unique(
        session,
        client_id=pipeline.client_id,
        name=changes.get("name", pipeline.name),
        platform=changes.get("platform", pipeline.platform),
        external_id=changes.get("external_id", pipeline.external_id),
        exclude_id=pipeline.id,
    )
    if apply_changes(pipeline, changes):
        _flush_or_conflict(session)
        _schedule_changed(session, pipeline, before, pipeline.updated_at)
    return pipeline


def disable_pipeline(session: Session, pipeline_id: int) -> Pipeline:
    """Soft delete (FR-018): the pipeline and all its runs stay."""
    pipeline = get_pipeline(session, pipeline_id)
    apply_changes(pipeline, {"is_active": False})
    session.flush()
    return pipeline


def list_pipelines(
    session: Session,
    *,
    client_id: int | None,
    platform: str | None,
    environment: str | None,
    include_inactive: bool,
    limit: int,
    cursor: str | None,
) -> tuple[list[Pipeline], str | None]:
    query = sa.select(Pipeline).join(Client, Client.id == Pipeline.client_id)
    if client_id is not None:
        query = query.where(Pipeline.client_id == client_id)
    if platform is not None:
        query = query.where(Pipeline.platform == platform)
    if environment is not None:
        query = query.where(Pipeline.environment == environment)
    if not include_inactive:
        query = query.where(active_inventory())
    return keyset_page(session, KEYSET, query, cursor=cursor, limit=limit)
