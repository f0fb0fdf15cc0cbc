"""医保移动支付 end to end: the stack as processes; the simulated platform's cashier is paid over
HTTP and its SM2-signed notification reaches the running API over HTTP (the sandbox's public
key), which wakes the workflow in the running worker; the three parts land on the bill."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from devstack import Stack
from tests.e2e.test_stack import HIS, until
from tests.flows import Clinic, item

pytestmark = pytest.mark.e2e


async def test_mobile_payment_through_the_platforms_cashier(
    stack: Stack, http: httpx.AsyncClient, clinic: Clinic
) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    for event, fields in (
        ("checked_in", {"channel": "app"}),
        ("called", {}),
        ("consultation_started", {}),
        ("orders_placed", {"items": [item("xray", "exam", 12000)]}),
        ("consultation_ended", {}),
        ("discharged", {}),
    ):
        await clinic.event(visit_id, event, **fields)
    await asyncio.sleep(1.1)  # codes to one phone are a second apart in the stack under test
    assert (await http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
    login = (await http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})).json()
    auth = {"Authorization": f"Bearer {login['token']}"}
    assert (await http.get("/v1/patient/payment-options", headers=auth)).json()["insurance_mobile"] is True
    pay_auth_no = (await http.post("/v1/sandbox/insurance/pay-auth", headers=auth)).json()["pay_auth_no"]
    r = await http.post("/v1/patient/insurance/mobile-orders", json={"pay_auth_no": pay_auth_no}, headers=auth)
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["pooled_fen"], order["personal_fen"], order["self_pay_fen"]) == (7200, 4800, 500)
    r = await http.post(
        f"/v1/patient/insurance/settlements/{order['settlement_id']}/pay", json={"channel": "nhsa_mobile"}, headers=auth
    )
    assert r.status_code == 200, r.text
    cashier_url = r.json()["cashier_url"]
    bureau_url = stack.env["YHF_INSURANCE_BUREAU_URL"]
    assert cashier_url.startswith(bureau_url)
    async with httpx.AsyncClient(timeout=30) as platform:
        seen = (await platform.get(f"{bureau_url}/inspect/mobile/{cashier_url.rsplit('/', 1)[-1]}")).json()
        paid = await platform.post(cashier_url, json={"payToken": seen["payToken"]})
        assert paid.status_code == 200, paid.text
        seen = (await platform.get(f"{bureau_url}/inspect/mobile/{seen['payOrdId']}")).json()
    assert seen["notified"] == "200"  # the API verified and took the notification

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    paid_by = {p["method"]: p["amount_fen"] for p in settled["bill"]["payments"] if p["kind"] == "payment"}
    assert paid_by == {"nhsa_mobile": 500, "insurance_pooled": 7200, "insurance_personal": 4800}
    status = (await http.get(f"/v1/patient/insurance/settlements/{order['settlement_id']}", headers=auth)).json()
    assert status["status"] == "completed"
