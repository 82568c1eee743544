"""Schemathesis against CHM's own OpenAPI document, on both databases: no 5xx,
every error problem+json, every response conforming to the schema, invalid
input rejected and valid input accepted. Bounded here (CHM_FUZZ_EXAMPLES per
operation and mode); `make fuzz` runs it longer."""

from __future__ import annotations

import os
import re

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from chm.app import create_app
from factories import make_client, make_pipeline, make_rule, make_run

EXAMPLES = int(os.environ.get("CHM_FUZZ_EXAMPLES", "15"))
CASES_RUN: dict[str, int] = {}

# A schema-valid request may still break a rule the schema cannot express (a
# cursor this server did not sign, an id that does not exist, a cross-field
# rule, a date range JSON Schema cannot bound). Those, and only those, are the
# 422s allowed for positive data: a 422 for any other reason means the schema
# and the validation disagree.
BUSINESS_RULE_CODES = {
    "invalid_cursor",
    "not_found",
    "invalid_id",
    "inactive",
    "before_started_at",
    "not_after_since",
    "scope_required",
    "required",
    "not_of_client",
    "out_of_range",
}


def _fuzz_operation(strategy, label: str, positive: bool) -> None:
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
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        if positive and response.status_code == 422:
            codes = {error["code"] for error in response.json()["errors"]}
            assert codes <= BUSINESS_RULE_CODES, response.text
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
    existing = {
        "client_id": client["id"],
        "pipeline_id": pipeline["id"],
        "run_id": run["id"],
        "rule_id": rule["id"],
    }
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, engine))
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
