"""Ingestion's store writes and reads a page's runs as the driver's own values
(issue 17): what it writes reads back as SQLAlchemy's column types would have
written it, a snapshot equal to the stored run is unchanged whoever stored it,
and one that differs is folded by the rule. Both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from chm.core.db import make_session_factory
from chm.ingestion.rule import DATA_FIELDS, Row
from chm.ingestion.store import RUNS, run_store
from chm.ingestion.stored_values import (
    READ_FIELDS,
    json_text,
    sqlite_decode,
    sqlite_identical,
    sqlite_time,
    sqlite_values,
)
from chm.models import Run
from factories import make_client, make_pipeline

T0 = datetime(2026, 3, 1, 2, 0, 0, 123456, tzinfo=UTC)
NOW = datetime(2026, 3, 2, tzinfo=UTC)


def snapshot(key: str, **values: Any) -> Row:
    """A run as ``snapshot_row`` builds it."""
    started, finished = T0, T0 + timedelta(seconds=90)
    return {
        "external_run_id": key,
        "status": "success",
        "source_status": "succeeded",
        "started_at": started,
        "finished_at": finished,
        "duration_seconds": 90.0,
        "duration_from_source": False,
        "metrics": {"rows": 3, "bytes": 10},
        "error_message": None,
        "source_payload": {"run_id": key, "state": "succeeded", "tags": ["é", 1.5]},
        "source_updated_at": None,
        "source_attempt": None,
    } | values


def pipeline_id(api: Any) -> int:
    return int(make_pipeline(api, make_client(api), platform="generic")["id"])


def upsert(
    engine: Engine,
    pipeline: int,
    page: list[Row],
    now: datetime = NOW,
    *,
    expect_stored: bool = False,
) -> tuple[int, ...]:
    with make_session_factory(engine, write=True).begin() as session:
        counts = run_store(engine).upsert_page(
            session, pipeline, page, now, expect_stored=expect_stored
        )
    return (counts.created, counts.updated, counts.unchanged, counts.skipped)


def stored_rows(engine: Engine, pipeline: int) -> dict[str, dict[str, Any]]:
    """The stored runs as SQLAlchemy's column types read them."""
    columns = [RUNS.c[name] for name in (*READ_FIELDS, "ingested_at", "updated_at", "id")]
    query = sa.select(*columns).where(RUNS.c.pipeline_id == pipeline)
    with engine.connect() as connection:
        return {row["external_run_id"]: dict(row) for row in connection.execute(query).mappings()}


def raw_columns(engine: Engine, pipeline: int) -> dict[str, tuple[Any, ...]]:
    """The stored runs' columns as the database holds them (no type processing)."""
    names = ", ".join((*READ_FIELDS, "ingested_at", "created_at", "updated_at"))
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"SELECT {names} FROM runs WHERE pipeline_id = {pipeline}"
        )
        return {row[0]: tuple(row[1:]) for row in rows}


def test_what_the_store_writes_is_what_the_column_types_write(api, engine) -> None:
    # The same runs written by SQLAlchemy's typed insert and by the store hold
    # the same values, column by column, as the database keeps them.
    typed, ours = pipeline_id(api), pipeline_id(api)
    page = [
        snapshot("a"),
        snapshot("b", started_at=T0.astimezone(timezone(timedelta(hours=-5))), finished_at=None,
                 duration_seconds=None, status="running", source_payload=None),
        snapshot("c", duration_seconds=12.5, duration_from_source=True, source_attempt=3,
                 source_updated_at=T0, error_message="boom", metrics={}),
    ]  # fmt: skip
    bookkeeping = {"ingested_at": NOW, "created_at": NOW, "updated_at": NOW}
    with make_session_factory(engine, write=True).begin() as session:
        session.execute(
            sa.insert(RUNS), [row | bookkeeping | {"pipeline_id": typed} for row in page]
        )
        written = run_store(engine).write(
            session, [row | bookkeeping | {"pipeline_id": ours} for row in page]
        )
    assert written == {"a", "b", "c"}
    expected, found = raw_columns(engine, typed), raw_columns(engine, ours)
    for key in ("a", "b", "c"):
        for name, want, got in zip(READ_FIELDS[1:], expected[key], found[key], strict=False):
            if name in ("metrics", "source_payload") and isinstance(want, str):
                # SQLite's JSON text: SQLAlchemy writes json.dumps' spacing, the
                # store compact text with sorted keys; the same document.
                assert json.loads(got) == json.loads(want), (key, name)
            else:
                assert got == want, (key, name)
        assert found[key][len(DATA_FIELDS) :] == expected[key][len(DATA_FIELDS) :]


