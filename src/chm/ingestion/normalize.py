"""From a source's words and formats to canonical run attributes (FR-013).

Connectors call these helpers to map one source run; anything that cannot be
read raises ``InvalidRun`` and the engine skips that run, never storing half.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from chm.core.redaction import MAX_STORED_PAYLOAD_BYTES, Redactor
from chm.core.status import RunStatus
from chm.core.timeutil import as_utc

MAX_EXTERNAL_RUN_ID = 500
MAX_SOURCE_STATUS = 200
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH = EARLIEST
# Numbers at or above this are epoch milliseconds, below it epoch seconds:
# 1e11 seconds is the year 5138, 1e11 milliseconds is March 1973.
_MILLIS_THRESHOLD = 100_000_000_000


class InvalidRun(ValueError):
    """A source run that cannot be stored; the message says why."""


@dataclass(slots=True)  # one per run ingested: slots make it cheaper to build
class SourceRun:
    """One source run, mapped to canonical attributes by a connector."""

    external_run_id: str
    status: RunStatus
    source_status: str | None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # The source's own duration; None lets the engine derive finished - started.
    duration_seconds: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error_message: str | None = None
    # The source's own "last changed" time, for the no-regression rule.
    source_updated_at: datetime | None = None
    # The source's marker of the run's current attempt, a number that grows
    # with every new attempt of the same run (a re-run, a clear, a repair),
    # for the no-regression rule; None when the source gives none.
    attempt: int | None = None


# The generic feed's words (contract: "The generic partner feed"), lower-cased.
GENERIC_STATUS = {
    **dict.fromkeys(("succeeded", "success", "completed", "ok"), RunStatus.success),
    **dict.fromkeys(("failed", "failure", "error"), RunStatus.failed),
    **dict.fromkeys(("running", "in_progress", "started"), RunStatus.running),
    **dict.fromkeys(("queued", "pending", "scheduled", "waiting"), RunStatus.queued),
    **dict.fromkeys(("cancelled", "canceled", "aborted"), RunStatus.cancelled),
    "skipped": RunStatus.skipped,
}


def status_word(raw: Any, what: str = "status") -> str:
    """The source's status word, or InvalidRun when it is missing or not a word."""
    if raw is None:
        raise InvalidRun(f"missing {what}")
    if not isinstance(raw, str):
        raise InvalidRun(f"{what} is not a string")
    word = clean_text(raw).strip()
    if not word:
        raise InvalidRun(f"missing {what}")
    return word[:MAX_SOURCE_STATUS]


def map_status(word: str, mapping: Mapping[str, RunStatus]) -> RunStatus:
    """``word`` through ``mapping`` (keys lower-case); any other word is ``unknown``."""
    return mapping.get(word.lower(), RunStatus.unknown)


def run_identity(raw: Any, what: str = "run_id") -> str:
    """A run's identity as a string: a non-empty string or an integer."""
    if raw is None:
        raise InvalidRun(f"missing {what}")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidRun(f"{what} is neither a string nor an integer")
    value = clean_text(str(raw)).strip()
    if not value:
        raise InvalidRun(f"missing {what}")
    if len(value) > MAX_EXTERNAL_RUN_ID:
        raise InvalidRun(f"{what} is longer than {MAX_EXTERNAL_RUN_ID} characters")
    return value


def _checked(value: datetime, what: str) -> datetime:
    try:
        value = as_utc(value)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00: past UTC's calendar
        raise InvalidRun(f"{what} is out of range") from None
    if value < EARLIEST:
        raise InvalidRun(f"{what} is before 1970-01-01")
    return value


def from_epoch_ms(raw: Any, what: str, *, zero_is_none: bool = False) -> datetime | None:
    """Epoch milliseconds (Databricks) to aware UTC; ``zero_is_none`` reads 0 as "not yet"."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise InvalidRun(f"{what} is not a number of epoch milliseconds")
    if raw == 0 and zero_is_none:
        return None
    try:
        return _checked(_EPOCH + timedelta(milliseconds=raw), what)
    except OverflowError:
        raise InvalidRun(f"{what} is out of range") from None


def parse_timestamp(raw: Any, what: str) -> datetime | None:
    """A timestamp in any format a source uses, as aware UTC, or None when absent.

    Strings are ISO 8601 / RFC 3339, with or without an offset (none means UTC),
    ``Z`` or not, with up to 7 fractional digits (ADF; the 7th is dropped).
    Numbers are epoch seconds, or epoch milliseconds from 1e11 up.
    """
    if isinstance(raw, str):  # the usual case, first
        if raw == "":
            return None
        try:
            # Python 3.11 reads "Z", offsets and any number of fractional digits.
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise InvalidRun(f"{what} {raw[:64]!r} is not an ISO 8601 timestamp") from None
        return _checked(parsed, what)
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise InvalidRun(f"{what} is not a timestamp")
    if isinstance(raw, (int, float)):
        if not math.isfinite(raw):
            raise InvalidRun(f"{what} is not a timestamp")
        if abs(raw) >= _MILLIS_THRESHOLD:
            return from_epoch_ms(raw, what)
        try:
            return _checked(_EPOCH + timedelta(seconds=raw), what)
        except OverflowError:
            raise InvalidRun(f"{what} is out of range") from None
    raise InvalidRun(f"{what} is not a timestamp")


def duration_seconds(raw: Any, what: str, *, scale: float = 1.0) -> float | None:
    """A non-negative duration from the source (``scale`` 0.001 for milliseconds)."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise InvalidRun(f"{what} is not a number")
    if raw < 0:
        raise InvalidRun(f"{what} is negative")
    return float(raw) * scale


