"""Properties of ingestion, for any input hypothesis can think of (issue 5 §1).

- status normalization is total for any word on every platform's map: the
  canonical status is the map's (matched case-insensitively) or ``unknown``,
  and the source's own word is kept;
- timestamps in every supported format (epoch seconds and milliseconds, ISO
  8601 with an offset, with ``Z`` or without one, 7 fractional digits) read
  back as the same aware UTC instant;
- ingesting the same pages in any order, any number of times, ends with the
  same stored runs (both databases, bounded examples).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ingestion_fakes import source, sources

from chm.core.db import make_session_factory
from chm.core.status import TERMINAL_STATUSES, RunStatus
from chm.ingestion.connectors import Window
from chm.ingestion.connectors.adf import ADF_STATUS, AdfConnector
from chm.ingestion.connectors.databricks import (
    LIFE_CYCLE_STATE,
    RESULT_STATE,
    STATE_V2,
    TERMINATION_CODE,
    DatabricksConnector,
)
from chm.ingestion.connectors.generic import GenericConnector
from chm.ingestion.normalize import (
    GENERIC_STATUS,
    MAX_SOURCE_STATUS,
    InvalidRun,
    canonical_json,
    from_epoch_ms,
    map_status,
    parse_timestamp,
)
from chm.ingestion.rule import snapshot_row
from chm.ingestion.store import run_store
from chm.models import Run
from factories import make_client, make_pipeline


class _Stub:
    url = "http://127.0.0.1:9"


def _maps_of_the_newer_connectors() -> dict[str, Mapping[str, RunStatus]]:
    """Every status map the connector modules define (the list grows with them)."""
    found: dict[str, Mapping[str, RunStatus]] = {}
    for module_name in ("airflow", "dbt_cloud", "github_actions", "prefect", "dagster"):
        try:
            module = importlib.import_module(f"chm.ingestion.connectors.{module_name}")
        except ImportError:
            continue
        for name, value in vars(module).items():
            if (
                name.isupper()
                and isinstance(value, dict)
                and value
                and all(isinstance(v, RunStatus) for v in value.values())
            ):
                found[f"{module_name}.{name}"] = value
    return found


WORD_MAPS: dict[str, Mapping[Any, RunStatus]] = {
    "generic": GENERIC_STATUS,
    "adf": ADF_STATUS,
    "databricks.STATE_V2": STATE_V2,
    "databricks.TERMINATION_CODE": TERMINATION_CODE,
    "databricks.LIFE_CYCLE_STATE": LIFE_CYCLE_STATE,
    "databricks.RESULT_STATE": RESULT_STATE,
    **{
        name: mapping
        for name, mapping in _maps_of_the_newer_connectors().items()
        if all(isinstance(key, str) for key in mapping)
    },
}
GENERIC = sources(source(_Stub)).all[0]  # type: ignore[arg-type]
ADF = sources(source(_Stub, "adf")).all[0]  # type: ignore[arg-type]
DATABRICKS = sources(source(_Stub, "databricks")).all[0]  # type: ignore[arg-type]

any_word = st.text(max_size=300)


def cased(word: str) -> st.SearchStrategy[str]:
    """``word`` in any mix of upper and lower case, maybe padded with spaces."""
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return st.builds(
        lambda ups, left, right: (
            left
            + "".join(c.upper() if up else c.lower() for c, up in zip(word, ups, strict=True))
            + right
        ),
        flips,
        st.sampled_from(["", " ", "\t"]),
        st.sampled_from(["", " ", "\n"]),
    )


def expected_word(raw: str) -> str | None:
    """The word a source run keeps: NULs dropped, trimmed, bounded; None when blank."""
    word = raw.replace("\x00", "").strip()[:MAX_SOURCE_STATUS]
    return word or None


@pytest.mark.parametrize("name", list(WORD_MAPS))
def test_every_status_map_is_keyed_in_lower_case(name) -> None:
    """map_status lower-cases the word: an upper-case key could never match."""
    assert all(key == key.lower() for key in WORD_MAPS[name])


@pytest.mark.parametrize("name", list(WORD_MAPS))
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_any_word_maps_to_a_canonical_status(name, data) -> None:
    mapping = WORD_MAPS[name]
    word = data.draw(st.one_of(any_word, st.sampled_from(sorted(mapping)).flatmap(cased)))
    status = map_status(word, mapping)
    assert isinstance(status, RunStatus)
    assert status is mapping.get(word.lower(), RunStatus.unknown)


@given(word=st.one_of(any_word, st.sampled_from(sorted(GENERIC_STATUS)).flatmap(cased)))
@settings(max_examples=300, deadline=None)
def test_a_generic_run_of_any_status_word_keeps_the_word(word) -> None:
    connector = GenericConnector(GENERIC, "x", Window(None))  # type: ignore[arg-type]
    kept = expected_word(word)
    if kept is None:
        with pytest.raises(InvalidRun, match="missing status"):
            connector.map_run({"run_id": "r", "status": word})
        return
    run = connector.map_run({"run_id": "r", "status": word})
    assert run.source_status == kept
    assert run.status is GENERIC_STATUS.get(kept.lower(), RunStatus.unknown)


@given(word=st.one_of(any_word, st.sampled_from(sorted(ADF_STATUS)).flatmap(cased)))
@settings(max_examples=200, deadline=None)
def test_an_adf_run_of_any_status_word_keeps_the_word(word) -> None:
    connector = AdfConnector(ADF, "orders", Window(datetime(2026, 3, 1, tzinfo=UTC)))  # type: ignore[arg-type]
    kept = expected_word(word)
    assume(kept is not None)
    run = connector.map_run({"runId": "r", "status": word})
    assert run.source_status == kept
    assert run.status is ADF_STATUS.get(kept.lower(), RunStatus.unknown)


@given(
    state=st.one_of(any_word, st.sampled_from(sorted(STATE_V2)).flatmap(cased)),
    code=st.one_of(any_word, st.sampled_from(sorted(TERMINATION_CODE)).flatmap(cased)),
)
@settings(max_examples=200, deadline=None)
def test_a_databricks_run_of_any_state_and_code_keeps_its_words(state, code) -> None:
    connector = DatabricksConnector(DATABRICKS, "42", Window(None))  # type: ignore[arg-type]
    kept_state, kept_code = expected_word(state), expected_word(code)
    assume(kept_state is not None and kept_code is not None)
    running = connector.map_run({"run_id": 1, "status": {"state": state}})
    assert running.source_status == kept_state
    if kept_state.lower() != "terminated":
        assert running.status is STATE_V2.get(kept_state.lower(), RunStatus.unknown)
    ended = connector.map_run(
        {"run_id": 1, "status": {"state": "TERMINATED", "termination_details": {"code": code}}}
    )
    assert ended.source_status == f"TERMINATED/{kept_code}"
    assert ended.status is TERMINATION_CODE.get(kept_code.lower(), RunStatus.unknown)


# -- timestamps -------------------------------------------------------------------

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.just(UTC)
)


def assert_same_utc_instant(parsed: datetime | None, expected: datetime) -> None:
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == expected
    assert parsed.replace(tzinfo=None) == expected.astimezone(UTC).replace(tzinfo=None)


@given(instant=instants, offset=offsets, separator=st.sampled_from(["T", " "]))
@settings(max_examples=300, deadline=None)
def test_iso_8601_with_any_offset_reads_as_the_same_instant(instant, offset, separator) -> None:
    local = instant.astimezone(offset)
    assert_same_utc_instant(parse_timestamp(local.isoformat(separator), "t"), instant)


@given(instant=instants)
@settings(max_examples=200, deadline=None)
def test_iso_8601_with_z_or_without_offset_reads_as_utc(instant) -> None:
    naive = instant.replace(tzinfo=None).isoformat()
    assert_same_utc_instant(parse_timestamp(naive, "t"), instant)
    assert_same_utc_instant(parse_timestamp(naive + "Z", "t"), instant)
    assert_same_utc_instant(parse_timestamp(f"  {naive}+00:00 ", "t"), instant)


@given(instant=instants, seventh=st.integers(0, 9))
@settings(max_examples=200, deadline=None)
def test_seven_fractional_digits_drop_the_seventh(instant, seventh) -> None:
    text = instant.strftime("%Y-%m-%dT%H:%M:%S") + f".{instant.microsecond:06d}{seventh}Z"
    assert_same_utc_instant(parse_timestamp(text, "runStart"), instant)


@given(instant=instants)
@settings(max_examples=200, deadline=None)
def test_epoch_seconds_and_milliseconds_read_as_the_same_instant(instant) -> None:
    whole = instant.replace(microsecond=0)
    seconds = int((whole - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    millis_instant = instant.replace(microsecond=instant.microsecond // 1000 * 1000)
    millis = seconds * 1000 + instant.microsecond // 1000
    if seconds < 100_000_000_000:  # from there on (year 5138), a number reads as ms
        assert_same_utc_instant(parse_timestamp(seconds, "t"), whole)
    assert_same_utc_instant(from_epoch_ms(millis, "t"), millis_instant)
    if millis >= 100_000_000_000:  # below that, a number reads as seconds
        assert_same_utc_instant(parse_timestamp(millis, "t"), millis_instant)


@given(instant=instants, offset=offsets)
@settings(max_examples=100, deadline=None)
def test_a_parsed_timestamp_round_trips_through_its_own_text(instant, offset) -> None:
    parsed = parse_timestamp(instant.astimezone(offset).isoformat(), "t")
    assert parsed is not None
    assert parse_timestamp(parsed.isoformat().replace("+00:00", "Z"), "t") == parsed


# -- replays in any order --------------------------------------------------------

BASE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WORDS = {
    RunStatus.queued: "queued",
    RunStatus.running: "running",
    RunStatus.success: "succeeded",
    RunStatus.failed: "failed",
    RunStatus.cancelled: "cancelled",
}


@st.composite
def run_histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Snapshots of a few runs as a feed would show them over time: each run goes
    queued -> running -> an end (maybe restarted in place and ended again), with
    the feed's ``updated_at`` rising; started_at, once known, stays known."""
    snapshots = []
    for number in range(draw(st.integers(1, 5))):
        run_id = f"r{number}"
        started = BASE + timedelta(minutes=draw(st.integers(0, 600)))
        steps = [RunStatus.queued] if draw(st.booleans()) else []
        steps.append(RunStatus.running)
        ends = [RunStatus.success, RunStatus.failed, RunStatus.cancelled]
        steps.append(draw(st.sampled_from(ends)))
        if draw(st.booleans()):  # restarted in place
            steps += [RunStatus.running, draw(st.sampled_from(ends))]
        for step, status in enumerate(steps):
            terminal = status in TERMINAL_STATUSES
            snapshots.append(
                {
                    "run_id": run_id,
                    "status": WORDS[status],
                    "started_at": None if status is RunStatus.queued else started.isoformat(),
                    "finished_at": (started + timedelta(minutes=5 + step)).isoformat()
                    if terminal
                    else None,
                    "updated_at": (BASE + timedelta(days=1, minutes=step)).isoformat(),
                    "metrics": {"step": step},
                    "error": "boom" if status is RunStatus.failed else None,
                }
            )
    # Runs a feed repeats identically, with no update time at all.
    for number in range(draw(st.integers(0, 3))):
        snapshots.append({"run_id": f"fixed-{number}", "status": "succeeded"})
    return snapshots


