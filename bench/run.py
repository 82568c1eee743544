"""Every benchmark of the performance issue, on SQLite and PostgreSQL, into one results file.

    .venv/bin/python -m bench.run [--size small|large] [--backend sqlite --backend postgresql]
    .venv/bin/python -m bench.run --table bench/results/latest.json   # the README table
    .venv/bin/python -m bench.run --table A.json B.json   # each database from its last run

``make bench`` runs it (``BENCH_SIZE=small`` for a smoke run, ``large`` by
default). First, once (no database), credential redaction on adversarial
text of 20 KB to 1 MB (``bench/redaction.py``); then, in order, for each database:

1. the data set of that size (``bench/dataset.py``; generated once, then cached);
2. ingestion against the raw driver limit and the ingester's peak RSS
   (``bench/ingest_limit.py``, which reuses ``bench/ingest.py``);
3. the API under load with wrk, one and two workers, and the driver baseline
   (``bench/api.py``);
4. every report for one client and for all (``bench/reports.py``);
5. the overdue-pipelines report and the missed_schedule evaluation on a copy
   of the data set given schedules (``bench/overdue.py``);
6. the operator pages, the now page first, on a copy given schedules, rules
   and firing alerts (``bench/web.py``).

Writes ``bench/results/<UTC date and time>.json`` and ``bench/results/latest.json``
(both ignored by git) and prints the targets table. The exit code is 0 when
every benchmark ran, whether or not every target was met (the table says).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import api, dataset, ingest_limit, redaction, reports
from chm.core.db import create_db_engine

RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True)
class Profile:
    """How much of each benchmark a size runs."""

    dataset: str
    ingest_runs: int
    ingest_repeat: int
    memory_runs: tuple[int, ...]
    api_seconds: float
    api_warmup: float
    api_repeat: int
    api_sweep: float
    report_repeat: int


PROFILES = {
    "small": Profile("small", 20_000, 1, (5_000, 20_000), 3, 1, 1, 2, 3),
    "large": Profile("large", 100_000, 3, (20_000, 100_000), 8, 3, 2, 4, 5),
}


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    with psycopg.connect(PG_ADMIN) as conn:
        pg = conn.execute("SHOW server_version").fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN"
                " ('shared_buffers', 'work_mem', 'max_connections', 'effective_cache_size')"
            ).fetchall()
        )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg[0] if pg else None,
        "postgresql_settings": settings,
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0],
    }


def emit(figures: dict[str, Any], json_path: str | None) -> None:
    """Print a standalone benchmark's figures, and write them to ``json_path``."""
    print(json.dumps(figures, indent=2))
    if json_path:
        with open(json_path, "w") as out:
            json.dump(figures, out, indent=2)


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def wait_quiet(limit_seconds: float, threshold: float = 1.0) -> dict[str, Any]:
    """Wait (at most ``limit_seconds``) for the 1-minute load average to fall below
    ``threshold``: other work on the 2 cores skews every figure. Says what it found."""
    started = time.monotonic()
    while load_average()[0] >= threshold and time.monotonic() - started < limit_seconds:
        time.sleep(5)
    found = load_average()
    waited = round(time.monotonic() - started)
    if found[0] >= threshold:
        print(
            f"  machine busy (load {found[0]:.2f}) after waiting {waited} s: going on", flush=True
        )
    return {"load_average": found, "waited_seconds": waited}


def _git_head() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return done.stdout.strip() + (" (src/ modified)" if dirty else "")


