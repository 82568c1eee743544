"""One small module per platform; paging, retries and upserts live in the engine."""

from __future__ import annotations

from datetime import datetime

from chm.ingestion.config import (
    AdfSource,
    AirflowSource,
    AnySource,
    DagsterSource,
    DatabricksSource,
    DbtCloudSource,
    GenericSource,
    GithubActionsSource,
    PrefectSource,
)
from chm.ingestion.connectors.adf import AdfConnector
from chm.ingestion.connectors.airflow import AirflowConnector
from chm.ingestion.connectors.base import (
    BadExternalId,
    Connector,
    Fetched,
    IncrementalMode,
    Page,
    PageRequest,
    PageShapeError,
    SourceRejected,
    without_read_time,
)
from chm.ingestion.connectors.dagster import DagsterConnector
from chm.ingestion.connectors.databricks import DatabricksConnector
from chm.ingestion.connectors.dbt_cloud import DbtCloudConnector
from chm.ingestion.connectors.generic import GenericConnector
from chm.ingestion.connectors.github_actions import GithubActionsConnector
from chm.ingestion.connectors.prefect import PrefectConnector

__all__ = [
    "BadExternalId",
    "Connector",
    "Fetched",
    "IncrementalMode",
    "Page",
    "PageRequest",
    "PageShapeError",
    "SourceRejected",
    "connector_for",
    "incremental_mode",
    "without_read_time",
]

_CONNECTORS: dict[type, type] = {
    GenericSource: GenericConnector,
    DatabricksSource: DatabricksConnector,
    AdfSource: AdfConnector,
    AirflowSource: AirflowConnector,
    DbtCloudSource: DbtCloudConnector,
    GithubActionsSource: GithubActionsConnector,
    PrefectSource: PrefectConnector,
    DagsterSource: DagsterConnector,
}


def incremental_mode(source: AnySource) -> IncrementalMode | None:
    """How ``source``'s platform filters runs by time, or None when it cannot."""
    connector = _CONNECTORS.get(type(source))
    return getattr(connector, "incremental", None)


def connector_for(
    source: AnySource, external_id: str, now: datetime, since: datetime | None = None
) -> Connector:
    """The connector that reads one pipeline's runs from ``source``; ``now`` fixes
    any time window for the whole walk, so every page belongs to one query, and
    ``since`` (incremental platforms only) is the lower bound to ask for.
    BadExternalId when ``external_id`` cannot name anything there."""
    if isinstance(source, GenericSource):
        return GenericConnector(source, external_id)
    if isinstance(source, DatabricksSource):
        return DatabricksConnector(source, external_id, since)
    if isinstance(source, AdfSource):
        return AdfConnector(source, external_id, now, since)
    if isinstance(source, AirflowSource):
        return AirflowConnector(source, external_id, now, since)
    if isinstance(source, DbtCloudSource):
        return DbtCloudConnector(source, external_id, now, since)
    if isinstance(source, GithubActionsSource):
        return GithubActionsConnector(source, external_id, now, since)
    if isinstance(source, PrefectSource):
        return PrefectConnector(source, external_id, now, since)
    if isinstance(source, DagsterSource):
        return DagsterConnector(source, external_id, now, since)
    raise BadExternalId(f"source {source.name!r} (platform {source.platform!r}) is push-only")
