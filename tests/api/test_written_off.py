"""A written-off debt (issue 10's review): it stays in the books and in receivables, but the
patient is not asked for it (the merged bill), a payment is not allocated to it, and it does not
block unenrolment. Over ASGI against the real dev server and this test's worker."""

from __future__ import annotations

from tests.api.test_oversight import BOB, act, discharged_visit
from tests.api.test_patient import sign_in
from tests.flows import Clinic


async def write_off(api, visit_id: str) -> None:
    r = await act(api, visit_id, {"action": "write_off", "reason": "patient deceased"})
    assert r.status_code == 202, r.text
    decide = {"decision": "approve", "reason": "checked the certificate"}
    r = await api.ops_post(f"/v1/ops/approvals/{r.json()['approval_id']}", decide, headers=BOB)
    assert r.status_code == 200 and r.json()["payment_status"] == "written_off", r.text


async def test_a_written_off_visit_is_not_asked_for_nor_paid_into_nor_blocks_unenrolment(api, clinic: Clinic) -> None:
    patient_id, phone, gone = await discharged_visit(clinic, fee=8000)
    await write_off(api, gone)
    owed = (await clinic.register(patient_id, fee=1200))["visit_id"]
    await clinic.event(owed, "discharged")
    auth, _ = await sign_in(api, clinic, phone)
    bill = (await api.http.get("/v1/patient/bill", headers=auth)).json()
    assert bill["balance_fen"] == 1200 and [v["visit_id"] for v in bill["visits"]] == [owed]
    r = await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 1200, "method": "card"})
    assert r.status_code in (200, 201), r.text
    assert [a["visit_id"] for a in r.json()["allocations"]] == [owed]
    r = await api.http.delete(f"/v1/his/patients/{patient_id}/enrollment", headers=api.his)
    assert r.status_code == 200 and r.json() == {"patient_id": patient_id, "enrolled": False}, r.text
