"""People in control of sanctions through the running stack (short durations): a patient's
dispute after a default, upheld (card unlocked, credit corrected, the patient told); a dispute
rejected (the deadline moved by the time it was open); a write-off by two operators."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.test_stack import HIS, OPS, until
from tests.flows import Clinic

pytestmark = pytest.mark.e2e


async def sign_in(http: httpx.AsyncClient, phone: str) -> dict[str, str]:
    async def sent() -> httpx.Response:
        return await http.post("/v1/patient/sms-code", json={"phone": phone})

    await until(sent, lambda r: r.status_code == 202)  # codes to one phone are a second apart
    texts = (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()
    code = [m for m in texts if m["template"] == "verification_code"][-1]["params"]["code"]
    r = await http.post("/v1/patient/login", json={"phone": phone, "code": code})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def unpaid_visit(clinic: Clinic, fee: int) -> tuple[str, str, str]:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=fee))["visit_id"]
    await clinic.event(visit_id, "discharged")
    return patient_id, phone, visit_id


def fetcher(http: httpx.AsyncClient, visit_id: str) -> Any:
    async def get_visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    return get_visit


async def test_a_dispute_upheld_after_the_default_unlocks_and_corrects(http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone, visit_id = await unpaid_visit(clinic, fee=6000)
    get_visit = fetcher(http, visit_id)
    defaulted = await until(get_visit, lambda v: v["payment_status"] == "defaulted")
    assert defaulted["card_locked"] and defaulted["credit_reported"]
    auth = await sign_in(http, phone)
    r = await http.post(f"/v1/patient/visits/{visit_id}/disputes", json={"reason": "我已在窗口付过"}, headers=auth)
    assert r.status_code == 201, r.text
    dispute_id = r.json()["dispute_id"]
    mine = (await http.get(f"/v1/patient/visits/{visit_id}", headers=auth)).json()
    assert mine["hold"]["kind"] == "dispute" and mine["dispute"]["status"] == "open"
    r = await http.post(
        f"/v1/ops/disputes/{dispute_id}/resolve",
        json={"outcome": "upheld", "note": "paid at the window, not booked"},
        headers={**OPS, "X-Operator-Id": "finance-1"},
    )
    assert r.status_code == 200, r.text
    after = await get_visit()  # read your writes: no wait
    assert after["payment_status"] == "settled" and after["bill"]["waived_fen"] == 6000
    assert not after["card_locked"] and not after["credit_reported"] and after["hold"] is None
    card = (await http.get(f"/v1/sandbox/insurance-cards/{patient_id}")).json()
    assert not card["locked"] and [e["action"] for e in card["events"]] == ["lock", "unlock"]
    reports = (await http.get(f"/v1/sandbox/credit-reports?patient_id={patient_id}")).json()
    assert [x["kind"] for x in reports] == ["report", "correction"]

    async def inbox() -> list[dict[str, Any]]:
        return (await http.get("/v1/patient/notifications", headers=auth)).json()

    await until(inbox, lambda ms: any("dispute" in m["template"] for m in ms))
    audit = (await http.get(f"/v1/ops/audit?subject_type=visit&subject_id={visit_id}", headers=OPS)).json()
    assert any(e["actor"] == "finance-1" and e["reason"] == "paid at the window, not booked" for e in audit)


async def test_a_rejected_dispute_moves_the_deadline(http: httpx.AsyncClient, clinic: Clinic) -> None:
    _, _, visit_id = await unpaid_visit(clinic, fee=3000)
    get_visit = fetcher(http, visit_id)
    due_at = datetime.fromisoformat((await get_visit())["due_at"])
    r = await http.post(f"/v1/his/visits/{visit_id}/disputes", json={"reason": "金额有误"}, headers=HIS)
    assert r.status_code == 201, r.text
    # past the deadline, the dispute holds the sanctions off
    held = await until(get_visit, lambda v: datetime.now(due_at.tzinfo) > due_at + timedelta(seconds=3), timeout=40)
    assert held["payment_status"] != "defaulted" and not held["card_locked"] and held["hold"]["kind"] == "dispute"
    r = await http.post(
        f"/v1/ops/disputes/{r.json()['dispute_id']}/resolve",
        json={"outcome": "rejected", "note": "the amount is right"},
        headers={**OPS, "X-Operator-Id": "finance-1"},
    )
    assert r.status_code == 200, r.text
    after = await get_visit()
    assert after["hold"] is None and datetime.fromisoformat(after["due_at"]) > due_at
    defaulted = await until(get_visit, lambda v: v["payment_status"] == "defaulted")
    assert defaulted["card_locked"] and defaulted["credit_reported"]


async def test_a_write_off_by_two_operators(http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, _, visit_id = await unpaid_visit(clinic, fee=9000)
    get_visit = fetcher(http, visit_id)
    await until(get_visit, lambda v: v["payment_status"] == "defaulted")
    r = await http.post(
        f"/v1/ops/visits/{visit_id}/actions",
        json={"action": "write_off", "reason": "patient deceased"},
        headers={**OPS, "X-Operator-Id": "clerk-1", "Idempotency-Key": f"wo-{visit_id}"},
    )
    assert r.status_code == 202, r.text
    approval_id = r.json()["approval_id"]
    decide = {"decision": "approve", "reason": "certificate seen"}
    r = await http.post(f"/v1/ops/approvals/{approval_id}", json=decide, headers={**OPS, "X-Operator-Id": "clerk-1"})
    assert r.status_code == 409 and r.json()["code"] == "same_operator"
    r = await http.post(f"/v1/ops/approvals/{approval_id}", json=decide, headers={**OPS, "X-Operator-Id": "head-1"})
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "written_off" and not r.json()["card_locked"]
    assert r.json()["bill"]["total_fen"] == 9000  # the bill stays in the books
    card = (await http.get(f"/v1/sandbox/insurance-cards/{patient_id}")).json()
    assert not card["locked"]
    reports = (await http.get(f"/v1/sandbox/credit-reports?patient_id={patient_id}")).json()
    assert [x["kind"] for x in reports] == ["report", "correction"]
