"""医保脱卡支付 through the API, the worker and the simulated bureau: the pre-settlement split,
the insurance part settled and booked once the self-pay part lands, and both on the bill."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import update

from activities.insurance import bureau_msgid
from db.models import Patient
from integrations.insurance_bureau import CARD_LOCK, WORKER
from tests.api.test_patient import sign_in
from tests.api.test_refunds import eventually
from tests.flows import Clinic, assert_problem, item
from tests.support import uid
from tests.workflows.test_visit_workflow import record
from workflows import contracts as c


async def drug_and_exam_visit(clinic: Clinic, patient_id: str) -> str:
    """Registration 500 (not covered) + X-ray 12000 + a drug 3000 (covered)."""
    visit_id = (await clinic.register(patient_id, fee=500))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "orders_placed", items=[item("xray", "exam", 12000)])
    await clinic.event(visit_id, "prescribed", items=[item("amox", "drug", 3000)], skin_test_required=False)
    await clinic.event(visit_id, "discharged")
    return visit_id


async def presettled(api, clinic: Clinic) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = await drug_and_exam_visit(clinic, patient_id)
    auth, _ = await sign_in(api, clinic, phone)
    r = await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)
    assert r.status_code == 201, r.text
    return patient_id, visit_id, auth, r.json()


async def test_card_less_payment_splits_settles_and_books_both_halves(api, clinic: Clinic, temporal_env) -> None:
    patient_id, visit_id, auth, split = await presettled(api, clinic)
    # covered 15000: the pooled fund pays 60%, the personal account the rest of it; the fee is self-pay
    assert (split["total_fen"], split["pooled_fen"], split["personal_fen"], split["self_pay_fen"]) == (
        15500,
        9000,
        6000,
        500,
    )
    assert split["status"] == "presettled" and split["visit_ids"] == [visit_id]
    key = {"Idempotency-Key": uid("ins-")}
    pay = f"/v1/patient/insurance/settlements/{split['settlement_id']}/pay"
    r = await api.http.post(pay, json={"channel": "sandbox"}, headers={**auth, **key})
    assert r.status_code == 200, r.text
    assert (await api.http.post(pay, json={"channel": "sandbox"}, headers={**auth, **key})).json() == r.json()
    assert_problem(await api.http.post(pay, json={"channel": "sandbox"}, headers=auth), 409, "settlement_used")
    assert_problem(
        await api.http.post(pay, json={"channel": "alipay"}, headers={**auth, **key}), 409, "idempotency_key_reused"
    )
    self_pay = r.json()["self_pay"]
    assert self_pay["amount_fen"] == 500
    done = await api.http.post(f"/v1/sandbox/payments/{self_pay['payment_id']}/complete")
    assert done.status_code == 200, done.text

    async def settled() -> dict[str, Any] | None:
        visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
        return visit if visit["payment_status"] == "settled" else None

    visit = await eventually(settled)
    paid = {p["method"]: p["amount_fen"] for p in visit["bill"]["payments"] if p["kind"] == "payment"}
    assert paid == {"sandbox": 500, "insurance_pooled": 9000, "insurance_personal": 6000}
    assert visit["bill"]["balance_fen"] == 0
    status = (await api.http.get(f"/v1/patient/insurance/settlements/{split['settlement_id']}", headers=auth)).json()
    assert status["status"] == "completed"
    bureau = (await api.http.get(f"/v1/sandbox/insurance-settlements/{patient_id}")).json()
    assert [(b["status"], b["pooled_fen"], b["personal_fen"]) for b in bureau] == [("settled", 9000, 6000)]
    [receipt] = await eventually(lambda: _receipts(api, auth))
    assert {p["method"]: p["amount_fen"] for p in receipt["payments"]} == paid
    # a covered drug is cancelled after settlement (退费): its money goes back to the insurance
    # first (the newest payment), by the bureau's refund procedure, which an operator confirms
    await clinic.event(visit_id, "orders_cancelled", item_ids=["amox"])

    async def manual() -> list[dict[str, Any]]:
        found = (await api.http.get("/v1/ops/refunds", params={"visit_id": visit_id}, headers=api.ops)).json()
        return found if found and all(r["status"] == "manual" for r in found) else []

    assert [(r["method"], r["amount_fen"]) for r in await eventually(manual)] == [("insurance_personal", 3000)]
    saga = temporal_env.client.get_workflow_handle(c.insurance_workflow_id(split["settlement_id"]))
    assert (await saga.result())["status"] == "completed"
    await record(saga, "insurance_completed")


async def _receipts(api, auth: dict[str, str]) -> list[dict[str, Any]]:
    return (await api.http.get("/v1/patient/receipts", headers=auth)).json()


async def test_only_the_locally_insured_and_only_unchanged_bills(api, clinic: Clinic, factory) -> None:
    patient_id, visit_id, auth, split = await presettled(api, clinic)
    # the bill changes after the pre-settlement: the split no longer holds
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])
    r = await api.http.post(
        f"/v1/patient/insurance/settlements/{split['settlement_id']}/pay", json={"channel": "sandbox"}, headers=auth
    )
    assert_problem(r, 409, "bill_changed")
    other, _ = await sign_in(api, clinic, (await clinic.enrolled_patient())[1])
    assert_problem(
        await api.http.get(f"/v1/patient/insurance/settlements/{split['settlement_id']}", headers=other),
        404,
        "settlement_not_found",
    )
    async with factory() as session, session.begin():
        await session.execute(update(Patient).where(Patient.id == patient_id).values(insured_locally=False))
    assert_problem(await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth), 409, "not_insured")


async def test_a_locked_card_is_not_presettled_and_the_bureau_keeps_nothing_of_it(
    api, clinic: Clinic, integrations, simulators, factory
) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    await drug_and_exam_visit(clinic, patient_id)
    auth, _ = await sign_in(api, clinic, phone)
    bureau = integrations.bureau
    now = datetime.now(UTC)
    assert await bureau.set_card_lock(
        action="lock",
        msgid=await bureau_msgid(factory, bureau, uid("lock:"), CARD_LOCK),  # the allocator's, as the product's
        psn_no=patient_id,
        reason="overdue",
        at=now,
        operator=WORKER,
        day=bureau.local_day(now),
    )
    r = await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)
    assert_problem(r, 409, "card_locked")
    # 2201 and 2204 were taken back (2205, 2202): nothing is pre-settled or left open at the bureau
    assert await simulators.inspect.settlements(patient_id) == []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulators.bureau), base_url="http://b") as http:
        seen = (await http.get(f"/_sandbox/treatments/{patient_id}")).json()
    assert [(t["status"], t["fees_fen"]) for t in seen] == [("revoked", 0)]
    # unlocked, the same bill pre-settles
    assert not await bureau.set_card_lock(
        action="unlock",
        msgid=await bureau_msgid(factory, bureau, uid("unlock:"), CARD_LOCK),
        psn_no=patient_id,
        reason="paid",
        at=now,
        operator=WORKER,
        day=bureau.local_day(now),
    )
    r = await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)
    assert r.status_code == 201 and r.json()["pooled_fen"] == 9000, r.text
