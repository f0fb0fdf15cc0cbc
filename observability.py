"""Logs, traces and the worker's own signals, set up once per process by the API and the worker.

- Logs: every stdlib logger (ours, uvicorn's, Temporal's) through one structlog formatter, JSON
  lines or readable text (YHF_LOG_FORMAT). Each line carries the ids in scope and nothing else
  of the record's extras: `request_id` (the API's edge), `visit_id`/`patient_id` (the route's
  path), `workflow_id`, `activity` (inside an activity, from `temporalio.activity.info()`), and
  `trace_id`/`span_id` when a span is current. Personal data never is a field.
- Traces: OpenTelemetry, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else
  nothing is recorded. FastAPI, the Temporal client and worker (TracingInterceptor) and the
  SQLAlchemy engines share one provider, so a HIS event is one trace: API -> update -> activity -> SQL.
- The worker: Temporal's SDK metrics on a Prometheus endpoint, and a tiny HTTP health answer.

A top-level module beside config.py: both api/ and worker.py import it, and it imports nothing of
the project (integrations/ holds clients of third parties, db/ and api/ are not the worker's).

Why structlog: its ProcessorFormatter renders the records of the standard `logging` (every logger
here and in the libraries stays as it is) through one chain of processors, JSON and text alike,
with contextvars for what a request binds; python-json-logger would give the JSON but not the
chain. The update's trace (`_UpdateInCallersTrace`) leans on TracingInterceptor's underscored
helpers: temporalio is pinned in pyproject.toml, and tests/api/test_observability.py fails if
they change."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import structlog
from opentelemetry import metrics as otel_metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity, workflow
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.contrib.opentelemetry._context import attached_context
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import HandleUpdateInput, WorkflowInterceptorClassInput

LogFormat = Literal["json", "text"]

# The ids of what is being done: one dict per request (the edge sets it, a route's path adds to it)
_CONTEXT: ContextVar[MutableMapping[str, str] | None] = ContextVar("yhf_log_context", default=None)
CONTEXT_FIELDS = ("request_id", "visit_id", "patient_id", "workflow_id", "activity")
_HANDLER_NAME = "yihoufu"


# ---------------------------------------------------------------------------------------------- logs


@contextmanager
def log_context(**fields: str) -> Iterator[MutableMapping[str, str]]:
    """A fresh set of ids for what runs inside (a request); `bind` adds to it from deeper down."""
    token = _CONTEXT.set({k: v for k, v in fields.items() if v})
    try:
        yield _CONTEXT.get() or {}
    finally:
        _CONTEXT.reset(token)


def bind(**fields: str | None) -> None:
    """Add ids to the current context (a no-op outside one). Only names of CONTEXT_FIELDS."""
    current = _CONTEXT.get()
    if current is None:
        return
    for name, value in fields.items():
        if name not in CONTEXT_FIELDS:
            raise ValueError(f"not a log context field: {name}")
        if value:
            current[name] = value


def _ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The ids in scope: the request's, Temporal's (a workflow's or activity's logger extras, or
    the running activity), the current span's. A record's other extras are never copied."""
    fields: dict[str, str] = dict(_CONTEXT.get() or {})
    record = event.get("_record")
    for extra in ("temporal_workflow", "temporal_activity"):
        details = getattr(record, extra, None)
        if isinstance(details, dict):
            fields.setdefault("workflow_id", str(details.get("workflow_id") or ""))
            if details.get("activity_type"):
                fields.setdefault("activity", str(details["activity_type"]))
    if activity.in_activity():
        info = activity.info()
        fields["activity"] = info.activity_type
        if info.workflow_id:
            fields["workflow_id"] = info.workflow_id
    workflow_id = fields.get("workflow_id", "")
    if workflow_id.startswith("visit-"):
        fields.setdefault("visit_id", workflow_id.removeprefix("visit-"))
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        fields["trace_id"] = format(span.trace_id, "032x")
        fields["span_id"] = format(span.span_id, "016x")
    for name, value in fields.items():
        if value:
            event.setdefault(name, value)
    return event


def _shared_processors() -> list[Any]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _ids,
        structlog.processors.format_exc_info,
    ]


