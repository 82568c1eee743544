"""Alert rules (FR-008..FR-010, DI-007, DI-008) and user story 3's rule scenarios."""

from __future__ import annotations

import pytest

from factories import API, make_client, make_pipeline, make_rule, ok, walk


@pytest.fixture
def acme(api):
    return make_client(api, "Acme")


@pytest.fixture
def orders(api, acme):
    return make_pipeline(api, acme, "orders")


def fields_of(response):
    return sorted(e["field"] for e in response.json()["errors"])


def test_on_failure_rule_may_leave_threshold_and_window_empty(api, acme):
    rule = make_rule(api, client_id=acme["id"])
    assert rule["rule_type"] == "on_failure"
    assert (rule["threshold"], rule["window_minutes"], rule["pipeline_id"]) == (None, None, None)
    assert rule["is_enabled"] is True and rule["effective_scope"] == "client"
    assert rule["created_at"] == rule["updated_at"]
    assert ok(api.get(f"{API}/alert-rules/{rule['id']}")) == rule


def test_failures_in_window_requires_positive_threshold_and_window(api, acme):
    base = {
        "rule_type": "failures_in_window",
        "client_id": acme["id"],
        "destination": "email:a@b.c",
    }
    missing = api.post(f"{API}/alert-rules", json=base)
    assert missing.status_code == 422
    assert fields_of(missing) == ["threshold", "window_minutes"]
    assert {e["code"] for e in missing.json()["errors"]} == {"required"}
    for threshold, window in ((0, 10), (3, 0), (-1, -5), (3, 43201)):
        response = api.post(
            f"{API}/alert-rules", json={**base, "threshold": threshold, "window_minutes": window}
        )
        assert response.status_code == 422, (threshold, window)
    rule = make_rule(api, **{**base, "threshold": 3, "window_minutes": 43200})
    assert (rule["threshold"], rule["window_minutes"]) == (3, 43200)


def test_each_rule_type_has_its_own_body_in_the_schema(api):
    """A client generated from the document sends what each rule_type needs."""
    document = api.get("/openapi.json").json()
    body = document["paths"]["/api/v1/alert-rules"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert schema["discriminator"]["propertyName"] == "rule_type"
    components = document["components"]["schemas"]
    variants = {
        tag: components[ref.rsplit("/", 1)[-1]]
        for tag, ref in schema["discriminator"]["mapping"].items()
    }
    assert set(variants) == {
        "on_failure", "failures_in_window", "consecutive_failures", "long_running",
        "duration_anomaly", "missed_schedule",
    }  # fmt: skip
    assert {"threshold", "window_minutes"} <= set(variants["failures_in_window"]["required"])
    assert {"threshold", "window_minutes"}.isdisjoint(variants["on_failure"]["required"])
    for needs_threshold in ("consecutive_failures", "long_running"):
        assert "threshold" in variants[needs_threshold]["required"]
    for no_parameters in ("duration_anomaly", "missed_schedule"):
        assert {"threshold", "window_minutes"}.isdisjoint(variants[no_parameters]["required"])
    for variant in variants.values():
        # and at least one scope, not null
        assert [option["required"] for option in variant["anyOf"]] == [
            ["client_id"],
            ["pipeline_id"],
        ]


def test_a_bad_or_missing_rule_type_is_an_error_on_rule_type(api, acme):
    base = {"client_id": acme["id"], "destination": "x"}
    for body, code in (
        (base | {"rule_type": "sometimes"}, "invalid_choice"),
        (base | {"rule_type": None}, "invalid_choice"),
        (base, "required"),
    ):
        response = api.post(f"{API}/alert-rules", json=body)
        assert response.status_code == 422, body
        assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("rule_type", code)]
    missing = api.post(f"{API}/alert-rules", json=base | {"rule_type": "failures_in_window",
                                                          "threshold": 1, "extra": 1})  # fmt: skip
    assert sorted((e["field"], e["code"], e["message"]) for e in missing.json()["errors"]) == [
        ("extra", "unknown_field", "Extra inputs are not permitted"),
        ("window_minutes", "required", "window_minutes is required for failures_in_window rules"),
    ]  # fmt: skip


def test_rule_needs_a_scope_naming_both_fields(api):
    response = api.post(f"{API}/alert-rules", json={"rule_type": "on_failure", "destination": "x"})
    assert response.status_code == 422
    assert fields_of(response) == ["client_id", "pipeline_id"]


