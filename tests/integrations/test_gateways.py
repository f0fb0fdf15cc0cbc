"""The simulators check what the real gateways check: who signs, when, with which nonce,
and the parameters. A forged, stale, replayed or incomplete request changes nothing."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SimInsuranceCardEvent
from integrations import insurance_bureau
from integrations.gateway import GatewayError
from integrations.signing import sign, signed_headers
from tests.support import rows, uid

SECRET = "bureau-secret-for-tests"


@pytest.fixture
def sim_http(factory: async_sessionmaker[AsyncSession]) -> httpx.AsyncClient:
    app = insurance_bureau.simulator_app(factory, {"hospital-1": SECRET})
    return httpx.AsyncClient(base_url="http://bureau", transport=httpx.ASGITransport(app=app))


def body(patient_id: str) -> bytes:
    return json.dumps({"request_id": uid("r"), "patient_id": patient_id, "reason": "overdue",
                       "at": datetime.now(timezone.utc).isoformat()}).encode()


async def test_a_signed_request_locks(sim_http: httpx.AsyncClient, factory) -> None:  # type: ignore[no-untyped-def]
    client = insurance_bureau.InsuranceBureauClient(sim_http, app_id="hospital-1", secret=SECRET)
    patient_id = uid("p")
    locked = await client.set_card_lock(action="lock", request_id="r-1" + patient_id, patient_id=patient_id,
                                        reason="overdue", at=datetime.now(timezone.utc))
    assert locked
    assert len(await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)) == 1


async def test_wrong_secret_is_refused(sim_http: httpx.AsyncClient, factory) -> None:  # type: ignore[no-untyped-def]
    client = insurance_bureau.InsuranceBureauClient(sim_http, app_id="hospital-1", secret="guessed")
    patient_id = uid("p")
    with pytest.raises(GatewayError) as err:
        await client.set_card_lock(action="lock", request_id="r", patient_id=patient_id, reason="x",
                                   at=datetime.now(timezone.utc))
    assert err.value.code == "SignatureDoesNotMatch" and not err.value.retryable
    assert await rows(factory, SimInsuranceCardEvent, patient_id=patient_id) == []


@pytest.mark.parametrize("tamper", ["body", "stale", "app", "missing", "replay"])
async def test_tampered_requests_change_nothing(sim_http: httpx.AsyncClient, factory,  # type: ignore[no-untyped-def]
                                                tamper: str) -> None:
    patient_id = uid("p")
    payload = body(patient_id)
    headers = signed_headers("hospital-1", SECRET, "POST", "/cards/lock", payload)
    expected = {"body": "SignatureDoesNotMatch", "stale": "StaleRequest", "app": "InvalidAppId",
                "missing": "MissingSignature", "replay": "NonceReused"}[tamper]
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
    assert len(await rows(factory, SimInsuranceCardEvent, patient_id=patient_id)) == (1 if tamper == "replay" else 0)


async def test_missing_parameters_are_refused(sim_http: httpx.AsyncClient) -> None:
    payload = json.dumps({"request_id": "r", "reason": "x", "at": "2026-01-01T00:00:00+00:00"}).encode()
    headers = signed_headers("hospital-1", SECRET, "POST", "/cards/lock", payload)
    r = await sim_http.post("/cards/lock", content=payload, headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "MissingParameter"
