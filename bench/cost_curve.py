"""The cost curve (issue 17): what the reads, the reports, alert evaluation and the
prune cost as history grows from 1 to 5 to 20 million runs, on PostgreSQL.

    .venv/bin/python -m bench.cost_curve                       # the three sizes
    .venv/bin/python -m bench.cost_curve --sizes history_1m --seconds 2 --repeat 2
    .venv/bin/python -m bench.cost_curve --table bench/results/cost_curve-*.json

The sizes (``bench/dataset.CURVE``) keep large's inventory (200 clients,
10,000 pipelines) and its rates (55,556 runs a day) and differ only in the
depth of history: 18, 90 and 360 days (1, 5 and 20 million runs). Each is
generated once and cached (``bench/dataset.py``). For each size, after
waiting (at most ``--wait-quiet`` seconds) for a quiet machine:

1. over HTTP, ``chm serve`` with one worker, one request after another
   (``bench/api.py``'s socket client, a random id each time): the latest run
   of a pipeline; its first history page (50 runs); a page half-way through
   its history and its oldest full page, by cursors the server issued while
   the history of 40 hourly pipelines (the deepest ones) was walked page by
   page, as a client would; and a client's summary of the last 24 hours. A
   warm-up, then ``--repeat`` runs of ``--seconds`` (medians);
2. in process, through the functions the API calls (``bench/reports.py``):
   the flaky-pipelines report (30 days), for all clients and for one;
3. on a scratch copy (``dataset.scratch_copy``): the alert rules of
   ``bench/evaluate.py`` added; the overdue report for all clients and one,
   with every pipeline scheduled (``bench/overdue.py``, which adds a
   ``missed_schedule`` rule per client); then ``bench/evaluate.py``'s
   evaluation of every rule (six types, 1,400 rules) at ``AS_OF``: the
   first, and the steady state the worker sees every minute;
4. on the same copy, two prunes (``bench/prune.py``): the oldest day (the
   worker's daily share of work under a retention; the same runs at every
   size), then everything older than ``RETENTION_DAYS`` (turning retention
   on: the runs deleted grow with the history).

What each must read: the SELECT statements of one request or report are
captured from SQLAlchemy's ``before_cursor_execute`` (the HTTP ones from the
app in process, ``api.capture_statements``) and run again under ``EXPLAIN
(ANALYZE, BUFFERS, FORMAT JSON)`` in a transaction rolled back: the runs
rows every scan of ``runs`` produced or filtered out (times its loops), and
the shared buffers (8 KB pages, hit or read) of the whole statement. The
prune reads each run it deletes once through the ``event_at`` index, plus
one probe of the pipeline's ordering index: its rows read are its runs
deleted, and its batches' duration shows what one batch costs at each size.

Writes ``bench/results/cost_curve-<UTC time>.json`` (ignored by git), prints
the table, and writes the log-log plot ``bench/cost_curve.svg``
(``bench/cost_curve_plot.py``). ``--table`` redraws both from results files;
a size measured in several takes its reads, and its scratch copy's measures,
from the run that was quietest for them (``merge``). Not part of the test
suite nor of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, event

from bench import api, dataset, evaluate, overdue, prune, reports
from bench.api import Endpoint, Statement
from bench.cost_curve_plot import table, write_svg
from bench.dataset import AS_OF
from bench.load import chm_server
from bench.run import RESULTS, load_average, wait_quiet
from chm.alerts.evaluate import CONDITIONS, evaluation_dialect
from chm.core.db import create_db_engine, make_session_factory
from chm.reports.overdue import overdue_pipelines
from chm.reports.params import OutputFormat, ReportContext
from chm.reports.sql import Scope

RETENTION_DAYS = 14
PAGE = 50
DEEP_SAMPLE = 40  # hourly pipelines whose middle and oldest pages are asked for
EXPLAIN_SAMPLE = 10  # requests per endpoint run again under EXPLAIN
QUIET_LOAD = 1.5  # the 1-minute load average waited for before each size
HOURLY_EVERY = 10  # the generator's hourly pipelines: id % 10 == 1
LATEST, FIRST_PAGE, SUMMARY = api.ENDPOINTS
PAGE_AT = Endpoint("a page by its cursor", "/api/v1/pipelines/{id}", "pipelines", 20.0)
FLAKY = reports.REPORTS["flaky-pipelines (30 d)"]
# The measures on the cached data set, before the scratch copy's.
READ_PART = (
    "latest run",
    "first history page",
    "middle history page",
    "oldest history page",
    "client summary (24 h)",
    "flaky pipelines (30 d), all",
    "flaky pipelines (30 d), one",
)
SVG = Path(__file__).resolve().parent / "cost_curve.svg"


# --- what a statement reads ---------------------------------------------------------


@contextmanager
def capturing() -> Iterator[list[Statement]]:
    """Every SELECT that any engine sends while inside, with its parameters as
    the driver got them."""
    sent: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            sent.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def runs_rows(node: dict[str, Any]) -> float:
    """Rows that the plan's scans of ``runs`` produced or filtered out, every loop."""
    own = 0.0
    if node.get("Relation Name") == "runs":
        per_loop = (
            node["Actual Rows"]
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        own = per_loop * node["Actual Loops"]
    return own + sum(runs_rows(child) for child in node.get("Plans", ()))


def rows_read(url: str, requests: list[list[Statement]]) -> dict[str, Any]:
    """Each request's statements under EXPLAIN (ANALYZE, BUFFERS), in a transaction
    rolled back: runs rows and shared buffers per request (the median request)."""
    engine = create_db_engine(url)
    per_request: list[tuple[float, int, int]] = []
    try:
        with engine.connect() as conn:
            for statements in requests:
                rows, buffers, read = 0.0, 0, 0
                for sql, parameters in statements:
                    explained = conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, parameters
                    ).scalar_one()
                    plan = explained[0]["Plan"]
                    rows += runs_rows(plan)
                    buffers += plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
                    read += plan["Shared Read Blocks"]
                per_request.append((rows, buffers, read))
            conn.rollback()
    finally:
        engine.dispose()
    return {
        "runs_rows": round(statistics.median(r for r, _, _ in per_request)),
        "buffers": round(statistics.median(b for _, b, _ in per_request)),
        "buffers_read": round(statistics.median(d for _, _, d in per_request)),
        "statements": round(statistics.fmean(len(s) for s in requests), 1),
        "requests": len(requests),
    }