def test_references_must_exist(api, acme):
    response = api.post(
        f"{API}/alert-rules",
        json={
            "rule_type": "on_failure",
            "destination": "x",
            "client_id": "999999",
            "pipeline_id": "999998",
        },
    )
    assert response.status_code == 422
    assert fields_of(response) == ["client_id", "pipeline_id"]
    # A text that cannot be an id is refused where the body is parsed, with the
    # same code as an id that does not exist.
    body = {"rule_type": "on_failure", "destination": "x", "client_id": acme["id"]}
    malformed = api.post(f"{API}/alert-rules", json=body | {"pipeline_id": "nope"})
    assert malformed.status_code == 422
    assert [(e["field"], e["code"]) for e in malformed.json()["errors"]] == [
        ("pipeline_id", "not_found")
    ]


def test_pipeline_scope_takes_precedence_and_must_belong_to_client(api, acme, orders):
    rule = make_rule(api, client_id=acme["id"], pipeline_id=orders["id"])
    assert rule["effective_scope"] == "pipeline"
    other = make_client(api, "Globex")
    response = api.post(
        f"{API}/alert-rules",
        json={
            "rule_type": "on_failure",
            "destination": "y",
            "client_id": other["id"],
            "pipeline_id": orders["id"],
        },
    )
    assert response.status_code == 422
    assert fields_of(response) == ["pipeline_id"]


def test_destination_must_be_non_empty(api, acme):
    for destination in ("", "   ", None):
        response = api.post(
            f"{API}/alert-rules",
            json={"rule_type": "on_failure", "client_id": acme["id"], "destination": destination},
        )
        assert response.status_code == 422 and fields_of(response) == ["destination"]


SECRET = "XXXXs3cr3tT0k3n"
# A URL (whose path or query holds a token), whitespace, control or invisible
# characters: never stored, never echoed.
REFUSED_DESTINATIONS = (
    f"slack:https://hooks.slack.com/services/T0000/B0000/{SECRET}",
    f"webhook:HTTP://ops:{SECRET}@example.com/hook",
    f"https://example.webhook.office.com/workflows/1?sig={SECRET}",
    f"pagerduty:{SECRET}:/x",
    f"slack:#data alerts{SECRET}",
    f" slack:#data-alerts{SECRET}",
    f"email:ops@example.com\n{SECRET}",
    f"slack:#ops\x1b[31m{SECRET}",
    f"slack:#ops\u200b{SECRET}",
)


def test_a_destination_is_never_a_url_nor_holds_whitespace_or_control_characters(api, acme):
    body = {"rule_type": "on_failure", "client_id": acme["id"]}
    rule = make_rule(api, **body, destination="slack:#data-alerts")
    for destination in REFUSED_DESTINATIONS:
        for response in (
            api.post(f"{API}/alert-rules", json={**body, "destination": destination}),
            api.patch(f"{API}/alert-rules/{rule['id']}", json={"destination": destination}),
        ):
            assert response.status_code == 422, destination
            assert fields_of(response) == ["destination"]
            assert SECRET not in response.text
    assert [r["destination"] for r in walk(api, "/alert-rules")] == ["slack:#data-alerts"]


def test_a_destination_is_otherwise_free_text_as_the_contract_says(api, acme):
    # An unknown kind or name is stored: its deliveries are undeliverable, with the reason.
    for destination in (
        "slack:#data-alerts",
        "email:oncall+data@example.com",
        "webhook:ops-webhook",
        "teams:Data.Team_1",
        "carrier-pigeon:loft",
        "x",
        "pagerduty:team:db",
    ):
        rule = make_rule(api, client_id=acme["id"], destination=destination)
        assert rule["destination"] == destination
        patched = api.patch(f"{API}/alert-rules/{rule['id']}", json={"destination": destination})
        assert ok(patched)["destination"] == destination


def test_duplicate_enabled_rules_are_rejected_on_create(api, acme, orders):
    make_rule(api, client_id=acme["id"])
    assert (
        api.post(
            f"{API}/alert-rules",
            json={
                "rule_type": "on_failure",
                "client_id": acme["id"],
                "destination": "slack:#data-alerts",
            },
        ).status_code
        == 409
    )
    # a different destination, type or scope is fine
    make_rule(api, client_id=acme["id"], destination="email:x@y.z")
    make_rule(
        api, client_id=acme["id"], rule_type="failures_in_window", threshold=2, window_minutes=60
    )
    make_rule(api, pipeline_id=orders["id"])
    # same effective (pipeline) scope, whether or not the client is also named
    response = api.post(
        f"{API}/alert-rules",
        json={
            "rule_type": "on_failure",
            "client_id": acme["id"],
            "pipeline_id": orders["id"],
            "destination": "slack:#data-alerts",
        },
    )
    assert response.status_code == 409
    # a disabled duplicate may exist
    make_rule(api, client_id=acme["id"], is_enabled=False)


