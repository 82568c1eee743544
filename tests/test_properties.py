"""The ordering rule (FR-006) for any mix of missing times and ties (issue 5 §1).

For any set of runs, ``GET .../runs/latest`` is the first run of the list
sorted in Python by ``chm.runs.ordering.sort_key``, and walking the history
page by page (in any page size) yields that whole sorted list, on both
databases. Times come from a tiny pool so that ties and nulls are frequent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chm.runs.ordering import sort_key
from factories import API, make_client, make_pipeline, make_run, ok, walk

BASE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
# A few instants (ties are likely), and None (a missing time).
TIMES = st.one_of(st.none(), st.integers(0, 3).map(lambda m: BASE + timedelta(minutes=m)))


@st.composite
def run_times(draw: st.DrawFn) -> tuple[str | None, str | None]:
    """A run's started_at and finished_at as request text, each in any offset:
    the rule is on instants, not on the text."""
    started, finished = draw(TIMES), draw(TIMES)
    if started is not None and finished is not None and finished < started:
        started, finished = finished, started  # the API refuses finished before started
    return draw(as_text(started)), draw(as_text(finished))


def as_text(value: datetime | None) -> st.SearchStrategy[str | None]:
    if value is None:
        return st.none()
    offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    return offsets.map(lambda offset: value.astimezone(offset).isoformat())


def python_order(created: list[dict[str, Any]]) -> list[str]:
    def as_run(run: dict[str, Any]) -> SimpleNamespace:
        parse = lambda v: None if v is None else datetime.fromisoformat(v)  # noqa: E731
        return SimpleNamespace(
            started_at=parse(run["started_at"]),
            finished_at=parse(run["finished_at"]),
            id=int(run["id"]),
        )

    ordered = sorted(created, key=lambda run: sort_key(as_run(run)), reverse=True)
    return [run["id"] for run in ordered]


@given(times=st.lists(run_times(), min_size=1, max_size=12), page_size=st.integers(1, 5))
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_latest_and_history_follow_the_python_ordering_rule(api, times, page_size) -> None:
    pipeline = make_pipeline(api, make_client(api))
    created = [
        make_run(api, pipeline, started_at=started, finished_at=finished)
        for started, finished in times
    ]
    expected = python_order(created)

    latest = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs/latest"))
    assert latest["id"] == expected[0]
    history = walk(api, f"/pipelines/{pipeline['id']}/runs", limit=page_size)
    assert [run["id"] for run in history] == expected
    across = walk(api, "/runs", pipeline_id=pipeline["id"], limit=page_size)
    assert [run["id"] for run in across] == expected
