"""The operator pages (docs/web.md): server-rendered HTML, read-only.

``GET /`` (now), ``/clients/{id}``, ``/pipelines/{id}`` (``?cursor=`` pages
the history), ``/alerts`` (``?cursor=`` pages the resolved alerts); the
sign-in form (``GET``/``POST /sign-in``, production only) and ``POST
/sign-out``; ``/static`` (htmx and the stylesheet). Every page works without
JavaScript; where it runs, htmx asks for the same URL every
``CHM_WEB_REFRESH_S`` seconds with ``HX-Request: true``, and the answer is
only the page's ``<main id="live">``. The pages are not part of the API's
OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from chm.core.deps import ReportSnapshot
from chm.core.errors import ChmError
from chm.core.ids import parse_id
from chm.core.lookup import not_found
from chm.core.settings import Settings
from chm.core.timeutil import utcnow
from chm.web import auth, data
from chm.web.format import badge, first_line, span_text, time_text

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(
    badge=badge, first_line=first_line, span_text=span_text, time_text=time_text
)

# What every page answer carries: never cached (it is live, and may be
# private), one variant per kind of request, and a policy that lets the page
# load only its own script and stylesheet.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Vary": "HX-Request, Cookie",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
SIGN_IN = "/sign-in"
MAX_TOKEN_FIELD = 4096


def _clock(request: Request) -> Callable[[], datetime]:
    clock: Callable[[], datetime] = request.app.state.web_clock
    return clock


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _is_fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _local_path(value: str | None) -> str:
    """Where to go after signing in: a path of this site, never another site."""
    # "//host" and "/\\host" name another host to a browser, which also drops
    # tabs and newlines from a URL before reading it.
    if (
        value
        and value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and "\\" not in value
        and value.isprintable()
        and " " not in value
    ):
        return value
    return "/"


def require_session(request: Request) -> None:
    """Production: every page needs a valid session cookie."""
    token = auth.session_token(_settings(request))
    if not auth.is_signed_in(request, token, _clock(request)):
        raise auth.SignInRequired


def _sign_in_required(request: Request, _error: Exception) -> Response:
    """To the sign-in form (htmx: a 401 that tells it to go there), asking
    for nothing of the page first."""
    if _is_fragment(request):
        # Back to the page the tab shows once signed in (a session that
        # expired under a tab left open).
        current = urlsplit(request.headers.get("hx-current-url", ""))
        page = _local_path(current.path + (f"?{current.query}" if current.query else ""))
        location = SIGN_IN if page == "/" else f"{SIGN_IN}?{_next_query(page)}"
        return Response(status_code=401, headers={"HX-Redirect": location, **PAGE_HEADERS})
    if request.headers.get("sec-fetch-site") == "cross-site":
        # A link followed from another site (Slack, an email, Alertmanager):
        # the SameSite=Strict cookie is not sent with such a navigation. A
        # reload from this page is same-site and carries it; without one, that
        # reload comes to the sign-in form (it is not cross-site: no loop).
        return HTMLResponse(_RELOAD_PAGE, headers=PAGE_HEADERS)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = SIGN_IN if target == "/" else f"{SIGN_IN}?{_next_query(target)}"
    return RedirectResponse(location, status_code=303, headers=PAGE_HEADERS)


_RELOAD_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta http-equiv="refresh" content="0"><title>CHM</title></head>'
    "<body><p>Opening the page…</p></body></html>"
)


def _next_query(target: str) -> str:
    return urlencode({"next": target})


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    nav: str | None = None,
) -> HTMLResponse:
    """A page, or its ``<main id="live">`` alone for htmx's refresh."""
    settings = _settings(request)
    token = auth.session_token(settings)
    query = request.url.query
    page_context = {
        "now": _clock(request)(),
        "fragment": _is_fragment(request),
        "live_url": request.url.path + (f"?{query}" if query else ""),
        "refresh_s": settings.web_refresh_s,
        # The sign-out button, in production once signed in.
        "signed_in": token is not None and auth.is_signed_in(request, token, _clock(request)),
        "nav": nav,
        "live": True,
        **context,
    }
    return templates.TemplateResponse(
        request, name, page_context, status_code=status_code, headers=PAGE_HEADERS
    )


def error_page(request: Request, error: ChmError) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {
            "title": error.title,
            "status": error.status,
            # A refused cursor says what was wrong with it, not "1 field is invalid".
            "detail": "; ".join(issue.message for issue in error.errors) or error.detail,
            "live": False,
        },
        status_code=error.status,
    )


pages = APIRouter(include_in_schema=False, dependencies=[Depends(require_session)])
# HEAD as well as GET, as a static page would answer: uptime checks and link
# previews ask with HEAD (the server sends the headers, no body).
READ = ["GET", "HEAD"]
public = APIRouter(include_in_schema=False)


