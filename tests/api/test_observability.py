"""Observability through the real stack in-process (issue 11 item 5): the API over ASGI, a worker
on the session's dev server, both wired as `create_app` and `create_worker` wire them.

- A HIS event is ONE trace: the API's server span, the update, the activity, its SQL.
- The worker's Temporal SDK metrics are served on its runtime's Prometheus endpoint.
- The worker's health answer: 200 while it polls, 503 once it stopped.
- Every JSON log line of a visit carries its ids and none of the patient's personal data."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
import temporalio.activity
import temporalio.workflow
from fastapi import APIRouter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import observability
from api.main import create_app
from config import Settings
from db.session import create_engine, session_factory
from integrations.factory import Integrations
from tests.flows import Clinic, item, random_id_number, random_phone
from tests.support import free_port, uid
from worker import create_worker


@dataclass
class Traced:
    http: httpx.AsyncClient
    clinic: Clinic
    spans: InMemorySpanExporter
    logs: io.StringIO
    worker: Worker
    worker_client: Client
    metrics_url: str


@pytest.fixture
async def traced(
    temporal_env: WorkflowEnvironment, settings: Settings, integrations: Integrations
) -> AsyncIterator[Traced]:
    """The API and a worker with tracing on (an in-memory exporter), the worker's client on a
    runtime serving Prometheus metrics, and the JSON logs in a buffer."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    target = temporal_env.client.service_client.config.target_host
    metrics_address = f"127.0.0.1:{free_port()}"
    logs = io.StringIO()
    root = logging.getLogger()
    level = root.level
    on_message = (
        temporalio.workflow.logger.workflow_info_on_message,
        temporalio.activity.logger.activity_info_on_message,
    )
    async with AsyncExitStack() as stack:
        stack.enter_context(observability.tracing(provider))
        runtime = observability.temporal_runtime(metrics_address)
        worker_client = await Client.connect(target, runtime=runtime)
        engine = create_engine(settings.database_url)
        observability.instrument_engine(engine)
        stack.push_async_callback(engine.dispose)
        worker = create_worker(worker_client, settings, session_factory(engine), stack, integrations=integrations)
        await stack.enter_async_context(worker)
        # the API connects as it does in production (api.main.connect_temporal), to the session's server
        app = create_app(settings.model_copy(update={"temporal_address": target}), integrations=integrations)

        probe = APIRouter(prefix="/v1/his")  # a router that logs, included as the product's are

        @probe.get("/visits/{visit_id}/probe")
        async def probed(visit_id: str) -> dict[str, str]:
            logging.getLogger("yihoufu.api.probe").warning("probed")
            return {}

        app.include_router(probe)
        # after create_app (which sets up the settings' format): JSON lines into the buffer, DEBUG
        # for more lines to search for the markers
        handler = observability.setup_logging("json", "DEBUG", stream=logs)
        stack.callback(root.removeHandler, handler)
        stack.callback(root.setLevel, level)
        stack.callback(restore_on_message, *on_message)
        await stack.enter_async_context(app.router.lifespan_context(app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30)
        )
        his = {"Authorization": f"Bearer {settings.his_api_key}"}
        yield Traced(
            http, Clinic.over(http, his), spans, logs, worker, worker_client, f"http://{metrics_address}/metrics"
        )


def restore_on_message(workflow: bool, activity: bool) -> None:
    temporalio.workflow.logger.workflow_info_on_message = workflow
    temporalio.activity.logger.activity_info_on_message = activity


