"""The API's edges: text that would wedge a visit is refused, no plain-text 500, 503 while
Temporal is away, the caller is known before the body is read, a body-size limit, the
security headers, the closed doors outside the sandbox, and an OpenAPI that says all of it."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api import schemas as s
from api.deps import SessionDep
from api.main import create_app
from config import Settings
from db.models import IdempotencyRecord
from db.session import create_engine, session_factory
from domain.visit import EventType
from integrations import nhsa
from integrations.factory import build_integrations
from tests.conftest import temporal_cli
from tests.flows import assert_problem, item
from tests.support import add_patient, free_port, now, simulators, uid
from worker import create_worker

MB = 1024 * 1024
HIS = {"Authorization": "Bearer dev-his-key"}


@asynccontextmanager
async def client(
    settings: Settings, *, base_url: str = "http://api", lifespan: bool = True, **app_routes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with simulators(settings) as sims, AsyncExitStack() as stack:
        parties = build_integrations(settings, stack, transports=sims.transports()) if lifespan else None
        async with _client(create_app(settings, integrations=parties), base_url, lifespan, app_routes) as http:
            yield http


@asynccontextmanager
async def _client(
    app: FastAPI, base_url: str, lifespan: bool, app_routes: dict[str, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    for path, endpoint in app_routes.items():
        app.add_api_route(f"/{path}", endpoint)
    transport = httpx.ASGITransport(app=app)
    if not lifespan:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http
        return
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as http:
            yield http


@pytest.fixture
async def edge(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI with a Temporal that is not there (nothing listens on its port)."""
    async with client(settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})) as http:
        yield http


def outside_sandbox(**overrides: Any) -> Settings:
    given: dict[str, Any] = {
        "his_api_key": "his-" + uid(),
        "ops_api_key": "ops-" + uid(),
        "data_key": uid(),
        "insurance_bureau_url": "https://bureau.invalid",
        "insurance_bureau_secret": "0" + secrets.token_hex(32)[1:],  # an SM2 private key: below the curve's order
        "insurance_bureau_paas_token": uid(),
        "insurance_bureau_public_key": nhsa.sm2_public_key(nhsa.new_sm2_private_key()),
        "insurance_fixmedins_code": "H11010500001",
        "insurance_admvs": "110105",
        "credit_platform_url": "https://credit.invalid",
        "credit_platform_secret": uid(),
        "payload_key": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),  # required outside the sandbox
    }
    return Settings(sandbox=False, **{**given, **overrides})


# --- defect 3: text that would wedge a visit ------------------------------------------------


async def test_a_nul_in_an_item_name_is_refused_fast_and_the_visit_takes_the_next_event(clinic, api) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    for type_, fields in (("checked_in", {"channel": "app"}), ("called", {}), ("consultation_started", {})):
        await clinic.event(visit_id, type_, **fields)
    started = time.monotonic()
    bad = {
        "event_id": "orders-1",
        "type": "orders_placed",
        "occurred_at": "2026-11-29T09:00:00+08:00",
        "items": [item("cbc", "lab", 2500, name="血常规\u0000")],
    }
    body = assert_problem(await api.his_post(f"/v1/his/visits/{visit_id}/events", bad), 422, "invalid_request")
    assert time.monotonic() - started < 2
    assert body["errors"][0]["loc"][:4] == ["body", "items", 0, "name"] or "name" in body["detail"]
    good = {**bad, "items": [item("cbc", "lab", 2500, name="血常规")]}
    r = await api.his_post(f"/v1/his/visits/{visit_id}/events", good)
    assert r.status_code == 200, r.text
    assert [line["name"] for line in r.json()["bill"]["lines"]][-1] == "血常规"


@pytest.mark.parametrize(
    "field,value",
    [
        ("department", "内科\u0000"),
        ("doctor", "王\u0000医生"),
        ("doctor", "王医生\u202e"),
        ("department", "\u2066内科"),
        ("department", "内科\u0085"),
        ("department", "   "),
        ("doctor", "\u3000"),
    ],
)
async def test_registration_refuses_control_characters_and_blanks(edge, factory, field, value) -> None:
    patient_id = await add_patient(factory)
    body = {"visit_id": uid("V"), "patient_id": patient_id, "department": "内科", "channel": "kiosk", field: value}
    r = await edge.post("/v1/his/visits", json=body, headers=HIS)
    assert_problem(r, 422, "invalid_request")
    assert field in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"card_type": "insurance_card", "card_no": "SI0001", "name": " \t"},
        {"card_type": "insurance_card", "card_no": "SI0001", "name": "  "},
        {"card_type": "insurance_card", "card_no": "SI0001", "name": "张\u0000三"},
    ],
)
async def test_whitespace_only_or_nul_names_are_refused(edge, body) -> None:
    assert_problem(await edge.post("/v1/his/patients", json=body, headers=HIS), 422, "invalid_request")


