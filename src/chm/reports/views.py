"""The BI views: each report's own statement, with fixed parameters, as a SQL view.

A view is not a second copy of a report. It is the report's ``*_query``
builder called with the database's clock (``DatabaseClock``: ``as_of`` is
the database's current time) and the active inventory of every client,
compiled per dialect, with the reference times added as columns. The
compiled text is frozen into a migration (migrations never import the
application, so that replaying history stays stable), between the markers
below; ``tests/reports/test_views.py`` fails when the text of the latest
such migration differs from what the builders produce now, and when a
migrated database holds anything else. Changing a report therefore means
adding a migration that re-creates the views:

    python -m chm.reports.views block      # the generated block, to paste
    python -m chm.reports.views write FILE # or: replace the block in FILE
    python -m chm.reports.views ddl --dialect postgresql   # plain DDL, for DBAs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from chm.reports import durations, failures, flaky, overdue, status
from chm.reports.schemas import (
    DurationHistogramRow,
    DurationSummaryRow,
    FailureRateByPlatformRow,
    FailuresByClientRow,
    FailuresOverTimeRow,
    FlakyPipelineRow,
    LatestStatusRow,
    OverdueRow,
    RunDurationRow,
    StatusChangeRow,
    StuckRunRow,
)
from chm.reports.sql import ACTIVE_INVENTORY, Bucket, DatabaseClock, Query, TimeExpr, Window
from chm.schedules.ticks import stored_expectations

BEGIN_MARKER = "# --- BEGIN GENERATED VIEWS (python -m chm.reports.views block) ---"
END_MARKER = "# --- END GENERATED VIEWS ---"
DIALECTS: dict[str, Dialect] = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
}

# The fixed parameters of the views (the API's defaults unless said).
DAILY_FAILURES_DAYS = 30  # today so far and the 30 whole UTC days before it
STUCK_AFTER = timedelta(minutes=360)  # the default of CHM_STUCK_AFTER_MINUTES

CLOCK = DatabaseClock()
AS_OF = "Reference time: the database's current time when the view is queried"


@dataclass(frozen=True)
class ViewSpec:
    """One view: which report, with which fixed parameters, and its columns."""

    name: str
    report: str
    description: str
    row_model: type[BaseModel]
    build: Callable[[], Query]
    # Columns appended to the report's own: the reference times used.
    times: dict[str, tuple[TimeExpr, str]] = field(default_factory=dict)

    def statement(self) -> Query:
        times = {"as_of": (CLOCK.at(), AS_OF), **self.times}
        return self.build().add_columns(*(expr.label(name) for name, (expr, _) in times.items()))

    def columns(self) -> dict[str, str]:
        """Every column of the view and what it holds."""
        described = {
            name: (info.description or name.replace("_", " "))
            for name, info in self.row_model.model_fields.items()
        }
        described["as_of"] = AS_OF
        described.update({name: text for name, (_, text) in self.times.items()})
        return described


def _window(since: TimeExpr, until: TimeExpr) -> dict[str, tuple[TimeExpr, str]]:
    return {
        "since": (since, "Start of the event-time window (inclusive)"),
        "until": (until, "End of the event-time window (exclusive)"),
    }


_DAILY = Window(CLOCK.day_start(DAILY_FAILURES_DAYS), CLOCK.at())
_FLAKY = Window(CLOCK.at(-timedelta(days=flaky.DEFAULT_DAYS)), CLOCK.at())
_PLATFORM = Window(CLOCK.at(-failures.DEFAULT_PLATFORM_WINDOW), CLOCK.at())
_DURATION = Window(CLOCK.at(-durations.DEFAULT_DURATION_WINDOW), CLOCK.at())
_CHANGES = Window(CLOCK.at(-status.DEFAULT_CHANGES_WINDOW), CLOCK.at())


def _durations() -> Query:
    return durations.run_durations_query(_DURATION, ACTIVE_INVENTORY)


VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec(
        "chm_failures_over_time_daily",
        "failures-over-time?bucket=day",
        "Failed and total runs per UTC day: today so far and the 30 days before",
        FailuresOverTimeRow,
        lambda: failures.failures_over_time_query(_DAILY, Bucket.day, ACTIVE_INVENTORY),
        _window(_DAILY.since, _DAILY.until),
    ),
    ViewSpec(
        "chm_latest_status",
        "latest-status",
        "Each active pipeline's latest run by the ordering rule, pipelines without runs included",
        LatestStatusRow,
        lambda: status.latest_status_query(CLOCK, ACTIVE_INVENTORY),
    ),
    ViewSpec(
        "chm_failures_by_client",
        "failures-by-client",
        "Failed and total runs per active client over the last 24 hours and 7 days",
        FailuresByClientRow,
        lambda: failures.failures_by_client_query(CLOCK, ACTIVE_INVENTORY),
    ),
    ViewSpec(
        "chm_flaky_pipelines",
        "flaky-pipelines?days=30",
        "Pipelines that both failed and succeeded in the last 30 days, most failures first",
        FlakyPipelineRow,
        lambda: flaky.flaky_pipelines_query(_FLAKY, ACTIVE_INVENTORY, limit=None),
        _window(_FLAKY.since, _FLAKY.until),
    ),
    ViewSpec(
        "chm_failure_rate_by_platform",
        "failure-rate-by-platform",
        "Failed / total runs per platform over the last 7 days",
        FailureRateByPlatformRow,
        lambda: failures.failure_rate_by_platform_query(_PLATFORM, ACTIVE_INVENTORY),
        _window(_PLATFORM.since, _PLATFORM.until),
    ),
    ViewSpec(
        "chm_run_durations",
        "duration-distribution (its runs)",
        "Every run with a duration in the last 7 days: the set the duration views aggregate",
        RunDurationRow,
        _durations,
        _window(_DURATION.since, _DURATION.until),
    ),
    ViewSpec(
        "chm_duration_summary",
        "duration-distribution (top level)",
        "Count, nearest-rank percentiles and maximum of the run durations of the last 7 days",
        DurationSummaryRow,
        lambda: durations.duration_summary_query(_durations()),
        _window(_DURATION.since, _DURATION.until),
    ),
    ViewSpec(
        "chm_duration_histogram",
        "duration-distribution (items)",
        "Histogram of the run durations of the last 7 days: every bin, empty ones with count 0",
        DurationHistogramRow,
        lambda: durations.duration_histogram_query(_durations()),
        _window(_DURATION.since, _DURATION.until),
    ),
    ViewSpec(
        "chm_status_changes",
        "status-changes",
        "Pipelines whose latest status changed in the last 24 hours",
        StatusChangeRow,
        lambda: status.status_changes_query(_CHANGES, ACTIVE_INVENTORY),
        _window(_CHANGES.since, _CHANGES.until),
    ),
    ViewSpec(
        "chm_stuck_runs",
        "stuck-runs?older_than_minutes=360",
        "Runs still queued or running whose event time is more than 6 hours old",
        StuckRunRow,
        lambda: status.stuck_runs_query(CLOCK, STUCK_AFTER, ACTIVE_INVENTORY),
        {"until": (CLOCK.at(-STUCK_AFTER), "Runs whose event time is before this are stuck")},
    ),
    ViewSpec(
        "chm_overdue_pipelines",
        "overdue-pipelines",
        "Active scheduled pipelines whose expected run is missed or late now (stored ticks)",
        OverdueRow,
        lambda: overdue.overdue_query(stored_expectations(CLOCK.at()), CLOCK, ACTIVE_INVENTORY),
    ),
)

VIEWS_BY_NAME = {view.name: view for view in VIEWS}


CONTINUATION = "    "
# Where a long line may break: after a comma, or before one of these words.
_BREAK_BEFORE = (
    " AND ",
    " LEFT OUTER JOIN ",
    " JOIN ",
    " ON ",
    " WHEN ",
    " ORDER BY ",
    " UNION ALL ",
)


def _break_points(line: str, width: int) -> list[int]:
    """Offsets in ``line[:width]`` where a line break changes nothing (outside quotes)."""
    points, quote = [], ""
    for i, char in enumerate(line[:width]):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            after_comma = char == " " and line[i - 1 : i] == ","
            before_word = any(line.startswith(word, i) for word in _BREAK_BEFORE)
            if after_comma or (before_word and not line[:i].endswith("OUTER")):
                points.append(i)
    return [i for i in points if i > len(CONTINUATION)]


def _wrap(sql: str, width: int = 92) -> str:
    """Break long lines where whitespace is free (layout only: the same SQL)."""
    lines: list[str] = []
    for raw in sql.splitlines():
        line = raw.rstrip()
        while len(line) > width and (points := _break_points(line, width)):
            lines.append(line[: points[-1]].rstrip())
            line = CONTINUATION + line[points[-1] :].lstrip()
        lines.append(line)
    return "\n".join(lines)


def view_sql(view: ViewSpec, dialect: str) -> str:
    """The view's SELECT in ``dialect``, parameters inlined."""
    compiled = view.statement().compile(
        dialect=DIALECTS[dialect], compile_kwargs={"literal_binds": True}
    )
    return _wrap(str(compiled))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_ddl(dialect: str) -> list[str]:
    """Every statement that creates the views (and, on PostgreSQL, documents them)."""
    statements: list[str] = []
    for view in VIEWS:
        statements.append(f"CREATE VIEW {view.name} AS\n{view_sql(view, dialect)}")
        if DIALECTS[dialect].supports_comments:  # PostgreSQL documents its views
            statements.append(f"COMMENT ON VIEW {view.name} IS\n{_quote(view.description)}")
            statements.extend(
                f"COMMENT ON COLUMN {view.name}.{column} IS\n{_quote(text)}"
                for column, text in view.columns().items()
            )
    return statements


