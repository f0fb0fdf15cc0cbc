"""People in control of sanctions, through the contract: operators' actions on a visit, the
four-eyes write-off, disputes (申诉) from the app and the window, and the visit's new fields.
Over ASGI against the real dev server and this test's worker (the workflow's
`operator_action` update decides; the API answers from it)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from tests.api.test_patient import sign_in
from tests.flows import Clinic, assert_problem, item
from tests.support import uid

ALICE = {"X-Operator-Id": "alice"}
BOB = {"X-Operator-Id": "bob"}


async def discharged_visit(clinic: Clinic, fee: int = 5000) -> tuple[str, str, str]:
    """A discharged visit that owes `fee`: (patient_id, phone, visit_id)."""
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=fee))["visit_id"]
    visit = await clinic.event(visit_id, "discharged")
    assert visit["payment_status"] == "due" and visit["bill"]["balance_fen"] == fee
    return patient_id, phone, visit_id


async def act(
    api, visit_id: str, body: dict[str, Any], operator: dict[str, str] = ALICE, key: str | None = None
) -> Any:
    headers = {**operator, **({"Idempotency-Key": key} if key else {})}
    return await api.ops_post(f"/v1/ops/visits/{visit_id}/actions", body, headers=headers)


async def audit(api, visit_id: str) -> list[dict[str, Any]]:
    r = await api.http.get(f"/v1/ops/audit?subject_type=visit&subject_id={visit_id}", headers=api.ops)
    assert r.status_code == 200, r.text
    return r.json()


async def test_an_action_names_its_reason_and_operator_and_needs_the_ops_key(api, clinic: Clinic) -> None:
    _, _, visit_id = await discharged_visit(clinic)
    pause = {"action": "pause_sanctions", "reason": "patient called: paying tomorrow"}
    assert_problem(await act(api, visit_id, {"action": "pause_sanctions"}), 422, "invalid_request")
    assert_problem(await act(api, visit_id, {**pause, "reason": "  "}), 422, "invalid_request")
    assert_problem(await act(api, visit_id, pause, operator={}), 422, "invalid_request")
    # the HIS key does not open the operators' door, nor does no key
    r = await api.http.post(f"/v1/ops/visits/{visit_id}/actions", json=pause, headers={**api.his, **ALICE})
    assert_problem(r, 401, "unauthorized")
    r = await api.http.post(f"/v1/ops/visits/{visit_id}/actions", json=pause, headers=ALICE)
    assert_problem(r, 401, "unauthorized")
    # what each action takes and needs
    assert_problem(await act(api, visit_id, {"action": "waive", "reason": "x"}), 422, "invalid_request")
    assert_problem(await act(api, visit_id, {"action": "extend_deadline", "reason": "x"}), 422, "invalid_request")
    assert_problem(await act(api, visit_id, {**pause, "amount_fen": 100}), 422, "invalid_request")
    assert_problem(await act(api, visit_id, {"action": "approve", "reason": "x"}), 422, "invalid_request")
    assert_problem(await act(api, "no-such-visit", pause), 404, "visit_not_found")
    # nothing happened to the visit
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["hold"] is None


async def test_pause_and_resume_put_an_operator_hold_on_and_off(api, clinic: Clinic) -> None:
    _, _, visit_id = await discharged_visit(clinic)
    until = (datetime.now().astimezone() + timedelta(days=3)).isoformat()
    pause = {"action": "pause_sanctions", "reason": "patient in hospital", "until": until}
    r = await act(api, visit_id, pause, key="pause-" + visit_id)
    assert r.status_code == 200, r.text
    hold = r.json()["hold"]
    assert hold["kind"] == "operator" and hold["reason"] == pause["reason"]
    assert datetime.fromisoformat(hold["until"]) == datetime.fromisoformat(until)
    # a retry with the same key gets the same answer; the key with another body is refused
    again = await act(api, visit_id, pause, key="pause-" + visit_id)
    assert again.status_code == 200 and again.json() == r.json()
    other = await act(api, visit_id, {**pause, "reason": "other"}, key="pause-" + visit_id)
    assert_problem(other, 409, "idempotency_key_reused")
    # read your writes: every door shows the hold
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["hold"] == hold
    found = await api.http.get(f"/v1/ops/visits?patient_id={r.json()['patient_id']}", headers=api.ops)
    assert [v["hold"] for v in found.json()] == [hold]
    assert_problem(await act(api, visit_id, {**pause, "until": None}), 409, "invalid_action")  # paused already
    r = await act(api, visit_id, {"action": "resume_sanctions", "reason": "back home"}, operator=BOB)
    assert r.status_code == 200, r.text
    assert r.json()["hold"] is None
    assert_problem(await act(api, visit_id, {"action": "resume_sanctions", "reason": "again"}), 409, "invalid_action")
    # each action is in the audit, with its operator, reason and time
    seen = {(e["actor"], e["reason"]) for e in await audit(api, visit_id)}
    assert {("alice", "patient in hospital"), ("bob", "back home")} <= seen


async def test_waive_more_than_owed_or_an_earlier_deadline_is_refused(api, clinic: Clinic) -> None:
    _, _, visit_id = await discharged_visit(clinic, fee=5000)
    r = await act(api, visit_id, {"action": "waive", "reason": "too much", "amount_fen": 5001})
    assert_problem(r, 409, "invalid_action")
    due_at = datetime.fromisoformat((await api.his_get(f"/v1/his/visits/{visit_id}")).json()["due_at"])
    earlier = {"action": "extend_deadline", "reason": "x", "due_at": (due_at - timedelta(hours=1)).isoformat()}
    assert_problem(await act(api, visit_id, earlier), 409, "invalid_action")
    later = (due_at + timedelta(days=10)).isoformat()
    r = await act(api, visit_id, {"action": "extend_deadline", "reason": "salary on the 15th", "due_at": later})
    assert r.status_code == 200, r.text
    assert datetime.fromisoformat(r.json()["due_at"]) == datetime.fromisoformat(later)
    # a partial waiver: its own entry, the balance lower, the visit still owes
    r = await act(api, visit_id, {"action": "waive", "reason": "hardship", "amount_fen": 2000})
    assert r.status_code == 200, r.text
    bill = r.json()["bill"]
    assert (bill["waived_fen"], bill["balance_fen"], bill["total_fen"]) == (2000, 3000, 5000)
    assert r.json()["payment_status"] == "due"


async def test_a_waiver_of_the_whole_balance_settles_and_a_settled_visit_takes_no_action(api, clinic: Clinic) -> None:
    _, _, visit_id = await discharged_visit(clinic, fee=3000)
    r = await act(api, visit_id, {"action": "waive", "reason": "staff member", "amount_fen": 3000})
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "settled" and r.json()["bill"]["waived_fen"] == 3000
    assert r.json()["bill"]["balance_fen"] == 0
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["payment_status"] == "settled"
    r = await act(api, visit_id, {"action": "pause_sanctions", "reason": "too late"})
    assert_problem(r, 409, "invalid_action")
    r = await act(api, visit_id, {"action": "write_off", "reason": "too late"})
    assert_problem(r, 409, "invalid_action")


async def test_a_paid_visit_takes_no_action(api, clinic: Clinic) -> None:
    patient_id, _, visit_id = await discharged_visit(clinic, fee=1500)
    r = await api.ops_post(
        "/v1/ops/payments", {"patient_id": patient_id, "visit_ids": [visit_id], "amount_fen": 1500, "method": "cash"}
    )
    assert r.status_code == 201, r.text
    for _ in range(100):  # the workflow records the settlement when it hears of the payment
        if (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["payment_status"] == "settled":
            break
        await asyncio.sleep(0.1)
    r = await act(api, visit_id, {"action": "waive", "reason": "x", "amount_fen": 1})
    assert_problem(r, 409, "invalid_action")


async def test_a_write_off_needs_a_second_operator(api, clinic: Clinic) -> None:
    _, _, visit_id = await discharged_visit(clinic, fee=8000)
    assert_problem(await act(api, visit_id, {"action": "unlock_card", "reason": "x"}), 409, "invalid_action")
    r = await act(api, visit_id, {"action": "write_off", "reason": "patient deceased"}, key=f"wo-{visit_id}")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending_approval"
    approval_id = r.json()["approval_id"]
    # a retry is the same request, answered the same; another write-off waits behind this one
    again = await act(api, visit_id, {"action": "write_off", "reason": "patient deceased"}, key=f"wo-{visit_id}")
    assert (again.status_code, again.json()) == (202, r.json())
    assert_problem(await act(api, visit_id, {"action": "write_off", "reason": "twice"}), 409, "invalid_action")
    view = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert view["payment_status"] == "due"  # nothing is written off yet
    # the operator who asked may not approve; an unknown approval is not found
    decide = {"decision": "approve", "reason": "checked the certificate"}
    r = await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=ALICE)
    assert_problem(r, 409, "same_operator")
    assert_problem(
        await api.ops_post(f"/v1/ops/approvals/{uid('apr')}", decide, headers=BOB), 404, "approval_not_found"
    )
    assert_problem(await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide), 422, "invalid_request")
    r = await api.ops_post(f"/v1/ops/approvals/{approval_id}", decide, headers=BOB)
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "written_off" and r.json()["bill"]["total_fen"] == 8000
    view = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert view["payment_status"] == "written_off" and not view["card_locked"] and not view["credit_reported"]
    assert_problem(await act(api, visit_id, {"action": "pause_sanctions", "reason": "x"}), 409, "invalid_action")
    seen = {(e["actor"], e["reason"]) for e in await audit(api, visit_id)}
    assert {("alice", "patient deceased"), ("bob", "checked the certificate")} <= seen


async def test_a_rejected_write_off_leaves_the_debt(api, clinic: Clinic) -> None:
    _, _, visit_id = await discharged_visit(clinic, fee=8000)
    approval_id = (await act(api, visit_id, {"action": "write_off", "reason": "cannot reach"})).json()["approval_id"]
    r = await api.ops_post(
        f"/v1/ops/approvals/{approval_id}", {"decision": "reject", "reason": "try the phone again"}, headers=BOB
    )
    assert r.status_code == 200, r.text
    assert r.json()["payment_status"] == "due" and r.json()["bill"]["balance_fen"] == 8000


async def test_a_patient_disputes_their_own_visit_once_at_a_time(api, clinic: Clinic) -> None:
    _, phone, visit_id = await discharged_visit(clinic, fee=4000)
    _, _, other_visit = await discharged_visit(clinic)
    auth, _ = await sign_in(api, clinic, phone)
    body = {"reason": "我没有做CT"}
    r = await api.http.post(f"/v1/patient/visits/{other_visit}/disputes", json=body, headers=auth)
    assert_problem(r, 404, "visit_not_found")
    assert_problem(
        await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json={}, headers=auth), 422, "invalid_request"
    )
    r = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json=body, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "open" and r.json()["dispute_id"].startswith("dsp_")
    dispute_id = r.json()["dispute_id"]
    assert_problem(
        await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json=body, headers=auth), 409, "dispute_open"
    )
    assert_problem(await api.his_post(f"/v1/his/visits/{visit_id}/disputes", body), 409, "dispute_open")
    mine = (await api.http.get(f"/v1/patient/visits/{visit_id}", headers=auth)).json()
    assert mine["dispute"]["dispute_id"] == dispute_id and mine["dispute"]["status"] == "open"
    assert mine["hold"]["kind"] == "dispute"
    # the operators' queue
    r = await api.http.get(f"/v1/ops/disputes?status=open&visit_id={visit_id}", headers=api.ops)
    assert r.status_code == 200 and [d["dispute_id"] for d in r.json()] == [dispute_id]
    assert r.json()[0]["reason"] == body["reason"]
    assert r.json()[0]["opened_by"].startswith("patient:")
    assert_problem(await api.http.get("/v1/ops/disputes?status=closed", headers=api.ops), 422, "invalid_request")
    assert_problem(await api.http.get("/v1/ops/disputes", headers=api.his), 401, "unauthorized")


async def test_a_rejected_dispute_lifts_the_hold(api, clinic: Clinic) -> None:
    _, phone, visit_id = await discharged_visit(clinic, fee=4000)
    r = await api.his_post(f"/v1/his/visits/{visit_id}/disputes", {"reason": "窗口代为申诉"}, headers=ALICE)
    assert r.status_code == 201, r.text
    dispute_id = r.json()["dispute_id"]
    resolve = {"outcome": "rejected", "note": "the CT was done: report on file"}
    r = await api.ops_post(f"/v1/ops/disputes/{dispute_id}/resolve", resolve)
    assert_problem(r, 422, "invalid_request")  # no operator
    assert_problem(
        await api.ops_post(f"/v1/ops/disputes/{uid('dsp_')}/resolve", resolve, headers=BOB), 404, "dispute_not_found"
    )
    r = await api.ops_post(f"/v1/ops/disputes/{dispute_id}/resolve", resolve, headers=BOB)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["outcome"], r.json()["resolved_by"]) == ("resolved", "rejected", "bob")
    assert r.json()["opened_by"] == "his:alice"
    view = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert view["hold"] is None and view["dispute"]["outcome"] == "rejected"
    assert view["payment_status"] == "due" and view["bill"]["balance_fen"] == 4000
    r = await api.ops_post(f"/v1/ops/disputes/{dispute_id}/resolve", resolve, headers=BOB)
    assert_problem(r, 409, "invalid_action")
    r = await api.http.get(f"/v1/ops/disputes?status=resolved&visit_id={visit_id}", headers=api.ops)
    assert [d["dispute_id"] for d in r.json()] == [dispute_id]
    # resolved: a new dispute may be opened
    auth, _ = await sign_in(api, clinic, phone)
    r = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json={"reason": "还是不对"}, headers=auth)
    assert r.status_code == 201, r.text


async def test_an_upheld_dispute_waives_and_the_patient_is_told(api, clinic: Clinic) -> None:
    _, phone, visit_id = await discharged_visit(clinic, fee=4000)
    auth, _ = await sign_in(api, clinic, phone)
    r = await api.http.post(f"/v1/patient/visits/{visit_id}/disputes", json={"reason": "收费错误"}, headers=auth)
    dispute_id = r.json()["dispute_id"]
    resolve = {"outcome": "upheld", "note": "charged twice", "waive_fen": 4001}
    r = await api.ops_post(f"/v1/ops/disputes/{dispute_id}/resolve", resolve, headers=BOB)
    assert_problem(r, 409, "invalid_action")  # more than owed
    r = await api.ops_post(f"/v1/ops/disputes/{dispute_id}/resolve", {**resolve, "waive_fen": 4000}, headers=BOB)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "upheld" and r.json()["waived_fen"] == 4000
    mine = (await api.http.get(f"/v1/patient/visits/{visit_id}", headers=auth)).json()
    assert mine["payment_status"] == "settled" and mine["bill"]["waived_fen"] == 4000 and mine["hold"] is None
    assert mine["dispute"]["status"] == "resolved" and mine["dispute"]["outcome"] == "upheld"
    for _ in range(50):  # the outcome reaches the inbox (sent by the workflow)
        inbox = (await api.http.get("/v1/patient/notifications", headers=auth)).json()
        if any(n["visit_id"] == visit_id and "dispute" in n["template"] for n in inbox):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(inbox)


async def test_unperformed_items_are_shown(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(
        visit_id, "orders_placed", items=[item("cbc", "lab", 2500, name="血常规"), item("ct", "exam", 20000)]
    )
    await clinic.event(visit_id, "consultation_ended")
    await clinic.event(visit_id, "results_ready", item_ids=["ct"])
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "prescribed", items=[item("azi", "drug", 3500), item("drip", "infusion", 6000)])
    await clinic.event(visit_id, "consultation_ended")
    visit = await clinic.event(visit_id, "dispensed")
    assert {i["item_id"] for i in visit["unperformed_items"]} == {"cbc", "drip"}
    visit = await clinic.event(visit_id, "discharged")
    assert visit["unperformed_items"] == [
        {"item_id": "cbc", "category": "lab", "name": "血常规"},
        {"item_id": "drip", "category": "infusion", "name": "项目drip"},
    ]
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["unperformed_items"] == visit["unperformed_items"]
    done = await clinic.event(visit_id, "orders_cancelled", item_ids=["cbc"])
    assert [i["item_id"] for i in done["unperformed_items"]] == ["drip"]
