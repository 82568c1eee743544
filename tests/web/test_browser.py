"""The operator pages in a real browser (issue 16): Debian's chromium, driven by
Playwright, against a real ``chm serve`` over a seeded database, on SQLite and
PostgreSQL.

What a person sees: the now page shows the failing pipeline and its firing
alert; its link leads to the pipeline's page with its history; the page
refreshes itself with a run recorded after it loaded; the keyboard's first
stop skips to the content; in production nothing shows before sign-in. Every page loads without a console error or a failed
request, passes axe-core, and fits a phone's width.

The server runs at the real clock (a process of its own), so the runs are
seeded at fixed times in its past; nothing here depends on how long ago.
Without chromium these tests skip with the reason (fail under CI=true).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from browser import (
    PageProblems,
    Server,
    World,
    at,
    axe_violations,
    claim_for_production,
    fire_alerts,
    firing_alert_id,
    horizontal_overflow,
    launch,
    require_chromium,
    seed,
    serve,
    watch,
)
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy.engine import make_url

from factories import make_pipeline, make_run

# The server of conftest's PostgreSQL half (its templates are conftest's fixtures).
POSTGRES_ADMIN_URL = os.environ.get(
    "CHM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TOKEN = "browser-test-token-0123456789"
# The longest a page may take to show what a test waits for (the refresh runs
# every second; chromium and the server share 2 busy cores with other tests).
WAIT_MS = 15_000
# The sign-in form, with or without the page to return to (?next=).
SIGN_IN_URL = re.compile(r"/sign-in(\?.*)?$")
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}


@dataclass
class Site:
    server: Server
    world: World
    backend: str

    def pages(self) -> dict[str, str]:
        """Every page of the site, by name."""
        return {
            "now": "/",
            "client": f"/clients/{self.world.acme['id']}",
            "pipeline": f"/pipelines/{self.world.failing['id']}",
            "alerts": "/alerts",
        }


# --- fixtures: one browser, and one seeded server per database, per module -------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=("sqlite", "postgresql"))
def new_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], str]]:
    """Makes fresh migrated databases of each kind for the module's servers (as
    conftest's ``db_url``, at module scope), dropped at its end."""
    dropped: list[str] = []

    def make() -> str:
        if request.param == "sqlite":
            template: Path = request.getfixturevalue("sqlite_template")
            path = tmp_path_factory.mktemp("browser") / "chm.db"
            shutil.copyfile(template, path)
            return f"sqlite:///{path}"
        template_db: str = request.getfixturevalue("postgres_template")
        name = f"chm_test_browser_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        dropped.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)

    yield make
    for name in dropped:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _seeded(server: Server, db_url: str) -> World:
    with server.http() as http:
        world = seed(http)
        report = fire_alerts(db_url)
        assert report.fired == 1, report
        world.alert_id = firing_alert_id(http, world.failing)
    return world