def snapshot_rows(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    connector = GenericConnector(GENERIC, "x", Window(None))  # type: ignore[arg-type]
    return [snapshot_row(connector.map_run(raw), canonical_json(raw)) for raw in raws]


def stored(engine: sa.Engine, pipeline_id: str) -> dict[str, dict[str, Any]]:
    ignored = {"id", "pipeline_id", "created_at", "updated_at", "ingested_at"}
    runs = Run.__table__
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(runs).where(runs.c.pipeline_id == int(pipeline_id))
        ).mappings()
        return {
            row["external_run_id"]: {k: v for k, v in row.items() if k not in ignored}
            for row in rows
        }


@given(data=st.data())
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_same_pages_in_any_order_any_number_of_times_store_the_same_runs(
    api, engine, data
) -> None:
    history = data.draw(run_histories())
    # Pages: the snapshots cut anywhere, each snapshot in at least one page.
    shuffled = data.draw(st.permutations(history))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(shuffled) - 1)), max_size=4)))
    pages = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    pages = [page for page in pages if page]
    # Played in any order, each page one to three times, interleaved.
    plays = data.draw(
        st.permutations(
            [i for i, _ in enumerate(pages) for _ in range(data.draw(st.integers(1, 3)))]
        )
    )

    client = make_client(api)
    reference = make_pipeline(api, client, platform="generic", external_id="reference")
    replayed = make_pipeline(api, client, platform="generic", external_id="replayed")
    sessions = make_session_factory(engine, write=True)
    store = run_store(engine)
    now = datetime.now(UTC)

    def play(pipeline_id: str, raws: list[dict[str, Any]]) -> None:
        with sessions.begin() as session:
            store.upsert_page(session, int(pipeline_id), snapshot_rows(raws), now)

    # The reference: each snapshot once, in the order the feed produced them.
    ordered = sorted(history, key=lambda raw: (raw["run_id"], raw.get("updated_at") or ""))
    play(reference["id"], ordered)
    for index in plays:
        play(replayed["id"], pages[index])

    expected = stored(engine, reference["id"])
    assert stored(engine, replayed["id"]) == expected
    # ... and the reference is each run's newest snapshot.
    newest = {raw["run_id"]: raw for raw in ordered}
    assert {key: row["status"] for key, row in expected.items()} == {
        key: GENERIC_STATUS[raw["status"]].value for key, raw in newest.items()
    }
    assert {key: row["source_payload"] for key, row in expected.items()} == {
        key: canonical_json(raw) for key, raw in newest.items()
    }