async def test_a_card_number_of_the_longest_length_is_read(edge) -> None:
    """64 characters (the contract's longest) are stored masked within the column (a 500 on
    PostgreSQL when the mask kept the length)."""
    card = "C" + uuid.uuid4().hex + uuid.uuid4().hex[:31]
    r = await edge.post(
        "/v1/his/patients", json={"card_type": "visit_card", "card_no": card, "name": "李四"}, headers=HIS
    )
    assert r.status_code == 201, r.text
    again = await edge.post(
        "/v1/his/patients", json={"card_type": "visit_card", "card_no": card, "name": "李四"}, headers=HIS
    )
    assert again.json()["patient_id"] == r.json()["patient_id"]


async def test_control_characters_in_a_path_or_query_are_refused(edge) -> None:
    assert_problem(await edge.get("/v1/his/visits/V%00x", headers=HIS), 422, "invalid_request")
    ops = {"Authorization": "Bearer dev-ops-key"}
    assert_problem(await edge.get("/v1/ops/insurance-settlements?status=%00", headers=ops), 422, "invalid_request")


# --- defect 4: no plain-text 500, 503 while the engine is away -------------------------------


async def test_registration_while_temporal_is_unreachable_is_a_quick_503_and_a_retry_works(edge, api, factory) -> None:
    patient_id = await add_patient(factory)
    body = {"visit_id": uid("V"), "patient_id": patient_id, "department": "内科", "channel": "kiosk"}
    started = time.monotonic()
    r = await edge.post("/v1/his/visits", json=body, headers=HIS)
    assert time.monotonic() - started < 5
    assert_problem(r, 503, "engine_unavailable")
    assert int(r.headers["retry-after"]) > 0
    # Temporal back: the HIS asks again with the same body and the visit goes on
    r = await api.his_post("/v1/his/visits", body)
    assert r.status_code in (200, 201), r.text
    visit = await api.his_post(
        f"/v1/his/visits/{body['visit_id']}/events",
        {"event_id": "e1", "type": "checked_in", "channel": "app", "occurred_at": "2026-11-29T09:00:00+08:00"},
    )
    assert visit.status_code == 200 and visit.json()["stage"] == "checked_in", visit.text
    r = await edge.post(
        "/v1/his/visits/V-none/events",
        headers=HIS,
        json={"event_id": "e1", "type": "dispensed", "occurred_at": "2026-11-29T09:00:00+08:00"},
    )
    assert r.status_code == 404  # a visit that does not exist is known without the engine


async def test_temporal_dying_after_the_api_connected_is_a_503_within_seconds(settings, factory) -> None:
    """The ~10 s of the SDK's retries are bounded by YHF_ENGINE_WAIT (3 s)."""
    port = free_port()
    server = subprocess.Popen(
        [
            temporal_cli(),
            "server",
            "start-dev",
            "--headless",
            "--port",
            str(port),
            "--ui-port",
            str(free_port()),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with client(settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})) as http:
            for _ in range(100):  # the dev server takes a moment to come up
                if (await http.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert (await http.get("/healthz")).status_code == 200
            server.kill()
            server.wait()
            patient_id = await add_patient(factory)
            started = time.monotonic()
            r = await http.post(
                "/v1/his/visits",
                headers=HIS,
                json={"visit_id": uid("V"), "patient_id": patient_id, "department": "内科", "channel": "kiosk"},
            )
            assert_problem(r, 503, "engine_unavailable")
            assert time.monotonic() - started < settings.engine_wait.total_seconds() + 2
    finally:
        server.kill()
        server.wait()


async def test_an_unexpected_error_is_a_logged_problem_not_plain_text(settings, caplog) -> None:
    async def boom() -> None:
        raise ValueError("patient 13800138000 张三 broke it")

    caplog.set_level(logging.ERROR, logger="yihoufu.api")
    async with client(settings, boom=boom) as http:
        r = await http.get("/boom", headers={"X-Request-ID": "req-42"})
    body = assert_problem(r, 500, "internal_error")
    assert body["request_id"] == "req-42" == r.headers["x-request-id"]
    assert "13800138000" not in r.text and "张三" not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "req-42" in logged and "ValueError" in logged and "/boom" in logged
    assert "13800138000" not in logged and "张三" not in logged


async def test_a_commit_that_fails_is_a_problem_never_a_2xx(settings, factory) -> None:
    """The request's session commits before the answer starts: a row the database refuses at
    commit is a 500 problem, not a 200 for something that was not stored."""
    key = uid("dup-")

    def record() -> IdempotencyRecord:
        return IdempotencyRecord(key=key, request_hash="x", status_code=200, response={}, created_at=now())

    async with factory() as session, session.begin():
        session.add(record())

    async def store_twice(session: SessionDep) -> dict[str, bool]:
        session.add(record())  # the same primary key: refused when the dependency commits
        return {"stored": True}

    async with client(settings, store=store_twice) as http:
        assert_problem(await http.get("/store"), 500, "internal_error")


# --- defect 6: the caller before the body, and a size limit ----------------------------------


class Chunks:
    """A streamed (chunked) body that counts how much of it the server pulled."""

    def __init__(self, megabytes: int) -> None:
        self.megabytes, self.sent = megabytes, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.megabytes):
            self.sent += 1
            yield b"x" * MB


