"""Schemathesis against CHM's own OpenAPI document, on both databases: no 5xx,
every error problem+json, every response conforming to the schema, invalid
input rejected and valid input accepted (schemathesis's positive data check,
where only a business rule the schema cannot state may refuse it). Bounded
here (CHM_FUZZ_EXAMPLES per operation and mode); `make fuzz` runs it longer."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from chm.app import create_app
from chm.core.db import make_session_factory
from chm.ingestion.jobs import create_job
from chm.models import Alert
from factories import API, make_client, make_pipeline, make_rule, make_run, ok

EXAMPLES = int(os.environ.get("CHM_FUZZ_EXAMPLES", "15"))
CASES_RUN: dict[str, int] = {}
TIMESTAMPS = {"since", "until", "as_of", "started_at", "finished_at"}

# A schema-valid request may still break a rule the schema cannot express;
# those, and only those, are the 422s allowed for positive data, each on the
# field it names. A 422 for any other reason means the schema and the
# validation disagree.
BUSINESS_RULES: dict[str, set[str]] = {
    # a cursor this server did not sign
    "invalid_cursor": {"cursor"},
    # a window whose end is not after its start (the same for a run's times)
    "not_after_since": {"until"},
    "before_started_at": {"finished_at"},
    # a timestamp UTC or a report cannot hold (0001-01-01T00:00:00+01:00, a
    # report before 1970), or a chart of more than 10,000 buckets: JSON Schema
    # cannot bound a date-time
    "out_of_range": TIMESTAMPS,
    # a reference to an id that does not exist, is inactive, or is not of
    # the client also named
    "not_found": {"client_id", "pipeline_id", "rule_id"},
    "inactive": {"client_id"},
    "not_of_client": {"pipeline_id"},
    # a cron expression that does not parse, or never fires, and a time zone
    # the IANA database does not have: no pattern can say either
    "cron": {"schedule"},
    "timezone": {"schedule_timezone"},
    # the overdue report lists active inventory only
    "unsupported": {"include_inactive"},
    # a silence must end in the future, after it starts
    "not_in_future": {"ends_at"},
    "not_after_starts_at": {"ends_at"},
}
# A PATCH is validated as a whole once merged with the stored entity.
MERGED_RULES: dict[str, set[str]] = {
    "scope_required": {"client_id", "pipeline_id"},
    "required": {"threshold", "window_minutes"},
    "not_used": {"threshold", "window_minutes"},
}
# 401: the lineage intake's key (credentials are not data); 404: a path id
# that does not exist; 409: a name already taken, an enabled duplicate rule,
# an inactive pipeline; 422: the business rules above.
POSITIVE_STATUSES = ["2xx", "401", "404", "409", "422"]


def _business_rule(method: str, field: str, code: str) -> bool:
    rules = BUSINESS_RULES | (MERGED_RULES if method == "PATCH" else {})
    return field in rules.get(code, set())


def _fuzz_operation(strategy, label: str, positive: bool) -> None:
    method = label.split()[0]

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case) -> None:
        CASES_RUN[label] = CASES_RUN.get(label, 0) + 1
        response = case.call_and_validate()
        if positive and response.status_code == 422:
            broken = [
                (error["field"], error["code"])
                for error in response.json()["errors"]
                if not _business_rule(method, error["field"], error["code"])
            ]
            assert not broken, response.text
        if response.status_code >= 400:
            content_type = response.headers.get("content-type", [""])
            assert content_type[0] == "application/problem+json", response.text

    try:
        run()
    except Unsatisfiable:
        # e.g. negative data for an operation without any input to break
        assert not positive, f"{label}: no schema-valid case could be generated"


def test_api_conforms_to_its_schema(settings, engine, api, backend, tmp_path):
    CASES_RUN.clear()
    sources = tmp_path / "sources.toml"
    sources.write_text("sources = []\n")
    settings = settings.model_copy(update={"config": sources})
    client = make_client(api, "Acme")
    pipeline = make_pipeline(api, client, "orders")
    run = make_run(api, pipeline, "failed", started_at="2026-01-01T00:00:00Z")
    rule = make_rule(api, client_id=client["id"])
    with make_session_factory(engine, write=True)() as session, session.begin():
        scope = {"client_id": None, "pipeline_id": None, "full": False}
        job_id = create_job(session, scope, datetime(2026, 1, 1, tzinfo=UTC)).id
        alert = Alert(
            rule_id=int(rule["id"]),
            rule_type=rule["rule_type"],
            client_id=int(client["id"]),
            pipeline_id=int(pipeline["id"]),
            state="firing",
            fingerprint="0" * 32,
            fired_at=datetime(2026, 1, 1, tzinfo=UTC),
            summary="orders (Acme, airflow/prod) has failed (latest run)",
            run_id=int(run["id"]),
        )
        session.add(alert)
        session.flush()
        alert_id = alert.id
    # Far ahead, so that it is in the future whenever the test runs.
    silence = {"client_id": client["id"], "ends_at": "8999-01-01T00:00:00Z"}
    silence_id = ok(
        api.post(f"{API}/silences", json=silence | {"reason": "fuzz", "created_by": "fuzz"}), 201
    )["id"]
    existing = {
        "client_id": client["id"],
        "pipeline_id": pipeline["id"],
        "run_id": run["id"],
        "rule_id": rule["id"],
        "job_id": str(job_id),
        "alert_id": str(alert_id),
        "silence_id": silence_id,
    }
    config = SchemathesisConfig.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES}}}
    )
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(settings, engine), config=config
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        path_params = re.findall(r"{(\w+)}", operation.path)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.method.upper()} {operation.path} {mode.value}"
            positive = mode is GenerationMode.POSITIVE
            _fuzz_operation(operation.as_strategy(mode), label, positive)
            if path_params and mode is GenerationMode.POSITIVE:
                known = {name: existing[name] for name in path_params}
                _fuzz_operation(
                    operation.as_strategy(mode, path_parameters=known), label + " (known ids)", True
                )
    print(
        f"\nschemathesis cases on {backend}: {sum(CASES_RUN.values())} over {len(CASES_RUN)} groups"
    )
