"""Production mode: every /api/v1 request needs the bearer token (SE-002, SE-004)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from chm.app import create_app
from chm.core.settings import Environment, Settings

TOKEN = "prod-token-4f8a2c"


@pytest.fixture
def prod_api(db_url, engine):
    settings = Settings(env=Environment.production, database_url=db_url, api_token=TOKEN)
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
def test_requests_without_the_token_are_401_and_change_nothing(prod_api, headers):
    response = prod_api.post("/api/v1/clients", json={"name": "Acme"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert TOKEN not in response.text
    listed = prod_api.get("/api/v1/clients", headers={"Authorization": f"Bearer {TOKEN}"})
    assert listed.json()["items"] == []


def test_the_token_opens_the_api_and_healthz_stays_open(prod_api):
    ok = prod_api.post(
        "/api/v1/clients", json={"name": "Acme"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 201
    assert prod_api.get("/healthz").status_code == 200
    assert prod_api.get("/api/v1/nowhere").status_code == 401


def test_development_needs_no_token(api):
    assert api.get("/api/v1/clients").status_code == 200


def test_settings_never_print_secrets():
    settings = Settings(api_token=TOKEN, database_url="postgresql://u:dbpass@h/db")
    assert TOKEN not in repr(settings) and "dbpass" not in repr(settings)
