"""SQLAlchemy tables, one module per table."""

from chm.models.alert_rule import AlertRule, RuleType
from chm.models.base import Base
from chm.models.client import Client
from chm.models.pipeline import Pipeline
from chm.models.run import Run, RunStatus

__all__ = ["AlertRule", "Base", "Client", "Pipeline", "RuleType", "Run", "RunStatus"]
