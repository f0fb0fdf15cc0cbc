"""Refunds through the API and the real worker: money paid twice, orders cancelled after
payment (退费) before and after the visit settles, window refunds an operator confirms."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from db.models import LedgerEntry, LedgerEntry as Entry, Payment
from integrations.payments.wechat import WeChatChannel, WeChatConfig, WeChatPayClient
from simulators.keys import new_rsa_pair
from tests.api.test_patient import sign_in
from tests.flows import Clinic, assert_problem, item
from tests.support import add_patient, add_visit, free_port, now, pay, uid


async def eventually(probe: Callable[[], Awaitable[Any]], *, tries: int = 150, pause: float = 0.1) -> Any:
    """The probe's first truthy answer (workflows finish in the background)."""
    for _ in range(tries):
        if answer := await probe():
            return answer
        await asyncio.sleep(pause)
    raise AssertionError("still not there")


async def refunds(api, **query: str) -> list[dict[str, Any]]:
    r = await api.http.get("/v1/ops/refunds", params=query, headers=api.ops)
    assert r.status_code == 200, r.text
    return r.json()


async def ledger_of(factory, payment_id: str) -> dict[str, int]:
    async with factory() as session:
        entries = (await session.scalars(select(LedgerEntry).where(LedgerEntry.payment_id == payment_id))).all()
    sums: dict[str, int] = {}
    for e in entries:
        sums[e.kind] = sums.get(e.kind, 0) + e.amount_fen
    return sums


async def exam_visit(clinic: Clinic, patient_id: str) -> str:
    """Registration 500 + an X-ray 12000, the patient still with the doctor."""
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "orders_placed", items=[item("xray", "exam", 12000)])
    await clinic.event(visit_id, "consultation_ended")
    return visit_id


async def test_paid_twice_from_two_phones_the_second_comes_back(api, clinic: Clinic, factory) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=3000))["visit_id"]
    await clinic.event(visit_id, "discharged")
    auth, _ = await sign_in(api, clinic, phone)
    first, second = [
        (
            await api.http.post(
                "/v1/patient/payments", json={"channel": "sandbox"}, headers={**auth, "Idempotency-Key": uid("phone-")}
            )
        ).json()
        for _ in range(2)
    ]
    assert first["amount_fen"] == second["amount_fen"] == 3000 and first["payment_id"] != second["payment_id"]
    # both phones pay at the same moment: one settles the bill, the other is refunded
    answers = await asyncio.gather(
        *(api.http.post(f"/v1/sandbox/payments/{p['payment_id']}/complete") for p in (first, second))
    )
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    landed_first = {a["visit_id"]: a["amount_fen"] for a in answers[0].json()["allocations"]}
    assert landed_first == {visit_id: 3000}

    done = await eventually(lambda: _succeeded(api, patient_id))
    [refund] = done
    assert (refund["amount_fen"], refund["reason"]) == (3000, "overpayment")
    # whichever landed second is the one sent back
    first, second = (first, second) if refund["payment_id"] == second["payment_id"] else (second, first)
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert visit["bill"]["balance_fen"] == 0 and visit["bill"]["paid_fen"] == 3000
    assert await ledger_of(factory, second["payment_id"]) == {"payment": 3000, "refund": 3000}
    async with factory() as session:
        assert (await session.get(Payment, second["payment_id"])).status == "refunded"
        assert (await session.get(Payment, first["payment_id"])).status == "succeeded"
    mine = (await api.http.get("/v1/patient/refunds", headers=auth)).json()
    assert [r["refund_id"] for r in mine] == [done[0]["refund_id"]]
    texts = await eventually(lambda: _texts(api, phone, "refund_sent"))
    assert "30.00" in texts[0]["text"]
    # the second payment's repeated notification changes nothing
    await api.http.post(f"/v1/sandbox/payments/{second['payment_id']}/complete")
    assert len(await refunds(api, patient_id=patient_id)) == 1
    assert await ledger_of(factory, second["payment_id"]) == {"payment": 3000, "refund": 3000}


