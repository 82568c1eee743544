"""The small interface every connector implements.

A connector knows three platform-specific things: how to ask for a page (given
the previous page's cursor), where the runs and the next cursor are in a page,
and how to map one source run to canonical attributes. Everything else
(HTTP, authentication, retries, backoff, rate limits, cursor-loop detection,
upserts, watermarks, reporting) is the engine's.

The paging styles the platforms use are helpers here, so that each connector
only says which one it speaks: an opaque cursor in the body (the generic
feed, Databricks, ADF), an offset against a total or until a short page
(Airflow, dbt Cloud, Prefect), the ``Link`` header (GitHub), or the last
item's id (Dagster). An offset cursor is the offset of the next page as a
string: a server that clamps the page size only makes the walk longer.

**Incremental ingestion.** A platform whose API filters runs by time says
so in its registry entry (``Platform.incremental``, ``registry.py``):
``"updated"`` when the filter is on the run's last update (every change
since is returned), ``"started"`` when it is on the run's start or creation
(a run started before the filter and still active would be missed, so the
engine holds the watermark at the start of the oldest active run). Its
connector then finds in ``window.since`` the lower bound to ask for, or None
for a full read.

**Values derived at read time.** Some platforms compute fields of a run
against the clock each time it is read (Prefect's ``estimated_run_time``,
dbt Cloud's ``"2 hours ago"``): kept in the stored payload, they would make
every replay of an unchanged run look like a change. A platform names those
top-level keys in its entry's ``read_time_keys``; the engine maps the run
from the whole object, then leaves them out of the payload it stores.

**Schedules.** A platform whose API says how a pipeline is scheduled declares
a ``ScheduleReader`` in its registry entry (``Platform.schedules``): one
request, and the answer read as a ``PlatformSchedule`` (a five-field cron in
an IANA zone, or none with a note saying why in plain words). The engine
fetches it like a page (same authentication, retries and deadline) and hands
it to ``chm.schedules.learn``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from chm.core.cron import CronError, TimezoneError, check_timezone, normalize_cron
from chm.ingestion.normalize import SourceRun

IncrementalMode = Literal["updated", "started"]


class PageShapeError(ValueError):
    """A page that is not the shape the platform documents."""


class SourceRejected(ValueError):
    """The source answered the page with an error of its own (a GraphQL error union,
    an error object in a 200 answer); the message is the source's, redacted later."""


class BadExternalId(ValueError):
    """A pipeline's ``external_id`` that cannot name anything on this platform."""


@dataclass(frozen=True)
class Window:
    """The time frame of one walk, given to every connector with its source and
    the pipeline's ``external_id``: ``now`` fixes any time window for the whole
    walk, so that every page answers one query; ``since`` (incremental platforms
    only) is the lower bound to ask for, None for a full read."""

    now: datetime
    since: datetime | None = None


@dataclass(frozen=True)
class PageRequest:
    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    # Platform headers (API version, media type); never credentials.
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fetched:
    """One page as the source answered it: the decoded JSON body, the response
    headers (lower-case names), and the cursor the page was asked with."""

    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    cursor: str | None = None


@dataclass(frozen=True)
class Page:
    """The raw source runs of one page, and the cursor of the next (None at the end)."""

    runs: list[Any]
    next_cursor: str | None


@dataclass(frozen=True)
class PlatformSchedule:
    """How the platform schedules a pipeline, in CHM's terms: ``cron`` is five
    fields (``chm.core.cron.normalize_cron``) read in ``timezone`` (IANA);
    ``cron`` None means no expectation, and ``note`` says why (paused, manual
    only, an interval, several schedules, a form five fields cannot express)."""

    cron: str | None
    timezone: str = "UTC"
    note: str | None = None


class Connector(Protocol):
    """Built as ``Connector(source, external_id, window)`` (``registry.ConnectorFactory``);
    BadExternalId when ``external_id`` cannot name anything on the platform."""

    def page_request(self, cursor: str | None) -> PageRequest:
        """The request for the first page (``cursor`` None) or the one after ``cursor``."""
        ...

    def read_page(self, fetched: Fetched) -> Page:
        """The runs and next cursor of a fetched page; PageShapeError if malformed."""
        ...

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        """One source run in canonical terms; InvalidRun when it cannot be stored."""
        ...


