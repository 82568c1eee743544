"""The parameters every report shares, their validation, and the two output formats."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel
from pydantic_core import PydanticCustomError

from chm.core.errors import ValidationFailed
from chm.core.ids import IdFilter
from chm.core.schemas import UTCTimestamp
from chm.core.timeutil import as_utc, isoformat_z, utcnow
from chm.core.window import resolve_window
from chm.reports.schemas import Report
from chm.reports.sql import Bucket, FixedClock, Scope, Window, at_time

EARLIEST_REPORT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_REPORT_TIME = datetime(9000, 1, 1, tzinfo=UTC)
MAX_BUCKETS = 10_000


def _report_time(value: datetime) -> datetime:
    value = as_utc(value)
    if not EARLIEST_REPORT_TIME <= value < LATEST_REPORT_TIME:
        raise PydanticCustomError(
            "out_of_range", "timestamp must be between 1970-01-01 and 9000-01-01 (UTC)"
        )
    return value


# A request time: UTC when it has no offset, and within years 1970..8999 so
# that every window derived from it stays a valid timestamp on both databases.
ReportTime = Annotated[UTCTimestamp, AfterValidator(_report_time)]

AsOfParam = Annotated[
    ReportTime | None,
    Query(description="Reference time of rolling windows and defaults (default: now)"),
]
SinceParam = Annotated[ReportTime | None, Query(description="Event time >= since (RFC 3339)")]
UntilParam = Annotated[
    ReportTime | None, Query(description="Event time < until (RFC 3339; default: as_of)")
]


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"


@dataclass(frozen=True)
class ReportContext:
    """What every report is asked: when (``as_of``), for whom, and in which format."""

    as_of: datetime
    scope: Scope
    output: OutputFormat

    @property
    def clock(self) -> FixedClock:
        return FixedClock(self.as_of)

    def window(
        self, since: datetime | None, until: datetime | None, default: timedelta
    ) -> tuple[datetime, datetime]:
        """The half-open window asked for: ``until`` defaults to ``as_of``, ``since``
        to ``default`` before ``until``; a 422 on ``until`` unless it is after ``since``."""
        return resolve_window(since, self.as_of if until is None else until, default)


def report_context(
    as_of: AsOfParam = None,
    client_id: Annotated[IdFilter | None, Query(description="Only this client's pipelines")] = None,
    include_inactive: Annotated[
        bool, Query(description="Also cover inactive pipelines and clients")
    ] = False,
    output: Annotated[
        OutputFormat, Query(alias="format", description="json (default) or csv")
    ] = OutputFormat.json,
) -> ReportContext:
    return ReportContext(
        as_of=as_of if as_of is not None else utcnow(),
        scope=Scope(client_id=client_id, include_inactive=include_inactive),
        output=output,
    )


def sql_window(since: datetime, until: datetime) -> Window:
    return Window(at_time(since), at_time(until))


def check_bucket_count(since: datetime, until: datetime, bucket: Bucket) -> None:
    """A chart of more than MAX_BUCKETS points is a mistake, not a report."""
    span = until - bucket.floor(since)
    buckets = -(-span // bucket.width)  # ceiling division of timedeltas
    if buckets > MAX_BUCKETS:
        raise ValidationFailed.one(
            "since",
            "out_of_range",
            f"the window spans {buckets} {bucket.value} buckets (at most {MAX_BUCKETS}); "
            "shorten it or use a wider bucket",
        )


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return isoformat_z(value)
    return str(value)


def csv_text(row_model: type[BaseModel], rows: list[Any]) -> str:
    """A header line of the row model's fields, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    columns = list(row_model.model_fields)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(getattr(row, column)) for column in columns])
    return buffer.getvalue()


def render(
    report: Report[Any], row_model: type[BaseModel], output: OutputFormat, name: str
) -> Response:
    """The report as JSON, or its items as CSV (``name`` becomes the file name)."""
    if output is OutputFormat.csv:
        return Response(
            csv_text(row_model, report.items),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(report.model_dump_json(), media_type="application/json")