@pytest.fixture(scope="module")
def site(
    new_database: Callable[[], str], browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """Development (no sign-in): ``chm serve`` refreshing its pages every second."""
    database = new_database()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve(database, log, CHM_WEB_REFRESH_S="1") as server:
        yield Site(server, _seeded(server, database), make_url(database).get_backend_name())


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    yield context.new_page()
    context.close()


def open_page(page: Page, site: Site, path: str) -> PageProblems:
    problems = watch(page)
    response = page.goto(site.server.url + path)
    assert response is not None and response.status == 200, (path, response)
    return problems


# --- what the pages show ------------------------------------------------------------------


def test_now_page_shows_the_failing_pipeline_and_its_firing_alert(page: Page, site: Site) -> None:
    world = site.world
    open_page(page, site, "/")
    failing = page.locator("section#failing")
    expect(failing.get_by_role("heading", name="Acme Retail")).to_be_visible()
    expect(failing.locator(f'a[href="/pipelines/{world.failing["id"]}"]')).to_have_text(
        "orders_daily"
    )
    # The other pipelines are not failing; the stuck run is in its own section.
    expect(failing.locator(f'a[href="/pipelines/{world.healthy["id"]}"]')).to_have_count(0)
    expect(page.locator("section#stuck")).to_contain_text("billing_export")
    alerts = page.locator("section#firing-alerts")
    expect(alerts).to_contain_text("orders_daily")
    expect(alerts).to_contain_text("on_failure")
    expect(alerts.locator(f'a[href="/pipelines/{world.failing["id"]}"]').first).to_be_visible()


def test_the_failing_pipelines_link_opens_its_page_with_its_history(page: Page, site: Site) -> None:
    world = site.world
    open_page(page, site, "/")
    page.locator(f'section#failing a[href="/pipelines/{world.failing["id"]}"]').click()
    page.wait_for_url(f"**/pipelines/{world.failing['id']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("orders_daily")
    rows = page.locator("section#history table#runs tr[data-run-id]")
    expect(rows).to_have_count(len(world.failing_runs))
    # Newest first, as the ordering rule says.
    assert [rows.nth(i).get_attribute("data-run-id") for i in range(rows.count())] == [
        str(run) for run in world.failing_runs
    ]
    expect(rows.first).to_contain_text("failed")
    expect(page.locator("section#durations svg[role=img]")).to_be_visible()
    expect(page.locator("section#strip")).to_contain_text("failed")
    expect(page.locator("section#pipeline-alerts")).to_contain_text("on_failure")
    expect(page.locator("section#schedule")).to_contain_text("0 2 * * *")


def test_the_first_tab_stop_skips_to_the_content(page: Page, site: Site) -> None:
    open_page(page, site, "/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main#live")).to_be_focused()
    # From there, the next stop is inside the content.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.closest('main') !== null")


def _mark_loaded(page: Page) -> None:
    """A mark a reload would lose: the swap must come from the fragment refresh."""
    page.evaluate("() => { window.chmLoadedOnce = true; }")


def _still_the_same_document(page: Page) -> bool:
    return bool(page.evaluate("() => window.chmLoadedOnce === true"))


def test_the_pipeline_page_refreshes_with_a_run_recorded_after_it_loaded(
    page: Page, site: Site
) -> None:
    pipeline = site.world.healthy
    open_page(page, site, f"/pipelines/{pipeline['id']}")
    expect(page.locator("table#runs tr[data-run-id]").first).to_be_visible()
    _mark_loaded(page)
    with site.server.http() as http:
        run = make_run(http, pipeline, "failed", started_at=at(30), finished_at=at(30.5))
    newest = page.locator("table#runs tr[data-run-id]").first
    expect(newest).to_have_attribute("data-run-id", str(run["id"]), timeout=WAIT_MS)
    expect(newest).to_contain_text("failed")
    assert _still_the_same_document(page)


def test_the_now_page_refreshes_with_a_pipeline_failing_after_it_loaded(
    page: Page, site: Site
) -> None:
    open_page(page, site, "/")
    expect(page.locator("section#failing")).to_be_visible()
    _mark_loaded(page)
    with site.server.http() as http:
        pipeline = make_pipeline(http, site.world.globex, "payments_hourly", platform="dbt_cloud")
        make_run(http, pipeline, "failed", started_at=at(31), finished_at=at(31.2))
    link = page.locator(f'section#failing a[href="/pipelines/{pipeline["id"]}"]')
    expect(link).to_have_text("payments_hourly", timeout=WAIT_MS)
    assert _still_the_same_document(page)


# --- every page: clean loads, accessibility, a phone's width --------------------------

PAGES = ("now", "client", "pipeline", "alerts")


@pytest.mark.parametrize("name", PAGES)
def test_page_loads_without_console_errors_or_failed_requests(
    page: Page, site: Site, name: str
) -> None:
    problems = open_page(page, site, site.pages()[name])
    page.wait_for_load_state("networkidle")
    assert problems.seen == []


@pytest.mark.parametrize("name", PAGES)
def test_page_has_no_accessibility_violations(page: Page, site: Site, name: str) -> None:
    open_page(page, site, site.pages()[name])
    count, report = axe_violations(page)
    assert count == 0, report


def test_the_not_found_page_has_no_accessibility_violations(page: Page, site: Site) -> None:
    response = page.goto(site.server.url + "/pipelines/987654321")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    count, report = axe_violations(page)
    assert count == 0, report


@pytest.mark.parametrize("name", PAGES)
def test_page_fits_a_phone_width_without_horizontal_scroll(
    browser: Browser, site: Site, name: str
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        open_page(phone, site, site.pages()[name])
        assert horizontal_overflow(phone) == 0
    finally:
        context.close()


# --- production: signing in ---------------------------------------------------------------


@pytest.fixture(scope="module")
def production(
    new_database: Callable[[], str], browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """Production: the pages need the API token, given on the sign-in form."""
    db_url = new_database()
    claim_for_production(db_url)
    log = tmp_path_factory.mktemp("serve-production") / "serve.log"
    with serve(db_url, log, CHM_ENV="production", CHM_API_TOKEN=TOKEN) as server:
        yield Site(server, _seeded(server, db_url), make_url(db_url).get_backend_name())


def test_in_production_nothing_shows_before_sign_in_and_sign_out_ends_it(
    page: Page, production: Site
) -> None:
    base = production.server.url
    problems = watch(page)
    page.goto(base + "/")
    page.wait_for_url(SIGN_IN_URL)
    form = page.locator("form#sign-in")
    expect(form).to_be_visible()
    assert "orders_daily" not in page.content() and "Acme Retail" not in page.content()
    assert problems.seen == []
    count, report = axe_violations(page)
    assert count == 0, report

    # A wrong token is refused, with a message, and still shows nothing.
    page.get_by_label("token", exact=False).fill("not-the-token")
    form.locator("[type=submit]").click()
    expect(page.locator("p#sign-in-error[role=alert]")).to_be_visible()
    assert "orders_daily" not in page.content()

    # The right one opens the now page.
    page.get_by_label("token", exact=False).fill(TOKEN)
    page.locator("form#sign-in [type=submit]").click()
    page.wait_for_url(f"{base}/")
    expect(page.locator("section#failing")).to_contain_text("orders_daily")
    count, report = axe_violations(page)
    assert count == 0, report

    # Sign-out returns to the form, and the pages stay shut.
    page.locator("form#sign-out [type=submit]").click()
    page.wait_for_url(SIGN_IN_URL)
    expect(page.locator("form#sign-in")).to_be_visible()
    page.goto(base + f"/pipelines/{production.world.failing['id']}")
    page.wait_for_url(SIGN_IN_URL)
    assert "orders_daily" not in page.content()
