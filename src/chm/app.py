"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from chm import __version__
from chm.alert_rules.router import router as alert_rules_router
from chm.clients.router import router as clients_router
from chm.core.auth import BearerTokenMiddleware
from chm.core.body_limit import BodyLimitMiddleware
from chm.core.db import create_async_db_engine, create_db_engine, make_session_factory
from chm.core.errors import (
    PROBLEM_RESPONSES,
    install_error_handlers,
    install_problem_openapi,
    problem_responses,
)
from chm.core.settings import Environment, Settings, get_settings
from chm.core.shutdown import ShutdownAnswerMiddleware
from chm.ingestion.lineage.router import router as lineage_router
from chm.ingestion.router import router as ingestion_router
from chm.ingestion.sources_cache import SourcesCache
from chm.pipelines.router import router as pipelines_router
from chm.reports.router import router as reports_router
from chm.runs.router import router as runs_router

logger = logging.getLogger("chm.app")

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.register_secrets()  # no log line of the server may show them
    owns_engine = engine is None
    engine = engine or create_db_engine(settings.effective_database_url)
    async_engine = create_async_db_engine(engine.url.render_as_string(hide_password=False))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await async_engine.dispose()
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
    app.state.read_sessions = make_session_factory(engine)
    app.state.write_sessions = make_session_factory(engine, write=True)
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
    # An oversized body is refused before anything else reads it.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Outermost: a request cancelled by the bounded shutdown gets a 503, not a bare 500.
    app.add_middleware(ShutdownAnswerMiddleware)

    api = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES)
    for router in (
        clients_router,
        pipelines_router,
        runs_router,
        alert_rules_router,
        ingestion_router,
        lineage_router,
        reports_router,
    ):
        api.include_router(router)
    app.include_router(api)

    @app.get("/healthz", tags=["health"], responses=problem_responses(503))
    def healthz() -> JSONResponse:
        """200 when the database answers."""
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return JSONResponse({"status": "ok", "database": engine.dialect.name})

    install_problem_openapi(app)
    return app
