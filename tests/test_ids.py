"""Ids are parsed once, where they come in (chm.core.ids): the schema's pattern
says exactly which texts are ids, and each place an id comes in answers a text
that is not one of ours as it always did (path 404, filter 422 ``invalid_id``,
body reference 422 ``not_found``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from chm.app import create_app
from chm.core.ids import ID_PATTERN, MAX_ID, parse_id
from chm.core.settings import Settings
from factories import API, make_client, ok

# Texts around every edge of the pattern.
EDGES = [
    "1", "9", "10", "99", str(MAX_ID), str(MAX_ID - 1), str(MAX_ID + 1), "9" * 18, "9" * 19,
    "1" + "0" * 18, "1" + "0" * 19, "0", "00", "01", "-1", "+1", " 1", "1 ", "1\n", "", "abc",
    "\u0661", "1.0", "1e3", "9223372036854775799", "9223372036854775817",
]  # fmt: skip
NOT_IDS = [str(MAX_ID + 1), "0", "01", "-1", "abc", "9" * 19, "1" * 25]


@pytest.mark.parametrize("text", EDGES)
def test_the_pattern_and_the_parser_agree_at_the_edges(text: str) -> None:
    assert (re.fullmatch(ID_PATTERN, text) is not None) == (parse_id(text) is not None)


@given(
    st.one_of(
        st.integers(min_value=-10, max_value=10**20).map(str),
        st.from_regex(r"[0-9]{17,20}", fullmatch=True),
        st.text(max_size=22),
    )
)
def test_the_pattern_matches_exactly_the_texts_the_server_reads_as_ids(text: str) -> None:
    assert (re.fullmatch(ID_PATTERN, text) is not None) == (parse_id(text) is not None)


@pytest.fixture
def bare_api(tmp_path: Path) -> Iterator[TestClient]:
    """The app over a database it never opens: the OpenAPI document needs none."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        yield client


def _id_schemas(node: Any, name: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (name, schema) of a property or parameter named like an id."""
    if isinstance(node, dict):
        if "in" in node and "name" in node and "schema" in node:
            yield from _named(node["name"], node["schema"])
        for key, value in node.get("properties", {}).items():
            yield from _named(key, value)
        for key, value in node.items():
            if key != "properties":
                yield from _id_schemas(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _id_schemas(item, name)


def _named(name: str, schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if name == "id" or (name.endswith("_id") and name not in ("external_id", "external_run_id")):
        variants = [v for v in schema.get("anyOf", [schema]) if v.get("type") != "null"]
        for variant in variants:
            yield name, variant


def test_every_id_in_the_openapi_document_carries_the_id_pattern(bare_api) -> None:
    document = bare_api.get("/openapi.json").json()
    found = list(_id_schemas(document))
    # path, query, body and response ids: a client generated from the document
    # never sends `client_id=` or `0000` and learns it only from a 422.
    assert len(found) > 40
    for name, schema in found:
        if schema == {"type": "string"}:
            continue  # the alert rule's "one scope at least" (anyOf required)
        assert schema.get("type") == "string" and schema.get("pattern") == ID_PATTERN, (
            name,
            schema,
        )
    parameters = [
        (parameter["in"], parameter["name"])
        for path in document["paths"].values()
        for operation in path.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"].endswith("_id")
    ]
    assert {"path", "query"} <= {where for where, _ in parameters}


@pytest.mark.parametrize("text", NOT_IDS)
def test_a_path_id_not_ours_is_404_whatever_else_is_wrong(api, text: str) -> None:
    for response in (
        api.get(f"{API}/clients/{text}"),
        api.patch(f"{API}/clients/{text}", json={"name": ""}),
        api.get(f"{API}/clients/{text}/summary", params={"since": "soon"}),
        api.post(f"{API}/pipelines/{text}/runs", json={"status": "exploded"}),
        api.get(f"{API}/runs/{text}"),
        api.post(f"{API}/alert-rules/{text}/enable"),
    ):
        assert response.status_code == 404, (text, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"].endswith(f"{text!r} not found")


def test_the_largest_id_is_an_id(api) -> None:
    assert api.get(f"{API}/clients/{MAX_ID}").json()["detail"] == f"client '{MAX_ID}' not found"
    assert ok(api.get(f"{API}/runs", params={"client_id": str(MAX_ID)}))["items"] == []
    response = api.post(f"{API}/pipelines/{MAX_ID}/runs", json={"status": "success"})
    assert response.status_code == 404


@pytest.mark.parametrize("text", NOT_IDS)
def test_a_filter_id_not_ours_is_422_invalid_id(api, text: str) -> None:
    for path in ("/runs", "/pipelines", "/alert-rules", "/reports/latest-status"):
        response = api.get(f"{API}{path}", params={"client_id": text, "limit": 0})
        assert response.status_code == 422, (path, response.text)
        errors = sorted((e["field"], e["code"]) for e in response.json()["errors"])
        assert ("client_id", "invalid_id") in errors, (path, errors)


def test_a_body_reference_must_be_an_id_text(api) -> None:
    client = make_client(api)  # its id is "1": a JSON number 1 is still not an id
    body = {"name": "p", "platform": "x", "pipeline_type": "y", "environment": "z"}
    for client_id, code in (
        (str(MAX_ID + 1), "not_found"),
        ("01", "not_found"),
        (1, "string_type"),
    ):
        response = api.post(f"{API}/pipelines", json=body | {"client_id": client_id})
        assert response.status_code == 422, response.text
        assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("client_id", code)]
    assert ok(api.post(f"{API}/pipelines", json=body | {"client_id": client["id"]}), 201)
