"""The sources file is read once per process and again when it changes
(``chm.ingestion.sources_cache``), not on every request."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, toml_text

from chm.app import create_app
from chm.core.settings import Environment, Settings
from chm.ingestion import config, sources_cache
from chm.ingestion.config import ConfigError, load_sources
from chm.ingestion.sources_cache import SourcesCache
from factories import API, make_client, make_pipeline, ok

DEV = Environment.development
# A time well before any test runs: a file last modified then is settled.
LONG_AGO_NS = 1_600_000_000 * 10**9


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def counting(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return function(*args, **kwargs)

        return counted


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every load (read, parse, validate) of a sources file."""
    calls = Calls()
    monkeypatch.setattr(config, "load_sources", calls.counting(config.load_sources))
    return calls


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files stay fresh (not settled) for the whole test, however slow the machine."""
    monkeypatch.setattr(sources_cache, "_SETTLED_NS", 10**18)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every read of the file to compare its content."""
    calls = Calls()
    monkeypatch.setattr(sources_cache, "_digest", calls.counting(sources_cache._digest))
    return calls


def entry(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "platform": "generic", "environment": "prod",
            "base_url": "http://127.0.0.1:9", **fields}  # fmt: skip


def write(path: Path, *entries: dict[str, Any], mtime_ns: int | None = None) -> Path:
    path.write_text(toml_text(*entries))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def names(cache: SourcesCache, path: Path) -> list[str]:
    return [s.name for s in cache.load(path, DEV).all]


def test_an_unchanged_settled_file_is_loaded_once_and_then_only_looked_at(
    tmp_path, loads, reads
) -> None:
    path = write(tmp_path / "s.toml", entry("one"), mtime_ns=LONG_AGO_NS)
    cache = SourcesCache()
    assert names(cache, path) == ["one"]
    assert (loads.count, reads.count) == (1, 1)
    for _ in range(3):
        assert names(cache, path) == ["one"]
    assert (loads.count, reads.count) == (1, 1)  # a stat per use, nothing read


def test_a_file_just_written_is_compared_by_content_not_loaded_again(
    tmp_path, loads, reads, fresh
) -> None:
    path = write(tmp_path / "s.toml", entry("one"))
    cache = SourcesCache()
    assert names(cache, path) == ["one"] and names(cache, path) == ["one"]
    assert loads.count == 1
    assert reads.count == 2


def test_a_changed_file_is_loaded_on_the_next_use(tmp_path, loads) -> None:
    path = write(tmp_path / "s.toml", entry("one"), mtime_ns=LONG_AGO_NS)
    cache = SourcesCache()
    assert names(cache, path) == ["one"]
    write(path, entry("two"))
    assert names(cache, path) == ["two"]
    assert loads.count == 2


def test_an_edit_within_one_tick_of_the_files_clock_is_still_seen(
    tmp_path, loads, monkeypatch, fresh
) -> None:
    # Within one tick of the filesystem's clock an edit of the same size keeps
    # every time the file has: its identity says nothing changed.
    path = write(tmp_path / "s.toml", entry("aaa"))
    frozen = sources_cache._identity(path)
    monkeypatch.setattr(sources_cache, "_identity", lambda _path: frozen)
    cache = SourcesCache()
    assert names(cache, path) == ["aaa"]
    write(path, entry("bbb"))
    assert names(cache, path) == ["bbb"]
    assert names(cache, path) == ["bbb"] and loads.count == 2


def test_another_path_or_environment_is_loaded_for_itself(tmp_path, loads) -> None:
    first = write(tmp_path / "a.toml", entry("one"), mtime_ns=LONG_AGO_NS)
    second = write(tmp_path / "b.toml", entry("two"), mtime_ns=LONG_AGO_NS)
    cache = SourcesCache()
    assert names(cache, first) == ["one"]
    assert names(cache, second) == ["two"]
    with pytest.raises(ConfigError, match="this process runs as production"):
        cache.load(second, Environment.production)
    assert loads.count == 3


def test_an_invalid_new_file_is_reported_as_load_sources_reports_it(tmp_path, loads) -> None:
    path = write(tmp_path / "s.toml", entry("one"), mtime_ns=LONG_AGO_NS)
    cache = SourcesCache()
    assert names(cache, path) == ["one"]
    path.write_text("[[sources]\n")
    with pytest.raises(ConfigError) as expected:
        load_sources(path, DEV)
    for _ in range(2):  # on every use, until it is fixed
        with pytest.raises(ConfigError) as reported:
            cache.load(path, DEV)
        assert str(reported.value) == str(expected.value)
    path.unlink()
    with pytest.raises(ConfigError, match="the sources file does not exist"):
        cache.load(path, DEV)
    with pytest.raises(ConfigError, match="CHM_CONFIG is not set"):
        cache.load(None, DEV)
    write(path, entry("fixed"))
    assert names(cache, path) == ["fixed"]


def test_the_server_reads_the_sources_file_once_for_all_its_requests(
    db_url, engine, fake, tmp_path, loads
) -> None:
    path = write(tmp_path / "s.toml", entry("other", environment="test"), mtime_ns=LONG_AGO_NS)
    settings = Settings(database_url=db_url, config=path, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        make_pipeline(api, make_client(api), platform="generic", external_id="p")
        serve_generic(fake, "p", [[generic_run("r1")]])
        assert ok(api.post(f"{API}/ingestions"))["pipelines"] == 0
        assert ok(api.post(f"{API}/ingestions"))["pipelines"] == 0
        assert api.post(f"{API}/lineage", json={}).status_code == 401
        assert loads.count == 1

        write(path, source(fake))  # now a source for the pipeline
        assert ok(api.post(f"{API}/ingestions"))["runs_created"] == 1
        assert loads.count == 2

        path.write_text("[[sources]\n")
        refused = api.post(f"{API}/ingestions")
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("/ingestion-not-configured")
        assert refused.json()["detail"].startswith(f"{path}: not valid TOML")
