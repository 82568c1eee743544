"""What `make fuzz` (schemathesis, 300 examples per operation and mode) found,
kept as plain regression tests on both databases."""

from __future__ import annotations

import pytest

from factories import API, make_client, make_pipeline, ok


@pytest.mark.parametrize("blank", ["\r", "  ", "\t\n", "\u3000"])
def test_a_blank_name_is_rejected_and_the_schema_says_so(api, blank) -> None:
    response = api.post(f"{API}/clients", json={"name": blank})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "name"
    pattern = api.get("/openapi.json").json()["components"]["schemas"]["ClientCreate"][
        "properties"
    ]["name"]["pattern"]
    assert pattern.startswith("^[^\\x00]*[^\\x00")
    assert ok(api.post(f"{API}/clients", json={"name": " Acme "}), 201)["name"] == "Acme"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/clients", {"name": "A", "is_active": 0.0}, "is_active"),
        ("/clients", {"name": "B", "is_active": "true"}, "is_active"),
        ("/ingestions", {"full": 1}, "full"),
        ("/alert-rules", {"rule_type": "failures_in_window", "destination": "x",
                          "threshold": "3", "window_minutes": 5}, "threshold"),
        ("/alert-rules", {"rule_type": "failures_in_window", "destination": "x",
                          "threshold": 3, "window_minutes": 5.5}, "window_minutes"),
        ("/alert-rules", {"rule_type": "failures_in_window", "destination": "x",
                          "threshold": True, "window_minutes": 5}, "threshold"),
    ],
)  # fmt: skip
def test_json_types_are_not_coerced(api, path, body, field) -> None:
    if path == "/alert-rules":
        body = body | {"client_id": make_client(api)["id"]}
    response = api.post(f"{API}{path}", json=body)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_a_run_duration_must_be_a_json_number(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    bad = api.post(f"{API}/pipelines/{pipeline['id']}/runs",
                   json={"status": "success", "duration_seconds": "1.5"})  # fmt: skip
    assert bad.status_code == 422
    good = api.post(f"{API}/pipelines/{pipeline['id']}/runs",
                    json={"status": "success", "duration_seconds": 2})  # fmt: skip
    assert ok(good, 201)["duration_seconds"] == 2.0


def test_timestamps_at_the_edge_of_the_calendar_never_cause_a_500(api) -> None:
    client = make_client(api)
    summary = f"{API}/clients/{client['id']}/summary"
    early = api.get(summary, params={"until": "0001-01-01T12:00:00Z"})
    assert ok(early)["since"] == "0001-01-01T00:00:00Z"
    first = api.get(summary, params={"until": "0001-01-01T00:00:00Z"})
    assert first.json()["errors"][0]["code"] == "not_after_since"
    before_utc = api.get(summary, params={"since": "0001-01-01T00:00:00+00:01"})
    assert before_utc.status_code == 422
    assert before_utc.json()["errors"][0] == {
        "field": "since", "code": "out_of_range",
        "message": "timestamp is out of range once converted to UTC",
    }  # fmt: skip
    after_utc = api.get(summary, params={"until": "9999-12-31T23:59:00-00:01"})
    assert after_utc.status_code == 422


def test_a_payload_with_nul_characters_is_stored_without_them(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    payload = {"\u0000": None, "a\u0000b": [{"c": "x\u0000y"}], "token": "s\u0000"}
    run = ok(api.post(f"{API}/pipelines/{pipeline['id']}/runs",
                      json={"status": "failed", "source_payload": payload}), 201)  # fmt: skip
    assert run["source_payload"] == {"": None, "ab": [{"c": "xy"}], "token": "[REDACTED]"}
    stored = ok(api.get(f"{API}/runs/{run['id']}"))
    assert stored["source_payload"] == run["source_payload"]


def test_an_integer_may_be_written_with_a_zero_fraction(api) -> None:
    """JSON Schema counts 5.0 as an integer: so does the API."""
    body = {"rule_type": "failures_in_window", "destination": "x", "threshold": 3.0,
            "window_minutes": 5.0, "client_id": make_client(api)["id"]}  # fmt: skip
    rule = ok(api.post(f"{API}/alert-rules", json=body), 201)
    assert (rule["threshold"], rule["window_minutes"]) == (3, 5)


def test_a_text_longer_than_its_maximum_as_sent_is_rejected_even_if_trimming_shortens_it(
    api,
) -> None:
    too_long = api.post(f"{API}/clients", json={"name": "\t" + "x" * 200})
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["code"] == "too_long"
    longest = ok(api.post(f"{API}/clients", json={"name": " " + "y" * 198 + " "}), 201)
    assert longest["name"] == "y" * 198
