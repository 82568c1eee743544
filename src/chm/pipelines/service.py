"""Pipelines: recurring job definitions, each under exactly one client (FR-003)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.core.changes import apply_changes
from chm.core.errors import Conflict, ValidationFailed
from chm.core.keyset import Keyset, SortKey, keyset_page
from chm.core.lookup import flush_or_conflict, get_or_404
from chm.models import Client, Pipeline
from chm.models.base import name_key
from chm.models.pipeline import active_inventory
from chm.pipelines.schemas import PipelineCreate, PipelineUpdate

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
    )
    session.add(pipeline)
    _flush_or_conflict(session)
    return pipeline


def update_pipeline(session: Session, pipeline_id: int, data: PipelineUpdate) -> Pipeline:
    pipeline = get_pipeline(session, pipeline_id)
    changes = data.model_dump(exclude_unset=True)
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
