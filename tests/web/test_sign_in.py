"""Signing in to the pages in production (docs/web.md, "Sign-in"): the API
token given once on a form, kept in a signed HttpOnly SameSite=Strict cookie;
nothing of the data before; the cookie opens the pages and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from html_tree import parse
from pages_seed import T, World, seed, web_client
from sqlalchemy import Engine

from chm.core.settings import Environment, Settings
from chm.web.auth import COOKIE, issue_cookie

TOKEN = "prod-token-7d1e9b"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    """The app's clock, moved by the tests."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def prod_settings(db_url: str) -> Settings:
    return Settings(
        env=Environment.production, database_url=db_url, api_token=TOKEN, _env_file=None
    )  # type: ignore[call-arg]


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def prod(prod_settings: Settings, engine: Engine, clock: Clock) -> Iterator[TestClient]:
    with web_client(prod_settings, engine, clock, follow_redirects=False) as client:
        client.headers.update(BEARER)  # seeding goes through the API
        yield client
        client.headers.pop("Authorization", None)


@pytest.fixture
def world(prod: TestClient, engine: Engine, prod_settings: Settings) -> World:
    world = seed(prod, engine, prod_settings)
    prod.headers.pop("Authorization")  # the pages never look at it
    return world


def pages(world: World) -> list[str]:
    return ["/", f"/clients/{world.acme['id']}", f"/pipelines/{world.nightly['id']}", "/alerts"]


def sign_in(client: TestClient, token: str = TOKEN, next_path: str | None = None) -> SimpleCookie:
    form = {"token": token} | ({"next": next_path} if next_path else {})
    response = client.post("/sign-in", data=form)
    assert response.status_code == 303, response.text
    cookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    client.cookies.clear()  # each test sets the cookie it means to send
    return cookie


def test_every_page_sends_to_sign_in_and_shows_nothing_first(
    prod: TestClient, world: World
) -> None:
    for path in pages(world):
        for cookies in ({}, {COOKIE: ""}, {COOKIE: "garbage"}):
            prod.cookies.clear()
            prod.cookies.update(cookies)
            response = prod.get(path)
            assert response.status_code == 303
            location = response.headers["location"]
            assert location.startswith("/sign-in")
            if path != "/":
                assert location == f"/sign-in?next={path.replace('/', '%2F')}"
            for name in ("Acme", "nightly-load", "KeyError", "Maintenance"):
                assert name not in response.text


def test_the_sign_in_form_shows_no_data(prod: TestClient, world: World) -> None:
    doc = parse(prod.get("/sign-in").text)
    form = doc.by_id("sign-in")
    assert (form["method"], form["action"]) == ("post", "/sign-in")
    assert doc.find("label", **{"for": "token"}).text == "API token"
    field = doc.by_id("token")
    assert (field["name"], field["type"], field["autocomplete"]) == (
        "token",
        "password",
        "current-password",
    )
    assert doc.find_all(id="sign-out") == []
    assert "Acme" not in doc.text and "nightly-load" not in doc.text