def run(
    size: str, backends: list[str], sqlite_size: str | None, quiet_wait: float = 0
) -> dict[str, Any]:
    profile = PROFILES[size]
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git_head(),
        "size": size,
        "machine": machine(),
        "profile": asdict(profile),
        "datasets": {},
        "ingestion": {},
        "api": {},
        "reports": {},
        "overdue": {},
        "pages": {},
        "load_average": {},
    }
    # No database: once per run, before the databases' benchmarks.
    print("\n=== redaction of adversarial text (no database) ===", flush=True)
    results["redaction"] = redaction.run()
    print(redaction.table(results["redaction"]), flush=True)
    for backend in backends:
        where = "sqlite" if backend == "sqlite" else PG_ADMIN
        spec = dataset.SIZES[(sqlite_size or profile.dataset) if backend == "sqlite" else size]
        print(f"\n=== {backend}: data set {spec.name} ===", flush=True)
        step = time.perf_counter()
        url = dataset.ensure(spec, where)
        results["datasets"][backend] = {
            **asdict(spec),
            "clients": spec.client_count,
            "ready_seconds": round(time.perf_counter() - step),
        }

        print(f"\n=== {backend}: ingestion ({profile.ingest_runs:,} runs) ===", flush=True)
        results["load_average"][backend] = {"before": wait_quiet(quiet_wait)}
        results["ingestion"][backend] = ingest_limit.run(
            [backend], profile.ingest_runs, profile.ingest_repeat, list(profile.memory_runs)
        )[backend]

        print(f"\n=== {backend}: API under load ({spec.name}) ===", flush=True)
        results["api"][backend] = api.run(
            url,
            workers=[1, 2],
            connections=16,
            seconds=profile.api_seconds,
            warmup=profile.api_warmup,
            repeat=profile.api_repeat,
            sweep=profile.api_sweep,
        )

        print(f"\n=== {backend}: reports ({spec.name}) ===", flush=True)
        engine = create_db_engine(url)
        try:
            timed = reports.time_reports(engine, profile.report_repeat, _flushed)
        finally:
            engine.dispose()
        results["reports"][backend] = {"dataset": spec.name, "reports": timed}

        # Imported here: both import this module's helpers.
        from bench import overdue, web

        print(f"\n=== {backend}: overdue pipelines ({spec.name}) ===", flush=True)
        with dataset.scratch_copy(spec, backend, PG_ADMIN, "overdue") as copy:
            results["overdue"][backend] = overdue.measure(copy, profile.report_repeat)
        print(f"\n=== {backend}: operator pages ({spec.name}) ===", flush=True)
        with dataset.scratch_copy(spec, backend, PG_ADMIN, "web") as copy:
            results["pages"][backend] = web.measure(copy, profile.report_repeat)
        results["load_average"][backend]["after"] = load_average()
    results["seconds"] = round(time.perf_counter() - started)
    return results


def _flushed(line: str) -> None:
    print(line, flush=True)


# --- the targets table ---------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _cell(results: dict[str, Any], backend: str, render: Any) -> tuple[str, bool | None]:
    try:
        return render(results, backend)
    except KeyError:
        return "not run", None


def _ingest_first(r: dict[str, Any], b: str) -> tuple[str, bool]:
    e = r["ingestion"][b]
    raw = e["raw"][e["raw_method"]]["first"]["median"]
    chm = e["chm"]["first"]["median"]
    text = f"{chm:,.0f} runs/s (raw {raw:,.0f}, {e['raw_method']}): **{chm / raw:.2f}**"
    return text, chm / raw >= 0.5


def _ingest_replay(r: dict[str, Any], b: str) -> tuple[str, bool]:
    e = r["ingestion"][b]
    raw = e["raw"][e["raw_method"]]["replay"]["median"]
    chm = e["chm"]["replay"]["median"]
    ratio = e["replay_over_first"]
    text = f"{chm:,.0f} runs/s = **{ratio:.2f}** x first (raw replay {raw:,.0f}: {chm / raw:.2f})"
    return text, ratio >= 1.0


def _p95(name: str, limit: float) -> Any:
    def render(r: dict[str, Any], b: str) -> tuple[str, bool]:
        load = r["api"][b]["load"]
        w1, w2 = (load[f"workers={n}"]["endpoints"][name] for n in (1, 2))
        best = min(w1["p95_ms"], w2["p95_ms"])
        text = (
            f"w1 {_ms(w1['p95_ms'])} (p50 {_ms(w1['p50_ms'])}) / "
            f"w2 {_ms(w2['p95_ms'])} (p50 {_ms(w2['p50_ms'])})"
        )
        return text, best < limit

    return render


def _rps(r: dict[str, Any], b: str) -> tuple[str, bool]:
    load = r["api"][b]["load"]
    w1, w2 = (load[f"workers={n}"]["endpoints"]["latest run"]["rps"] for n in (1, 2))
    return f"w1 {w1:,.0f} / w2 **{w2:,.0f}** req/s", w2 >= api.TARGET_LATEST_RPS


