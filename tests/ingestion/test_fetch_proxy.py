"""A proxy named by the environment (HTTP_PROXY, NO_PROXY) carries a source's
requests, under the same deadline as a direct connection."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from ingestion_fakes import FakeServer, Reply, source, sources

from chm.ingestion.connectors.base import PageRequest
from chm.ingestion.credentials import Credentials
from chm.ingestion.fetch import SourceClient, SourceError

# A host that resolves nowhere: only a proxy can answer for it.
UNREACHABLE = "http://feed.invalid"
PATH = "/pipelines/p1/runs"
PAGE = {"runs": [], "next_cursor": None}


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    server = FakeServer()  # answers absolute-form requests as a forward proxy would
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    yield server
    server.close()


def client_for(proxy: FakeServer, **fields: object) -> SourceClient:
    entry = source(proxy, base_url=UNREACHABLE, max_retries=0, **fields)
    return SourceClient(sources(entry).all[0], Credentials.none())


def test_a_proxy_from_the_environment_carries_the_requests(proxy: FakeServer) -> None:
    proxy.routes[("GET", PATH)] = lambda _seen: Reply(200, PAGE)
    client = client_for(proxy)
    try:
        answer = client.fetch(PageRequest("GET", UNREACHABLE + PATH), "test")
    finally:
        client.close()
    assert answer.body == PAGE
    [seen] = proxy.hits(PATH)
    assert seen.headers["host"] == "feed.invalid"


def test_a_no_proxy_host_is_reached_directly(
    proxy: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = FakeServer()
    direct.routes[("GET", PATH)] = lambda _seen: Reply(200, PAGE)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = SourceClient(sources(source(direct)).all[0], Credentials.none())
    try:
        assert client.fetch(PageRequest("GET", direct.url + PATH), "test").body == PAGE
    finally:
        client.close()
        direct.close()
    assert proxy.hits(PATH) == [] and len(direct.hits(PATH)) == 1


def test_an_exchange_through_the_proxy_is_bounded_by_the_deadline(proxy: FakeServer) -> None:
    timeout_s = 0.3
    # The head one byte every 50 ms: each read is quick, the whole head ~6.5 s.
    proxy.routes[("GET", PATH)] = lambda _seen: Reply(200, PAGE, head_trickle_delay=0.05)
    client = client_for(proxy, timeout_s=timeout_s)
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match=f"request timed out after {timeout_s:g}s"):
            client.fetch(PageRequest("GET", UNREACHABLE + PATH), "test")
    finally:
        client.close()
    # Generous: tells "bounded by the deadline" from "the whole trickle".
    assert time.monotonic() - started < 4.0