async def _succeeded(api, patient_id: str) -> list[dict[str, Any]]:
    found = await refunds(api, patient_id=patient_id)
    return found if found and all(r["status"] == "succeeded" for r in found) else []


async def _texts(api, phone: str, template: str) -> list[dict[str, Any]]:
    return [m for m in (await api.http.get(f"/v1/sandbox/sms?phone={phone}")).json() if m["template"] == template]


async def test_order_cancelled_after_paying_mid_visit_is_refunded_at_discharge(api, clinic: Clinic, factory) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = await exam_visit(clinic, patient_id)
    auth, _ = await sign_in(api, clinic, phone)
    payment = (
        await api.http.post(
            "/v1/patient/payments", json={"channel": "sandbox"}, headers={**auth, "Idempotency-Key": uid("mid-")}
        )
    ).json()
    assert payment["amount_fen"] == 12500
    await api.http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    # the X-ray is not done after all: the visit now holds a credit, kept until discharge
    visit = await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])
    assert visit["bill"]["balance_fen"] == -12000
    assert await refunds(api, visit_id=visit_id) == []
    await clinic.event(visit_id, "discharged")

    done = await eventually(lambda: _succeeded(api, patient_id))
    assert [(r["amount_fen"], r["reason"], r["method"]) for r in done] == [(12000, "cancellation", "sandbox")]
    visit = await eventually(lambda: _settled(api, visit_id))
    assert (visit["bill"]["total_fen"], visit["bill"]["paid_fen"], visit["bill"]["balance_fen"]) == (500, 500, 0)
    async with factory() as session:
        paid = await session.get(Payment, payment["payment_id"])
        assert (paid.status, paid.refunded_fen) == ("partially_refunded", 12000)
    # the electronic receipt shows what was kept: the registration, paid 5 yuan
    [receipt] = await eventually(lambda: _receipts(api, auth))
    assert (receipt["total_fen"], receipt["paid_fen"], receipt["version"]) == (500, 500, 1)
    assert [line["amount_fen"] for line in receipt["lines"]] == [500]
    assert receipt["payments"] == [{"payment_id": payment["payment_id"], "method": "sandbox", "amount_fen": 500}]
    page = await api.http.get(receipt["download_url"], headers=auth)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "attachment" in page.headers["content-disposition"] and receipt["check_code"] in page.text
    assert "医疗门诊收费电子票据" in page.text and "¥5.00" in page.text


async def _receipts(api, auth: dict[str, str]) -> list[dict[str, Any]]:
    r = await api.http.get("/v1/patient/receipts", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


async def _settled(api, visit_id: str) -> dict[str, Any] | None:
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    return visit if visit["payment_status"] == "settled" else None


async def test_cash_refund_after_settlement_waits_for_the_window(api, clinic: Clinic, factory) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = await exam_visit(clinic, patient_id)
    await clinic.event(visit_id, "discharged")
    r = await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 12500, "method": "cash"})
    assert r.status_code == 201, r.text
    await eventually(lambda: _settled(api, visit_id))
    # 退费 after the bill was settled: the visit's workflow is still open for it
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])
    waiting = await eventually(lambda: _with_status(api, visit_id, "manual"))
    refund = waiting[0]
    assert (refund["amount_fen"], refund["method"]) == (12000, "cash")
    await eventually(lambda: _texts(api, phone, "refund_at_window"))
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert visit["bill"]["balance_fen"] == 0 and visit["payment_status"] == "settled"

    confirm = f"/v1/ops/refunds/{refund['refund_id']}/complete"
    r = await api.ops_post(confirm, {})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    assert (await api.ops_post(confirm, {})).json()["status"] == "succeeded"  # a repeat is harmless
    assert_problem(await api.ops_post("/v1/ops/refunds/rfd_nope/complete", {}), 404, "refund_not_found")
    assert await ledger_of(factory, r.json()["payment_id"]) == {"payment": 12500, "refund": 12000}
    async with factory() as session:
        assert (await session.get(Payment, r.json()["payment_id"])).refunded_fen == 12000
    # the receipt issued at settlement was voided (红冲) and re-issued without the X-ray
    auth, _ = await sign_in(api, clinic, phone)
    issued = await eventually(lambda: _versions(api, auth, 2))
    assert [(r["version"], r["total_fen"], r["voided_at"] is None) for r in issued] == [
        (2, 500, True),
        (1, 12500, False),
    ]
    other, _ = await sign_in(api, clinic, (await clinic.enrolled_patient())[1])
    assert_problem(
        await api.http.get(f"/v1/patient/receipts/{issued[0]['receipt_id']}", headers=other), 404, "receipt_not_found"
    )
    # nothing left to give back
    assert_problem(await api.ops_post(f"/v1/ops/visits/{visit_id}/refunds", {}), 409, "no_credit")
    assert_problem(await api.ops_post("/v1/ops/visits/nope/refunds", {}), 404, "visit_not_found")


