"""Credential redaction on adversarial text: time linear in the text (issue 10 §7).

    .venv/bin/python -m bench.redaction [--repeat 3] [--json]
    .venv/bin/python -m bench.redaction --before    # the backtracking patterns it replaced

Times ``chm.core.redaction.redact_text`` (the three patterns every stored
failure text, every string of every payload and every log line go through)
on texts built to make backtracking patterns quadratic: long runs of letters,
of letters and digits, of ``a://``, of ``token=``, of ``Bearer ``, spaces
after ``Bearer``, a long base64 blob... at 20, 40, 80, 160 and 1,000 KB, the
median of ``--repeat`` runs each. Then the same through ``stored_payload``
(redaction and the cap) for a payload carrying the blob.

Linear means the time per KB stays flat as the text grows: from 20 KB to
1,000 KB (50 times the text) the time grows about 50 times; a quadratic
pattern grows 2,500 times (the patterns before issue 10: 20 KB of letters
0.4 s, 80 KB 6 s, 1 MB some 15 minutes). The targets: for every family, the
time per KB at 1,000 KB at most ``GROWTH_LIMIT`` times that at 20 KB, and
1,000 KB in under ``TARGET_1MB_S`` seconds.

``--before`` times the patterns as they were before (kept here, not in CHM),
giving up on a family once one size takes longer than ``--give-up`` seconds.
Not part of the test suite; ``make bench`` runs it once (no database).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from chm.core.redaction import REDACTED, redact_text, stored_payload

SIZES_KB = (20, 40, 80, 160, 1000)
GROWTH_LIMIT = 3.0
TARGET_1MB_S = 1.0


def _repeat(piece: str, size: int, head: str = "") -> str:
    body = piece * ((size - len(head)) // len(piece) + 1)
    return (head + body)[:size]


def _blob(size: int) -> str:
    seed = bytes(range(256)) * (size // 256 + 1)
    return base64.b64encode(seed)[:size].decode()


# name -> text of ``size`` characters
FAMILIES: dict[str, Callable[[int], str]] = {
    "letters": lambda n: "a" * n,
    "letters and digits": lambda n: _repeat("a1", n),
    "digit, then letters": lambda n: _repeat("1aa", n),
    "a:// repeated": lambda n: _repeat("a://", n),
    "a:// then letters": lambda n: _repeat("b", n, head="a://"),
    "a:// then b: (no @)": lambda n: _repeat("b:", n, head="a://"),
    "token= repeated": lambda n: _repeat("token=", n),
    "Bearer repeated": lambda n: _repeat("Bearer ", n),
    "spaces after Bearer": lambda n: _repeat(" ", n, head="Bearer"),
    "@= repeated": lambda n: _repeat("@=", n),
    "base64 blob": _blob,
}

# The patterns before issue 10 (backtracking), for --before.
_OLD_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
_OLD_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
_OLD_SECRET_ASSIGNMENT = re.compile(
    r"(?P<name>\b(?:sig|signature|access_token|id_token|refresh_token|token|api_key|apikey"
    r"|password|pwd|client_secret|secret|AccountKey|SharedAccessKey|SharedAccessSignature))"
    r"=(?P<value>[^&;\s\"']+)",
    re.IGNORECASE,
)


def old_redact_text(text: str) -> str:
    text = _OLD_URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _OLD_SECRET_ASSIGNMENT.sub(lambda m: f"{m.group('name')}={REDACTED}", text)
    return _OLD_BEARER.sub(lambda m: f"{m.group('kind')} {REDACTED}", text)


def _median_seconds(work: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_family(
    make: Callable[[int], str],
    redact: Callable[[str], str],
    repeat: int,
    give_up: float | None = None,
) -> dict[str, dict[str, float] | None]:
    """Seconds per size (``None``: not run, an earlier size took longer than ``give_up``)."""
    timed: dict[str, dict[str, float] | None] = {}
    stop = False
    for kb in SIZES_KB:
        if stop:
            timed[str(kb)] = None
            continue
        text = make(kb * 1000)
        seconds = _median_seconds(lambda text=text: redact(text), repeat)  # type: ignore[misc]
        timed[str(kb)] = {"ms": seconds * 1000, "us_per_kb": seconds * 1e6 / kb}
        stop = give_up is not None and seconds > give_up
    return timed


def _growth(timed: dict[str, dict[str, float] | None]) -> float | None:
    first, last = timed[str(SIZES_KB[0])], timed[str(SIZES_KB[-1])]
    if first is None or last is None:
        return None
    return last["us_per_kb"] / first["us_per_kb"]


def run(repeat: int = 3, before: bool = False, give_up: float = 10.0) -> dict[str, Any]:
    redact = old_redact_text if before else redact_text
    families = {
        name: time_family(make, redact, repeat, give_up if before else None)
        for name, make in FAMILIES.items()
    }
    if not before:
        families["payload with a base64 blob (stored_payload)"] = time_family(
            lambda n: {"run_id": "r-1", "token": "t0k", "blob": _blob(n)},  # type: ignore[arg-type,return-value]
            stored_payload,
            repeat,
        )
    growth = {name: _growth(timed) for name, timed in families.items()}
    largest = str(SIZES_KB[-1])
    at_1mb = {name: t[largest]["ms"] for name, t in families.items() if t[largest] is not None}
    worst_growth = max((g for g in growth.values() if g is not None), default=None)
    worst_1mb_ms = max(at_1mb.values(), default=None)
    met = (
        len(at_1mb) == len(families)
        and worst_growth is not None
        and worst_growth <= GROWTH_LIMIT
        and worst_1mb_ms is not None
        and worst_1mb_ms < TARGET_1MB_S * 1000
    )
    return {
        "patterns": "before issue 10 (backtracking)" if before else "current",
        "repeat": repeat,
        "sizes_kb": list(SIZES_KB),
        "families": families,
        "growth_per_kb": growth,
        "worst_growth": worst_growth,
        "worst_1mb_ms": worst_1mb_ms,
        "met": met,
        "load_average": list(os.getloadavg()),
    }


def summary(results: dict[str, Any]) -> str:
    """One line for the benchmark table."""
    worst = max(results["families"], key=lambda n: results["families"][n]["1000"]["ms"])
    return (
        f"Redaction of adversarial text (no database, {len(results['families'])} families):"
        f" 1 MB in at most {results['worst_1mb_ms']:,.0f} ms ({worst});"
        f" time per KB from 20 KB to 1 MB x{results['worst_growth']:.2f} at worst"
        f" (linear: 1, quadratic: 50; target <= {GROWTH_LIMIT:g}, 1 MB < {TARGET_1MB_S:g} s)"
        f" {'✅' if results['met'] else '❌'}"
    )


def table(results: dict[str, Any]) -> str:
    sizes = results["sizes_kb"]
    lines = [
        f"patterns: {results['patterns']}; median of {results['repeat']} runs; ms (µs per KB)",
        "",
        "| text | " + " | ".join(f"{kb:,} KB" for kb in sizes) + " | per KB, 20 KB → 1 MB |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " | ---: |",
    ]
    for name, timed in results["families"].items():
        cells = [
            "not run" if (t := timed[str(kb)]) is None else f"{t['ms']:,.1f} ({t['us_per_kb']:.1f})"
            for kb in sizes
        ]
        growth = results["growth_per_kb"][name]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {'-' if growth is None else f'x{growth:.2f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", action="store_true", help="time the old, backtracking patterns")
    parser.add_argument(
        "--give-up", type=float, default=10.0, help="--before: seconds after which a family stops"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.repeat, args.before, args.give_up)
    print(json.dumps(results, indent=2) if args.json else table(results))
    if not args.before and not args.json:
        print("\n" + summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