def test_htmx_without_a_session_is_told_to_sign_in(prod: TestClient, world: World) -> None:
    response = prod.get("/", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/sign-in"
    assert response.text == ""


def test_a_refresh_after_the_session_ended_signs_in_back_to_its_page(
    prod: TestClient, world: World
) -> None:
    page = f"/pipelines/{world.nightly['id']}?cursor=abc"
    for current, back in (
        (f"http://testserver{page}", page),
        ("https://evil.example//evil.example/x", "/"),
        ("", "/"),
    ):
        headers = {"HX-Request": "true", "HX-Current-URL": current}
        response = prod.get(f"/pipelines/{world.nightly['id']}", headers=headers)
        assert response.status_code == 401
        expected = "/sign-in" if back == "/" else f"/sign-in?{urlencode({'next': back})}"
        assert response.headers["hx-redirect"] == expected


def test_a_link_followed_from_another_site_reloads_to_carry_the_cookie(
    prod: TestClient, world: World
) -> None:
    # SameSite=Strict: a navigation that starts on another site (a link in
    # Slack) comes without the cookie; the reload from this page carries it.
    response = prod.get("/alerts", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200
    assert '<meta http-equiv="refresh" content="0">' in response.text
    for name in ("Acme", "nightly-load", "KeyError", "Maintenance"):
        assert name not in response.text
    # That reload is same-origin: without a cookie it comes to the form.
    again = prod.get("/alerts", headers={"Sec-Fetch-Site": "same-origin"})
    assert again.status_code == 303 and again.headers["location"].startswith("/sign-in")


def test_sign_out_is_asked_from_this_site_only(prod: TestClient, world: World) -> None:
    prod.cookies.set(COOKIE, sign_in(prod)[COOKIE].value)
    refused = prod.post("/sign-out", headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    assert prod.get("/alerts").status_code == 200


@pytest.mark.parametrize("wrong", ["", "prod-token", TOKEN + "x", TOKEN.upper(), " " + TOKEN])
def test_a_wrong_token_is_a_401_with_the_form_and_no_cookie(
    prod: TestClient, world: World, wrong: str
) -> None:
    response = prod.post("/sign-in", data={"token": wrong})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    doc = parse(response.text)
    error = doc.by_id("sign-in-error")
    assert error["role"] == "alert" and "not the API token" in error.text
    assert doc.by_id("sign-in").find("input", id="token")
    assert TOKEN not in response.text and "Acme" not in response.text


def test_the_right_token_sets_the_cookie_and_opens_every_page(
    prod: TestClient, world: World
) -> None:
    cookie = sign_in(prod)
    morsel = cookie[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "strict"
    assert morsel["path"] == "/"
    assert morsel["max-age"] == str(12 * 3600)
    assert not morsel["secure"]  # plain http here
    assert TOKEN not in morsel.value
    prod.cookies.set(COOKIE, morsel.value)
    for path in pages(world):
        response = prod.get(path)
        assert response.status_code == 200, path
        doc = parse(response.text)
        sign_out = doc.by_id("sign-out")
        assert (sign_out["method"], sign_out["action"]) == ("post", "/sign-out")
        assert TOKEN not in response.text
    assert "nightly-load" in prod.get("/").text


def test_sign_in_over_https_sets_a_secure_cookie(
    prod_settings: Settings, engine: Engine, clock: Clock
) -> None:
    with web_client(
        prod_settings, engine, clock, base_url="https://testserver", follow_redirects=False
    ) as client:
        assert sign_in(client)[COOKIE]["secure"] is True


def test_sign_in_returns_to_the_page_asked_for_and_never_to_another_site(
    prod: TestClient, world: World
) -> None:
    asked = f"/pipelines/{world.nightly['id']}"
    doc = parse(prod.get(f"/sign-in?next={asked}").text)
    assert doc.find("input", name="next")["value"] == asked
    response = prod.post("/sign-in", data={"token": TOKEN, "next": asked})
    assert response.headers["location"] == asked
    for elsewhere in (
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "evil.example",
    ):
        response = prod.post("/sign-in", data={"token": TOKEN, "next": elsewhere})
        assert response.headers["location"] == "/"


def test_the_cookie_never_authorizes_the_api_or_the_metrics(prod: TestClient, world: World) -> None:
    prod.cookies.set(COOKIE, sign_in(prod)[COOKIE].value)
    assert prod.get("/").status_code == 200
    for path in ("/api/v1/clients", f"/api/v1/pipelines/{world.nightly['id']}/runs", "/metrics"):
        response = prod.get(path)
        assert response.status_code == 401, path
        assert "Acme" not in response.text
    created = prod.post("/api/v1/clients", json={"name": "Sneaky"})
    assert created.status_code == 401
    assert prod.get("/api/v1/clients", headers=BEARER).json()["items"][-1]["name"] != "Sneaky"


def test_sign_out_clears_the_cookie(prod: TestClient, world: World) -> None:
    prod.cookies.set(COOKIE, sign_in(prod)[COOKIE].value)
    response = prod.post("/sign-out")
    assert response.status_code == 303 and response.headers["location"] == "/sign-in"
    cleared = SimpleCookie()
    cleared.load(response.headers["set-cookie"])
    assert cleared[COOKIE].value == "" and cleared[COOKIE]["max-age"] == "0"
    assert cleared[COOKIE]["httponly"] is True and cleared[COOKIE]["samesite"] == "strict"
    assert cleared[COOKIE]["path"] == "/"


def test_a_tampered_cookie_is_refused(prod: TestClient, world: World) -> None:
    value = sign_in(prod)[COOKIE].value
    payload, stamp, signature = value.rsplit(".", 2)
    # The first character: the last one's low bits may be padding.
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    for forged in (
        f"{payload}.{stamp}.{flipped}",
        f"{payload}x.{stamp}.{signature}",
        value.replace(payload, "eyJ2IjoyfQ"),
    ):
        prod.cookies.set(COOKIE, forged)
        assert prod.get("/").status_code == 303


def test_a_cookie_signed_with_another_token_is_refused(
    prod: TestClient, world: World, clock: Clock
) -> None:
    prod.cookies.set(COOKIE, issue_cookie("another-token", clock))
    assert prod.get("/").status_code == 303
    prod.cookies.set(COOKIE, issue_cookie(TOKEN, clock))
    assert prod.get("/").status_code == 200


def test_the_cookie_expires_after_twelve_hours(
    prod: TestClient, world: World, clock: Clock
) -> None:
    prod.cookies.set(COOKIE, sign_in(prod)[COOKIE].value)
    clock.now = T + timedelta(hours=12)
    assert prod.get("/").status_code == 200
    clock.now = T + timedelta(hours=12, seconds=1)
    assert prod.get("/").status_code == 303
    assert prod.get("/", headers={"HX-Request": "true"}).status_code == 401


def test_a_cookie_from_the_future_is_refused(prod: TestClient, world: World, clock: Clock) -> None:
    prod.cookies.set(COOKIE, issue_cookie(TOKEN, lambda: T + timedelta(minutes=5)))
    assert prod.get("/").status_code == 303


def test_static_files_need_no_sign_in(prod: TestClient) -> None:
    assert prod.get("/static/chm.css").status_code == 200
    assert prod.get("/static/htmx.min.js").status_code == 200


def test_development_has_no_sign_in(settings: Settings, engine: Engine) -> None:
    with web_client(settings, engine, follow_redirects=False) as client:
        assert client.get("/").status_code == 200
        assert client.get("/sign-in").headers["location"] == "/"
        assert client.post("/sign-in", data={"token": "x"}).headers["location"] == "/"
        assert 'id="sign-out"' not in client.get("/").text


def test_head_answers_as_get_does_without_a_body(prod: TestClient, world: World) -> None:
    # Uptime checks ask with HEAD: the sign-in redirect first, then the page's headers.
    for path in pages(world):
        prod.cookies.clear()
        response = prod.head(path)
        assert response.status_code == 303 and response.content == b""
        assert response.headers["location"].startswith("/sign-in")
    assert prod.head("/sign-in").status_code == 200
    prod.cookies.set(COOKIE, sign_in(prod)[COOKIE].value)
    for path in pages(world):
        response = prod.head(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.content == b""