@pages.api_route("/", methods=READ, response_class=HTMLResponse)
async def now_page(request: Request, conn: ReportSnapshot) -> HTMLResponse:
    """Firing alerts, failing pipelines by client, overdue and stuck runs, what
    changed since yesterday, counts by status, the sources' health."""
    settings = _settings(request)
    as_of = _clock(request)()
    sources, problem = data.sources_of(request.app.state.sources, settings)
    page = await conn.run_sync(data.now_page, as_of, settings, sources, problem)
    return render(request, "now.html", {"page": page, "title": "Now"}, nav="now")


async def _or_error(
    request: Request, build: Callable[[], Any], template: str, **extra: Any
) -> HTMLResponse:
    try:
        page = await build()
    except ChmError as error:  # unknown id, a cursor we did not issue
        return error_page(request, error)
    return render(request, template, {"page": page, **extra})


@pages.api_route("/clients/{client_id}", methods=READ, response_class=HTMLResponse)
async def client_page(request: Request, client_id: str, conn: ReportSnapshot) -> HTMLResponse:
    """One client: its pipelines' latest runs, what is failing, overdue, stuck, firing."""
    ident = parse_id(client_id)
    if ident is None:
        return error_page(request, not_found("client", client_id))
    as_of = _clock(request)()
    settings = _settings(request)
    return await _or_error(
        request,
        lambda: data.client_page(conn, ident, as_of, settings),
        "client.html",
    )


@pages.api_route("/pipelines/{pipeline_id}", methods=READ, response_class=HTMLResponse)
async def pipeline_page(
    request: Request, pipeline_id: str, conn: ReportSnapshot, cursor: str | None = None
) -> HTMLResponse:
    """One pipeline: its history (newest first, paged), status strip, duration
    chart, alerts and schedule."""
    ident = parse_id(pipeline_id)
    if ident is None:
        return error_page(request, not_found("pipeline", pipeline_id))
    as_of = _clock(request)()
    return await _or_error(
        request,
        lambda: data.pipeline_page(conn, ident, cursor or None, as_of),
        "pipeline.html",
        cursor=cursor,
    )


@pages.api_route("/alerts", methods=READ, response_class=HTMLResponse)
async def alerts_page(
    request: Request, conn: ReportSnapshot, cursor: str | None = None
) -> HTMLResponse:
    """Firing alerts, recently resolved ones, silences."""
    as_of = _clock(request)()

    async def build() -> data.AlertsPage:
        page: data.AlertsPage = await conn.run_sync(data.alerts_page, cursor or None, as_of)
        return page

    return await _or_error(
        request, build, "alerts.html", nav="alerts", cursor=cursor, title="Alerts"
    )


# --- signing in and out ---------------------------------------------------------


def _sign_in_form(
    request: Request, next_path: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    return render(
        request,
        "sign_in.html",
        {"title": "Sign in", "next": next_path, "error": error, "live": False},
        status_code=status_code,
    )


@public.api_route(SIGN_IN, methods=READ, response_class=HTMLResponse)
def sign_in_form(request: Request, next: str | None = None) -> Response:
    """The form that takes the API token (production); elsewhere, the page itself."""
    token = auth.session_token(_settings(request))
    target = _local_path(next)
    if auth.is_signed_in(request, token, _clock(request)):
        return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
    return _sign_in_form(request, target)


@public.post(SIGN_IN, response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    """The right token sets the session cookie and goes on; a wrong one is a 401
    with the form again."""
    token = auth.session_token(_settings(request))
    fields = _form(await request.body(), request.headers.get("content-type", ""))
    target = _local_path(fields.get("next"))
    if token is None:
        return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
    presented = fields.get("token", "")
    if not presented or not auth.token_matches(presented, token):
        return _sign_in_form(
            request, target, "That is not the API token (CHM_API_TOKEN).", status_code=401
        )
    response = RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
    auth.set_session_cookie(response, request, auth.issue_cookie(token, _clock(request)))
    return response


@public.post("/sign-out")
def sign_out(request: Request) -> Response:
    """Clears the session cookie (asked from this site only: another site's
    form could otherwise sign the operator out)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return HTMLResponse("Sign-out is asked from CHM's own pages.", 403, headers=PAGE_HEADERS)
    response = RedirectResponse(SIGN_IN, status_code=303, headers=PAGE_HEADERS)
    auth.clear_session_cookie(response, request)
    return response


def _form(body: bytes, content_type: str) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each); anything else is empty."""
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return {}
    try:
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=10)
    except ValueError:  # more fields than the form has
        return {}
    return {key: values[0][:MAX_TOKEN_FIELD] for key, values in parsed.items() if values}


def install_web(app: FastAPI) -> None:
    """Mount the pages, their static files and the sign-in check on ``app``."""
    app.state.web_clock = utcnow
    app.include_router(public)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(auth.SignInRequired, _sign_in_required)
