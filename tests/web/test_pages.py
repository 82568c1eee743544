"""The operator pages (docs/web.md) through TestClient, on both databases:
what each page shows of a seeded world, its links to the next level, the
fragment htmx asks for, HTML 404s, paging, bounded queries, and that the
pages write nothing and show no secret. Sign-in: test_sign_in.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from html_tree import Node, parse
from pages_seed import SOURCE_SECRET, T, World, at, seed, web_client, write_sources
from sqlalchemy import Engine, event

from chm.core.settings import Settings
from chm.models import Alert, Client, Pipeline, Run, Silence
from chm.reports.board import BoardLimits
from chm.web import data as web_data
from factories import API, make_client, make_pipeline, make_run, ok, walk

NOW_SECTIONS = ("firing-alerts", "failing", "overdue", "stuck", "changes", "counts", "sources")


@pytest.fixture
def web_settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ORDERS_TOKEN", SOURCE_SECRET)
    return settings.model_copy(update={"config": write_sources(tmp_path / "sources.toml")})


@pytest.fixture
def web(web_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with web_client(web_settings, engine) as client:
        yield client


@pytest.fixture
def world(web: TestClient, engine: Engine, web_settings: Settings) -> World:
    return seed(web, engine, web_settings)


def page(client: TestClient, path: str, status: int = 200, **kwargs: Any) -> Node:
    response = client.get(path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    return parse(response.text)


def row_links(section: Node) -> list[list[str]]:
    return [row.links() for row in section.find_all("tr") if row.find_all("td")]


# --- the now page ------------------------------------------------------------------


def test_now_page_shows_the_failing_pipeline_by_client_and_the_firing_alert(
    web: TestClient, world: World
) -> None:
    doc = page(web, "/")
    main = doc.by_id("live")
    assert main.tag == "main"
    firing = main.by_id("firing-alerts")
    assert firing.find("h2").text == "Firing alerts (1)"
    (alert_row,) = firing.find_all("tr", data_alert_id=world.firing_alert_id)
    assert "nightly-load" in alert_row.text and "firing" in alert_row.text
    assert f"/pipelines/{world.nightly['id']}" in alert_row.links()
    assert f"/clients/{world.acme['id']}" in alert_row.links()

    failing = main.by_id("failing")
    assert failing.find("h2").text == "Failing now (1)"
    (client_heading,) = failing.find_all("h3")
    assert client_heading.text == "Acme"
    assert client_heading.links() == [f"/clients/{world.acme['id']}"]
    (row,) = failing.find_all("tr", data_pipeline_id=world.nightly["id"])
    assert row.links() == [f"/pipelines/{world.nightly['id']}"]
    # The word, the shape and the colour's class; the error's first line only.
    badge = row.find("span", class_="status")
    assert "status-failed" in badge["class"] and "failed" in badge.text
    assert badge.find("span", aria_hidden="true").text == "✕"
    assert "KeyError: 'orders'" in row.text and "Traceback" not in row.text
    started = row.find("time")
    assert started["datetime"] == at(hours=2)
    assert started.text == "2026-11-28 10:00 UTC (2 h ago)"


def test_now_page_shows_overdue_stuck_changes_counts_and_sources(
    web: TestClient, world: World
) -> None:
    main = page(web, "/").by_id("live")
    overdue = main.by_id("overdue")
    (row,) = overdue.find_all("tr", data_pipeline_id=world.daily["id"])
    assert "missed" in row.text and "0 6 * * *" in row.text
    assert [t["datetime"] for t in row.find_all("time")][:2] == [
        "2026-11-28T06:00:00Z",
        "2026-11-28T06:30:00Z",
    ]
    assert f"/clients/{world.globex['id']}" in row.links()

    stuck = main.by_id("stuck")
    (row,) = stuck.find_all("tr", data_run_id=world.stuck_run["id"])
    assert "running" in row.text and "(8 h ago)" in row.text
    assert row.links()[0] == f"/pipelines/{world.hourly['id']}"

    changes = main.by_id("changes")
    newly = changes.by_id("newly-failing")
    assert newly.text == "Newly failing (1)"
    assert any(f"/pipelines/{world.nightly['id']}" in links for links in row_links(changes))

    counts = {
        row["data-status"]: row.find("td").text
        for row in main.by_id("counts").find_all("tr")
        if row.get("data-status")
    }
    assert counts["failed"] == "1" and counts["success"] == "1" and counts["running"] == "1"

    sources = main.by_id("sources")
    feed = sources.find("tr", data_source="orders-feed")
    assert "stale" in feed.text and "token [REDACTED] refused" in feed.text.replace("***", "")
    assert sources.find("tr", data_source="spark")
    assert "Workers alive: 0" in sources.by_id("workers").text


def test_every_now_section_is_there_and_says_so_when_empty(web: TestClient) -> None:
    main = page(web, "/").by_id("live")
    empty_words = {
        "firing-alerts": "No firing alerts.",
        "failing": "No pipeline is failing.",
        "overdue": "No scheduled pipeline is overdue.",
        "stuck": "No stuck runs.",
        "changes": "No pipeline changed status.",
    }
    for ident in NOW_SECTIONS:
        section = main.by_id(ident)
        assert section.tag == "section"
        assert section.find("h2").text
        if ident in empty_words:
            assert empty_words[ident] in section.text
    assert main.find("p", class_="as-of").find("time")["datetime"] == "2026-11-28T12:00:00Z"


def test_the_page_is_a_document_for_people(web: TestClient, world: World) -> None:
    doc = page(web, "/")
    html = doc.find("html")
    assert html["lang"] == "en"
    skip = doc.find("a", class_="skip-link")
    assert skip["href"] == "#live"
    assert doc.find("nav", aria_label="Main").links() == ["/", "/", "/alerts"]
    assert doc.find("a", aria_current="page").text == "Now"
    headings = [node.tag for node in doc.by_id("live").walk() if node.tag in ("h1", "h2", "h3")]
    assert headings[0] == "h1" and headings.count("h1") == 1
    # No heading level is skipped going down.
    levels = [int(tag[1]) for tag in headings]
    assert all(b <= a + 1 for a, b in itertools.pairwise(levels))
    for table in doc.find_all("table"):
        assert table.find("caption").text
        assert all(th.get("scope") in ("col", "row") for th in table.find_all("th"))
    for region in doc.find_all("div", class_="table-wrap"):
        assert region["role"] == "region" and region["aria-label"] and region["tabindex"] == "0"
    # htmx and the stylesheet from this server, no inline script.
    assert [s.get("src") for s in doc.find_all("script")] == [
        "/static/htmx.min.js",
        "/static/chm.js",
    ]


def test_the_fragment_is_the_live_main_alone(web: TestClient, world: World) -> None:
    response = web.get("/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<main id="live"')
    assert "<html" not in response.text and "<header" not in response.text
    fragment = parse(response.text)
    main = fragment.by_id("live")
    assert main["hx-get"] == "/" and main["hx-trigger"] == "every 15s"
    assert main["hx-swap"] == "outerHTML"
    assert main.by_id("failing").find_all("tr", data_pipeline_id=world.nightly["id"])
    assert response.headers["vary"] == "HX-Request, Cookie"
    assert response.headers["cache-control"] == "no-store"


def test_the_refresh_interval_is_the_setting(
    web_settings: Settings, engine: Engine, world: World
) -> None:
    settings = web_settings.model_copy(update={"web_refresh_s": 3})
    with web_client(settings, engine) as client:
        main = page(client, f"/pipelines/{world.nightly['id']}").by_id("live")
    assert main["hx-trigger"] == "every 3s"
    assert main["hx-get"] == f"/pipelines/{world.nightly['id']}"


def test_the_refresh_interval_must_be_a_second_or_more() -> None:
    with pytest.raises(ValueError, match="web_refresh_s"):
        Settings(web_refresh_s=0, _env_file=None)  # type: ignore[call-arg]


# --- a client ----------------------------------------------------------------------


def test_client_page_lists_its_pipelines_and_what_is_failing(web: TestClient, world: World) -> None:
    doc = page(web, f"/clients/{world.acme['id']}")
    assert doc.find("h1").text == "Acme"
    assert doc.find("title").text == "Acme · CHM"
    pipelines = doc.by_id("pipelines")
    rows = pipelines.find("tbody").find_all("tr")
    assert [r["data-pipeline-id"] for r in rows] == [world.hourly["id"], world.nightly["id"]]
    assert [r.links() for r in rows] == [
        [f"/pipelines/{world.hourly['id']}"],
        [f"/pipelines/{world.nightly['id']}"],
    ]
    assert "running" in rows[0].text and "failed" in rows[1].text
    assert world.nightly["id"] in [
        r["data-pipeline-id"] for r in doc.by_id("client-failing").find_all("tr")[1:]
    ]
    assert doc.by_id("client-firing-alerts").find_all("tr", data_alert_id=world.firing_alert_id)
    assert doc.by_id("client-stuck").find_all("tr", data_run_id=world.stuck_run["id"])
    # Globex's overdue pipeline is not Acme's.
    assert "No scheduled pipeline is overdue." in doc.by_id("client-overdue").text


def test_client_page_of_the_other_client_shows_its_overdue_pipeline(
    web: TestClient, world: World
) -> None:
    doc = page(web, f"/clients/{world.globex['id']}")
    assert doc.by_id("client-overdue").find_all("tr", data_pipeline_id=world.daily["id"])
    assert "No firing alerts." in doc.by_id("client-firing-alerts").text


@pytest.mark.parametrize("path", ["/clients/{}", "/pipelines/{}"])
@pytest.mark.parametrize("ident", ["987654", "abc", "0", "-1", "99999999999999999999"])
def test_unknown_ids_are_html_404s(web: TestClient, path: str, ident: str) -> None:
    doc = page(web, path.format(ident), 404)
    assert doc.find("h1").text == "Not found"
    assert "not found" in doc.by_id("error-detail").text


def test_a_cursor_the_server_did_not_issue_is_an_html_422(web: TestClient, world: World) -> None:
    doc = page(web, f"/pipelines/{world.nightly['id']}?cursor=forged", 422)
    assert "cursor was not issued by this server" in doc.by_id("error-detail").text
    doc = page(web, "/alerts?cursor=forged", 422)
    assert "cursor was not issued by this server" in doc.by_id("error-detail").text


# --- a pipeline --------------------------------------------------------------------


def test_pipeline_page_shows_history_strip_chart_alerts_and_schedule(
    web: TestClient, world: World
) -> None:
    doc = page(web, f"/pipelines/{world.nightly['id']}")
    assert doc.find("h1").text == "nightly-load"
    assert f"/clients/{world.acme['id']}" in doc.find("dl", class_="facts").links()
    history = doc.by_id("history")
    runs = history.by_id("runs").find("tbody").find_all("tr")
    assert [r["data-run-id"] for r in runs] == [world.failed_run["id"], runs[1]["data-run-id"]]
    assert "failed" in runs[0].text and "5 min" in runs[0].text
    assert history.find_all("nav") == []  # one page only

    strip = doc.by_id("strip").find("ol")
    items = strip.find_all("li")
    assert [i.find("a")["href"].split("#")[1] for i in items] == [
        f"run-{runs[1]['data-run-id']}",
        f"run-{world.failed_run['id']}",
    ]  # oldest first
    assert "failed, run" in items[1].text

    svg = doc.by_id("durations").find("svg")
    assert svg["role"] == "img"
    labelled = svg["aria-labelledby"].split()
    assert [svg.by_id(i).tag for i in labelled] == ["title", "desc"]
    bars = svg.find_all("rect")
    assert [b["data-run-id"] for b in bars] == [runs[1]["data-run-id"], world.failed_run["id"]]
    assert float(bars[0]["height"]) > float(bars[1]["height"])  # 10 min against 5 min
    assert "longest 10 min" in svg.by_id(labelled[1]).text

    alerts = doc.by_id("pipeline-alerts")
    assert alerts.find_all("tr", data_alert_id=world.firing_alert_id)
    assert "No schedule" in doc.by_id("schedule").text


def test_pipeline_page_says_when_a_scheduled_pipeline_is_overdue(
    web: TestClient, world: World
) -> None:
    schedule = page(web, f"/pipelines/{world.daily['id']}").by_id("schedule")
    assert "missed" in schedule.text and "since 2026-11-28 06:30 UTC (5 h ago)" in schedule.text
    assert "0 6 * * *" in schedule.text
    ticks = [t["datetime"] for t in schedule.find_all("time")]
    assert "2026-11-29T06:00:00Z" in ticks  # the next expected run


def test_a_scheduled_pipeline_that_ran_is_on_time(web: TestClient, world: World) -> None:
    make_run(web, world.daily, "success", external_run_id="d-2", started_at=at(hours=6))
    schedule = page(web, f"/pipelines/{world.daily['id']}").by_id("schedule")
    assert "on time" in schedule.text and "missed" not in schedule.text


def test_history_pages_walk_every_run_newest_first_like_the_api(
    web: TestClient, engine: Engine
) -> None:
    pipeline = make_pipeline(web, make_client(web, "Initech"))
    for i in range(120):
        # Some share a start time; some have none: the ordering rule decides.
        started = at(hours=200 - (i // 2)) if i % 7 else None
        make_run(web, pipeline, "success" if i % 3 else "failed", external_run_id=f"r-{i}",
                 started_at=started, finished_at=at(hours=1, minutes=i))  # fmt: skip
    expected = [run["id"] for run in walk(web, f"/pipelines/{pipeline['id']}/runs")]
    seen: list[str] = []
    path: str | None = f"/pipelines/{pipeline['id']}"
    pages = 0
    while path is not None:
        doc = page(web, path)
        pages += 1
        seen += [r["data-run-id"] for r in doc.by_id("runs").find("tbody").find_all("tr")]
        nav = doc.by_id("history").find_all("nav", aria_label="History pages")
        older = [a for n in nav for a in n.find_all("a") if a.text == "Older runs"]
        path = older[0]["href"] if older else None
        # The strip and the chart stay the latest 50, whatever the page.
        assert len(doc.by_id("strip").find_all("li")) == 50
        assert len(doc.by_id("durations").find_all("rect")) == 50
    assert pages == 3 and seen == expected


# --- alerts ------------------------------------------------------------------------


def test_alerts_page_shows_firing_resolved_and_silences(web: TestClient, world: World) -> None:
    doc = page(web, "/alerts")
    assert doc.find("a", aria_current="page").text == "Alerts"
    (firing,) = doc.by_id("firing").find_all("tr", data_alert_id=world.firing_alert_id)
    assert f"/pipelines/{world.nightly['id']}" in firing.links()
    assert f"/clients/{world.acme['id']}" in firing.links()
    assert f"/api/v1/alerts/{world.firing_alert_id}" in firing.links()
    (resolved,) = doc.by_id("recent").find_all("tr", data_alert_id=world.resolved_alert_id)
    assert "resolved" in resolved.text and f"/pipelines/{world.hourly['id']}" in resolved.links()
    (silence,) = doc.by_id("silences").find_all("tr", data_silence_id=world.silence_id)
    assert "Maintenance of the sync host" in silence.text
    assert silence.links() == [f"/pipelines/{world.hourly['id']}"]
    # Delivery destinations may carry secrets: only their counts are shown.
    assert "slack:#" not in doc.by_id("live").text


def test_resolved_alerts_page_by_cursor(web: TestClient, engine: Engine, world: World) -> None:
    with engine.begin() as connection:
        for i in range(60):
            connection.execute(
                sa.insert(Alert).values(
                    rule_id=1,
                    rule_type="on_failure",
                    client_id=int(world.acme["id"]),
                    pipeline_id=int(world.hourly["id"]),
                    state="resolved",
                    fingerprint=f"old-{i}",
                    fired_at=T - timedelta(days=10, minutes=i),
                    resolved_at=T - timedelta(days=9),
                    summary=f"old alert {i}",
                )
            )
    first = page(web, "/alerts")
    rows = first.by_id("resolved-table").find("tbody").find_all("tr")
    assert len(rows) == 50
    older = first.by_id("recent").find("a", rel="next")["href"]
    second = page(web, older)
    rest = second.by_id("resolved-table").find("tbody").find_all("tr")
    ids = [r["data-alert-id"] for r in rows + rest]
    assert len(ids) == 61 == len(set(ids))
    assert "Newest alerts" in second.by_id("recent").text


# --- what the pages never do -------------------------------------------------------


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            model.__tablename__: connection.scalar(sa.select(sa.func.count()).select_from(model))
            or 0
            for model in (Client, Pipeline, Run, Alert, Silence)
        }


def test_the_pages_write_nothing_and_show_no_secret(
    web: TestClient, engine: Engine, world: World
) -> None:
    before = _counts(engine)
    paths = ["/", f"/clients/{world.acme['id']}", f"/pipelines/{world.nightly['id']}", "/alerts"]
    for path in paths:
        for headers in ({}, {"HX-Request": "true"}):
            response = web.get(path, headers=headers)
            assert response.status_code == 200
            assert SOURCE_SECRET not in response.text
            assert "feed.internal.example" not in response.text  # a source's URL
            assert "default-src 'self'" in response.headers["content-security-policy"]
    assert _counts(engine) == before


def test_no_page_route_takes_a_write_method_but_sign_in_and_out(web: TestClient) -> None:
    writes, pages = set(), set()
    for route in iter_route_contexts(web.app.routes):  # type: ignore[attr-defined]
        path = route.path_format
        if path.startswith(API) or path in ("/metrics", "/healthz"):
            continue
        methods = route.methods or set()
        pages.add(path)
        writes |= {(path, m) for m in methods if m not in ("GET", "HEAD")}
    assert {"/", "/clients/{client_id}", "/pipelines/{pipeline_id}", "/alerts"} <= pages
    assert writes == {("/sign-in", "POST"), ("/sign-out", "POST")}


def test_the_pages_are_not_in_the_api_document(web: TestClient) -> None:
    paths = ok(web.get("/openapi.json"))["paths"]
    assert not {"/", "/alerts", "/sign-in", "/sign-out"} & set(paths)
    assert not any(p.startswith(("/clients/", "/pipelines/")) for p in paths)


def test_static_files_are_served(web: TestClient) -> None:
    htmx = web.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:200]
    css = web.get("/static/chm.css")
    assert css.status_code == 200 and ".status-bad" in css.text
    script = web.get("/static/chm.js")
    assert script.status_code == 200 and "htmx:beforeRequest" in script.text


@contextmanager
def statements(web: TestClient) -> Iterator[list[str]]:
    """The SQL statements the pages send (they read through the async engine)."""
    sent: list[str] = []
    sync_engine = web.app.state.async_engine.sync_engine  # type: ignore[attr-defined]

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)


def _queries(web: TestClient, path: str) -> int:
    with statements(web) as sent:
        assert web.get(path).status_code == 200
    return len(sent)


def test_each_page_sends_the_same_number_of_queries_however_many_rows(
    web: TestClient, engine: Engine, world: World
) -> None:
    paths = ["/", f"/clients/{world.acme['id']}", f"/pipelines/{world.nightly['id']}", "/alerts"]
    before = {path: _queries(web, path) for path in paths}
    for i in range(12):
        pipeline = make_pipeline(web, world.acme, f"more-{i}", schedule="0 6 * * *")
        for j in range(3):
            make_run(web, pipeline, "failed" if j == 2 else "success",
                     started_at=at(hours=3 + j))  # fmt: skip
    for j in range(20):
        make_run(web, world.nightly, "failed", started_at=at(hours=40 + j))
    with engine.begin() as connection:
        connection.execute(sa.update(Pipeline).values(created_at=T - timedelta(days=10)))
    after = {path: _queries(web, path) for path in paths}
    assert after == before
    assert max(after.values()) <= 20


def test_the_now_page_shows_the_head_of_a_long_failing_list_and_links_to_the_rest(
    web: TestClient, world: World
) -> None:
    for i in range(11):
        make_run(web, make_pipeline(web, world.globex, f"broken-{i:02d}"), "failed",
                 started_at=at(hours=1))  # fmt: skip
    failing = page(web, "/").by_id("failing")
    assert failing.find("h2").text == "Failing now (12)"
    groups = failing.find_all("div", class_="table-wrap")
    assert [len(g.find("tbody").find_all("tr")) for g in groups] == [1, 10]
    more = failing.find("p", class_="more")
    assert more.text == "All 11 failing pipelines of Globex"
    assert more.links() == [f"/clients/{world.globex['id']}"]
    # The client's page lists all of them.
    client = page(web, f"/clients/{world.globex['id']}").by_id("client-failing")
    assert len(client.find("tbody").find_all("tr")) == 11


def test_the_now_page_shows_the_head_of_each_long_list_with_its_full_count(
    web: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows beyond the limit are counted in the headings, never listed.
    limits = BoardLimits(rows=1, failing_per_client=10, failing_clients=20)
    monkeypatch.setattr(web_data, "NOW_LIMITS", limits)
    waiting = make_pipeline(web, world.acme, "waiting")
    more_stuck = make_run(web, waiting, "queued", started_at=at(hours=30))
    # A first run since yesterday: a change from no runs.
    make_run(web, make_pipeline(web, world.acme, "fresh"), "success", started_at=at(hours=2))
    main = page(web, "/").by_id("live")
    stuck = main.by_id("stuck")
    assert stuck.find("h2").text == "Stuck runs (2)"
    # The oldest first: the queued run of 30 h ago, not the running one of 8 h ago.
    assert [row["data-run-id"] for row in stuck.find("tbody").find_all("tr")] == [more_stuck["id"]]
    assert stuck.find("p", class_="more").text == (
        "The first 1 of 2 stuck runs; each client's page lists all of its own."
    )
    changes = main.by_id("changes")
    headings = [h.text for h in changes.find_all("h3")]
    assert headings == ["Newly failing (1)", "Other changes (2)"]
    other = changes.find_all("div", class_="table-wrap")[-1]
    assert len(other.find("tbody").find_all("tr")) == 1
    assert changes.find("p", class_="more").text.startswith("The first 1 of 2 other changes")


def test_the_now_page_lists_the_failing_pipelines_of_the_first_clients_and_names_the_rest(
    web: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = BoardLimits(rows=50, failing_per_client=10, failing_clients=1)
    monkeypatch.setattr(web_data, "NOW_LIMITS", limits)
    for i in range(2):
        make_run(web, make_pipeline(web, world.globex, f"broken-{i}"), "failed",
                 started_at=at(hours=1))  # fmt: skip
    failing = page(web, "/").by_id("failing")
    assert failing.find("h2").text == "Failing now (3)"
    # Acme's one failing pipeline is listed; Globex, second by name, is named with its count.
    assert [h.text for h in failing.find_all("h3")] == ["Acme"]
    more = failing.by_id("more-failing-clients")
    assert more.text == "1 more client has failing pipelines: Globex (2)."
    assert more.links() == [f"/clients/{world.globex['id']}"]