def test_duplicate_rejected_on_update_and_enable(api, acme, orders):
    make_rule(api, client_id=acme["id"])
    other = make_rule(api, client_id=acme["id"], destination="email:x@y.z")
    assert (
        api.patch(
            f"{API}/alert-rules/{other['id']}", json={"destination": "slack:#data-alerts"}
        ).status_code
        == 409
    )
    disabled = make_rule(api, client_id=acme["id"], is_enabled=False)
    assert api.post(f"{API}/alert-rules/{disabled['id']}/enable").status_code == 409
    assert (
        api.patch(f"{API}/alert-rules/{disabled['id']}", json={"is_enabled": True}).status_code
        == 409
    )
    assert ok(api.get(f"{API}/alert-rules/{disabled['id']}"))["is_enabled"] is False


def test_enable_disable_and_updated_at(api, acme):
    rule = make_rule(api, client_id=acme["id"])
    off = ok(api.post(f"{API}/alert-rules/{rule['id']}/disable"))
    assert off["is_enabled"] is False and off["updated_at"] > rule["updated_at"]
    again = ok(api.post(f"{API}/alert-rules/{rule['id']}/disable"))
    assert again["updated_at"] == off["updated_at"]
    on = ok(api.post(f"{API}/alert-rules/{rule['id']}/enable"))
    assert on["is_enabled"] is True


def test_patch_is_validated_as_a_whole(api, acme, orders):
    rule = make_rule(api, client_id=acme["id"])
    response = api.patch(
        f"{API}/alert-rules/{rule['id']}", json={"rule_type": "failures_in_window"}
    )
    assert response.status_code == 422 and fields_of(response) == ["threshold", "window_minutes"]
    changed = ok(
        api.patch(
            f"{API}/alert-rules/{rule['id']}",
            json={"rule_type": "failures_in_window", "threshold": 5, "window_minutes": 30},
        )
    )
    assert changed["rule_type"] == "failures_in_window"
    response = api.patch(f"{API}/alert-rules/{rule['id']}", json={"client_id": None})
    assert response.status_code == 422 and fields_of(response) == ["client_id", "pipeline_id"]
    moved = ok(
        api.patch(
            f"{API}/alert-rules/{rule['id']}", json={"client_id": None, "pipeline_id": orders["id"]}
        )
    )
    assert moved["effective_scope"] == "pipeline" and moved["client_id"] is None
    assert api.patch(f"{API}/alert-rules/{rule['id']}", json={"threshold": None}).status_code == 422
    for body in ({"rule_type": None}, {"destination": None}, {"is_enabled": None}, {"id": "1"}):
        assert api.patch(f"{API}/alert-rules/{rule['id']}", json=body).status_code == 422


def test_list_filters(api, acme, orders):
    a = make_rule(api, client_id=acme["id"])
    b = make_rule(api, client_id=acme["id"], pipeline_id=orders["id"], is_enabled=False)
    c = make_rule(
        api, pipeline_id=orders["id"], rule_type="failures_in_window", threshold=1, window_minutes=5
    )
    assert [r["id"] for r in walk(api, "/alert-rules", limit=2)] == [a["id"], b["id"], c["id"]]
    assert [r["id"] for r in walk(api, "/alert-rules", client_id=acme["id"])] == [a["id"], b["id"]]
    assert [r["id"] for r in walk(api, "/alert-rules", pipeline_id=orders["id"])] == [
        b["id"],
        c["id"],
    ]
    assert [r["id"] for r in walk(api, "/alert-rules", rule_type="failures_in_window")] == [c["id"]]
    assert [r["id"] for r in walk(api, "/alert-rules", is_enabled="false")] == [b["id"]]
    assert api.get(f"{API}/alert-rules", params={"rule_type": "sometimes"}).status_code == 422


def test_delete_is_hard_and_ids_are_not_reused(api, acme):
    rule = make_rule(api, client_id=acme["id"])
    response = api.delete(f"{API}/alert-rules/{rule['id']}")
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"{API}/alert-rules/{rule['id']}").status_code == 404
    assert api.delete(f"{API}/alert-rules/{rule['id']}").status_code == 404
    assert make_rule(api, client_id=acme["id"])["id"] != rule["id"]
