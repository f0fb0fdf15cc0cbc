"""The simulators check what the real gateways check: who signs, when, with which nonce,
and the parameters. A forged, stale, replayed or incomplete request changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest

from config import Settings
from integrations import insurance_bureau
from integrations.factory import MissingGateway, build_integrations
from integrations.gateway import GatewayError
from integrations.inspection import SimulatorInspection
from integrations.signing import sign, signed_headers
from simulators import bureau
from simulators.store import Store
from tests.support import uid

SECRET = "bureau-secret-for-tests"


@pytest.fixture
async def sim_http() -> AsyncIterator[httpx.AsyncClient]:
    app = bureau.simulator_app({"hospital-1": SECRET})
    async with httpx.AsyncClient(base_url="http://bureau", transport=httpx.ASGITransport(app=app)) as http:
        yield http
    app.state.store.close()


async def card_events(sim_http: httpx.AsyncClient, patient_id: str) -> list[str]:
    """What the simulated bureau recorded for the patient (asked as the sandbox asks)."""
    card = await SimulatorInspection(bureau=sim_http, credit=sim_http).card(patient_id)
    return [e.action for e in card.events]


def body(patient_id: str) -> bytes:
    return json.dumps(
        {
            "request_id": uid("r"),
            "patient_id": patient_id,
            "reason": "overdue",
            "at": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def test_a_signed_request_locks(sim_http: httpx.AsyncClient) -> None:
    client = insurance_bureau.InsuranceBureauClient(sim_http, app_id="hospital-1", secret=SECRET)
    patient_id = uid("p")
    locked = await client.set_card_lock(
        action="lock",
        request_id="r-1" + patient_id,
        patient_id=patient_id,
        reason="overdue",
        at=datetime.now(UTC),
    )
    assert locked
    assert await card_events(sim_http, patient_id) == ["lock"]


async def test_wrong_secret_is_refused(sim_http: httpx.AsyncClient) -> None:
    client = insurance_bureau.InsuranceBureauClient(sim_http, app_id="hospital-1", secret="guessed")
    patient_id = uid("p")
    with pytest.raises(GatewayError) as err:
        await client.set_card_lock(
            action="lock", request_id="r", patient_id=patient_id, reason="x", at=datetime.now(UTC)
        )
    assert err.value.code == "SignatureDoesNotMatch" and not err.value.retryable
    assert await card_events(sim_http, patient_id) == []


@pytest.mark.parametrize("tamper", ["body", "stale", "app", "missing", "replay"])
async def test_tampered_requests_change_nothing(
    sim_http: httpx.AsyncClient,
    tamper: str,
) -> None:
    patient_id = uid("p")
    payload = body(patient_id)
    headers = signed_headers("hospital-1", SECRET, "POST", "/cards/lock", payload)
    expected = {
        "body": "SignatureDoesNotMatch",
        "stale": "StaleRequest",
        "app": "InvalidAppId",
        "missing": "MissingSignature",
        "replay": "NonceReused",
    }[tamper]
    if tamper == "body":
        payload = payload.replace(b"overdue", b"whatever")
    elif tamper == "stale":
        ts = str(int(time.time()) - 600)
        headers["X-Timestamp"] = ts
        headers["X-Signature"] = sign(SECRET, "POST", "/cards/lock", ts, headers["X-Nonce"], payload)
    elif tamper == "app":
        headers["X-App-Id"] = "someone-else"
    elif tamper == "missing":
        del headers["X-Signature"]
    elif tamper == "replay":
        first = await sim_http.post("/cards/lock", content=payload, headers=headers)
        assert first.status_code == 200
    r = await sim_http.post("/cards/lock", content=payload, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == expected
    assert await card_events(sim_http, patient_id) == (["lock"] if tamper == "replay" else [])


async def test_missing_parameters_are_refused(sim_http: httpx.AsyncClient) -> None:
    payload = json.dumps({"request_id": "r", "reason": "x", "at": "2026-01-01T00:00:00+00:00"}).encode()
    headers = signed_headers("hospital-1", SECRET, "POST", "/cards/lock", payload)
    r = await sim_http.post("/cards/lock", content=payload, headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "MissingParameter"


async def test_the_bureau_keeps_its_records_in_its_own_file(tmp_path) -> None:
    """A simulator restarted on the same file (as devstack's supervisor restarts it) remembers."""
    patient_id, path = uid("p"), tmp_path / "bureau.db"
    for attempt in range(2):
        app = bureau.simulator_app({"hospital-1": SECRET}, Store(bureau.Base.metadata, path))
        async with httpx.AsyncClient(base_url="http://bureau", transport=httpx.ASGITransport(app=app)) as http:
            client = insurance_bureau.InsuranceBureauClient(http, app_id="hospital-1", secret=SECRET)
            if attempt == 0:
                await client.set_card_lock(
                    action="lock", request_id="r-1", patient_id=patient_id, reason="overdue", at=datetime.now(UTC)
                )
            else:  # the same request again is recognised, and the card is still locked
                again = await client.set_card_lock(
                    action="lock", request_id="r-1", patient_id=patient_id, reason="overdue", at=datetime.now(UTC)
                )
                assert again and await card_events(http, patient_id) == ["lock"]
        app.state.store.close()


async def test_a_gateway_without_a_url_or_a_transport_stops_the_start() -> None:
    async with AsyncExitStack() as stack:
        with pytest.raises(MissingGateway, match="YHF_INSURANCE_BUREAU_URL"):
            build_integrations(Settings(sandbox=True), stack)
        with pytest.raises(MissingGateway, match="YHF_CREDIT_PLATFORM_URL"):
            build_integrations(Settings(sandbox=True, insurance_bureau_url="http://127.0.0.1:9"), stack)
