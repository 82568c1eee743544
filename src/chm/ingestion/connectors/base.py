"""The small interface every connector implements.

A connector knows three platform-specific things: how to ask for a page (given
the previous page's cursor), where the runs and the next cursor are in a page,
and how to map one source run to canonical attributes. Everything else
(HTTP, retries, backoff, cursor-loop detection, upserts, reporting) is the
engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from chm.ingestion.normalize import SourceRun


class PageShapeError(ValueError):
    """A page that is not the shape the platform documents."""


@dataclass(frozen=True)
class PageRequest:
    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None


@dataclass(frozen=True)
class Page:
    """The raw source runs of one page, and the cursor of the next (None at the end)."""

    runs: list[Any]
    next_cursor: str | None


class Connector(Protocol):
    def page_request(self, cursor: str | None) -> PageRequest:
        """The request for the first page (``cursor`` None) or the one after ``cursor``."""
        ...

    def read_page(self, body: Any) -> Page:
        """The runs and next cursor of a decoded JSON body; PageShapeError if malformed."""
        ...

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        """One source run in canonical terms; InvalidRun when it cannot be stored."""
        ...


def cursor_value(raw: Any, what: str) -> str | None:
    """A continuation cursor: a non-empty string, or None (absent, null or "") at the end."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise PageShapeError(f"{what} is neither a string nor null")
    return str(raw)


def run_list(body: Any, key: str, *, required: bool) -> list[Any]:
    """The list of runs under ``key`` of a JSON object page."""
    if not isinstance(body, dict):
        raise PageShapeError("the page is not a JSON object")
    if key not in body or body[key] is None:
        if required:
            raise PageShapeError(f"the page has no {key!r} list")
        return []
    runs = body[key]
    if not isinstance(runs, list):
        raise PageShapeError(f"{key!r} is not a list")
    return runs