async def _versions(api, auth: dict[str, str], n: int) -> list[dict[str, Any]]:
    found = await _receipts(api, auth)
    return found if len(found) == n else []


async def _with_status(api, visit_id: str, status: str) -> list[dict[str, Any]]:
    return await refunds(api, visit_id=visit_id, status=status)


async def test_an_operator_refunds_a_credit_once_per_key(api, factory) -> None:
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=500)
    async with factory() as session, session.begin():
        session.add(
            Entry(
                idempotency_key=f"visit-{visit_id}:registration",
                visit_id=visit_id,
                patient_id=patient_id,
                kind="charge",
                amount_fen=500,
                created_at=now(),
            )
        )
    await pay(factory, patient_id, visit_id, 800, method="sandbox")  # 300 too much, left on the visit
    key = {"Idempotency-Key": uid("ops-refund-")}
    first = await api.ops_post(f"/v1/ops/visits/{visit_id}/refunds", {"reason": "operator"}, headers=key)
    assert first.status_code == 201, first.text
    assert [(r["amount_fen"], r["reason"]) for r in first.json()] == [(300, "operator")]
    again = await api.ops_post(f"/v1/ops/visits/{visit_id}/refunds", {"reason": "operator"}, headers=key)
    assert again.status_code == 201 and again.json() == first.json()
    assert_problem(
        await api.ops_post(f"/v1/ops/visits/{visit_id}/refunds", {"reason": "other"}, headers=key),
        409,
        "idempotency_key_reused",
    )
    done = await eventually(lambda: _with_status(api, visit_id, "succeeded"))
    assert [r["refund_id"] for r in done] == [r["refund_id"] for r in first.json()]


async def test_an_order_call_that_times_out_leaves_the_payment_unknown(api, clinic: Clinic, factory) -> None:
    """A channel that does not answer may still have taken the order: the payment is kept as
    `unknown` (never failed) for reconciliation to ask about."""
    ours, _ = new_rsa_pair()
    _, theirs = new_rsa_pair()
    silent = WeChatPayClient(
        WeChatConfig(
            mchid="1900000109",
            appid="wx8888888888888888",
            merchant_private_key=ours,
            merchant_serial="5157F09EFDC0",
            apiv3_key="0" * 32,
            platform_public_key=theirs,
            platform_public_key_id="PUB_KEY_ID_X",
            notify_url="http://api/v1/payments/notify/wechat",
            gateway=f"http://127.0.0.1:{free_port()}",
        )
    )  # nobody listens there
    app = api.http._transport.app  # the app under test: give it a WeChat that never answers
    app.state.yhf.channels["wechat"] = WeChatChannel(silent)
    try:
        patient_id, phone = await clinic.enrolled_patient()
        visit_id = (await clinic.register(patient_id, fee=900))["visit_id"]
        await clinic.event(visit_id, "discharged")
        auth, _ = await sign_in(api, clinic, phone)
        r = await api.http.post("/v1/patient/payments", json={"channel": "wechat"}, headers=auth)
        problem = assert_problem(r, 504, "channel_timeout")
    finally:
        del app.state.yhf.channels["wechat"]
    async with factory() as session:
        payment = await session.get(Payment, problem["payment_id"])
        assert (payment.status, payment.amount_fen, payment.method) == ("unknown", 900, "wechat")