async def test_a_big_body_without_a_key_is_refused_unread(edge) -> None:
    for path in ("/v1/his/patients", "/v1/ops/payments", "/v1/patient/payments"):
        body = Chunks(5)
        assert_problem(await edge.post(path, content=body.__aiter__()), 401, "unauthorized")
        assert body.sent == 0, path
        r = await edge.post(path, content=b"x" * 5 * MB, headers={"Authorization": "Bearer dev-ops-key-wrong"})
        assert_problem(r, 401, "unauthorized")


async def test_a_body_over_the_limit_with_a_key_is_413(edge) -> None:
    # declared by Content-Length: refused before reading
    r = await edge.post("/v1/his/patients", content=b"x" * 5 * MB, headers={**HIS, "content-type": "application/json"})
    assert_problem(r, 413, "body_too_large")
    # streamed without a length: cut off once past the limit
    body = Chunks(5)
    r = await edge.post(
        "/v1/his/patients", content=body.__aiter__(), headers={**HIS, "content-type": "application/json"}
    )
    assert_problem(r, 413, "body_too_large")
    assert body.sent <= 2


@pytest.mark.parametrize("raw", [b"{", b'{"name": "\xff\xfe"}', b"\xff\xfe\x00", b"[1, 2"])
async def test_undecodable_bodies_are_422(edge, raw) -> None:
    r = await edge.post("/v1/his/patients", content=raw, headers={**HIS, "content-type": "application/json"})
    assert_problem(r, 422, "invalid_request")


# --- defect 7: headers, open doors, OpenAPI ---------------------------------------------------


def assert_security_headers(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] and r.headers["permissions-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


async def test_every_answer_carries_the_security_headers(edge) -> None:
    app = await edge.get("/app/")
    assert app.status_code == 200
    csp = app.headers["content-security-policy"]
    # the PWA: its own scripts, styles, manifest and service worker, nothing inline, nothing foreign
    assert "script-src 'self';" in csp and "worker-src 'self'" in csp and "manifest-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    for r in (
        app,
        await edge.get("/app/app.js"),
        await edge.get("/v1/his/visits/x"),
        await edge.get("/nowhere"),
        await edge.get("/v1/sandbox/sms?phone=13800138000"),
        await edge.get("/openapi.json"),
    ):
        assert_security_headers(r)
        assert "strict-transport-security" not in r.headers  # plain http


async def test_hsts_over_https_and_behind_a_trusted_proxy_only(settings) -> None:
    async with client(settings, base_url="https://api", lifespan=False) as http:
        assert "max-age=" in (await http.get("/app/")).headers["strict-transport-security"]
    proxied = {"X-Forwarded-Proto": "https"}
    async with client(settings, lifespan=False) as http:
        assert "strict-transport-security" not in (await http.get("/app/", headers=proxied)).headers
    async with client(settings.model_copy(update={"trust_forwarded_proto": True}), lifespan=False) as http:
        assert "max-age=" in (await http.get("/app/", headers=proxied)).headers["strict-transport-security"]


async def test_metrics_and_docs_are_closed_outside_the_sandbox(settings) -> None:
    async with client(settings, lifespan=False) as http:  # the sandbox: open
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/docs")).status_code == 200
    real = outside_sandbox(metrics_token="scrape-" + uid())
    async with client(real, lifespan=False) as http:
        assert_problem(await http.get("/metrics"), 401, "unauthorized")
        assert_problem(
            await http.get("/metrics", headers={"Authorization": f"Bearer {real.his_api_key}"}), 401, "unauthorized"
        )
        for key in (real.ops_api_key, real.metrics_token):
            r = await http.get("/metrics", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and "yhf_http_requests_total" in r.text
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await http.get(path)).status_code == 404
    async with client(outside_sandbox(docs_enabled=True), lifespan=False) as http:
        assert (await http.get("/openapi.json")).status_code == 200
    async with client(settings.model_copy(update={"metrics_token": "t-" + uid()}), lifespan=False) as http:
        assert_problem(await http.get("/metrics"), 401, "unauthorized")  # a token set: required in the sandbox too


