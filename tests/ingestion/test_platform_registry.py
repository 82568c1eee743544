"""A platform is registered once (issue 11 §1): one module declares it all.

The "toy" platform below exists in this test module only: its source model
(with a field of its own and its own way to authenticate), its connector,
its status map, its incremental mode and its read-time keys, in one
``Platform`` entry. Registered, it is read from a sources file and ingested
by CHM's engine against a fake server over a real socket, like any built-in
platform; unregistered, the sources file no longer knows it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import pytest
from ingestion_fakes import FakeServer, Reply, Seen, source, toml_text
from pydantic import StringConstraints

import chm.ingestion.connectors as connectors_package
from chm.core.status import RunStatus
from chm.core.timeutil import isoformat_z
from chm.ingestion.config import ConfigError, load_sources
from chm.ingestion.connectors import (
    Fetched,
    Page,
    PageRequest,
    Platform,
    Window,
    connector_for,
    incremental_mode,
    platforms,
    register,
    unregister,
)
from chm.ingestion.connectors.base import run_list
from chm.ingestion.credentials import Credentials
from chm.ingestion.engine import ingest
from chm.ingestion.normalize import (
    SourceRun,
    map_status,
    parse_timestamp,
    run_identity,
    status_word,
)
from chm.ingestion.sources import SourceBase
from factories import API, make_client, make_pipeline, ok

# --- The toy platform: everything CHM needs to know about it, in one place. -----------------


class ToySource(SourceBase):
    """A toy scheduler: runs of a team's jobs, behind an ``X-Toy-Key`` header."""

    platform: Literal["toy"]
    team: Annotated[str, StringConstraints(pattern=r"^[a-z]+$")]

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        token = self.token(environ)
        if token is None:
            return Credentials.none()
        return Credentials.header("X-Toy-Key", token.get_secret_value())


TOY_STATE = {"done": RunStatus.success, "broken": RunStatus.failed, "busy": RunStatus.running}


class ToyConnector:
    def __init__(self, source: ToySource, external_id: str, window: Window) -> None:
        self.url = f"{source.base}/teams/{source.team}/jobs/{quote(external_id, safe='')}/runs"
        self.since = window.since

    def page_request(self, cursor: str | None) -> PageRequest:
        params = {"page": cursor or "1"}
        if self.since is not None:
            params["updated_after"] = isoformat_z(self.since)
        return PageRequest("GET", self.url, params=params)

    def read_page(self, fetched: Fetched) -> Page:
        runs = run_list(fetched.body, "items", required=True)
        following = str(int(fetched.cursor or "1") + 1) if fetched.body.get("more") else None
        return Page(runs, following)

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        word = status_word(raw.get("state"), "state")
        return SourceRun(
            external_run_id=run_identity(raw.get("key"), "key"),
            status=map_status(word, TOY_STATE),
            source_status=word,
            started_at=parse_timestamp(raw.get("began"), "began"),
            finished_at=parse_timestamp(raw.get("ended"), "ended"),
            source_updated_at=parse_timestamp(raw.get("touched"), "touched"),
        )


TOY = Platform(
    name="toy",
    source_model=ToySource,
    connector=ToyConnector,
    statuses={"state": TOY_STATE},
    incremental="updated",
    read_time_keys=frozenset({"age_s"}),
)

# --- A fake toy server, over a real socket. ---------------------------------------------------

KEY = "toy-k3y-S3cr3t-0001"
PATH = "/teams/data/jobs/nightly%20orders/runs"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def toy_run(key: str, state: str, **fields: Any) -> dict[str, Any]:
    return {"key": key, "state": state, "began": "2026-03-01T10:00:00Z",
            "ended": None if state == "busy" else "2026-03-01T10:05:00Z",
            "touched": "2026-03-01T10:05:00Z", **fields}  # fmt: skip


def serve_toy(server: FakeServer, pages: list[list[dict[str, Any]]]) -> None:
    reads = 0

    def handler(seen: Seen) -> Reply:
        nonlocal reads
        if seen.headers.get("x-toy-key") != KEY:
            return Reply(401, {"error": "who are you?"})
        reads += 1
        index = int(seen.query["page"]) - 1
        # age_s is computed against the server's clock on every read.
        items = [run | {"age_s": 100 * reads} for run in pages[index]]
        return Reply(body={"items": items, "more": index + 1 < len(pages)})

    server.routes[("GET", PATH)] = handler


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def toy() -> Iterator[Platform[ToySource]]:
    register(TOY)
    yield TOY
    unregister("toy")


def toy_source(server: FakeServer, **fields: Any) -> dict[str, Any]:
    return source(server, "toy", team="data", token_env="TOY_KEY", incremental_overlap_s=60,
                  **fields)  # fmt: skip


def sources_file(tmp_path: Path, *entries: dict[str, Any], name: str = "sources") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(toml_text(*entries))
    return path


