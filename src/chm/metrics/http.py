"""HTTP request counts and durations, recorded by a middleware.

Every request is counted once, whatever answered it (a route, the bearer
token's 401, the body limit's 413, the shutdown's 503, a 404 for a path no
route knows), and timed from its arrival to the end of its response body.
Labels are bounded: the method (one of ``METHODS``, else ``other``), the
route's template (``/api/v1/pipelines/{pipeline_id}``; ``unmatched`` for a
path no route matches), and the status code, never the raw path.

The two metrics are this process's (prometheus_client's default registry).
Under ``chm serve --workers N`` each process writes them to the shared
multiprocess directory and a scrape answered by any process adds them all up
(``chm.metrics.multiprocess``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi.routing import iter_route_contexts
from prometheus_client import Counter, Histogram, disable_created_metrics
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The methods that label themselves; any other word a client sends is "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# The route label of a request no route matches (a 404, a redirect to the
# path with or without its trailing slash).
UNMATCHED = "unmatched"

# No ``*_created`` series: the multiprocess mode has none, and a scrape
# should show the same series whichever mode the server runs in.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUESTS = Counter(
    "chm_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
DURATION = Histogram(
    "chm_http_request_duration_seconds",
    "Time from an HTTP request's arrival to the end of its response, by method and route template",
    ["method", "route"],
)


class RouteTemplates:
    """Which route template a request's path and method match, as the router would
    choose it: the first full match, else the first route of the path with
    another method (a 405), else ``UNMATCHED``.

    Matched here rather than read from the router's ``scope["route"]``: that is
    the route as its ``APIRouter`` declared it (``/clients``, without the
    ``/api/v1`` prefix it is included under), and requests answered before
    routing (the bearer token's 401, the body limit's 413) have none. The
    routes are FastAPI's effective ones, prefixes included
    (``fastapi.routing.iter_route_contexts``), listed at the first request,
    once the application is built."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = routes
        self._effective: list[tuple[Any, str]] | None = None

    def _effective_routes(self) -> list[tuple[Any, str]]:
        if self._effective is None:
            self._effective = [
                (context, context.path_format)
                for context in iter_route_contexts(self.routes)
                if context.path_format
            ]
        return self._effective

    def of(self, scope: Scope) -> str:
        """The template ``scope`` (its type, method, path and root path) matches."""
        partial = None
        for route, template in self._effective_routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return template
            if match is Match.PARTIAL and partial is None:
                partial = template
        return partial or UNMATCHED


class HttpMetricsMiddleware:
    """Counts and times each HTTP request (pure ASGI: a streamed body is timed to
    its end). ``routes``: the application's, whose templates label the requests."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.templates = RouteTemplates(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # What the route is matched on, as it arrived (routing may change the root path).
        request = {key: scope.get(key, "") for key in ("type", "method", "path", "root_path")}
        # An exception before any response becomes Starlette's 500.
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            route = self.templates.of(request)
            REQUESTS.labels(method, route, str(status)).inc()
            DURATION.labels(method, route).observe(time.perf_counter() - started)

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the last part goes out: a client that has its whole
                # answer finds it counted by the next scrape.
                record()
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            record()