def _overhead(name: str) -> Any:
    def render(r: dict[str, Any], b: str) -> tuple[str, bool]:
        e = r["api"][b]["overhead"][name]
        text = (
            f"API {e['api_c1']['p50_ms']:.2f} / driver {e['driver']['p50_ms']:.3f} ms:"
            f" **{e['ratio_p50']:.1f}x**"
        )
        return text, e["ratio_p50"] <= api.TARGET_OVERHEAD

    return render


def _sweep(name: str) -> Any:
    def render(r: dict[str, Any], b: str) -> tuple[str, None]:
        sweep = r["api"][b]["load"]["workers=2"]["endpoints"]["sweep"][name]
        cells = [
            f"{c.removeprefix('c=')}: {_ms(v['p95_ms'])} @ {v['rps']:,.0f}"
            for c, v in sweep.items()
        ]
        return ", ".join(cells), None

    return render


def _floor(r: dict[str, Any], b: str) -> tuple[str, None]:
    floor = r["api"][b]["http_floor"]
    busy = next(v for k, v in floor.items() if k != "c1")
    return (
        f"c=1 p50 {floor['c1']['p50_ms']:.3f} ms; c=16 {busy['rps']:,.0f} req/s,"
        f" p95 {_ms(busy['p95_ms'])} ms",
        None,
    )


def _reports(scope: str, limit: float) -> Any:
    def render(r: dict[str, Any], b: str) -> tuple[str, bool]:
        timed = r["reports"][b]["reports"]
        worst = max(timed, key=lambda name: timed[name][scope]["p95"])
        p95 = timed[worst][scope]["p95"]
        over = [name for name in timed if timed[name][scope]["p95"] >= limit]
        text = f"worst {_ms(p95)} ({worst})"
        if over:
            text += f"; over: {', '.join(over)}"
        # The reports' targets are PostgreSQL's; SQLite's figures are given for scale.
        return text, (not over) if b == "postgresql" else None

    return render


def _overdue(r: dict[str, Any], b: str) -> tuple[str, bool | None]:
    figures = r["overdue"][b]
    every, one = figures["api_all"], figures["api_one_client"]
    text = (
        f"all {_ms(every['median_ms'])} (worst {_ms(every['max_ms'])}),"
        f" one client {_ms(one['median_ms'])}; evaluation {_ms(figures['evaluation']['median_ms'])}"
    )
    # The target is PostgreSQL's; SQLite's figure is given for scale.
    return text, every["median_ms"] < 1000 if b == "postgresql" else None


def _now_page(r: dict[str, Any], b: str) -> tuple[str, bool | None]:
    now = r["pages"][b]["now"]
    text = (
        f"{_ms(now['median_ms'])} (worst {_ms(now['max_ms'])}); {now['statements']} statements,"
        f" {_ms(now['statements_ms'])} in the database"
    )
    return text, now["median_ms"] < 300 if b == "postgresql" else None


def _other_pages(r: dict[str, Any], b: str) -> tuple[str, None]:
    pages = r["pages"][b]
    return ", ".join(
        f"{name} {_ms(pages[name]['median_ms'])}" for name in ("pipeline", "client", "alerts")
    ), None


def _server_rss(r: dict[str, Any], b: str) -> tuple[str, None]:
    load = r["api"][b]["load"]
    w1, w2 = (load[f"workers={n}"]["peak_rss"] for n in (1, 2))
    return (
        f"w1 {w1['max_mib']:.0f} MiB / w2 {w2['max_mib']:.0f} MiB per worker"
        f" ({w2['sum_mib']:.0f} MiB, {w2['processes']} processes)",
        None,
    )


def _ingester_rss(r: dict[str, Any], b: str) -> tuple[str, bool]:
    memory = r["ingestion"][b]["memory"]
    parts = [f"{m['runs'] // 1000}k runs {m['peak_rss_mib']:.0f} MiB" for m in memory]
    growth = memory[-1]["peak_rss_mib"] / memory[0]["peak_rss_mib"]
    return f"{' / '.join(parts)} (x{growth:.2f})", growth <= 1.1


