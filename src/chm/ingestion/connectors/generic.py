"""The generic partner feed (contract: "The generic partner feed").

``GET {base_url}/pipelines/{external_id}/runs[?cursor=<c>]`` answers
``{"runs": [...], "next_cursor": "..." | null}``. Per run, ``run_id`` and
``status`` are required; ``started_at``, ``finished_at``, ``error``,
``metrics``, and CHM's optional extras ``duration_seconds`` and ``updated_at``
may be missing.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from chm.ingestion.connectors.base import (
    Fetched,
    Page,
    PageRequest,
    Window,
    cursor_value,
    run_list,
)
from chm.ingestion.connectors.registry import Platform, register
from chm.ingestion.normalize import (
    GENERIC_STATUS,
    SourceRun,
    duration_seconds,
    error_text,
    map_status,
    metrics_object,
    parse_timestamp,
    run_identity,
    status_word,
)
from chm.ingestion.sources import SourceBase


class GenericSource(SourceBase):
    """The partner feed protocol of the contract."""

    platform: Literal["generic"]


class GenericConnector:
    def __init__(self, source: GenericSource, external_id: str, window: Window) -> None:
        self.url = f"{source.base}/pipelines/{quote(external_id, safe='')}/runs"

    def page_request(self, cursor: str | None) -> PageRequest:
        return PageRequest("GET", self.url, params={"cursor": cursor} if cursor else {})

    def read_page(self, fetched: Fetched) -> Page:
        body = fetched.body
        runs = run_list(body, "runs", required=True)
        return Page(runs, cursor_value(body.get("next_cursor"), "next_cursor"))

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        word = status_word(raw.get("status"))
        return SourceRun(
            external_run_id=run_identity(raw.get("run_id")),
            status=map_status(word, GENERIC_STATUS),
            source_status=word,
            started_at=parse_timestamp(raw.get("started_at"), "started_at"),
            finished_at=parse_timestamp(raw.get("finished_at"), "finished_at"),
            duration_seconds=duration_seconds(raw.get("duration_seconds"), "duration_seconds"),
            metrics=metrics_object(raw.get("metrics")),
            error_message=error_text(raw.get("error")),
            source_updated_at=parse_timestamp(raw.get("updated_at"), "updated_at"),
        )


PLATFORM = register(
    Platform(
        name="generic",
        source_model=GenericSource,
        connector=GenericConnector,
        statuses={"status": GENERIC_STATUS},
    )
)