def named(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


async def test_a_his_event_is_one_trace_from_the_api_to_the_sql(traced: Traced) -> None:
    patient_id, _ = await traced.clinic.enrolled_patient()
    visit_id = (await traced.clinic.register(patient_id))["visit_id"]
    await traced.clinic.event(visit_id, "checked_in", channel="app")
    traced.spans.clear()

    r = await traced.http.post(
        f"/v1/his/visits/{visit_id}/events",
        json={"event_id": uid("ev"), "type": "called", "occurred_at": "2026-01-05T09:00:00+08:00"},
        headers={"Authorization": "Bearer dev-his-key", "X-Request-Id": "req-trace-1"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "req-trace-1"

    spans = traced.spans.get_finished_spans()
    server = [
        s
        for s in spans
        if s.attributes and s.attributes.get("http.route") == "/v1/his/visits/{visit_id}/events" and not s.parent
    ]
    assert len(server) == 1, [s.name for s in spans]
    trace_id = server[0].context.trace_id
    in_trace = tuple(s for s in spans if s.context.trace_id == trace_id)
    names = sorted({s.name for s in in_trace})
    assert named(in_trace, "StartWorkflowUpdate:record_event"), names  # the API's client
    assert named(in_trace, "HandleUpdate:record_event"), names  # the workflow
    assert named(in_trace, "RunActivity:apply_visit_event"), names  # the worker's activity
    activity = named(in_trace, "RunActivity:apply_visit_event")[0]
    # SQL below the activity: a statement whose parent is the activity's span (the worker's engine)
    below = [s for s in in_trace if s.parent and s.parent.span_id == activity.context.span_id]
    assert any(
        (s.attributes and "db.system" in s.attributes) or "db.system.name" in (s.attributes or {}) for s in below
    ), [(s.name, dict(s.attributes or {})) for s in below]
    assert all(s.context.trace_id == trace_id for s in in_trace)


async def test_the_worker_serves_temporal_sdk_metrics(traced: Traced) -> None:
    patient_id, _ = await traced.clinic.enrolled_patient()
    visit_id = (await traced.clinic.register(patient_id))["visit_id"]
    await traced.clinic.event(visit_id, "checked_in", channel="app")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(traced.metrics_url)
    assert r.status_code == 200
    names = {line.split("{")[0].split(" ")[0] for line in r.text.splitlines() if line and not line.startswith("#")}
    # the workflow tasks and the activities this worker ran
    assert "temporal_workflow_task_schedule_to_start_latency_bucket" in names, sorted(names)
    assert "temporal_local_activity_execution_latency_bucket" in names, sorted(names)  # the bookings
    assert f'task_queue="{traced.worker.task_queue}"' in r.text


async def test_the_worker_health_answer(traced: Traced) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = await observability.serve_health(address, observability.worker_ready(traced.worker, traced.worker_client))
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/livez")).status_code == 200
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/healthz")).status_code == 405
            await traced.worker.shutdown()
            r = await http.get("/healthz")
            assert r.status_code == 503 and r.json() == {"status": "unavailable"}
            assert (await http.get("/livez")).status_code == 200  # alive, not ready
    finally:
        server.close()
        await server.wait_closed()


async def test_json_logs_carry_the_ids_and_no_personal_data(traced: Traced) -> None:
    """The canary of test_privacy, in-process over JSON lines: a patient with marker values runs a
    visit; each line is JSON, the lines of the visit carry its ids, no line holds a marker."""
    name, id_number, phone = "标记" + uid()[:4], random_id_number(), random_phone()
    r = await traced.http.post(
        "/v1/his/patients",
        headers={"Authorization": "Bearer dev-his-key"},
        json={
            "card_type": "id_card",
            "card_no": uid("ID"),
            "name": name,
            "id_number": id_number,
            "phone": phone,
            "insured_locally": True,
        },
    )
    patient_id = r.json()["patient_id"]
    await traced.clinic.enrol(patient_id, phone)
    visit_id = (await traced.clinic.register(patient_id))["visit_id"]
    await traced.clinic.event(visit_id, "checked_in", channel="app")
    await traced.clinic.event(visit_id, "called")
    await traced.clinic.event(visit_id, "consultation_started")
    await traced.clinic.event(visit_id, "orders_placed", items=[item("x", "lab", 1000)])
    r = await traced.http.get(
        f"/v1/his/visits/{visit_id}/probe", headers={"Authorization": "Bearer dev-his-key", "X-Request-Id": "req-log-1"}
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-log-1"

    text = traced.logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert lines and all({"message", "level", "timestamp", "logger"} <= line.keys() for line in lines)
    for marker in (name, id_number, phone, phone[3:]):
        assert marker not in text, f"{marker!r} found in the JSON logs"
    probed = [line for line in lines if line["message"] == "probed"]
    assert len(probed) == 1, lines[-10:]
    assert probed[0]["request_id"] == "req-log-1" and probed[0]["visit_id"] == visit_id
    assert probed[0]["workflow_id"] == f"visit-{visit_id}" and len(probed[0]["trace_id"]) == 32
    assert probed[0]["level"] == "warning" and probed[0]["logger"] == "yihoufu.api.probe"
    # inside the worker's activities (the SDK's DEBUG lines): the activity, its workflow and visit
    ran = [line for line in lines if line.get("activity") and line.get("visit_id") == visit_id]
    assert {line["activity"] for line in ran} >= {"book_registration", "apply_visit_event"}, lines
    assert all(line["workflow_id"] == f"visit-{visit_id}" for line in ran)
    # nothing of the record's extras beyond the ids
    assert set(probed[0]) <= {
        "message",
        "level",
        "timestamp",
        "logger",
        "request_id",
        "visit_id",
        "workflow_id",
        "patient_id",
        "activity",
        "trace_id",
        "span_id",
    }


async def test_the_api_reports_receivables_read_from_the_ledger(traced: Traced) -> None:
    patient_id, _ = await traced.clinic.enrolled_patient()
    visit_id = (await traced.clinic.register(patient_id, fee=700))["visit_id"]
    visit = await traced.clinic.event(visit_id, "discharged")
    assert visit["payment_status"] == "due"
    text = (await traced.http.get("/metrics")).text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("yhf_receivable", "yhf_receivables"))
    }
    assert values["yhf_receivables_read_ok"] == 1.0
    # the session's database holds other tests' visits too: at least this one
    assert values['yhf_receivable_visits{status="due"}'] >= 1
    assert values['yhf_receivables_fen{status="due"}'] >= 700
    assert {f'yhf_receivables_fen{{status="{s}"}}' for s in ("open", "due", "arrears", "defaulted")} <= values.keys()


async def test_liveness_and_readiness(traced: Traced) -> None:
    assert (await traced.http.get("/livez")).json() == {"status": "ok"}
    ready = await traced.http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "database": "ok", "temporal": "ok"}
    assert (await traced.http.get("/healthz")).json() == ready.json()  # the contract's /healthz unchanged