class ScheduleReader(Protocol):
    """Built as ``ScheduleReader(source, external_id)`` (``registry.ScheduleReaderFactory``);
    BadExternalId when ``external_id`` cannot name anything on the platform."""

    def schedule_request(self) -> PageRequest:
        """The one request that answers how the pipeline is scheduled."""
        ...

    def read_schedule(self, fetched: Fetched) -> PlatformSchedule:
        """The schedule in the answer; PageShapeError if malformed, SourceRejected
        for an error the source answered in its body."""
        ...


def shown(value: Any, limit: int = 120) -> str:
    """A platform's value quoted for a note, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def no_schedule(note: str) -> PlatformSchedule:
    """No expectation, for the reason ``note`` gives."""
    return PlatformSchedule(None, "UTC", note)


def cron_schedule(expression: str, timezone: str | None, what: str) -> PlatformSchedule:
    """``expression`` (five fields or a preset such as ``@daily``) read in
    ``timezone`` (None: UTC); no expectation, with the reason, when either is
    not one CHM can use. ``what`` names the platform's value in the note."""
    try:
        cron = normalize_cron(expression)
    except CronError as error:
        return no_schedule(f"{what} is not a five-field cron: {error}")
    zone = "UTC" if timezone is None else timezone
    try:
        check_timezone(zone)
    except TimezoneError:
        return no_schedule(f"{what} is read in {shown(zone)}, which is not an IANA time zone")
    return PlatformSchedule(cron, zone)


def single_schedule(
    schedules: list[PlatformSchedule], what: str, kind: str = "active schedules"
) -> PlatformSchedule:
    """What several active schedules of one pipeline amount to: their one cron
    and zone when they agree; else no expectation, since one five-field cron
    cannot express them. ``what`` names the pipeline (``"the deployment"``),
    ``kind`` what it has several of."""
    if len(schedules) == 1:
        return schedules[0]
    unusable = [schedule for schedule in schedules if schedule.cron is None]
    if unusable:
        return no_schedule(
            f"{what} has {len(schedules)} {kind} and one of them cannot be used "
            f"({unusable[0].note})"
        )
    distinct = sorted({(schedule.cron, schedule.timezone) for schedule in schedules})
    if len(distinct) == 1:
        return schedules[0]
    listed = ", ".join(f"{cron!r} {zone}" for cron, zone in distinct[:4])
    listed += ", ..." if len(distinct) > 4 else ""
    return no_schedule(
        f"{what} has {len(schedules)} {kind} that differ ({listed}); "
        "one five-field cron cannot express them"
    )


def without_read_time(raw: dict[str, Any], read_time_keys: frozenset[str]) -> dict[str, Any]:
    """The source run as stored: ``raw`` without the keys derived at read time."""
    if not read_time_keys.intersection(raw):
        return raw
    return {key: value for key, value in raw.items() if key not in read_time_keys}


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


def offset_of(cursor: str | None) -> int:
    """The offset an offset cursor names (0 for the first page)."""
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise PageShapeError(f"offset cursor {cursor!r} is not a number")
    return int(cursor)


def next_offset(
    cursor: str | None, count: int, *, total: int | None = None, page_size: int | None = None
) -> str | None:
    """The cursor after a page of ``count`` items asked at offset ``cursor``.

    With ``total`` (the source's count of all matches) the walk goes on while
    the items seen are fewer than the total, whatever page size the server
    really used; without it, until a page shorter than ``page_size``. An empty
    page always ends the walk: a total that shrank must not loop forever.
    """
    if count == 0:
        return None
    following = offset_of(cursor) + count
    if total is not None:
        return str(following) if following < total else None
    if page_size is not None and count < page_size:
        return None
    return str(following)


def count_value(raw: Any, what: str) -> int:
    """A non-negative integer the page must carry (a total count)."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise PageShapeError(f"{what} is not a non-negative integer")
    return raw


_LINK = re.compile(r"<(?P<url>[^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL_NEXT = re.compile(r';\s*rel\s*=\s*"?(?:[^";,]*\s)?next(?:\s[^";,]*)?"?', re.IGNORECASE)


def link_next(headers: Mapping[str, str], base: str) -> str | None:
    """The ``rel="next"`` URL of an RFC 8288 ``Link`` header, or None.

    The URL must stay under ``base`` (the source's own URL): a next link that
    points elsewhere would carry the source's credentials to another host.
    """
    value = headers.get("link")
    if not value:
        return None
    for match in _LINK.finditer(value):
        if _REL_NEXT.search(match.group(2) or ""):
            url = match.group("url").strip()
            if not (url == base or url.startswith(base + "/") or url.startswith(base + "?")):
                raise PageShapeError(f"the next link {url[:200]!r} leaves the source {base!r}")
            return url
    return None