def test_a_replay_of_runs_another_path_stored_is_unchanged_and_writes_nothing(api, engine) -> None:
    # Stored through the ORM (SQLite: JSON text as json.dumps writes it, keys
    # in the source's order): equal values, other text; the rule decides.
    pipeline = pipeline_id(api)
    page = [snapshot("a", metrics={"z": 1, "a": [1, {"y": None, "b": "é"}]}), snapshot("b")]
    with make_session_factory(engine, write=True).begin() as session:
        for row in page:
            session.add(Run(pipeline_id=pipeline, ingested_at=T0, **row))
    before = stored_rows(engine, pipeline)
    assert upsert(engine, pipeline, page) == (0, 0, 2, 0)
    assert stored_rows(engine, pipeline) == before


def test_a_replay_of_its_own_page_is_unchanged_and_a_changed_run_is_updated(api, engine) -> None:
    pipeline = pipeline_id(api)
    page = [snapshot(f"r{i}") for i in range(5)] + [snapshot("open", status="running",
            finished_at=None, duration_seconds=None)]  # fmt: skip
    assert upsert(engine, pipeline, page) == (6, 0, 0, 0)
    before = stored_rows(engine, pipeline)
    assert upsert(engine, pipeline, page, NOW + timedelta(hours=1)) == (0, 0, 6, 0)
    assert stored_rows(engine, pipeline) == before
    # A run whose values differ is written, folded by the rule; an identical
    # first snapshot of a key followed by another counts once unchanged and
    # once for the change (the running run ends; r2 fails).
    later = NOW + timedelta(hours=2)
    page2 = [
        snapshot("r0"),
        snapshot("r1", metrics={"rows": 4, "bytes": 10}),
        snapshot("r2"),
        snapshot("r3"),
        page[5],
        snapshot("open"),
        snapshot("r2", status="failed"),
    ]
    assert upsert(engine, pipeline, page2, later) == (0, 3, 4, 0)
    after = stored_rows(engine, pipeline)
    assert after["open"]["status"] == "success"
    assert after["open"]["updated_at"] == later
    assert after["r1"]["metrics"] == {"rows": 4, "bytes": 10}
    assert after["r2"]["status"] == "failed"
    assert after["r0"] == before["r0"]
    assert after["r4"] == before["r4"]


def test_the_hint_that_runs_are_stored_changes_no_outcome(api, engine) -> None:
    # The store may look for a page's runs otherwise when told most are stored
    # (PostgreSQL then compares at once); counts and stored runs are the same.
    pages = [
        [snapshot("a"), snapshot("b")],
        [snapshot("a"), snapshot("b", status="failed"), snapshot("c")],
        [snapshot("c", status="running", finished_at=None, duration_seconds=None), snapshot("d")],
    ]
    hinted, plain = pipeline_id(api), pipeline_id(api)
    for page in pages:
        assert upsert(engine, hinted, page, expect_stored=True) == upsert(engine, plain, page)
    strip = ("id",)
    assert {
        k: {n: v for n, v in r.items() if n not in strip}
        for k, r in stored_rows(engine, hinted).items()
    } == {
        k: {n: v for n, v in r.items() if n not in strip}
        for k, r in stored_rows(engine, plain).items()
    }