def _literal(text: str) -> str:
    if '"""' in text or "\\" in text:
        raise ValueError("a view statement cannot be written as a plain triple-quoted string")
    return f'"""\\\n{text}\n"""'


def generated_block() -> str:
    """The migration source that freezes the current definitions (between the markers).

    Laid out as ``ruff format`` would, so that formatting the migration keeps it.
    """
    parts = [BEGIN_MARKER, "VIEW_NAMES = ["]
    parts.extend(f'    "{view.name}",' for view in VIEWS)
    parts += ["]", "VIEW_DDL = {"]
    for dialect in DIALECTS:
        parts.append(f'    "{dialect}": [')
        parts.extend(f"        {_literal(statement)}," for statement in view_ddl(dialect))
        parts.append("    ],")
    parts += ["}", END_MARKER]
    return "\n".join(parts)


def replace_block(source: str, block: str) -> str:
    start, end = source.index(BEGIN_MARKER), source.index(END_MARKER) + len(END_MARKER)
    return source[:start] + block + source[end:]


def current_block(source: str) -> str:
    return source[source.index(BEGIN_MARKER) : source.index(END_MARKER) + len(END_MARKER)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chm.reports.views", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("block", help="print the generated migration block")
    write = commands.add_parser("write", help="replace the generated block of a migration")
    write.add_argument("migration", type=Path)
    ddl = commands.add_parser("ddl", help="print the DDL of the views")
    ddl.add_argument("--dialect", choices=sorted(DIALECTS), default="postgresql")
    args = parser.parse_args(argv)
    if args.command == "block":
        print(generated_block())
    elif args.command == "write":
        path: Path = args.migration
        path.write_text(replace_block(path.read_text(), generated_block()))
    else:
        print(";\n\n".join(view_ddl(args.dialect)) + ";")
    return 0


if __name__ == "__main__":
    sys.exit(main())
