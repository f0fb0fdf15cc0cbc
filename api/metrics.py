"""Prometheus metrics of the API, served at /metrics (prometheus-client)."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.models import InsuranceSettlement
from db.receipts import BACKLOG_KINDS, ebill_backlog
from db.repositories import utcnow

log = logging.getLogger("yihoufu.api.metrics")

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "yhf_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "yhf_http_request_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROBLEMS = Counter("yhf_problems_total", "problem+json answers by stable code", ["code"], registry=REGISTRY)
EVENTS = Counter("yhf_visit_events_total", "clinical events accepted by type", ["type"], registry=REGISTRY)
PAYMENTS = Counter(
    "yhf_window_payments_fen_total", "money taken at the window, in fen, by method", ["method"], registry=REGISTRY
)

# What patients owe, read from the ledger at each scrape (every API replica reports the same
# figures: a dashboard takes their max, never their sum)
RECEIVABLE_FEN = Gauge(
    "yhf_receivables_fen", "what discharged patients owe, in fen, by payment status", ["status"], registry=REGISTRY
)
RECEIVABLE_VISITS = Gauge(
    "yhf_receivable_visits", "visits with something owed, by payment status", ["status"], registry=REGISTRY
)
RECEIVABLES_READ = Gauge(
    "yhf_receivables_read_ok", "1 when the last scrape read the receivables, 0 when it could not", registry=REGISTRY
)
# The fiscal e-bills the platform still owes (db/receipts.py ebill_backlog): an outage leaves bills
# to issue, swept by the morning statement run; refused ones wait for an operator
EBILLS_OWED = Gauge("yhf_ebills_owed", "fiscal e-bills the platform still owes, by kind", ["kind"], registry=REGISTRY)
EBILL_OLDEST = Gauge(
    "yhf_ebill_owed_oldest_seconds", "age of the oldest e-bill owed, by kind (0: none)", ["kind"], registry=REGISTRY
)
MOBILE_HELD = Gauge(
    "yhf_mobile_orders_held",
    "医保移动支付 orders paid at the bureau that we could not book (another split, an unexpected ordStas): "
    "their visits on hold until a person reconciles them",
    registry=REGISTRY,
)
SCRAPE_READ_TIMEOUT = 5.0  # seconds: a scrape never waits longer on the database


class Measure:
    """Pure ASGI, outermost: counts every answer, the edge's refusals included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # the route's template, never the concrete path: ids stay out of label values
            name = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], name, str(status)).inc()
            LATENCY.labels(scope["method"], name).observe(time.perf_counter() - start)


def install(app: FastAPI) -> None:
    """Outside the sandbox the edge lets only the ops key or YHF_METRICS_TOKEN read /metrics."""
    app.add_middleware(Measure)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        await refresh_receivables(request)
        await refresh_ebills(request)
        await refresh_mobile_held(request)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def refresh_receivables(request: Request) -> None:
    """The receivables gauges from the ledger (api.ops.receivables: an index of payment statuses);
    a database that does not answer leaves them as they were and says so in yhf_receivables_read_ok."""
    from api.ops import receivables  # api.ops -> api.errors -> this module

    state = getattr(request.app.state, "yhf", None)
    if state is None:  # not started (no lifespan): nothing to read from
        return
    try:
        async with state.factory() as session:
            owed = await asyncio.wait_for(receivables(session), timeout=SCRAPE_READ_TIMEOUT)
    except Exception as err:
        log.warning("metrics: receivables not read (%s)", type(err).__name__)
        RECEIVABLES_READ.set(0)
        return
    for status in ("open", "due", "arrears", "defaulted"):
        bucket = getattr(owed, status)
        RECEIVABLE_FEN.labels(status).set(bucket.balance_fen)
        RECEIVABLE_VISITS.labels(status).set(bucket.visits)
    RECEIVABLES_READ.set(1)


async def refresh_ebills(request: Request) -> None:
    """The e-bill backlog gauges; a database that does not answer leaves them as they were."""
    state = getattr(request.app.state, "yhf", None)
    if state is None:
        return
    try:
        async with state.factory() as session:
            owed = await asyncio.wait_for(ebill_backlog(session), timeout=SCRAPE_READ_TIMEOUT)
    except Exception as err:
        log.warning("metrics: e-bill backlog not read (%s)", type(err).__name__)
        return
    now = utcnow()
    for kind in BACKLOG_KINDS:
        EBILLS_OWED.labels(kind).set(owed.counts[kind])
        oldest = owed.oldest.get(kind)
        EBILL_OLDEST.labels(kind).set(max(0.0, (now - oldest).total_seconds()) if oldest else 0)


async def refresh_mobile_held(request: Request) -> None:
    """Mobile orders still paying with a detail recorded: only a 6301 we could not book writes
    one (activities/insurance_mobile.py); a database that does not answer leaves it as it was."""
    state = getattr(request.app.state, "yhf", None)
    if state is None:
        return
    query = select(func.count()).where(
        InsuranceSettlement.mode == "mobile",
        InsuranceSettlement.status == "paying",
        InsuranceSettlement.detail.is_not(None),
    )
    try:
        async with state.factory() as session:
            held = await asyncio.wait_for(session.scalar(query), timeout=SCRAPE_READ_TIMEOUT)
    except Exception as err:
        log.warning("metrics: mobile orders held not read (%s)", type(err).__name__)
        return
    MOBILE_HELD.set(held or 0)
