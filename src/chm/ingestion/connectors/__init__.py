"""One small module per platform; paging, retries and upserts live in the engine."""

from __future__ import annotations

from datetime import datetime

from chm.ingestion.config import AdfSource, DatabricksSource, GenericSource
from chm.ingestion.connectors.adf import AdfConnector
from chm.ingestion.connectors.base import Connector, Page, PageRequest, PageShapeError
from chm.ingestion.connectors.databricks import DatabricksConnector
from chm.ingestion.connectors.generic import GenericConnector

__all__ = ["Connector", "Page", "PageRequest", "PageShapeError", "connector_for"]


def connector_for(
    source: GenericSource | DatabricksSource | AdfSource, external_id: str, now: datetime
) -> Connector:
    """The connector that reads one pipeline's runs from ``source``; ``now`` fixes
    any time window for the whole walk, so every page belongs to one query."""
    if isinstance(source, DatabricksSource):
        return DatabricksConnector(source, external_id)
    if isinstance(source, AdfSource):
        return AdfConnector(source, external_id, now)
    return GenericConnector(source, external_id)
