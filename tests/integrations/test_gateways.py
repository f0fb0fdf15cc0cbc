"""The simulators check what the real gateways check: who signs, when, with which nonce,
and the parameters. A forged, stale, replayed or incomplete request changes nothing."""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest

from config import DEV_BUREAU_PAAS_TOKEN, Settings
from integrations import insurance_bureau
from integrations.factory import MissingGateway, build_integrations
from integrations.inspection import SimulatorInspection
from integrations.signing import sign, signed_headers
from simulators import bureau
from simulators.gateway import SignatureError, Verifier
from simulators.store import Store
from tests.support import uid

KEY = "7f4a0c1de2b3968a5c6d7e8f9012a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"  # an SM2 private key (hex)


async def card_events(sim_http: httpx.AsyncClient, patient_id: str) -> list[str]:
    """What the simulated bureau recorded for the patient (asked as the sandbox asks)."""
    card = await SimulatorInspection(bureau=sim_http, credit=sim_http).card(patient_id)
    return [e.action for e in card.events]


async def test_the_bureau_keeps_its_records_in_its_own_file(tmp_path) -> None:
    """A simulator restarted on the same file (as devstack's supervisor restarts it) remembers:
    the same msgid again is answered as before, and the card is still locked. (The NHSA wire
    itself: tests/integrations/test_nhsa.py.)"""
    patient_id, path = uid("p"), tmp_path / "bureau.db"
    at = datetime.now(UTC)
    msgid = "H00000000001" + at.strftime("%Y%m%d%H%M%S") + "0001"
    for _ in range(2):
        app = bureau.simulator_app({"hospital-1": KEY}, Store(bureau.Base.metadata, path))
        async with httpx.AsyncClient(base_url="http://bureau", transport=httpx.ASGITransport(app=app)) as http:
            client = insurance_bureau.InsuranceBureauClient(
                http,
                paasid="hospital-1",
                private_key=KEY,
                fixmedins_code="H00000000001",
                fixmedins_name="示范医院",
                admvs="110105",
                paas_token=DEV_BUREAU_PAAS_TOKEN,  # the simulator's, given none
            )
            locked = await client.set_card_lock(
                action="lock",
                msgid=msgid,
                psn_no=patient_id,
                reason="overdue",
                at=at,
                operator=insurance_bureau.WORKER,
                day=client.local_day(datetime.now(UTC)),
            )
            assert locked and await card_events(http, patient_id) == ["lock"]
        app.state.store.close()


SECRET = "gateway-secret-for-tests"


@pytest.mark.parametrize("tamper", ["body", "stale", "app", "missing", "replay"])
def test_the_signed_json_gateways_refuse_tampered_requests(tamper: str) -> None:
    """The HMAC gateway the credit platform speaks (simulators/gateway.py): a forged, stale,
    foreign, unsigned or replayed request is refused before anything is read."""
    verifier = Verifier({"hospital-1": SECRET})
    payload = json.dumps({"request_id": uid("r"), "reason": "overdue"}).encode()
    headers = signed_headers("hospital-1", SECRET, "POST", "/records/report", payload)
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
        headers["X-Signature"] = sign(SECRET, "POST", "/records/report", ts, headers["X-Nonce"], payload)
    elif tamper == "app":
        headers["X-App-Id"] = "someone-else"
    elif tamper == "missing":
        del headers["X-Signature"]
    elif tamper == "replay":
        assert verifier.verify(httpx.Headers(headers), "POST", "/records/report", payload) == "hospital-1"
    with pytest.raises(SignatureError) as err:
        verifier.verify(httpx.Headers(headers), "POST", "/records/report", payload)
    assert err.value.code == expected


async def test_a_gateway_without_a_url_or_a_transport_stops_the_start() -> None:
    async with AsyncExitStack() as stack:
        with pytest.raises(MissingGateway, match="YHF_INSURANCE_BUREAU_URL"):
            build_integrations(Settings(sandbox=True), stack)
        with pytest.raises(MissingGateway, match="YHF_CREDIT_PLATFORM_URL"):
            build_integrations(Settings(sandbox=True, insurance_bureau_url="http://127.0.0.1:9"), stack)
