"""WeChat Pay end to end: the patient's order is created at the (simulated) WeChat through
the SDK, WeChat notifies the running API over HTTP, the ledger and the visit follow."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from temporalio.client import Client

from tests.e2e.test_stack import HIS, until
from tests.flows import Clinic, assert_problem, item
from tests.workflows.test_visit_workflow import record

pytestmark = pytest.mark.e2e


async def test_pay_the_merged_bill_with_wechat(http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=3300))["visit_id"]
    await clinic.event(visit_id, "discharged")
    await asyncio.sleep(1.1)  # codes to one phone are a second apart in the stack under test
    assert (await http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
    login = (await http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})).json()
    auth = {"Authorization": f"Bearer {login['token']}"}
    # the stack offers every channel of the registry, in its order, each with its label
    options = (await http.get("/v1/patient/payment-options", headers=auth)).json()
    assert options["channels"] == ["wechat", "alipay", "sandbox"]
    assert options["labels"] == {"wechat": "微信支付", "alipay": "支付宝", "sandbox": "沙箱支付"}
    r = await http.post(
        "/v1/patient/payments", json={"channel": "wechat"}, headers={**auth, "Idempotency-Key": "wechat-e2e-0001"}
    )
    assert r.status_code == 201, r.text
    payment = r.json()
    assert payment["pay_url"].startswith("https://wx.tenpay.com/") and payment["amount_fen"] == 3300

    # a notification that is not WeChat's changes nothing
    forged = await http.post(
        "/v1/payments/notify/wechat",
        content=b'{"id":"x"}',
        headers={
            "Wechatpay-Timestamp": str(int(time.time())),
            "Wechatpay-Nonce": "n",
            "Wechatpay-Signature": "c2ln",
            "Wechatpay-Serial": "PUB_KEY_ID_0119000001092026",
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        },
    )
    assert_problem(forged, 401, "invalid_signature")

    done = await http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded" and done.json()["allocations"] == [
        {"visit_id": visit_id, "amount_fen": 3300}
    ]

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    settled = await until(visit, lambda v: v["payment_status"] == "settled")
    assert settled["bill"]["paid_fen"] == 3300 and len(settled["bill"]["payments"]) == 1
    # WeChat retries its notification: nothing lands twice
    again = await http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert again.status_code == 200
    assert (await visit())["bill"]["paid_fen"] == 3300


async def test_a_lost_notification_is_found_by_reconciliation(
    stack,
    http: httpx.AsyncClient,
    clinic: Clinic,
) -> None:
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
        r = await wx.post(
            f"http://127.0.0.1:{stack.wechat_port}/_sim/pay/1900000109/{payment['payment_id']}",
            params={"notify": "false"},
        )
    assert r.json() == {"notified": None}

    async def visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    # the reconciliation schedule asks WeChat, lands the money and stops the dunning
    settled = await until(visit, lambda v: v["payment_status"] == "settled", timeout=60)
    assert settled["bill"]["paid_fen"] == 1800 and len(settled["bill"]["payments"]) == 1
    audit = (
        await http.get(
            f"/v1/ops/audit?subject_type=patient&subject_id={patient_id}",
            headers={"Authorization": "Bearer dev-ops-key"},
        )
    ).json()
    assert any(e["actor"] == "channel:wechat" and e["action"] == "payment_succeeded" for e in audit)


async def test_pay_with_alipay_and_reconcile_a_lost_notify(
    stack,
    http: httpx.AsyncClient,
    clinic: Clinic,
) -> None:
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
    forged = await http.post(
        "/v1/payments/notify/alipay",
        data={"out_trade_no": payment["payment_id"], "total_amount": "12.34", "sign": "Zm9yZ2Vk"},
    )
    assert_problem(forged, 401, "invalid_signature")

    # a second visit; the patient pays at Alipay but the notify is lost: reconciliation finds it
    v2 = (await clinic.register(patient_id, fee=999))["visit_id"]
    await clinic.event(v2, "discharged")
    second = (await http.post("/v1/patient/payments", json={"channel": "alipay"}, headers=auth)).json()
    async with httpx.AsyncClient() as ali:
        await ali.get(second["pay_url"])  # the phone opens the cashier
        r = await ali.post(
            f"http://127.0.0.1:{stack.alipay_port}/_sim/pay/{second['payment_id']}", params={"notify": "false"}
        )
    assert r.json() == {"notified": None}
    settled = await until(lambda: visit(v2), lambda v: v["payment_status"] == "settled", timeout=60)
    assert settled["bill"]["paid_fen"] == 999


OPS = {"Authorization": "Bearer dev-ops-key"}


async def _login(http: httpx.AsyncClient, clinic: Clinic, phone: str) -> dict[str, str]:
    await asyncio.sleep(1.1)  # codes to one phone are a second apart in the stack under test
    assert (await http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
    login = (await http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})).json()
    return {"Authorization": f"Bearer {login['token']}"}


async def _paid_exam_visit(http: httpx.AsyncClient, clinic: Clinic, channel: str) -> tuple[str, str, dict[str, Any]]:
    """An X-ray visit (500 + 8000) paid in full at `channel`, settled."""
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    for event, fields in (
        ("checked_in", {"channel": "app"}),
        ("called", {}),
        ("consultation_started", {}),
        ("orders_placed", {"items": [item("xray", "exam", 8000)]}),
        ("consultation_ended", {}),
        ("discharged", {}),
    ):
        await clinic.event(visit_id, event, **fields)
    auth = await _login(http, clinic, phone)
    payment = (await http.post("/v1/patient/payments", json={"channel": channel}, headers=auth)).json()
    done = await http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    await until(lambda: _visit(http, visit_id), lambda v: v["payment_status"] == "settled")
    return patient_id, visit_id, payment


async def _visit(http: httpx.AsyncClient, visit_id: str) -> dict[str, Any]:
    return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()


async def _refunds(http: httpx.AsyncClient, visit_id: str) -> list[dict[str, Any]]:
    return (await http.get("/v1/ops/refunds", params={"visit_id": visit_id}, headers=OPS)).json()


async def test_cancelled_exam_is_refunded_through_wechat(http: httpx.AsyncClient, clinic: Clinic) -> None:
    _, visit_id, payment = await _paid_exam_visit(http, clinic, "wechat")
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])  # 退费 after settlement
    # WeChat takes the refund (PROCESSING), then notifies REFUND.SUCCESS
    done = await until(lambda: _refunds(http, visit_id), lambda rs: rs and rs[0]["status"] == "succeeded", timeout=30)
    assert [(r["amount_fen"], r["method"], r["payment_id"]) for r in done] == [(8000, "wechat", payment["payment_id"])]
    assert done[0]["channel_refund_no"].startswith("50")
    visit = await _visit(http, visit_id)
    assert (visit["bill"]["total_fen"], visit["bill"]["paid_fen"], visit["bill"]["balance_fen"]) == (500, 500, 0)


async def test_a_refund_the_bank_refuses_puts_the_credit_back(
    stack,
    http: httpx.AsyncClient,
    clinic: Clinic,
) -> None:
    _, visit_id, payment = await _paid_exam_visit(http, clinic, "wechat")
    async with httpx.AsyncClient() as wx:  # the payer's card was closed: WeChat will end the refund ABNORMAL
        await wx.post(
            f"http://127.0.0.1:{stack.wechat_port}/_sim/refund-outcome/{payment['payment_id']}",
            params={"outcome": "ABNORMAL"},
        )
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])
    failed = await until(lambda: _refunds(http, visit_id), lambda rs: rs and rs[0]["status"] == "failed", timeout=30)
    assert failed[0]["amount_fen"] == 8000 and "退款异常" in failed[0]["detail"]
    visit = await _visit(http, visit_id)
    # the credit is back on the visit for an operator, and listed as a failed refund
    assert visit["bill"]["balance_fen"] == -8000
    assert [p["kind"] for p in visit["bill"]["payments"]] == ["payment", "refund", "refund_reversal"]
    listed = (await http.get("/v1/ops/refunds", params={"status": "failed"}, headers=OPS)).json()
    assert failed[0]["refund_id"] in {r["refund_id"] for r in listed}


async def test_paid_twice_with_alipay_the_second_is_refunded_at_alipay(http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=2468))["visit_id"]
    await clinic.event(visit_id, "discharged")
    auth = await _login(http, clinic, phone)
    orders = [
        (await http.post("/v1/patient/payments", json={"channel": "alipay"}, headers=auth)).json() for _ in range(2)
    ]
    for order in orders:
        done = await http.post(f"/v1/sandbox/payments/{order['payment_id']}/complete")
        assert done.status_code == 200, done.text
    refunded = await until(
        lambda: _refunds(http, visit_id), lambda rs: rs and rs[0]["status"] == "succeeded", timeout=30
    )
    assert [(r["payment_id"], r["amount_fen"], r["reason"]) for r in refunded] == [
        (orders[1]["payment_id"], 2468, "overpayment")
    ]
    visit = await _visit(http, visit_id)
    assert visit["bill"]["paid_fen"] == 2468 and visit["bill"]["balance_fen"] == 0


@pytest.mark.parametrize("channel", ["wechat", "alipay"])
async def test_the_days_statement_matches_the_ledger_and_a_stranger_is_reported(
    stack, http: httpx.AsyncClient, clinic: Clinic, channel: str
) -> None:
    await _paid_exam_visit(http, clinic, channel)  # at least one payment of today at this channel
    day = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    r = await http.post("/v1/ops/statements", json={"channel": channel, "day": day}, headers=OPS)
    assert r.status_code == 200, r.text
    clean = r.json()
    assert clean["matched"] >= 1 and clean["mismatches"] == [], clean
    assert clean["channel_total_fen"] == clean["ledger_total_fen"]
    # a trade on the channel's bill that the ledger has never seen
    port = stack.wechat_port if channel == "wechat" else stack.alipay_port
    async with httpx.AsyncClient() as sim:
        await sim.post(
            f"http://127.0.0.1:{port}/_sim/bill-extra/{day}", params={"out_trade_no": "pay_stranger", "total": 999}
        )
    r = await http.post("/v1/ops/statements", json={"channel": channel, "day": day}, headers=OPS)
    found = r.json()["mismatches"]
    assert [(m["ref"], m["problem"], m["channel_fen"]) for m in found] == [("pay_stranger", "missing_in_ledger", 999)]
    listed = (
        await http.get("/v1/ops/statements", params={"mismatched": "true", "channel": channel}, headers=OPS)
    ).json()
    assert [(x["channel"], x["day"]) for x in listed] == [(channel, day)]
    bad = await http.post("/v1/ops/statements", json={"channel": channel, "day": "yesterday"}, headers=OPS)
    assert_problem(bad, 422, "invalid_request")

    client = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
    await record(client.get_workflow_handle(f"statement-{channel}-{day}"), f"statement_{channel}")


@pytest.mark.parametrize("channel", ["wechat", "alipay"])
async def test_an_abandoned_order_is_closed_and_cannot_be_paid_later(
    stack, http: httpx.AsyncClient, clinic: Clinic, channel: str
) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=777))["visit_id"]
    await clinic.event(visit_id, "discharged")
    auth = await _login(http, clinic, phone)
    payment = (await http.post("/v1/patient/payments", json={"channel": channel}, headers=auth)).json()
    if channel == "alipay":
        async with httpx.AsyncClient() as phone_browser:
            await phone_browser.get(payment["pay_url"])  # the cashier opens; the patient walks away

    async def audit() -> list[dict[str, Any]]:
        return (await http.get(f"/v1/ops/audit?subject_type=patient&subject_id={patient_id}", headers=OPS)).json()

    # past YHF_ORDER_EXPIRES_AFTER the reconciliation closes the order and fails the payment
    trail = await until(audit, lambda t: any(e["action"] == "payment_failed" for e in t), timeout=40)
    failed = next(e for e in trail if e["action"] == "payment_failed")
    assert failed["detail"]["payment_id"] == payment["payment_id"]
    late = await http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert late.status_code == 502, late.text  # the channel refuses to take money for a closed order
    visit = await _visit(http, visit_id)
    assert visit["bill"]["paid_fen"] == 0 and visit["payment_status"] != "settled"
