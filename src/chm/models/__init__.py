"""SQLAlchemy tables, one module per table."""

from chm.models.alert import Alert, AlertDelivery, Silence
from chm.models.alert_rule import AlertRule, RuleType
from chm.models.base import Base
from chm.models.client import Client
from chm.models.ingestion_job import IngestionJob
from chm.models.ingestion_source import IngestionSource
from chm.models.lineage_unmatched_job import LineageUnmatchedJob
from chm.models.pipeline import Pipeline
from chm.models.run import Run
from chm.models.schedule_tick import ScheduleTick
from chm.models.settings import DatabaseSetting
from chm.models.worker import WorkerProcess

__all__ = [
    "Alert",
    "AlertDelivery",
    "AlertRule",
    "Base",
    "Client",
    "DatabaseSetting",
    "IngestionJob",
    "IngestionSource",
    "LineageUnmatchedJob",
    "Pipeline",
    "RuleType",
    "Run",
    "ScheduleTick",
    "Silence",
    "WorkerProcess",
]