def test_pages_larger_than_one_statement_are_read_and_written_whole(api, engine) -> None:
    pipeline = pipeline_id(api)
    page = [snapshot(f"k{i:05d}") for i in range(2_300)]
    assert upsert(engine, pipeline, page) == (2_300, 0, 0, 0)
    assert upsert(engine, pipeline, page) == (0, 0, 2_300, 0)
    changed = [
        *page[:1_500],
        *(snapshot(r["external_run_id"], status="failed") for r in page[1_500:]),
    ]
    assert upsert(engine, pipeline, changed) == (0, 800, 1_500, 0)


def test_documents_are_stored_with_their_keys_sorted(api, engine, backend) -> None:
    pipeline = pipeline_id(api)
    upsert(
        engine,
        pipeline,
        [snapshot("a", metrics={"b": 1, "a": {"d": 2, "c": 3}}, source_payload=None)],
    )
    values = dict(zip(DATA_FIELDS, raw_columns(engine, pipeline)["a"], strict=False))
    metrics, payload = values["metrics"], values["source_payload"]
    if backend == "sqlite":
        assert metrics == '{"a":{"c":3,"d":2},"b":1}'
        assert payload == "null"  # as SQLAlchemy's JSON type writes None
    else:
        assert payload is None


# --- the values as SQLite holds them, without a database --------------------------------

times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)  # fmt: skip


@st.composite
def any_snapshot(draw: st.DrawFn) -> Row:
    return {
        "external_run_id": draw(st.text(min_size=1, max_size=10)),
        "status": draw(st.sampled_from(["success", "failed", "running"])),
        "source_status": draw(st.none() | st.text(max_size=10)),
        "started_at": draw(st.none() | times),
        "finished_at": draw(st.none() | times),
        "duration_seconds": draw(st.none() | st.floats(0, 1e9)),
        "duration_from_source": draw(st.booleans()),
        "metrics": draw(st.dictionaries(st.text(max_size=5), documents, max_size=3)),
        "error_message": draw(st.none() | st.text(max_size=20)),
        "source_payload": draw(st.none() | documents),
        "source_updated_at": draw(st.none() | times),
        "source_attempt": draw(st.none() | st.integers(0, 2**62)),
    }


def as_sqlite_holds_it(row: Row) -> tuple[Any, ...]:
    return sqlite_values(row)


@given(row=any_snapshot())
@settings(max_examples=400, deadline=None)
def test_a_row_as_sqlite_holds_it_reads_back_as_the_same_values(row) -> None:
    stored = as_sqlite_holds_it(row)
    decoded = sqlite_decode(stored)
    assert decoded == row
    assert sqlite_identical(stored, row)


@given(row=any_snapshot(), other=any_snapshot(), field=st.sampled_from(DATA_FIELDS))
@settings(max_examples=400, deadline=None)
def test_identical_only_ever_says_so_of_equal_values(row, other, field) -> None:
    stored = as_sqlite_holds_it(row)
    changed = row | {field: other[field]}
    assert not sqlite_identical(stored, changed) or sqlite_decode(stored) == changed
    if changed[field] != row[field]:
        assert not sqlite_identical(stored, changed)


def test_sqlite_times_are_sqlalchemy_s_text_of_the_utc_wall_time() -> None:
    process = (
        sa.DateTime()
        .dialect_impl(sa.create_engine("sqlite://").dialect)
        .bind_processor(sa.create_engine("sqlite://").dialect)
    )
    assert process is not None
    for moment in (T0, T0.replace(microsecond=0), T0.astimezone(timezone(timedelta(hours=-3)))):
        assert sqlite_time(moment) == process(moment.astimezone(UTC).replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive"):
        sqlite_time(datetime(2026, 1, 1))


def test_a_document_stored_as_other_text_is_left_to_the_rule() -> None:
    row = snapshot("a")
    stored = list(as_sqlite_holds_it(row))
    stored[7] = '{"rows": 3, "bytes": 10}'  # json.dumps' text of the same document
    assert not sqlite_identical(tuple(stored), row)
    assert sqlite_decode(tuple(stored)) == row
    assert json_text({"b": 1, "a": 10**30}) == '{"a":1000000000000000000000000000000,"b":1}'