def rows_read_of(url: str, call: Callable[[], object]) -> dict[str, Any]:
    """What ``call`` (in process) reads: its statements captured, then explained."""
    with capturing() as statements:
        call()
    return rows_read(url, [statements])


# --- 1. over HTTP -----------------------------------------------------------------------


@dataclass(frozen=True)
class PageAt:
    """A full page of a pipeline's history, reached by a cursor the server issued."""

    path: str  # the request, after "/api/v1/pipelines/"
    number: int  # 1 is the first page
    after_unstarted: bool  # the cursor's run has no start time (the history's tail)


def walk_history(base: str, pipelines: list[int]) -> dict[str, list[PageAt]]:
    """For each pipeline, its middle and its oldest full page of ``PAGE`` runs,
    found by walking its history page by page as a client would."""
    found: dict[str, list[PageAt]] = {"middle": [], "oldest": []}
    with httpx.Client(base_url=base, timeout=60) as http:
        for pipeline in pipelines:
            full: list[PageAt] = []
            cursor: str | None = None
            unstarted, number = False, 1
            while True:
                params: dict[str, Any] = {"limit": PAGE}
                if cursor is not None:
                    params["cursor"] = cursor
                response = http.get(f"/api/v1/pipelines/{pipeline}/runs", params=params)
                response.raise_for_status()
                page = response.json()
                if cursor is not None and len(page["items"]) == PAGE:
                    path = f"{pipeline}/runs?limit={PAGE}&cursor={cursor}"
                    full.append(PageAt(path, number, unstarted))
                if page["next_cursor"] is None:
                    break
                cursor, number = page["next_cursor"], number + 1
                unstarted = page["items"][-1]["started_at"] is None
            if full:
                found["middle"].append(full[len(full) // 2])
                found["oldest"].append(full[-1])
    return found


def pages_asked(pages: list[PageAt]) -> dict[str, Any]:
    numbers = [page.number for page in pages]
    return {
        "pipelines": len(pages),
        "page_number": {
            "min": min(numbers),
            "median": statistics.median(numbers),
            "max": max(numbers),
        },
        "after_unstarted": sum(page.after_unstarted for page in pages),
    }


def latency(
    base: str, endpoint: Endpoint, ids: list[int] | list[str], seconds: float, repeat: int
) -> dict[str, Any]:
    """One request after another for ``seconds``, ``repeat`` times after a warm-up:
    the medians of the runs' p50 and p95 (ms)."""
    api.sequential(base, endpoint, ids, min(seconds, 2.0))
    runs = [api.sequential(base, endpoint, ids, seconds) for _ in range(repeat)]
    return {
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p95_ms": round(statistics.median(r["p95_ms"] for r in runs), 3),
        "requests": sum(r["requests"] for r in runs),
    }


def http_reads(url: str, seconds: float, repeat: int) -> dict[str, Any]:
    ids = api.sample_ids(url)
    hourly = [p for p in ids["pipelines"] if p % HOURLY_EVERY == 1]
    sample = hourly[:: max(1, len(hourly) // DEEP_SAMPLE)][:DEEP_SAMPLE]
    figures: dict[str, Any] = {}
    with chm_server(url, api._free_port(), 1) as base:
        started = time.perf_counter()
        walked = walk_history(base, sample)
        print(
            f"  history walked: {pages_asked(walked['middle'])} (middle),"
            f" {pages_asked(walked['oldest'])} (oldest), in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        asked: list[tuple[str, Endpoint, list[int] | list[str]]] = [
            ("latest run", LATEST, ids["pipelines"]),
            ("first history page", FIRST_PAGE, ids["pipelines"]),
            ("middle history page", PAGE_AT, [page.path for page in walked["middle"]]),
            ("oldest history page", PAGE_AT, [page.path for page in walked["oldest"]]),
            ("client summary (24 h)", SUMMARY, ids["clients"]),
        ]
        for name, endpoint, chosen in asked:
            figures[name] = latency(base, endpoint, chosen, seconds, repeat)
            print(f"  {name}: {figures[name]}", flush=True)
    for where in ("middle", "oldest"):
        figures[f"{where} history page"].update(pages_asked(walked[where]))
    for name, endpoint, chosen in asked:
        step = max(1, len(chosen) // EXPLAIN_SAMPLE)
        requests = api.capture_statements(url, endpoint, chosen[::step][:EXPLAIN_SAMPLE])
        figures[name]["reads"] = rows_read(url, requests)
        print(f"  {name} reads: {figures[name]['reads']}", flush=True)
    return figures


# --- 2. in process ------------------------------------------------------------------------


def flaky_report(url: str, repeat: int) -> dict[str, Any]:
    engine = create_db_engine(url)
    figures: dict[str, Any] = {}
    try:
        one = reports._median_client(engine)
        for label, scope in (("all", Scope()), ("one", Scope(client_id=one))):
            timings = reports.time_report(engine, FLAKY, scope, repeat)
            context = ReportContext(as_of=AS_OF, scope=scope, output=OutputFormat.json)
            with make_session_factory(engine)() as session:
                reads = rows_read_of(url, partial(FLAKY, session, context))
            figures[f"flaky pipelines (30 d), {label}"] = {
                "median_ms": round(statistics.median(timings), 1),
                "max_ms": round(max(timings), 1),
                "reads": reads,
            }
            print(f"  flaky, {label}: {figures[f'flaky pipelines (30 d), {label}']}", flush=True)
    finally:
        engine.dispose()
    return figures


# --- 3 and 4. on a scratch copy ---------------------------------------------------------


def condition_reads(url: str) -> dict[str, Any]:
    """What each rule type's statement reads at ``AS_OF``, as evaluate() runs it."""
    engine = create_db_engine(url)
    figures: dict[str, Any] = {}
    try:
        for condition in CONDITIONS:
            with make_session_factory(engine).begin() as session:
                evaluation_dialect(engine).prepare(session)
                with capturing() as statements:
                    session.execute(condition.statement(AS_OF)).all()
            figures[condition.rule_type.value] = rows_read(url, [statements])
    finally:
        engine.dispose()
    return figures


def on_copy(spec: dataset.Spec, admin_url: str, repeat: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with dataset.scratch_copy(spec, "postgresql", admin_url, "curve") as url:
        engine = create_db_engine(url)
        try:
            # evaluate's rules first: it adds none to a copy that has some already.
            figures["rules"] = evaluate.add_rules(engine)
            scheduled = overdue.measure(url, repeat)
            one = reports._median_client(engine)
            sessions = make_session_factory(engine)
            for label, scope in (("all", Scope()), ("one", Scope(client_id=one))):
                with sessions() as session:
                    reads = rows_read_of(url, partial(overdue_pipelines, session, AS_OF, scope))
                key = "api_all" if label == "all" else "api_one_client"
                figures[f"overdue report, {label}"] = {**scheduled[key], "reads": reads}
            figures["missed_schedule statement"] = scheduled["evaluation"]
            # overdue.measure left the ticks as at the real clock: as at AS_OF again.
            overdue.add_schedules(engine, AS_OF)
        finally:
            engine.dispose()
        evaluated = evaluate.measure(url, repeat, False)
        for statement in evaluated["statements"].values():
            statement.pop("plan")
        figures["alert evaluation"] = {
            **{key: evaluated[key] for key in ("rules", "first", "steady", "hour_later")},
            "statements": evaluated["statements"],
            "reads": condition_reads(url),
        }
        print(f"  evaluation: {figures['alert evaluation']['steady']}", flush=True)
        batch = prune.DEFAULT_BATCH
        figures["prune, the oldest day"] = prune.measure(url, spec.days - 1, batch)
        print(f"  prune, the oldest day: {figures['prune, the oldest day']}", flush=True)
        figures[f"prune to {RETENTION_DAYS} days"] = prune.measure(url, RETENTION_DAYS, batch)
        print(f"  prune to {RETENTION_DAYS} days: {figures[f'prune to {RETENTION_DAYS} days']}")
    return figures


def measure_size(
    spec: dataset.Spec, admin_url: str, seconds: float, repeat: int, quiet: float
) -> dict[str, Any]:
    url = dataset.ensure(spec, admin_url)
    result: dict[str, Any] = {"spec": {"name": spec.name, "runs": spec.runs, "days": spec.days}}
    result["data"] = dataset.describe(spec)
    result["load_before"] = wait_quiet(quiet, QUIET_LOAD)
    started = time.perf_counter()
    print(f"\n=== {spec.name}: {result['data']} ===", flush=True)
    result["measures"] = http_reads(url, seconds, repeat)
    result["measures"].update(flaky_report(url, repeat))
    assert tuple(result["measures"]) == READ_PART, result["measures"].keys()
    result["load_reads"] = load_average()
    result["measures"].update(on_copy(spec, admin_url, repeat))
    result["load_after"] = load_average()
    result["seconds"] = round(time.perf_counter() - started)
    return result


def _quietest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One size's figures from several runs: the reads from the run whose load was
    lowest when they began, the scratch copy's measures from the run whose load
    was lowest at the start and the end of that part."""
    reads = min(runs, key=lambda run: run["load_before"]["load_average"][0])
    copy = min(runs, key=lambda run: max(run["load_reads"][0], run["load_after"][0]))
    measures = {name: reads["measures"][name] for name in READ_PART}
    measures.update({k: v for k, v in copy["measures"].items() if k not in READ_PART})
    return {
        **copy,
        "measures": measures,
        "from": {
            "reads": {"date": reads["date"], "load": reads["load_before"]["load_average"]},
            "copy": {"date": copy["date"], "load": [copy["load_reads"], copy["load_after"]]},
        },
    }


def merge(paths: list[Path]) -> dict[str, Any]:
    """One document of the sizes in ``paths``; a size measured more than once is
    taken from its quietest runs (``_quietest``)."""
    merged: dict[str, Any] = {"sizes": {}}
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        document = json.loads(path.read_text())
        merged.update({k: v for k, v in document.items() if k != "sizes"})
        for name, size in document["sizes"].items():
            runs.setdefault(name, []).append({"date": document["date"], **size})
    merged["sizes"] = {name: _quietest(measured) for name, measured in runs.items()}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(dataset.SIZES), default=None)
    parser.add_argument("--admin-url", default=dataset.ADMIN_URL, help="the PostgreSQL server")
    parser.add_argument("--seconds", type=float, default=5.0, help="per HTTP run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--wait-quiet", type=float, default=180, help="seconds, per size")
    parser.add_argument("--svg", type=Path, default=SVG)
    parser.add_argument("--table", type=Path, nargs="+", help="redraw from results files")
    args = parser.parse_args(argv)
    if args.table:
        document = merge(args.table)
    else:
        document = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds_per_run": args.seconds,
            "repeat": args.repeat,
            "retention_days": RETENTION_DAYS,
            "sizes": {},
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
        path = RESULTS / f"cost_curve-{stamp}.json"
        for name in args.sizes or dataset.CURVE:
            spec = dataset.SIZES[name]
            measured = measure_size(
                spec, args.admin_url, args.seconds, args.repeat, args.wait_quiet
            )
            document["sizes"][name] = measured
            path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"\nresults: {path}")
    print(table(document))
    write_svg(document, args.svg)
    print(f"plot: {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
