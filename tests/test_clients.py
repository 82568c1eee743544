"""Clients (FR-002, DI-001, FR-018)."""

from __future__ import annotations

from factories import API, make_client, make_pipeline, make_run, ok, walk


def test_create_trims_name_and_defaults_to_active(api):
    client = make_client(api, "  Acme Corp  ")
    assert client["name"] == "Acme Corp"
    assert client["is_active"] is True
    assert client["created_at"] == client["updated_at"]
    assert client["created_at"].endswith("Z")
    assert ok(api.get(f"{API}/clients/{client['id']}")) == client


def test_names_are_unique_case_insensitively(api):
    make_client(api, "Acme")
    for name in ("acme", "ACME", " Acme "):
        response = api.post(f"{API}/clients", json={"name": name})
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
    assert len(walk(api, "/clients", include_inactive=True)) == 1


def test_non_ascii_names_compare_case_insensitively(api):
    make_client(api, "Straße Logistik")
    assert api.post(f"{API}/clients", json={"name": "STRASSE LOGISTIK"}).status_code == 409
    make_client(api, "Élan")
    assert api.post(f"{API}/clients", json={"name": "élan"}).status_code == 409


def test_name_validation(api):
    for body in ({"name": ""}, {"name": "   "}, {"name": "x" * 201}, {}, {"name": 5}):
        response = api.post(f"{API}/clients", json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == "name"


def test_list_is_ordered_by_name_and_hides_inactive(api):
    for name in ("charlie", "Alpha", "bravo"):
        make_client(api, name)
    inactive = make_client(api, "delta", is_active=False)
    names = [c["name"] for c in walk(api, "/clients")]
    assert names == ["Alpha", "bravo", "charlie"]
    everything = walk(api, "/clients", include_inactive=True)
    assert [c["name"] for c in everything] == ["Alpha", "bravo", "charlie", "delta"]
    assert everything[-1]["id"] == inactive["id"]


def test_name_contains_is_case_insensitive_and_literal(api):
    for name in ("Acme", "ACME Labs", "Globex", "100% Data", "data_co"):
        make_client(api, name)
    assert [c["name"] for c in walk(api, "/clients", name_contains="acme")] == ["Acme", "ACME Labs"]
    assert [c["name"] for c in walk(api, "/clients", name_contains="%")] == ["100% Data"]
    assert [c["name"] for c in walk(api, "/clients", name_contains="_")] == ["data_co"]


def test_pagination_walks_every_client_once(api):
    created = {make_client(api, f"client {i:03d}")["id"] for i in range(23)}
    seen = [c["id"] for c in walk(api, "/clients", limit=5)]
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == created
    last_page = ok(api.get(f"{API}/clients", params={"limit": 23}))
    assert last_page["next_cursor"] is None


def test_patch_renames_and_moves_updated_at_only_on_change(api):
    client = make_client(api, "Acme")
    same = ok(api.patch(f"{API}/clients/{client['id']}", json={"name": "Acme", "is_active": True}))
    assert same["updated_at"] == client["updated_at"]
    renamed = ok(api.patch(f"{API}/clients/{client['id']}", json={"name": "Acme Inc"}))
    assert renamed["name"] == "Acme Inc"
    assert renamed["updated_at"] > client["updated_at"]
    assert renamed["created_at"] == client["created_at"]


def test_patch_to_taken_name_conflicts_but_case_change_of_own_name_is_allowed(api):
    make_client(api, "Acme")
    other = make_client(api, "Globex")
    assert api.patch(f"{API}/clients/{other['id']}", json={"name": "ACME"}).status_code == 409
    recased = ok(api.patch(f"{API}/clients/{other['id']}", json={"name": "GLOBEX"}))
    assert recased["name"] == "GLOBEX"


def test_patch_rejects_null_and_unknown_fields(api):
    client = make_client(api)
    response = api.patch(f"{API}/clients/{client['id']}", json={"name": None, "id": "7"})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"name", "id"}


def test_delete_soft_disables_and_keeps_history(api):
    client = make_client(api, "Acme")
    pipeline = make_pipeline(api, client)
    run = make_run(api, pipeline, "failed")
    disabled = ok(api.delete(f"{API}/clients/{client['id']}"))
    assert disabled["is_active"] is False
    assert disabled["updated_at"] > client["updated_at"]
    assert walk(api, "/clients") == []
    assert ok(api.get(f"{API}/clients/{client['id']}"))["is_active"] is False
    # the name stays taken, and the runs stay available (FR-018)
    assert api.post(f"{API}/clients", json={"name": "acme"}).status_code == 409
    assert [r["id"] for r in walk(api, "/runs", client_id=client["id"])] == [run["id"]]
    # a second delete is harmless and changes nothing
    again = ok(api.delete(f"{API}/clients/{client['id']}"))
    assert again["updated_at"] == disabled["updated_at"]


def test_unknown_client_is_404(api):
    for client_id in ("999999", "abc", "0", "-1", "99999999999999999999999"):
        for response in (
            api.get(f"{API}/clients/{client_id}"),
            api.patch(f"{API}/clients/{client_id}", json={"name": "x"}),
            api.delete(f"{API}/clients/{client_id}"),
            api.get(f"{API}/clients/{client_id}/summary"),
        ):
            assert response.status_code == 404, (client_id, response.text)
            assert response.json()["status"] == 404