# --- Tests -----------------------------------------------------------------------------------


def test_a_platform_declared_in_one_module_is_ingested_end_to_end(
    api, engine, fake, toy, tmp_path
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="toy", external_id="nightly orders")
    serve_toy(fake, [[toy_run("r1", "done"), toy_run("r2", "broken")], [toy_run("r3", "busy")]])
    loaded = load_sources(sources_file(tmp_path, toy_source(fake)))
    entry = loaded.for_pipeline("toy", "prod", "anyone")
    assert isinstance(entry, ToySource) and entry.team == "data"

    first = ingest(engine, loaded, environ={"TOY_KEY": KEY}, clock=lambda: T0)
    assert (first.errors, first.pages, first.runs_created) == ([], 2, 3)
    runs = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]
    assert {run["external_run_id"]: (run["status"], run["source_status"]) for run in runs} == {
        "r1": ("success", "done"), "r2": ("failed", "broken"), "r3": ("running", "busy")}  # fmt: skip
    assert all("age_s" not in run["source_payload"] for run in runs)
    assert all(seen.headers["x-toy-key"] == KEY for seen in fake.hits(PATH))
    assert [seen.query for seen in fake.hits(PATH)] == [{"page": "1"}, {"page": "2"}]

    # Incremental from the watermark less the overlap; the read-time key is no change.
    replay = ingest(engine, loaded, environ={"TOY_KEY": KEY}, clock=lambda: T0 + timedelta(hours=1))
    assert (replay.errors, replay.runs_created, replay.runs_updated, replay.runs_unchanged) == (
        [], 0, 0, 3)  # fmt: skip
    since = isoformat_z(T0 - timedelta(seconds=60))
    assert [seen.query for seen in fake.hits(PATH)][2:] == [
        {"page": "1", "updated_after": since}, {"page": "2", "updated_after": since}]  # fmt: skip
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"] == runs


def test_the_lookups_are_built_from_the_entry(fake, toy) -> None:
    entry = ToySource.model_validate(toy_source(fake))
    window = Window(T0, T0 - timedelta(hours=1))
    connector = connector_for(entry, "nightly orders", window)
    assert isinstance(connector, ToyConnector) and connector.since == window.since
    assert incremental_mode(entry) == "updated"
    assert entry.credentials({"TOY_KEY": KEY}).headers == {"X-Toy-Key": KEY}


def test_the_sources_file_knows_a_platform_only_while_it_is_registered(fake, toy, tmp_path) -> None:
    path = sources_file(tmp_path, toy_source(fake))
    assert isinstance(load_sources(path).all[0], ToySource)
    without_team = {k: v for k, v in toy_source(fake).items() if k != "team"}
    with pytest.raises(ConfigError, match="source 'toy-prod' \\(sources\\[0\\]\\): field 'team': "):
        load_sources(sources_file(tmp_path, without_team, name="without_team"))
    with pytest.raises(ConfigError, match=r"the pull platforms are .*toy") as listed:
        load_sources(sources_file(tmp_path, toy_source(fake) | {"platform": "tyo"}, name="typo"))
    assert "unknown platform 'tyo'" in str(listed.value)

    unregister("toy")
    with pytest.raises(ConfigError, match="unknown platform 'toy'") as unknown:
        load_sources(path)
    assert "toy," not in str(unknown.value) and "generic" in str(unknown.value)


def test_every_connector_module_registers_its_platform_once() -> None:
    declared = {}
    for module in pkgutil.iter_modules(connectors_package.__path__):
        entry = getattr(importlib.import_module(f"chm.ingestion.connectors.{module.name}"),
                        "PLATFORM", None)  # fmt: skip
        if entry is not None:
            declared[entry.name] = entry
    registered = {platform.name: platform for platform in platforms()}
    assert registered == declared
    assert {"generic", "databricks", "adf", "airflow", "dbt_cloud", "github_actions", "prefect",
            "dagster"} <= set(registered)  # fmt: skip
    for platform in registered.values():
        for mapping in platform.statuses.values():
            assert all(key == key.lower() for key in mapping if isinstance(key, str))


def test_a_name_is_registered_once_and_matches_its_model(toy) -> None:
    assert register(TOY) is TOY  # the same entry again changes nothing
    with pytest.raises(ValueError, match="already registered"):
        register(Platform(name="toy", source_model=ToySource, connector=ToyConnector, statuses={}))
    with pytest.raises(ValueError, match=r"ToySource.platform must be Literal\['other'\]"):
        register(
            Platform(name="other", source_model=ToySource, connector=ToyConnector, statuses={})
        )
    with pytest.raises(ValueError, match="reserved"):
        register(Platform(name="push", source_model=ToySource, connector=ToyConnector, statuses={}))
    assert [p.name for p in platforms()].count("toy") == 1
