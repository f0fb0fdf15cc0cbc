"""The HTTP API: `create_app()` builds it; `uvicorn api.main:create_app --factory` serves it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from temporalio.client import Client

from api import errors, metrics
from api.deps import AppState
from api.routes import his, ops, patient, payments, sandbox
from config import Settings, get_settings
from db.pii import Pii
from db.session import create_engine, session_factory
from integrations.factory import build_integrations

log = logging.getLogger("yihoufu.api")
STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: Settings | None = None, *, temporal: Client | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = create_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            factory = session_factory(engine)
            # lazy: the API starts (and /healthz says so) while Temporal is still coming up
            client = temporal or await Client.connect(settings.temporal_address, lazy=True,
                                                      namespace=settings.temporal_namespace)
            integrations = build_integrations(settings, factory, stack)
            app.state.yhf = AppState(settings=settings, factory=factory, temporal=client,
                                     pii=Pii(settings.data_key), sms=integrations.sms, credit=integrations.credit,
                                     bureau=integrations.bureau, channels=integrations.channels)
            yield

    app = FastAPI(
        title="Yihoufu (医后付) API",
        version="1.0",
        description="Treat first, pay later: clinical systems book every charge to the visit, "
                    "patients pay the merged bill once after they leave.",
        lifespan=lifespan,
    )
    errors.install(app)
    metrics.install(app)
    app.include_router(his.router)
    app.include_router(ops.router)
    app.include_router(patient.router)
    app.include_router(payments.router)
    if settings.sandbox:
        app.include_router(sandbox.router)
    # the patient's phone app (a PWA): static files, talking to /v1/patient/*
    app.mount("/app", StaticFiles(directory=STATIC / "app", html=True), name="app")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Any:
        state: AppState = app.state.yhf
        checks: dict[str, str] = {}
        try:
            async with state.factory() as session:
                await session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as err:  # noqa: BLE001 - any failure means unhealthy
            checks["database"] = f"error: {type(err).__name__}"
        try:
            await state.temporal.service_client.check_health()
            checks["temporal"] = "ok"
        except Exception as err:  # noqa: BLE001
            checks["temporal"] = f"error: {type(err).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    return app