async def test_a_405_names_every_method_of_the_path(edge) -> None:
    r = await edge.put("/v1/his/patients/pat_x/enrollment", headers=HIS)
    assert_problem(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"POST", "DELETE"}
    r = await edge.delete("/v1/his/visits", headers=HIS)
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"POST"}


def test_openapi_errors_are_problems_and_every_edge_answer_is_declared(settings) -> None:
    spec = create_app(settings).openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            answers = op["responses"]
            for status, answer in answers.items():
                if int(status) >= 400:
                    assert list(answer["content"]) == ["application/problem+json"], (method, path, status)
            guarded = path.startswith(("/v1/his/", "/v1/ops/", "/v1/patient/")) and path not in (
                "/v1/patient/sms-code",
                "/v1/patient/login",
            )
            assert "401" in answers or not guarded, (method, path)
            assert "422" in answers, (method, path)
            if "requestBody" in op:
                assert "413" in answers, (method, path)
    assert "503" in spec["paths"]["/v1/his/visits"]["post"]["responses"]
    assert "503" in spec["paths"]["/v1/his/visits/{visit_id}/events"]["post"]["responses"]
    assert "429" in spec["paths"]["/v1/patient/sms-code"]["post"]["responses"]


def test_openapi_event_body_is_a_union_on_type_with_exactly_each_types_fields(settings) -> None:
    spec = create_app(settings).openapi()
    schemas = spec["components"]["schemas"]
    body = spec["paths"]["/v1/his/visits/{visit_id}/events"]["post"]["requestBody"]["content"]["application/json"]
    union = schemas[body["schema"]["$ref"].rsplit("/", 1)[-1]]
    mapping = union["discriminator"]["mapping"]
    assert union["discriminator"]["propertyName"] == "type" and set(mapping) == {str(t) for t in EventType}
    base = {"event_id", "type", "occurred_at"}
    for kind in EventType:
        variant = schemas[mapping[str(kind)].rsplit("/", 1)[-1]]
        assert set(variant["properties"]) == base | s.EVENT_FIELDS.get(kind, set()), kind
        assert set(variant["required"]) == base | s.REQUIRED_FIELDS.get(kind, set()), kind
        assert variant["properties"]["type"]["const"] == str(kind)
        assert variant["additionalProperties"] is False


async def test_an_event_the_ledger_cannot_book_is_a_quick_503_to_send_again(
    settings,
    factory,
    temporal_env,
    tmp_path,
    integrations,
) -> None:
    """The worker's database does not answer (here: it has no tables): the HIS hears 503
    `ledger_unavailable` within the event's deadline, not a hang and not a 500; once the ledger
    answers, the same event sent again (the same event_id) is booked."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'no-tables.db'}")
    target = temporal_env.client.service_client.config.target_host
    patient_id = await add_patient(factory)
    try:
        async with AsyncExitStack() as stack:
            async with create_worker(
                temporal_env.client, settings, session_factory(engine), stack, integrations=integrations
            ):
                async with client(settings.model_copy(update={"temporal_address": target})) as http:
                    r = await http.post(
                        "/v1/his/visits",
                        headers=HIS,
                        json={"visit_id": uid("v"), "patient_id": patient_id, "department": "内科", "channel": "kiosk"},
                    )
                    assert r.status_code == 201, r.text
                    visit_id = r.json()["visit_id"]
                    event = {"event_id": "e1", "type": "checked_in", "occurred_at": now().isoformat(), "channel": "app"}
                    started = time.monotonic()
                    r = await http.post(f"/v1/his/visits/{visit_id}/events", headers=HIS, json=event)
                    assert_problem(r, 503, "ledger_unavailable")
                    assert r.headers["Retry-After"] and time.monotonic() - started < 25
            # the ledger answers again: the same event, sent again with the same event_id, is booked
            async with create_worker(temporal_env.client, settings, factory, stack, integrations=integrations):
                async with client(settings.model_copy(update={"temporal_address": target})) as http:
                    again = await http.post(f"/v1/his/visits/{visit_id}/events", headers=HIS, json=event)
                    assert again.status_code == 200, again.text
                    assert again.json()["stage"] == "checked_in"
    finally:
        await engine.dispose()