def attempt_number(raw: Any, what: str) -> int | None:
    """A count of attempts the source keeps (GitHub's ``run_attempt``): a
    non-negative integer, or None when absent."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidRun(f"{what} is not a non-negative integer")
    return raw


def attempt_time(moment: datetime | None) -> int | None:
    """A time that moves with every new attempt (Airflow's ``queued_at``) as an
    attempt marker: whole microseconds since 1970, so that markers compare
    exactly whichever database stores them."""
    if moment is None:
        return None
    return (moment - _EPOCH) // timedelta(microseconds=1)


def metrics_object(raw: Any, what: str = "metrics") -> dict[str, Any]:
    """Optional metrics: an object, kept as given."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRun(f"{what} is not an object")
    return raw


def error_text(raw: Any) -> str | None:
    """Failure text: a string, or the JSON of whatever else the source sent. Whole:
    the engine caps it once its credentials are removed (a cut here could leave
    half a secret the patterns no longer recognize)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raw = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()
    text = clean_text(raw).strip()
    return text or None


def clean_text(text: str) -> str:
    """PostgreSQL text and JSONB cannot hold NUL characters: drop them on both databases."""
    return text.replace("\x00", "") if "\x00" in text else text


def canonical_json(value: Any) -> Any:
    """A JSON document with keys sorted and NULs dropped, recursively.

    Sorted keys make a stored document's text identical whatever order the
    source sent its keys in, so "unchanged" means the same on SQLite (JSON
    text) as on PostgreSQL (JSONB).
    """
    if isinstance(value, dict):
        return {clean_text(str(k)): canonical_json(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical_json(v) for v in value]
    if isinstance(value, str):
        return clean_text(value)
    return value


_BACKSLASH = ord("\\")


def stored_document(value: Any, redactor: Redactor) -> Any:
    """A source's JSON document (a run's payload or metrics) as CHM stores it:
    redacted and capped (``Redactor.stored_payload``), NULs dropped
    (``canonical_json``).

    Most documents need none of it, which their compact JSON shows: no NUL
    (escaped ``\\u0000``), within the cap, nothing the redactor would change
    (``Redactor.leaves_unchanged``). Such a document is stored as it is, with
    no walk through it; the store writes its keys sorted, as ``canonical_json``
    would have ordered them."""
    try:
        document = orjson.dumps(value)
    except TypeError:
        document = None
    if (
        document is not None
        # No backslash: no escape at all, so no NUL (a quick look first).
        and (_BACKSLASH not in document or b"\\u0000" not in document)
        and len(document) <= MAX_STORED_PAYLOAD_BYTES
        and redactor.leaves_unchanged(document)
    ):
        return value
    return canonical_json(redactor.stored_payload(value))


def failure_text(status: RunStatus, text: str | None) -> str | None:
    """A platform's state message is failure context only for runs that did not succeed
    (running and successful runs carry progress chatter such as "In run")."""
    if status in (RunStatus.success, RunStatus.running, RunStatus.queued):
        return None
    return text


def clock_duration(raw: Any, what: str) -> float | None:
    """A ``"HH:MM:SS"`` duration (hours may pass 24, as dbt Cloud writes them; a
    leading ``"N day(s), "`` and fractional seconds are read too) in seconds."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise InvalidRun(f"{what} is not an HH:MM:SS string")
    match = _CLOCK.match(raw.strip())
    if match is None:
        raise InvalidRun(f"{what} {raw[:32]!r} is not an HH:MM:SS duration")
    days, hours, minutes, seconds = match.group("days", "hours", "minutes", "seconds")
    return (int(days or 0) * 24 + int(hours)) * 3600 + int(minutes) * 60 + float(seconds)


_CLOCK = re.compile(
    r"^(?:(?P<days>\d+) days?, )?(?P<hours>\d+):(?P<minutes>[0-5]\d)"
    r":(?P<seconds>[0-5]\d(?:\.\d+)?)$"
)