def formatter(fmt: LogFormat) -> logging.Formatter:
    """One line per record: JSON (non-ASCII kept as is, so a search of the logs finds what is
    there) or key=value text for a terminal."""
    last: list[Any] = (
        [structlog.processors.EventRenamer("message"), structlog.processors.JSONRenderer(ensure_ascii=False)]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
    )


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """To whatever sys.stderr is when a record is written (a test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def setup_logging(fmt: LogFormat, level: str = "INFO", stream: Any = None) -> logging.Handler:
    """Our one handler on the root logger (a previous one of ours replaced, others left alone:
    pytest's stay); uvicorn's loggers hand their records to it. Idempotent."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # an HTTP client's INFO line is the URL it called (a third party's query may hold personal
    # data); aiosqlite's DEBUG lines are each statement with its parameters
    for name in ("httpx", "httpcore", "aiosqlite"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # the ids are fields of their own: Temporal need not append its info to each message
    json_lines = fmt == "json"
    workflow.logger.workflow_info_on_message = not json_lines
    activity.logger.activity_info_on_message = not json_lines
    structlog.configure(
        processors=[*_shared_processors()[:-1], structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler


# -------------------------------------------------------------------------------------------- traces

_provider: TracerProvider | None = None


def setup_tracing(service_name: str) -> TracerProvider | None:
    """OTLP/HTTP export when OTEL_EXPORTER_OTLP_ENDPOINT is set (the exporter reads the OTEL_*
    variables itself: endpoint, headers, timeout); else no provider and no instrumentation."""
    global _provider
    if _provider is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        name = os.environ.get("OTEL_SERVICE_NAME") or service_name
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _provider = provider
    return _provider


def tracer_provider() -> TracerProvider | None:
    return _provider


@contextmanager
def tracing(provider: TracerProvider) -> Iterator[TracerProvider]:
    """Use `provider` inside (a test's, with an in-memory exporter), the global one untouched."""
    global _provider
    before, _provider = _provider, provider
    try:
        yield provider
    finally:
        _provider = before


class _UpdateInCallersTrace(TracingWorkflowInboundInterceptor):
    """The SDK's workflow side puts an update's span in the trace of the workflow's start and only
    links the caller; here the update (and what its handler runs: the activity, its SQL) goes on
    in the caller's trace, linked to the workflow's. A HIS event is then one trace."""

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        header = input.headers.get(self.header_key)
        if not header:
            return await super().handle_update_handler(input)
        carrier = self.payload_converter.from_payloads([header])[0]
        caller = self._set_on_context(self.text_map_propagator.extract(carrier))
        with attached_context(caller):
            self._completed_span(
                f"HandleUpdate:{input.update}",
                link_context_carrier=self._load_workflow_context_carrier(),
                kind=trace.SpanKind.SERVER,
            )
            return await self.next.handle_update_handler(input)


class Tracing(TracingInterceptor):
    """temporalio.contrib.opentelemetry's TracingInterceptor, updates in their caller's trace."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)  # registers the span extern
        return _UpdateInCallersTrace


def temporal_interceptors() -> list[TracingInterceptor]:
    """For Client.connect(interceptors=...) (a worker on that client inherits them) or Worker(interceptors=...)."""
    if _provider is None:
        return []
    return [Tracing(_provider.get_tracer("yihoufu.temporal"))]


def instrument_app(app: Any) -> None:
    """The FastAPI server spans (a no-op when tracing is off)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        excluded_urls="healthz,livez,readyz,metrics",
        exclude_spans=["receive", "send"],  # a span per ASGI message is noise
    )


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per SQL statement on this engine (a no-op when tracing is off). The engine is
    instrumented alone: SQLAlchemyInstrumentor is a singleton that would patch create_engine."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    usage = otel_metrics.NoOpMeter("yihoufu.db").create_up_down_counter("db.client.connections.usage")
    EngineTracer(_provider.get_tracer("yihoufu.db"), engine.sync_engine, usage)  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------------------------- worker signals


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"an address is host:port, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def temporal_runtime(metrics_address: str) -> Runtime:
    """A Temporal runtime whose SDK metrics (temporal_*) are served at http://ADDRESS/metrics.
    Set it as the default before the first client connects."""
    split_address(metrics_address)  # a bad address fails here, not in the core's thread
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics_address)))


async def serve_health(address: str, ready: Callable[[], Awaitable[bool]]) -> asyncio.Server:
    """GET /livez: 200 while the process answers; GET /healthz or /readyz: 200 when `ready()`
    (the worker runs and Temporal answers), else 503. HTTP/1.0, one request per connection."""
    host, port = split_address(address)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)).strip():
                pass  # the headers: nothing in them matters
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, body = 405, {"status": "method not allowed"}
            elif path == "/livez":
                status, body = 200, {"status": "ok"}
            elif path in ("/healthz", "/readyz"):
                ok = await _safely(ready)
                status, body = (200, {"status": "ok"}) if ok else (503, {"status": "unavailable"})
            else:
                status, body = 404, {"status": "not found"}
            payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            head = (
                f"HTTP/1.0 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (payload if parts[0] != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


async def _safely(ready: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await asyncio.wait_for(ready(), timeout=5)
    except Exception:
        return False


def worker_ready(worker: Any, client: Any) -> Callable[[], Awaitable[bool]]:
    """Ready: the worker is running (polling its task queue) and Temporal answers a health check."""

    async def ready() -> bool:
        if not worker.is_running or worker.is_shutdown:
            return False
        return bool(await client.service_client.check_health())

    return ready


def interceptors_for(client: Any, given: Sequence[Any]) -> list[Any]:
    """The worker's interceptors: `given`, less a tracing one the client already has (the worker
    inherits the client's; two would trace each step twice)."""
    has_tracing = any(isinstance(i, TracingInterceptor) for i in client.config().get("interceptors", []))
    return [i for i in given if not (has_tracing and isinstance(i, TracingInterceptor))]
