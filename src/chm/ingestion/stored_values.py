"""A run's values as each database's driver holds them, for ingestion's store
(``chm.ingestion.store``), which reads and writes pages of runs without
SQLAlchemy's per-value type processing.

Pure functions: what ``UTCDateTime`` and the JSON column type would write and
read back (``chm.core.types``), and whether a snapshot holds exactly the values
of a stored run as read (``sqlite_identical``), judged without decoding it.

SQLite holds a time as the UTC wall time in SQLAlchemy's DATETIME text
("YYYY-MM-DD HH:MM:SS.ffffff"), a flag as 0 or 1 and a JSON document as text
(None as the text "null", as SQLAlchemy's JSON type writes it). Documents are
written compact with their keys sorted, so that their text does not depend on
the order a source sent its keys in. PostgreSQL's driver gives aware times
(in the session's zone) and parses jsonb with the standard library, as
SQLAlchemy does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson

from chm.ingestion.rule import DATA_FIELDS, Row

# A stored run as read: its external run id, then DATA_FIELDS, as the driver gives them.
StoredValues = tuple[Any, ...]
READ_FIELDS = ("external_run_id", *DATA_FIELDS)
# A row as written: its pipeline, READ_FIELDS, then the bookkeeping times.
WRITE_FIELDS = ("pipeline_id", *READ_FIELDS, "ingested_at", "created_at", "updated_at")
_TIME_FIELDS = ("started_at", "finished_at", "source_updated_at")
_JSON_FIELDS = ("metrics", "source_payload")
# SQLAlchemy's DATETIME storage format on SQLite.
_SQLITE_TIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def read_utc(value: datetime | None) -> datetime | None:
    """A time read back in UTC, as ``UTCDateTime`` answers it."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def json_text(value: Any) -> str:
    """A JSON document's compact text, keys sorted. What orjson cannot write (an
    integer past 64 bits) the standard library does, alike."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLite holds it: its UTC wall time in SQLAlchemy's DATETIME text.
    A naive time is refused, as ``UTCDateTime`` refuses it."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTCDateTime column")
    value = value.astimezone(UTC)
    return _SQLITE_TIME % (
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond,
    )  # fmt: skip


def sqlite_json(value: Any) -> str:
    """A JSON document as SQLite holds it (None: the JSON text "null")."""
    return "null" if value is None else json_text(value)


def _sqlite_read_time(value: str | None) -> datetime | None:
    return None if value is None else read_utc(datetime.fromisoformat(value))


def _sqlite_read_json(value: Any) -> Any:
    # The stored text parsed by the standard library, as SQLAlchemy's JSON
    # type reads it (a number SQLite's JSON functions left is kept).
    return json.loads(value) if isinstance(value, str) else value


def _sqlite_same_time(stored: str | None, value: datetime | None) -> bool:
    """Whether a stored time's text reads back as ``value``."""
    if stored is None:
        return value is None
    if value is None:
        return False
    try:
        # The UTC wall time read as UTC at once (datetime.replace costs more).
        return datetime.fromisoformat(stored + "+00:00") == value
    except ValueError:  # a text with an offset of its own
        return _sqlite_read_time(stored) == value


def sqlite_decode(stored: StoredValues) -> Row:
    """A stored run as SQLite gives it, in the rule's values (as SQLAlchemy's types read it)."""
    row = dict(zip(READ_FIELDS, stored, strict=True))
    for name in _TIME_FIELDS:
        row[name] = _sqlite_read_time(row[name])
    for name in _JSON_FIELDS:
        row[name] = _sqlite_read_json(row[name])
    flag = row["duration_from_source"]
    row["duration_from_source"] = None if flag is None else bool(flag)
    return row


def sqlite_identical(stored: StoredValues, snapshot: Row) -> bool:
    """True only when ``snapshot`` holds the values ``stored`` reads back as, on
    every DATA field: times read from their text, documents compared as the
    text this store writes (a document stored as other text, equal or not,
    answers False: the rule then compares values)."""
    (_key, status, source_status, started, finished, duration, from_source, metrics,
     error, payload, updated, attempt) = stored  # fmt: skip
    return (
        status == snapshot["status"]
        and source_status == snapshot["source_status"]
        and duration == snapshot["duration_seconds"]
        and from_source == snapshot["duration_from_source"]
        and error == snapshot["error_message"]
        and attempt == snapshot["source_attempt"]
        and _sqlite_same_time(started, snapshot["started_at"])
        and _sqlite_same_time(finished, snapshot["finished_at"])
        and _sqlite_same_time(updated, snapshot["source_updated_at"])
        and _same_document(metrics, snapshot["metrics"])
        and _same_document(payload, snapshot["source_payload"])
    )


def _same_document(stored: Any, value: Any) -> bool:
    """Whether a stored document's text is the text ``sqlite_json`` writes of ``value``."""
    try:
        # orjson writes None as "null", as sqlite_json does.
        return bool(stored == orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
    except TypeError:
        return bool(stored == sqlite_json(value))


def sqlite_values(row: Row) -> tuple[Any, ...]:
    """A row's READ_FIELDS as SQLite holds them."""
    return (
        row["external_run_id"],
        row["status"],
        row["source_status"],
        sqlite_time(row["started_at"]),
        sqlite_time(row["finished_at"]),
        row["duration_seconds"],
        row["duration_from_source"],
        sqlite_json(row["metrics"]),
        row["error_message"],
        sqlite_json(row["source_payload"]),
        sqlite_time(row["source_updated_at"]),
        row["source_attempt"],
    )


def postgres_decode(stored: StoredValues) -> Row:
    """A stored run as psycopg gives it, in the rule's values (times in UTC)."""
    row = dict(zip(READ_FIELDS, stored, strict=True))
    for name in _TIME_FIELDS:
        row[name] = read_utc(row[name])
    return row
