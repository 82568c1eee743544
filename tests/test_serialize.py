"""The hot read paths write runs to JSON without pydantic: their output must be
exactly what the RunOut schema says, field for field, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from chm.models import Run
from chm.runs.schemas import RunOut
from factories import API, make_client, make_pipeline, make_run, ok


def test_fast_run_json_equals_the_schema_serialization(api, engine):
    pipeline = make_pipeline(api, make_client(api))
    created = [
        make_run(
            api,
            pipeline,
            "failed",
            started_at="2026-03-01T12:00:00.123456Z",
            finished_at="2026-03-01T12:10:00Z",
            duration_seconds=1.5,
            metrics={"rows": 10, "ratio": 0.25, "label": "naïve ✓", "ok": True, "none": None},
            error_message='line 1\nline 2 "quoted"',
            source_payload={"nested": {"list": [1, 2.5, "x", None, {"deep": []}]}, "é": "ü"},
        ),
        make_run(api, pipeline, "queued"),
    ]
    with engine.connect() as conn:
        orm_rows = {str(r.id): r for r in conn.execute(sa.select(Run.__table__)).all()}
    for run in created:
        expected = RunOut.model_validate(orm_rows[run["id"]]).model_dump(mode="json")
        assert ok(api.get(f"{API}/runs/{run['id']}")) == expected
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))
    assert page["items"] == [
        RunOut.model_validate(orm_rows[r["id"]]).model_dump(mode="json")
        for r in (created[0], created[1])
    ]
    latest = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs/latest"))
    assert latest == created[0]
    # and byte for byte the same text the write paths answer
    raw = api.get(f"{API}/runs/{created[0]['id']}").json()
    assert (
        raw["started_at"] == "2026-03-01T12:00:00.123456Z"
        and raw["finished_at"] == "2026-03-01T12:10:00Z"
    )
