"""observability.py on its own: the log lines' fields and formats, the context of a request kept
to that request, the ids inside an activity, the health answer's edges, the settings."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

import observability
from config import Settings
from tests.support import free_port


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = observability.setup_logging("json", "INFO", stream=buf)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_a_line_carries_the_ids_in_scope_and_keeps_chinese_readable(json_logs: io.StringIO) -> None:
    log = logging.getLogger("yihoufu.test")
    with observability.log_context(request_id="req-1"):
        observability.bind(visit_id="V1", workflow_id="visit-V1", patient_id=None)
        log.info("收到 %s", "事件", extra={"patient_name": "张三", "phone": "13800000000"})
    log.info("outside")
    inside, outside = lines(json_logs)
    assert inside["message"] == "收到 事件" and "收到" in json_logs.getvalue()  # not \u-escaped
    assert inside["request_id"] == "req-1" and inside["visit_id"] == "V1" and inside["workflow_id"] == "visit-V1"
    assert "patient_id" not in inside
    # a record's extras are never copied: only the ids
    assert "张三" not in json_logs.getvalue() and "13800000000" not in json_logs.getvalue()
    assert {"request_id", "visit_id", "workflow_id"}.isdisjoint(outside)
    assert outside["level"] == "info" and outside["logger"] == "yihoufu.test" and outside["timestamp"].endswith("Z")


def test_bind_takes_only_id_fields() -> None:
    with observability.log_context(request_id="r"), pytest.raises(ValueError, match="not a log context field"):
        observability.bind(phone="13800000000")
    observability.bind(visit_id="V1")  # outside a context: nothing to add to, no error


async def test_concurrent_requests_keep_their_own_ids(json_logs: io.StringIO) -> None:
    async def request(n: int) -> None:
        with observability.log_context(request_id=f"req-{n}"):
            await asyncio.sleep(0.01 * (3 - n))
            observability.bind(visit_id=f"V{n}")
            await asyncio.sleep(0.01)
            logging.getLogger("yihoufu.test").info("done %d", n)

    await asyncio.gather(*(request(n) for n in range(3)))
    for line in lines(json_logs):
        n = line["message"].split()[-1]
        assert line["request_id"] == f"req-{n}" and line["visit_id"] == f"V{n}"


async def test_inside_an_activity_the_line_names_it_and_its_visit(json_logs: io.StringIO) -> None:
    @activity.defn(name="apply_visit_event")
    async def apply() -> None:
        logging.getLogger("yihoufu.activity").info("booked")

    env = ActivityEnvironment()
    env.info = activity.Info(**{**env.info.__dict__, "workflow_id": "visit-V77", "activity_type": "apply_visit_event"})
    await env.run(apply)
    (line,) = [x for x in lines(json_logs) if x["message"] == "booked"]
    assert line["activity"] == "apply_visit_event" and line["workflow_id"] == "visit-V77" and line["visit_id"] == "V77"


def test_the_text_format_is_one_readable_line() -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = observability.setup_logging("text", "INFO", stream=buf)
    try:
        with observability.log_context(request_id="req-9"):
            logging.getLogger("yihoufu.test").warning("worker polling %s", "q")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    (line,) = buf.getvalue().splitlines()
    assert "worker polling q" in line and "request_id=req-9" in line and "warning" in line


def test_setup_replaces_its_own_handler_and_quiets_url_loggers() -> None:
    root = logging.getLogger()
    level = root.level
    first = observability.setup_logging("json", "INFO", stream=io.StringIO())
    second = observability.setup_logging("json", "INFO", stream=io.StringIO())
    try:
        assert first not in root.handlers and second in root.handlers
        assert logging.getLogger("httpx").level == logging.WARNING
    finally:
        root.removeHandler(second)
        root.setLevel(level)


def test_log_format_defaults_to_text_in_the_sandbox_and_json_elsewhere() -> None:
    assert Settings(sandbox=True).log_format == "text"
    assert Settings(sandbox=True, log_format="json").log_format == "json"
    real = Settings(
        _env_file=None,
        his_api_key="h" * 20,
        ops_api_key="o" * 20,
        data_key="d" * 32,
        insurance_bureau_url="http://bureau",
        insurance_bureau_secret="b" * 20,
        insurance_bureau_paas_token="t" * 20,
        insurance_bureau_public_key="ab" * 64,
        credit_platform_url="http://credit",
        credit_platform_secret="c" * 20,
        payload_key="k1:" + "A" * 43 + "=",
    )
    assert real.log_format == "json"


async def test_the_health_answer_refuses_what_it_does_not_serve() -> None:
    address = f"127.0.0.1:{free_port()}"
    state: dict[str, bool | None] = {"ready": True}

    async def ready() -> bool:
        if state["ready"] is None:
            raise RuntimeError("Temporal unreachable")
        return bool(state["ready"])

    server = await observability.serve_health(address, ready)
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200
            state["ready"] = False
            assert (await http.get("/readyz")).status_code == 503
            state["ready"] = None  # the check itself failed: not ready, never a crash
            assert (await http.get("/healthz")).status_code == 503
            assert (await http.get("/livez")).status_code == 200
            assert (await http.head("/livez")).status_code == 200
            assert (await http.get("/metrics")).status_code == 404
            assert (await http.delete("/livez")).status_code == 405
    finally:
        server.close()
        await server.wait_closed()


def test_addresses_are_host_and_port() -> None:
    assert observability.split_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert observability.split_address(":9464") == ("0.0.0.0", 9464)
    assert observability.split_address("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "host:", "host:port"):
        with pytest.raises(ValueError, match="host:port"):
            observability.split_address(bad)


def test_tracing_is_off_without_an_endpoint_and_never_doubled(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    if observability.tracer_provider() is None:
        assert observability.setup_tracing("yihoufu-test") is None
        assert observability.temporal_interceptors() == []
    with observability.tracing(TracerProvider()):
        (tracing,) = observability.temporal_interceptors()

        class FakeClient:
            def __init__(self, interceptors: list) -> None:
                self._interceptors = interceptors

            def config(self) -> dict:
                return {"interceptors": self._interceptors}

        # a client that already traces: the worker inherits it, none added
        assert observability.interceptors_for(FakeClient([tracing]), [tracing]) == []
        assert observability.interceptors_for(FakeClient([]), [tracing]) == [tracing]
