"""The FastAPI application factory."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from chm import __version__
from chm.alert_rules.router import router as alert_rules_router
from chm.alerts.router import router as alerts_router
from chm.clients.router import router as clients_router
from chm.core.auth import BearerTokenMiddleware
from chm.core.body_limit import BodyLimitMiddleware
from chm.core.db import (
    create_async_db_engine,
    create_db_engine,
    create_read_engines,
    create_write_engine,
    database_answers,
    make_report_session_factory,
    make_session_factory,
)
from chm.core.errors import (
    PROBLEM_RESPONSES,
    ServiceUnavailable,
    Unauthorized,
    install_error_handlers,
    install_problem_openapi,
    problem_responses,
    render_error,
)
from chm.core.settings import Environment, Settings, get_settings
from chm.core.shutdown import ShutdownAnswerMiddleware
from chm.core.timeutil import utcnow
from chm.ingestion.batch.router import router as batch_router
from chm.ingestion.config import ConfigError, Sources
from chm.ingestion.health import source_health
from chm.ingestion.lineage.router import router as lineage_router
from chm.ingestion.router import router as ingestion_router
from chm.ingestion.sources_cache import SourcesCache
from chm.metrics.http import HttpMetricsMiddleware
from chm.metrics.router import METRICS_PATH
from chm.metrics.router import router as metrics_router
from chm.pipelines.router import router as pipelines_router
from chm.reports.router import router as reports_router
from chm.runs.router import router as runs_router
from chm.web.router import install_web

logger = logging.getLogger("chm.app")

API_PREFIX = "/api/v1"


def _may_see_detail(request: Request, settings: Settings) -> bool:
    """In production the health detail (source names, errors, hosts) needs the
    API token, compared in constant time as for /api/v1; elsewhere it is open."""
    if settings.env is not Environment.production:
        return True
    if settings.api_token is None or not settings.api_token.get_secret_value():
        return False
    expected = f"Bearer {settings.api_token.get_secret_value()}".encode()
    return hmac.compare_digest(request.headers.get("authorization", "").encode(), expected)


def _health_detail(request: Request, settings: Settings, connection: Connection) -> dict[str, Any]:
    """Each source's health and the workers alive; a sources file that cannot be
    loaded leaves ``sources`` empty and says why in ``sources_error``."""
    cache: SourcesCache = request.app.state.sources
    try:
        sources, problem = cache.load(settings.config, settings.env), None
    except ConfigError as error:
        sources, problem = Sources([]), str(error)
    try:
        health = source_health(connection, sources, utcnow(), lease_s=settings.worker_lease_s)
    except SQLAlchemyError as error:
        # The database answered SELECT 1 but not this (a schema behind the
        # code's): an outage of the detail, never a 500.
        logger.error("health detail unavailable: %s", type(error).__name__)
        raise ServiceUnavailable(
            "The ingestion health could not be read; is the schema at head (chm db upgrade)?"
        ) from None
    health.sources_error = problem
    return health.model_dump(mode="json")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.register_secrets()  # no log line of the server may show them
    owns_engine = engine is None
    pools = settings.pool_options
    engine = engine or create_db_engine(settings.effective_database_url, **pools)
    async_engine = create_async_db_engine(engine.url.render_as_string(hide_password=False), **pools)
    write_async_engine = create_write_engine(async_engine)
    # Reports, the pages and /metrics read from CHM_READ_DATABASE_URL (a
    # replica) when it is set; everything else from the primary.
    report_engine, report_async_engine = (
        create_read_engines(settings.effective_read_database_url, engine, async_engine, **pools)
        if settings.read_database_url is not None
        else (engine, async_engine)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await async_engine.dispose()
        if write_async_engine is not async_engine:
            await write_async_engine.dispose()
        if report_async_engine is not async_engine:
            await report_async_engine.dispose()
            report_engine.dispose()
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="CHM",
        version=__version__,
        summary="Pipeline run health: inventory, run history, ingestion and health outputs.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.async_engine = async_engine
    app.state.write_async_engine = write_async_engine
    app.state.read_sessions = make_session_factory(engine)
    app.state.write_sessions = make_session_factory(engine, write=True)
    app.state.report_engine = report_engine
    app.state.report_async_engine = report_async_engine
    app.state.report_sessions = make_report_session_factory(report_engine)
    # The sources file (CHM_CONFIG), read again only when it changes.
    app.state.sources = SourcesCache()
    install_error_handlers(app)
    if settings.env is Environment.production and settings.api_token is not None:
        app.add_middleware(
            BearerTokenMiddleware,
            token=settings.api_token.get_secret_value(),
            prefix=API_PREFIX,
            exempt=(f"{API_PREFIX}/lineage",),
        )
        # The metrics name the clients and sources: the same token as the API.
        app.add_middleware(
            BearerTokenMiddleware, token=settings.api_token.get_secret_value(), prefix=METRICS_PATH
        )
    # An oversized body is refused before anything else reads it.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # A request cancelled by the bounded shutdown gets a 503, not a bare 500.
    app.add_middleware(ShutdownAnswerMiddleware)
    # Outermost: every request counted and timed, with the answer it really got.
    app.add_middleware(HttpMetricsMiddleware, routes=app.router.routes)

    api = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES)
    # The hot paths first: a request is matched against the routes in order.
    for router in (
        runs_router,
        clients_router,
        pipelines_router,
        alert_rules_router,
        alerts_router,
        ingestion_router,
        lineage_router,
        batch_router,
        reports_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(metrics_router)
    # The operator pages (docs/web.md): their own sign-in, never the API's token check.
    install_web(app)

    @app.get("/healthz", tags=["health"], responses=problem_responses(401, 422, 503))
    def healthz(
        request: Request,
        detail: Annotated[
            bool,
            Query(
                description="Add each source's ingestion health and the workers alive "
                "(docs/health.md); in production it needs the API token"
            ),
        ] = False,
    ) -> JSONResponse:
        """200 when the database answers, whatever the sources' health (a stale
        source is data, not an outage); 503 when it does not. With a read
        database (CHM_READ_DATABASE_URL), ``read_database`` says whether it
        answers: the reports and pages need it, the writes do not."""
        if detail and not _may_see_detail(request, settings):
            response = render_error(
                Unauthorized("The detail needs a valid 'Authorization: Bearer <token>' header")
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        body: dict[str, object] = {"status": "ok", "database": engine.dialect.name}
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
            if detail:
                body |= _health_detail(request, settings, connection)
        if report_engine is not engine:
            body["read_database"] = "ok" if database_answers(report_engine) else "unavailable"
        return JSONResponse(body)

    install_problem_openapi(app)
    return app