ROWS = [
    ("Ingestion, first ingest: CHM / raw", ">= 0.5", _ingest_first),
    ("Ingestion, replay", ">= first ingest", _ingest_replay),
    ("Latest run p95, c=16 (ms)", "< 20 ms", _p95("latest run", 20.0)),
    ("Latest run throughput, c=16", ">= 1,000 req/s (2 workers)", _rps),
    ("History page p95, c=16 (ms)", "< 20 ms", _p95("history page", 20.0)),
    ("Client summary p95, c=16 (ms)", "< 100 ms", _p95("client summary", 100.0)),
    ("Latest run by connections, w2: p95 ms @ req/s", "(context)", _sweep("latest run")),
    ("History page by connections, w2", "(context)", _sweep("history page")),
    ("Client summary by connections, w2", "(context)", _sweep("client summary")),
    ("API overhead, latest run (p50 c=1 / driver p50)", "<= 2x", _overhead("latest run")),
    ("API overhead, history page", "<= 2x", _overhead("history page")),
    ("API overhead, client summary", "<= 2x", _overhead("client summary")),
    ("HTTP floor: bare ASGI app, same uvicorn (context)", "-", _floor),
    ("Reports, one client, p95 (ms)", "< 100 ms each (PostgreSQL)", _reports("one", 100.0)),
    ("Reports, all clients, p95 (ms)", "< 2,000 ms each (PostgreSQL)", _reports("all", 2000.0)),
    ("Overdue pipelines report, median (ms)", "< 1 s, all clients (PostgreSQL)", _overdue),
    ("Operator now page `/`, median (ms)", "< 300 ms (PostgreSQL)", _now_page),
    ("Operator pages: a pipeline, a client, alerts (ms)", "(context)", _other_pages),
    ("Server peak RSS (VmHWM) during the load", "(reported)", _server_rss),
    ("Ingester peak RSS (`chm ingest`)", "flat in pages", _ingester_rss),
]


PER_DATABASE = ("datasets", "ingestion", "api", "reports", "overdue", "pages", "load_average")


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One results document from several runs: each database's figures from the
    last run that measured it."""
    merged = dict(runs[-1])
    for section in PER_DATABASE:
        merged[section] = {}
    dates: dict[str, str] = {}
    for run_results in runs:
        for backend in run_results["datasets"]:
            for section in PER_DATABASE:
                if backend in run_results.get(section, {}):
                    merged[section][backend] = run_results[section][backend]
            dates[backend] = f"{run_results['date'][:16]}Z ({run_results['commit']})"
    if len(set(dates.values())) > 1:
        merged["date"] = max(r["date"] for r in runs)
        merged["commit"] = "; ".join(f"{b} {d}" for b, d in dates.items())
    return merged


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    sizes = {
        b: f"{d['pipelines']:,} pipelines / {d['runs']:,} runs"
        for b, d in results["datasets"].items()
    }
    lines = [
        f"{results['date'][:10]}, commit {results['commit']}, size `{results['size']}`;"
        f" {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB;"
        f" PostgreSQL {m['postgresql']}, SQLite {m['sqlite']}, Python {m['python']}."
        f" Data: SQLite {sizes.get('sqlite', '-')}, PostgreSQL {sizes.get('postgresql', '-')}.",
        "",
        "| benchmark | target | SQLite | PostgreSQL |",
        "| --- | --- | --- | --- |",
    ]
    for name, target, render in ROWS:
        cells = []
        for backend in ("sqlite", "postgresql"):
            text, met = _cell(results, backend, render)
            mark = "" if met is None else " ✅" if met else " ❌"
            cells.append(text + mark)
        lines.append(f"| {name} | {target} | {cells[0]} | {cells[1]} |")
    if "redaction" in results:
        lines += ["", redaction.summary(results["redaction"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(PROFILES), default="large")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument(
        "--sqlite-size",
        choices=sorted(dataset.SIZES),
        help="a smaller data set for SQLite's API and report runs (default: --size)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120,
        help="seconds to wait, per database, for the load average to fall below 1",
    )
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="print the table of results files and stop (a later file's databases win)",
    )
    args = parser.parse_args(argv)
    if args.table:
        print(table(merge([json.loads(path.read_text()) for path in args.table])))
        return 0
    backends = args.backend or ["sqlite", "postgresql"]
    results = run(args.size, backends, args.sqlite_size, args.wait_quiet)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    text = json.dumps(results, indent=2, default=str)
    for path in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        path.write_text(text + "\n")
    print(f"\n{table(results)}\n\nresults: {RESULTS / f'{stamp}.json'} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
