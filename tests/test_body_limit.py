"""Request bodies past CHM_MAX_BODY_BYTES: a 413 problem+json, refused before
the body is read whole, and nothing stored (issue 10 §7)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chm.app import create_app
from chm.core.body_limit import BodyLimitMiddleware
from chm.core.settings import Settings
from factories import API, make_client, make_pipeline, ok

LIMIT = 4096


@pytest.fixture
def small_api(db_url: str, engine: Engine) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, max_body_bytes=LIMIT, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        yield client


def assert_payload_too_large(response: Any) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://chm.dev/problems/payload-too-large"
    assert problem["title"] == "Payload too large"
    assert problem["status"] == 413
    assert f"larger than {LIMIT} bytes" in problem["detail"]


def run_body(size: int) -> bytes:
    """A manual run's JSON body of exactly ``size`` bytes."""
    frame = orjson.dumps({"status": "failed", "source_payload": {"blob": ""}})
    return orjson.dumps({"status": "failed", "source_payload": {"blob": "x" * (size - len(frame))}})


def test_the_default_limit_is_5_mib() -> None:
    assert Settings(_env_file=None).max_body_bytes == 5 * 1024 * 1024  # type: ignore[call-arg]


def test_a_body_past_the_limit_is_a_413_problem_and_stores_nothing(small_api) -> None:
    pipeline = make_pipeline(small_api, make_client(small_api))
    path = f"{API}/pipelines/{pipeline['id']}/runs"
    headers = {"content-type": "application/json"}
    assert_payload_too_large(small_api.post(path, content=run_body(LIMIT + 1), headers=headers))
    assert ok(small_api.get(path))["items"] == []
    ok(small_api.post(path, content=run_body(LIMIT), headers=headers), 201)
    assert len(ok(small_api.get(path))["items"]) == 1


def test_every_method_and_path_is_bounded(small_api) -> None:
    big = b"{" + b" " * LIMIT + b"}"
    headers = {"content-type": "application/json"}
    client = make_client(small_api)
    assert_payload_too_large(small_api.patch(f"{API}/clients/{client['id']}", content=big,
                                             headers=headers))  # fmt: skip
    assert_payload_too_large(small_api.post(f"{API}/clients", content=big, headers=headers))
    assert_payload_too_large(small_api.post(f"{API}/lineage", content=big, headers=headers))
    assert ok(small_api.get(f"{API}/clients/{client['id']}"))["name"] == client["name"]


def test_the_413_is_documented(api) -> None:
    spec = api.get("/openapi.json").json()
    answer = spec["paths"]["/api/v1/pipelines/{pipeline_id}/runs"]["post"]["responses"]["413"]
    assert "application/problem+json" in answer["content"]


# --- straight through ASGI: what is read of the body -------------------------------------


class Recorder:
    """An ASGI ``receive`` handing out ``chunks`` (a chunked body), counting reads."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.reads = 0

    async def __call__(self) -> dict[str, Any]:
        self.reads += 1
        if self.reads > len(self.chunks):
            return {"type": "http.disconnect"}
        more = self.reads < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.reads - 1], "more_body": more}


def call(app: Any, receive: Recorder, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/clients",
        "raw_path": f"{API}/clients".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return sent


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(body)


def test_a_declared_length_past_the_limit_is_refused_before_any_byte_is_read() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the application must not be called")

    receive = Recorder([b"x" * (LIMIT + 1)])
    sent = call(BodyLimitMiddleware(app, max_bytes=LIMIT), receive,
                [(b"content-length", str(LIMIT + 1).encode())])  # fmt: skip
    status, problem = answer(sent)
    assert (status, problem["type"]) == (413, "https://chm.dev/problems/payload-too-large")
    assert receive.reads == 0


def test_a_chunked_body_is_counted_while_read_and_stops_at_the_limit(settings, engine) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": LIMIT}), engine)
    chunks = [b'{"name": "' + b"n" * 1000] + [b"n" * 1000] * 20 + [b'"}']
    receive = Recorder(chunks)
    status, problem = answer(call(app, receive, []))
    assert (status, problem["status"]) == (413, 413)
    assert (
        problem["detail"] == f"The request body is larger than {LIMIT} bytes (CHM_MAX_BODY_BYTES)"
    )
    # The fifth chunk passed 4096 bytes: nothing after it was read.
    assert receive.reads == 5
    with TestClient(app) as client:
        assert ok(client.get(f"{API}/clients"))["items"] == []


def test_a_chunked_body_within_the_limit_is_read_whole(settings, engine) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": LIMIT}), engine)
    receive = Recorder([b'{"name": ', b'"Acme"', b"}"])
    status, created = answer(call(app, receive, []))
    assert (status, created["name"]) == (201, "Acme")
