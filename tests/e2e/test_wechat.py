"""WeChat Pay end to end: the patient's order is created at the (simulated) WeChat through
the SDK, WeChat notifies the running API over HTTP, the ledger and the visit follow."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.e2e.test_stack import HIS, until
from tests.flows import Clinic, assert_problem

pytestmark = pytest.mark.e2e


async def test_pay_the_merged_bill_with_wechat(http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=3300))["visit_id"]
    await clinic.event(visit_id, "discharged")
    await asyncio.sleep(1.1)  # codes to one phone are a second apart in the stack under test
    assert (await http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
    login = (await http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})).json()
    auth = {"Authorization": f"Bearer {login['token']}"}
    r = await http.post("/v1/patient/payments", json={"channel": "wechat"},
                        headers={**auth, "Idempotency-Key": "wechat-e2e-0001"})
    assert r.status_code == 201, r.text
    payment = r.json()
    assert payment["pay_url"].startswith("https://wx.tenpay.com/") and payment["amount_fen"] == 3300

    # a notification that is not WeChat's changes nothing
    forged = await http.post("/v1/payments/notify/wechat", content=b'{"id":"x"}', headers={
        "Wechatpay-Timestamp": str(int(time.time())), "Wechatpay-Nonce": "n", "Wechatpay-Signature": "c2ln",
        "Wechatpay-Serial": "PUB_KEY_ID_0119000001092026", "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"})
    assert_problem(forged, 401, "invalid_signature")

    done = await http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded" and done.json()["allocations"] == [
        {"visit_id": visit_id, "amount_fen": 3300}]

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    assert settled["bill"]["paid_fen"] == 3300 and len(settled["bill"]["payments"]) == 1
    # WeChat retries its notification: nothing lands twice
    again = await http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert again.status_code == 200
    assert (await visit())["bill"]["paid_fen"] == 3300


async def test_a_lost_notification_is_found_by_reconciliation(stack, http: httpx.AsyncClient,  # type: ignore[no-untyped-def]
                                                              clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=1800))["visit_id"]
    await clinic.event(visit_id, "discharged")
    await asyncio.sleep(1.1)
    assert (await http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
    login = (await http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})).json()
    auth = {"Authorization": f"Bearer {login['token']}"}
    payment = (await http.post("/v1/patient/payments", json={"channel": "wechat"}, headers=auth)).json()
    # the patient pays at WeChat, but WeChat's notification never reaches us
    async with httpx.AsyncClient() as wx:
        r = await wx.post(f"http://127.0.0.1:{stack.wechat_port}/_sim/pay/1900000109/{payment['payment_id']}",
                          params={"notify": "false"})
    assert r.json() == {"notified": None}

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    # the reconciliation schedule asks WeChat, lands the money and stops the dunning
    settled = await until(visit, lambda v: v["payment_status"] == "settled", timeout=60)
    assert settled["bill"]["paid_fen"] == 1800 and len(settled["bill"]["payments"]) == 1
    audit = (await http.get(f"/v1/ops/audit?subject_type=patient&subject_id={patient_id}",
                            headers={"Authorization": "Bearer dev-ops-key"})).json()
    assert any(e["actor"] == "channel:wechat" and e["action"] == "payment_succeeded" for e in audit)


async def test_pay_with_alipay_and_reconcile_a_lost_notify(stack, http: httpx.AsyncClient,  # type: ignore[no-untyped-def]
                                                           clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    v1 = (await clinic.register(patient_id, fee=1234))["visit_id"]
    await clinic.event(v1, "discharged")
    await asyncio.sleep(1.1)
    assert (await http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
    login = (await http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})).json()
    auth = {"Authorization": f"Bearer {login['token']}"}
    payment = (await http.post("/v1/patient/payments", json={"channel": "alipay"}, headers=auth)).json()
    assert "alipay.trade.wap.pay" in payment["pay_url"] and "12.34" in payment["pay_url"]
    done = await http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text

    async def visit(v: str) -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{v}", headers=HIS)).json()

    assert (await until(lambda: visit(v1), lambda v: v["payment_status"] == "settled"))["bill"]["paid_fen"] == 1234
    forged = await http.post("/v1/payments/notify/alipay", data={"out_trade_no": payment["payment_id"],
                                                                  "total_amount": "12.34", "sign": "Zm9yZ2Vk"})
    assert_problem(forged, 401, "invalid_signature")

    # a second visit; the patient pays at Alipay but the notify is lost: reconciliation finds it
    v2 = (await clinic.register(patient_id, fee=999))["visit_id"]
    await clinic.event(v2, "discharged")
    second = (await http.post("/v1/patient/payments", json={"channel": "alipay"}, headers=auth)).json()
    async with httpx.AsyncClient() as ali:
        await ali.get(second["pay_url"])  # the phone opens the cashier
        r = await ali.post(f"http://127.0.0.1:{stack.alipay_port}/_sim/pay/{second['payment_id']}",
                           params={"notify": "false"})
    assert r.json() == {"notified": None}
    settled = await until(lambda: visit(v2), lambda v: v["payment_status"] == "settled", timeout=60)
    assert settled["bill"]["paid_fen"] == 999
