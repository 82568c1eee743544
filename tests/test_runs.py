"""Runs (FR-004..FR-006, FR-019, DI-004, DI-005) and user story 1."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import make_url

from chm.runs.ordering import sort_key
from factories import API, make_client, make_pipeline, make_run, ok, walk


@pytest.fixture
def pipeline(api):
    return make_pipeline(api, make_client(api, "Acme"), "orders_daily")


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- user story 1 -----------------------------------------------------------


def test_recorded_run_appears_in_history_with_status_and_timestamps(api, pipeline):
    run = make_run(
        api,
        pipeline,
        "failed",
        started_at="2026-03-01T12:00:00Z",
        finished_at="2026-03-01T12:10:30Z",
        error_message="boom",
        metrics={"rows": 10, "cost": 1.5, "label": "x", "ok": False},
    )
    history = walk(api, f"/pipelines/{pipeline['id']}/runs")
    assert history == [run]
    assert run["status"] == "failed"
    assert (run["started_at"], run["finished_at"]) == (
        "2026-03-01T12:00:00Z",
        "2026-03-01T12:10:30Z",
    )
    assert run["duration_seconds"] == 630.0
    assert run["metrics"] == {"rows": 10, "cost": 1.5, "label": "x", "ok": False}
    assert run["error_message"] == "boom"
    assert run["ingested_at"] is None and run["source_status"] is None


def test_latest_follows_the_ordering_rule(api, pipeline):
    older = make_run(api, pipeline, "success", started_at=iso(T0 - timedelta(hours=1)))
    newest = make_run(api, pipeline, "failed", started_at=iso(T0))
    make_run(api, pipeline, "queued")  # no timestamps at all: sorted last
    latest = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs/latest"))
    assert latest["id"] == newest["id"] != older["id"]


def test_history_filters_by_status_and_window(api, pipeline):
    runs = {}
    for i, status in enumerate(["success", "failed", "running", "failed", "success"]):
        runs[i] = make_run(api, pipeline, status, started_at=iso(T0 + timedelta(hours=i)))
    got = walk(
        api,
        f"/pipelines/{pipeline['id']}/runs",
        status=["failed", "running"],
        since=iso(T0 + timedelta(hours=1)),
        until=iso(T0 + timedelta(hours=3)),
    )
    # half-open window: hour 3 is excluded
    assert [r["id"] for r in got] == [runs[2]["id"], runs[1]["id"]]
    assert walk(api, f"/pipelines/{pipeline['id']}/runs", status="skipped") == []


def test_window_uses_event_time(api, pipeline):
    started = make_run(
        api, pipeline, "success", started_at=iso(T0), finished_at=iso(T0 + timedelta(days=2))
    )
    finished_only = make_run(api, pipeline, "failed", finished_at=iso(T0 + timedelta(days=1)))
    neither = make_run(api, pipeline, "queued")  # event time = created_at (now)
    assert started["event_at"] == iso(T0)
    assert finished_only["event_at"] == iso(T0 + timedelta(days=1))
    assert neither["event_at"] == neither["created_at"]
    day1 = walk(
        api,
        f"/pipelines/{pipeline['id']}/runs",
        since=iso(T0 + timedelta(hours=1)),
        until=iso(T0 + timedelta(days=3)),
    )
    assert [r["id"] for r in day1] == [finished_only["id"]]
    recent = walk(
        api,
        f"/pipelines/{pipeline['id']}/runs",
        since=iso(datetime.now(UTC) - timedelta(minutes=5)),
    )
    assert [r["id"] for r in recent] == [neither["id"]]


# --- ordering rule (FR-006) ------------------------------------------------


def test_ordering_rule_with_nulls_and_ties(api, pipeline):
    later = T0 + timedelta(hours=1)
    specs = [
        ("a", T0, T0 + timedelta(minutes=5)),
        ("b", T0, T0 + timedelta(minutes=9)),  # same start, later finish: before a
        ("c", T0, None),  # same start, no finish: after a and b
        ("d", later, None),  # latest start wins
        ("e", None, later + timedelta(hours=5)),  # no start: after every started run
        ("f", None, None),  # nothing: last of all
        ("g", None, None),  # tie on both: higher id first
        ("h", T0, T0 + timedelta(minutes=5)),  # full tie with a: higher id first
    ]
    created = {}
    for name, started, finished in specs:
        created[name] = make_run(
            api,
            pipeline,
            "success",
            external_run_id=name,
            started_at=iso(started) if started else None,
            finished_at=iso(finished) if finished else None,
        )
    order = [r["external_run_id"] for r in walk(api, f"/pipelines/{pipeline['id']}/runs", limit=3)]
    assert order == ["d", "b", "h", "a", "c", "e", "g", "f"]
    # A cursor at every run, those without a start time included (on PostgreSQL
    # their seek is the equality form on the floor: core/keyset.py).
    for limit in (1, 2):
        path = f"/pipelines/{pipeline['id']}/runs"
        assert [r["external_run_id"] for r in walk(api, path, limit=limit)] == order
    latest = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs/latest"))
    assert latest["external_run_id"] == "d"


def test_latest_is_first_of_sorted_for_random_histories(api, pipeline):
    rng = random.Random(7)
    created = []
    for i in range(60):
        started = T0 + timedelta(minutes=rng.choice([0, 1, 2, 3])) if rng.random() > 0.3 else None
        finished = (
            (started or T0) + timedelta(minutes=rng.choice([0, 5, 10]))
            if rng.random() > 0.3
            else None
        )
        run = make_run(
            api,
            pipeline,
            rng.choice(["success", "failed"]),
            external_run_id=f"r{i}",
            started_at=iso(started) if started else None,
            finished_at=iso(finished) if finished else None,
        )
        created.append(run)

    class R:
        def __init__(self, d):
            self.started_at = datetime.fromisoformat(d["started_at"]) if d["started_at"] else None
            self.finished_at = (
                datetime.fromisoformat(d["finished_at"]) if d["finished_at"] else None
            )
            self.id = int(d["id"])

    expected = [str(r.id) for r in sorted(map(R, created), key=sort_key, reverse=True)]
    assert [r["id"] for r in walk(api, f"/pipelines/{pipeline['id']}/runs", limit=7)] == expected
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs/latest"))["id"] == expected[0]


def test_latest_of_pipeline_without_runs_is_404(api, pipeline):
    response = api.get(f"{API}/pipelines/{pipeline['id']}/runs/latest")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


# --- keyset pagination --------------------------------------------------------


def test_walk_never_skips_or_repeats_while_runs_arrive(api, pipeline):
    for i in range(30):
        make_run(api, pipeline, "success", started_at=iso(T0 - timedelta(minutes=i % 10)))
    seen: list[str] = []
    cursor = None
    inserted = []
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params=params))
        seen += [r["id"] for r in page["items"]]
        # new runs land before and after the walk's position
        inserted.append(
            make_run(api, pipeline, "failed", started_at=iso(T0 + timedelta(days=1)))["id"]
        )
        inserted.append(make_run(api, pipeline, "failed")["id"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    all_ids = {r["id"] for r in walk(api, f"/pipelines/{pipeline['id']}/runs", limit=500)}
    original = all_ids - set(inserted)
    assert original <= set(seen)


def test_cursor_not_issued_by_server_is_422(api, pipeline):
    page = ok(api.get(f"{API}/clients", params={"limit": 1}))
    make_client(api)
    make_client(api)
    clients_cursor = ok(api.get(f"{API}/clients", params={"limit": 1}))["next_cursor"]
    for cursor in ("garbage", "", "AAAA", clients_cursor, clients_cursor[:-2] + "xx"):
        response = api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"cursor": cursor})
        assert response.status_code == 422, cursor
        assert response.json()["errors"][0]["field"] == "cursor"
    assert page["next_cursor"] is None


@pytest.mark.parametrize("limit", [0, 501, -1, "x"])
def test_limit_bounds(api, limit):
    response = api.get(f"{API}/runs", params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "limit"


# --- manual runs (FR-019, DI-004) ----------------------------------------------


def test_manual_run_without_identity_gets_a_unique_one(api, pipeline):
    ids = {make_run(api, pipeline, "success")["external_run_id"] for _ in range(5)}
    assert len(ids) == 5 and all(ids)


def test_duplicate_external_run_id_is_409_per_pipeline(api, pipeline):
    make_run(api, pipeline, "success", external_run_id="run-1")
    response = api.post(
        f"{API}/pipelines/{pipeline['id']}/runs",
        json={"status": "failed", "external_run_id": "run-1"},
    )
    assert response.status_code == 409
    other = make_pipeline(api, make_client(api))
    make_run(api, other, "success", external_run_id="run-1")


def test_run_validation_reports_every_field(api, pipeline):
    response = api.post(
        f"{API}/pipelines/{pipeline['id']}/runs",
        json={
            "status": "exploded",
            "started_at": "yesterday",
            "duration_seconds": -1,
            "metrics": {"rows": {"nested": 1}},
            "extra": 1,
        },
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"status", "started_at", "duration_seconds", "metrics.rows", "extra"}
    assert (
        api.post(f"{API}/pipelines/{pipeline['id']}/runs", json={}).json()["errors"][0]["field"]
        == "status"
    )


def test_finished_before_started_is_422_on_finished_at(api, pipeline):
    response = api.post(
        f"{API}/pipelines/{pipeline['id']}/runs",
        json={
            "status": "success",
            "started_at": iso(T0),
            "finished_at": iso(T0 - timedelta(seconds=1)),
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "finished_at",
            "code": "before_started_at",
            "message": "finished_at must not be before started_at",
        }
    ]


def test_timestamps_without_offset_are_utc_and_offsets_are_converted(api, pipeline):
    naive = make_run(api, pipeline, "success", started_at="2026-03-01T12:00:00")
    offset = make_run(api, pipeline, "success", started_at="2026-03-01T14:00:00+02:00")
    assert naive["started_at"] == offset["started_at"] == "2026-03-01T12:00:00Z"


def test_source_payload_is_redacted(api, pipeline):
    run = make_run(
        api,
        pipeline,
        "success",
        source_payload={
            "job": {"password": "hunter2", "url": "https://user:pw@example.com/x"},
            "headers": [{"Authorization": "Bearer abcdefgh12345"}],
            "rows": 3,
        },
    )
    payload = ok(api.get(f"{API}/runs/{run['id']}"))["source_payload"]
    assert payload == {
        "job": {"password": "[REDACTED]", "url": "https://[REDACTED]@example.com/x"},
        "headers": [{"Authorization": "[REDACTED]"}],
        "rows": 3,
    }


def test_runs_cannot_be_recorded_on_inactive_pipeline(api, pipeline):
    ok(api.delete(f"{API}/pipelines/{pipeline['id']}"))
    assert (
        api.post(f"{API}/pipelines/{pipeline['id']}/runs", json={"status": "success"}).status_code
        == 409
    )


def test_the_recorded_answer_is_the_stored_run(api, pipeline):
    """The POST's answer comes from its INSERT's RETURNING: field for field
    what a GET of the run answers, including what the database computes or
    normalizes (the event time, a whole-number duration as a float, times in
    UTC, the redacted payload and failure text)."""
    answers = [
        make_run(
            api,
            pipeline,
            "failed",
            started_at="2026-03-01T14:00:00+02:00",
            finished_at="2026-03-01T12:05:00Z",
            metrics={"rows": 3, "cost": 1.25, "ok": True, "note": "x", "gone": None},
            error_message="login failed for postgres://app:hunter2@db/x",
            source_payload={"password": "hunter2", "nested": {"list": [1, 2.5, "a"]}},
        ),
        make_run(api, pipeline, "success", duration_seconds=7),
        make_run(api, pipeline, "queued", external_run_id="ext-1"),
    ]
    for answer in answers:
        assert answer == ok(api.get(f"{API}/runs/{answer['id']}"))
    failed, timed, queued = answers
    assert failed["duration_seconds"] == 300.0 and isinstance(failed["duration_seconds"], float)
    assert timed["duration_seconds"] == 7.0 and isinstance(timed["duration_seconds"], float)
    assert "hunter2" not in str(failed)
    assert queued["event_at"] == queued["created_at"] == queued["updated_at"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("unknown", 404),
        ("inactive", 409),
        ("active", 422),  # the times are checked before the external run id
    ],
)
def test_a_refused_run_gets_the_first_error_in_order(api, pipeline, state, expected):
    """Unknown pipeline, inactive pipeline, times out of order, taken external
    run id: a request wrong in several ways is answered the first of them."""
    make_run(api, pipeline, "success", external_run_id="taken")
    pipeline_id = pipeline["id"]
    if state == "unknown":
        pipeline_id = "999999"
    elif state == "inactive":
        ok(api.delete(f"{API}/pipelines/{pipeline_id}"))
    response = api.post(
        f"{API}/pipelines/{pipeline_id}/runs",
        json={
            "status": "success",
            "external_run_id": "taken",
            "started_at": iso(T0),
            "finished_at": iso(T0 - timedelta(seconds=1)),
        },
    )
    assert response.status_code == expected, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if expected == 409:
        assert response.json()["title"] == "Pipeline is inactive"
    # Nothing was stored by any of them.
    runs = walk(api, "/runs", pipeline_id=pipeline["id"])
    assert [r["external_run_id"] for r in runs] == ["taken"]


def test_a_taken_external_run_id_is_409_and_keeps_the_stored_run(api, pipeline):
    first = make_run(api, pipeline, "running", external_run_id="run-1", metrics={"n": 1})
    response = api.post(
        f"{API}/pipelines/{pipeline['id']}/runs",
        json={"status": "failed", "external_run_id": "run-1", "metrics": {"n": 2}},
    )
    assert response.status_code == 409
    assert response.json()["title"] == "Duplicate external run id"
    assert "run-1" in response.json()["detail"]
    assert ok(api.get(f"{API}/runs/{first['id']}")) == first


# --- recording while another process writes (SQLite's one write lock) ------


@contextmanager
def _write_lock_held(db_url: str) -> Iterator[None]:
    """Another process's writer: SQLite's write lock, held until the block ends."""
    outside = sqlite3.connect(make_url(db_url).database, isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        outside.execute("ROLLBACK")
        outside.close()


@pytest.mark.sqlite_only
def test_writers_waiting_for_the_lock_leave_the_reads_their_connections(api, pipeline, db_url):
    """Runs recorded while another process holds the write lock wait for it,
    one connection of their own at a time: the reads, which SQLite's WAL never
    blocks, keep answering at once, and every run lands once the lock is free."""
    path = f"{API}/pipelines/{pipeline['id']}/runs"
    make_run(api, pipeline, "success", external_run_id="before")
    with ThreadPoolExecutor(max_workers=20) as pool:
        with _write_lock_held(db_url):
            posts = [
                pool.submit(api.post, path, json={"status": "failed", "external_run_id": f"r{i}"})
                for i in range(20)
            ]
            time.sleep(0.3)  # the writers are now waiting for the lock
            started = time.monotonic()
            latest = api.get(f"{path}/latest")
            assert latest.status_code == 200
            assert latest.json()["external_run_id"] == "before"
            assert time.monotonic() - started < 2.0
            assert not any(post.done() for post in posts)
        assert sorted(post.result().status_code for post in posts) == [201] * 20
    assert len(walk(api, f"/pipelines/{pipeline['id']}/runs")) == 21


@pytest.mark.sqlite_only
def test_a_request_refused_before_any_statement_does_not_wait_for_the_lock(api, pipeline, db_url):
    """A body or a path that is not valid is answered without the database."""
    with _write_lock_held(db_url):
        started = time.monotonic()
        bad_body = api.post(f"{API}/pipelines/{pipeline['id']}/runs", json={"status": "x"})
        bad_path = api.post(f"{API}/pipelines/not-an-id/runs", json={"status": "success"})
        assert (bad_body.status_code, bad_path.status_code) == (422, 404)
        assert time.monotonic() - started < 2.0


@pytest.mark.sqlite_only
def test_the_redaction_is_done_before_the_write_lock_is_taken(api, pipeline, db_url, monkeypatch):
    """A large payload's redaction takes time: no other writer waits for it."""
    from chm.runs import service

    lock_free: list[bool] = []
    redact = service.stored_text

    def probing(text: str) -> str:
        other = sqlite3.connect(make_url(db_url).database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            lock_free.append(True)
        except sqlite3.OperationalError:
            lock_free.append(False)
        finally:
            other.close()
        return redact(text)

    monkeypatch.setattr(service, "stored_text", probing)
    # The second body is above LARGE_BODY_BYTES: redacted in a worker thread.
    for payload in (None, {"blob": "x" * 100_000, "token": "hunter2"}):
        run = make_run(
            api, pipeline, "failed", error_message="password=hunter2", source_payload=payload
        )
        assert "hunter2" not in str(run)
    assert lock_free == [True, True]


# --- PATCH and updated_at --------------------------------------------------------


def test_patch_updates_status_and_recomputes_derived_duration(api, pipeline):
    run = make_run(api, pipeline, "running", started_at=iso(T0))
    done = ok(
        api.patch(
            f"{API}/runs/{run['id']}",
            json={"status": "success", "finished_at": iso(T0 + timedelta(minutes=2))},
        )
    )
    assert done["status"] == "success" and done["duration_seconds"] == 120.0
    assert done["updated_at"] > run["updated_at"]
    same = ok(api.patch(f"{API}/runs/{run['id']}", json={"status": "success"}))
    assert same["updated_at"] == done["updated_at"]


def test_patch_keeps_source_duration(api, pipeline):
    run = make_run(api, pipeline, "running", started_at=iso(T0), duration_seconds=42.5)
    patched = ok(
        api.patch(f"{API}/runs/{run['id']}", json={"finished_at": iso(T0 + timedelta(minutes=5))})
    )
    assert patched["duration_seconds"] == 42.5


def test_patch_validates_merged_times_and_fields(api, pipeline):
    run = make_run(api, pipeline, "running", started_at=iso(T0))
    response = api.patch(
        f"{API}/runs/{run['id']}", json={"finished_at": iso(T0 - timedelta(hours=1))}
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "finished_at"
    for body in (
        {"status": None},
        {"status": "nope"},
        {"external_run_id": "x"},
        {"pipeline_id": "1"},
    ):
        assert api.patch(f"{API}/runs/{run['id']}", json=body).status_code == 422, body
    assert ok(api.get(f"{API}/runs/{run['id']}")) == run


def test_cross_pipeline_listing_filters(api):
    acme, globex = make_client(api), make_client(api)
    pa, pb = make_pipeline(api, acme), make_pipeline(api, globex)
    ra = make_run(api, pa, "failed", started_at=iso(T0))
    rb = make_run(api, pb, "failed", started_at=iso(T0 + timedelta(minutes=1)))
    make_run(api, pb, "success", started_at=iso(T0 + timedelta(minutes=2)))
    assert [r["id"] for r in walk(api, "/runs", status="failed")] == [rb["id"], ra["id"]]
    assert [r["id"] for r in walk(api, "/runs", client_id=acme["id"])] == [ra["id"]]
    assert [r["id"] for r in walk(api, "/runs", pipeline_id=pb["id"], status="failed")] == [
        rb["id"]
    ]
    assert walk(api, "/runs", client_id=acme["id"], pipeline_id=pb["id"]) == []
    for param in ("client_id", "pipeline_id"):
        response = api.get(f"{API}/runs", params={param: "zz"})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == param


def test_unknown_run_is_404(api):
    assert api.get(f"{API}/runs/98765").status_code == 404
    assert api.patch(f"{API}/runs/98765", json={"status": "failed"}).status_code == 404


def test_extreme_timestamps_still_sort_before_missing_ones(api, pipeline):
    earliest = make_run(api, pipeline, "success", started_at="0001-01-01T00:00:00Z")
    missing = make_run(api, pipeline, "success")
    latest = make_run(api, pipeline, "success", started_at="9999-12-31T23:59:59.999999Z")
    order = [r["id"] for r in walk(api, f"/pipelines/{pipeline['id']}/runs", limit=1)]
    assert order == [latest["id"], earliest["id"], missing["id"]]


def test_timestamps_must_be_rfc3339_text(api, pipeline):
    for value in ("1.0", 1700000000, "2026-01-01", "tomorrow"):
        response = api.post(
            f"{API}/pipelines/{pipeline['id']}/runs",
            json={"status": "success", "started_at": value},
        )
        assert response.status_code == 422, value
        assert response.json()["errors"][0]["code"] == "invalid_datetime"
    assert api.get(f"{API}/runs", params={"since": "1.0"}).status_code == 422


def test_non_finite_numbers_in_a_payload_are_refused(api, pipeline):
    for raw in (
        b'{"status": "success", "source_payload": {"x": NaN}}',
        b'{"status": "success", "source_payload": {"a": [1, {"y": Infinity}]}}',
    ):
        response = api.post(
            f"{API}/pipelines/{pipeline['id']}/runs",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "source_payload"
    assert walk(api, f"/pipelines/{pipeline['id']}/runs") == []


def test_a_signed_cursor_with_values_of_the_wrong_type_is_422(api, pipeline):
    from chm.core.pagination import encode_cursor

    for path, kind, key in (
        ("/clients", "clients", [{"a": 1}, 1]),
        ("/pipelines", "pipelines", ["x", "not-an-id"]),
        (f"/pipelines/{pipeline['id']}/runs", "runs", ["2026-01-01", None, 1]),
        ("/runs", "runs", [None, None, True]),
        ("/alert-rules", "alert-rules", ["1"]),
    ):
        response = api.get(f"{API}{path}", params={"cursor": encode_cursor(kind, key)})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"][0]["field"] == "cursor"
