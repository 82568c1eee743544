"""The ingestion report (contract: Ingestion) and the progress hooks of the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field

from chm.core.schemas import EntityId
from chm.ingestion.rule import PageCounts


class PipelineError(BaseModel):
    pipeline_id: EntityId
    message: str


class IngestionReport(BaseModel):
    """What one ingestion did; the JSON of ``chm ingest --json`` and of the API."""

    pipelines: int = Field(0, description="Pipelines a source was found for")
    pages: int = Field(0, description="Pages read and committed")
    runs_created: int = 0
    runs_updated: int = 0
    runs_unchanged: int = 0
    runs_skipped: int = Field(0, description="Source runs that could not be stored")
    errors: list[PipelineError] = Field(default_factory=list)

    def add_page(self, counts: PageCounts) -> None:
        self.pages += 1
        self.runs_created += counts.created
        self.runs_updated += counts.updated
        self.runs_unchanged += counts.unchanged
        self.runs_skipped += counts.skipped


@dataclass(frozen=True)
class PipelineTarget:
    """An active pipeline with an external id, as the engine needs it."""

    id: int
    name: str
    platform: str
    environment: str
    external_id: str
    client_name: str
    # The incremental watermark, and whose it is (chm.ingestion.engine).
    watermark: datetime | None = None
    watermark_key: str | None = None
    # Who set the schedule, and when ingestion last read the platform's.
    schedule_source: str | None = None
    schedule_checked_at: datetime | None = None

    def describe(self) -> str:
        return f"pipeline {self.id} ({self.name})"


class Progress(Protocol):
    """Told what the engine is doing; the CLI draws it, the API ignores it."""

    def pipelines_found(self, count: int) -> None: ...

    def pipeline_started(self, target: PipelineTarget, source_name: str) -> None: ...

    def page_stored(self, target: PipelineTarget, page: int, counts: PageCounts) -> None: ...

    def pipeline_finished(self, target: PipelineTarget, error: str | None) -> None: ...


class NoProgress:
    def pipelines_found(self, count: int) -> None:
        pass

    def pipeline_started(self, target: PipelineTarget, source_name: str) -> None:
        pass

    def page_stored(self, target: PipelineTarget, page: int, counts: PageCounts) -> None:
        pass

    def pipeline_finished(self, target: PipelineTarget, error: str | None) -> None:
        pass
