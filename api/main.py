"""The HTTP API: `create_app()` builds it; `uvicorn api.main:create_app --factory` serves it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RetryConfig

import observability
from api import errors, metrics, middleware
from api.deps import AppState
from api.routes import codec, credit, his, ops, oversight, patient, payments, sandbox
from config import Settings, get_settings
from db.pii import Pii
from db.session import create_engine, session_factory
from db.sms import OutboxSender
from integrations.factory import Integrations, build_integrations
from integrations.temporal import connect

log = logging.getLogger("yihoufu.api")
STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    settings: Settings | None = None, *, temporal: Client | None = None, integrations: Integrations | None = None
) -> FastAPI:
    """The app; `integrations` injected (tests: the same as their worker's), else built from
    the settings when it starts."""
    settings = settings or get_settings()
    observability.setup_logging(settings.log_format or "json", settings.log_level)
    observability.setup_tracing("yihoufu-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = create_engine(settings.database_url)
            observability.instrument_engine(engine)
            stack.push_async_callback(engine.dispose)
            factory = session_factory(engine)
            # lazy: the API starts (and /healthz says so) while Temporal is still coming up
            client = temporal or await connect_temporal(settings)
            parties = integrations or build_integrations(settings, stack)
            app.state.yhf = app_state(settings, factory, client, parties)
            yield

    app = FastAPI(
        title="Yihoufu (医后付) API",
        version="1.0",
        description="Treat first, pay later: clinical systems book every charge to the visit, "
        "patients pay the merged bill once after they leave.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        dependencies=[Depends(middleware.bind_path_ids)],
    )
    errors.install(app)
    errors.document(app)
    codec.install(app, settings)  # Temporal UI's codec calls: CORS and who, just inside the edge
    middleware.install(app, settings)
    metrics.install(app)  # outermost: it counts the edge's refusals too
    observability.instrument_app(app)  # the server span, around all of the above (tracing on only)
    include_routes(app, settings)
    return app


def include_routes(app: FastAPI, settings: Settings) -> None:
    for router in (his.router, ops.router, oversight.router, patient.router, payments.router, codec.router):
        app.include_router(router)
    app.include_router(credit.router)  # the credit platform's signed calls (objections)
    if settings.sandbox:
        app.include_router(sandbox.router)
    # the patient's phone app (a PWA): static files, talking to /v1/patient/*
    app.mount("/app", StaticFiles(directory=STATIC / "app", html=True), name="app")
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"])
    app.add_api_route("/readyz", healthz, methods=["GET"], tags=["health"])  # readiness: /healthz's checks
    app.add_api_route("/livez", livez, methods=["GET"], tags=["health"])


async def livez() -> Any:
    """Liveness: 200 while the process answers. What it cannot reach is /readyz's business: restarting
    the API would not bring the database or Temporal back."""
    return JSONResponse({"status": "ok"})


async def healthz(request: Request) -> Any:
    """200 when the API reaches its database and Temporal; 503 naming what it cannot reach."""
    state: AppState = request.app.state.yhf
    checks: dict[str, str] = {}
    try:
        async with state.factory() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as err:
        checks["database"] = f"error: {type(err).__name__}"
    try:
        await state.temporal.service_client.check_health()
        checks["temporal"] = "ok"
    except Exception as err:
        checks["temporal"] = f"error: {type(err).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)


def app_state(
    settings: Settings, factory: async_sessionmaker[AsyncSession], temporal: Client, parties: Integrations
) -> AppState:
    """What the routes share; texts go through the outbox, then the SMS gateway if there is one."""
    pii = Pii(settings.data_key)
    return AppState(
        settings=settings,
        factory=factory,
        temporal=temporal,
        pii=pii,
        sms=OutboxSender(factory, pii, parties.sms),
        credit=parties.credit,
        bureau=parties.bureau,
        ebill=parties.ebill,
        channels=parties.channels,
    )


async def connect_temporal(settings: Settings) -> Client:
    """Lazy: the API starts (and /healthz says so) while Temporal is still coming up. An
    unreachable Temporal is retried for `engine_wait`, not the SDK's ~10 s; the caller then
    gets 503 engine_unavailable. TLS, API key and the payload codec as the worker's
    (integrations/temporal.py)."""
    wait_ms = int(settings.engine_wait.total_seconds() * 1000)
    return await connect(
        settings,
        lazy=True,
        retry_config=RetryConfig(max_elapsed_time_millis=wait_ms),
        interceptors=observability.temporal_interceptors(),  # tracing, when on
    )
