"""Prometheus metrics of the API, served at /metrics (prometheus-client)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry()
REQUESTS = Counter("yhf_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"],
                   registry=REGISTRY)
LATENCY = Histogram("yhf_http_request_seconds", "HTTP request latency by route", ["method", "route"],
                    registry=REGISTRY, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
PROBLEMS = Counter("yhf_problems_total", "problem+json answers by stable code", ["code"], registry=REGISTRY)
EVENTS = Counter("yhf_visit_events_total", "clinical events accepted by type", ["type"], registry=REGISTRY)
PAYMENTS = Counter("yhf_window_payments_fen_total", "money taken at the window, in fen, by method", ["method"],
                   registry=REGISTRY)


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def measure(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # the route's template, never the concrete path: ids stay out of label values
        name = getattr(route, "path", "unmatched")
        REQUESTS.labels(request.method, name, str(response.status_code)).inc()
        LATENCY.labels(request.method, name).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
