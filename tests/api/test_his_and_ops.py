"""The HIS and operator paths of the contract, over ASGI against the real dev server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.flows import Clinic, assert_problem, item, now_iso, random_id_number, random_phone
from tests.support import add_visit, uid


async def test_healthz(api) -> None:
    r = await api.http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
async def test_keys_are_required(api, headers: dict[str, str]) -> None:
    r = await api.http.post("/v1/his/patients", json={}, headers=headers)
    assert_problem(r, 401, "unauthorized")
    r = await api.http.get("/v1/ops/receivables", headers=headers)
    assert_problem(r, 401, "unauthorized")
    # the HIS key does not open the operators' door
    assert_problem(await api.http.get("/v1/ops/receivables", headers=api.his), 401, "unauthorized")


async def test_same_card_same_patient_and_masked_profile(api, clinic: Clinic) -> None:
    id_number = random_id_number()
    body = {
        "card_type": "id_card",
        "card_no": uid("ID"),
        "name": "王小明",
        "id_number": id_number,
        "phone": "13912345678",
        "insured_locally": False,
    }
    first = await api.his_post("/v1/his/patients", body)
    assert first.status_code == 201
    again = await api.his_post("/v1/his/patients", body)
    assert again.status_code == 200 and again.json()["patient_id"] == first.json()["patient_id"]
    assert again.json() == {"patient_id": first.json()["patient_id"], "enrolled": False, "service_status": "normal"}
    # another card of the same person finds the same record by ID number
    other = await api.his_post("/v1/his/patients", {**body, "card_type": "visit_card", "card_no": uid("VC")})
    assert other.json()["patient_id"] == first.json()["patient_id"]
    profile = (await api.his_get(f"/v1/his/patients/{first.json()['patient_id']}")).json()
    assert profile["name"] == "王*明" and profile["phone"] == "139****5678"
    assert profile["id_number"].startswith("110") and id_number not in str(profile) and "*" in profile["id_number"]


async def test_kiosk_enrolment_rules(api, clinic: Clinic) -> None:
    id_number = random_id_number()
    patient_id = await clinic.read_card(insured=False, id_number=id_number)
    phone = random_phone()
    r = await api.his_post(f"/v1/his/patients/{patient_id}/sms-code", {"phone": phone})
    assert r.status_code == 202 and r.json()["phone"] == phone[:3] + "****" + phone[-4:]
    assert_problem(await api.his_post(f"/v1/his/patients/{patient_id}/sms-code", {"phone": phone}), 429, "rate_limited")
    code = await clinic.last_code(phone)
    enrol = {"agreement_version": "2026-01", "phone": phone, "code": code}
    body = assert_problem(await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", enrol), 403, "not_eligible")
    assert len(body["reasons"]) == 3
    # a Sesame score of 699 is not enough, 700 is
    r = await api.http.put(f"/v1/sandbox/credit-scores/{id_number}", json={"bank_score": None, "sesame_score": 699})
    assert r.status_code == 200
    assert_problem(await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", enrol), 403, "not_eligible")
    await api.http.put(f"/v1/sandbox/credit-scores/{id_number}", json={"bank_score": None, "sesame_score": 700})
    wrong = {**enrol, "code": "000000" if code != "000000" else "111111"}
    assert_problem(await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", wrong), 422, "invalid_code")
    r = await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", enrol)
    assert r.status_code == 201, r.text
    assert r.json()["enrolled"] and r.json()["enrollment"]["eligibility_rule"] == "sesame_score"
    assert_problem(await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", enrol), 409, "already_enrolled")
    profile = (await api.his_get(f"/v1/his/patients/{patient_id}?credit=true")).json()
    assert profile["credit"] == {"bank_score": None, "sesame_score": 700}


async def test_codes_expire_after_too_many_attempts(api, clinic: Clinic) -> None:
    patient_id = await clinic.read_card()
    phone = random_phone()
    await api.his_post(f"/v1/his/patients/{patient_id}/sms-code", {"phone": phone})
    code = await clinic.last_code(phone)
    bad = "000000" if code != "000000" else "111111"
    for _ in range(5):
        r = await api.his_post(
            f"/v1/his/patients/{patient_id}/enrollment", {"agreement_version": "2026-01", "phone": phone, "code": bad}
        )
        assert_problem(r, 422, "invalid_code")
    r = await api.his_post(
        f"/v1/his/patients/{patient_id}/enrollment", {"agreement_version": "2026-01", "phone": phone, "code": code}
    )
    assert_problem(r, 422, "invalid_code")  # the right code no longer works


async def test_registration_rules_and_idempotency(api, clinic: Clinic) -> None:
    stranger = await clinic.read_card()
    body = {
        "visit_id": uid("V"),
        "patient_id": stranger,
        "department": "内科",
        "channel": "kiosk",
        "registration_fee_fen": 500,
    }
    assert_problem(await api.his_post("/v1/his/visits", body), 409, "not_enrolled")
    assert_problem(await api.his_post("/v1/his/visits", {**body, "patient_id": "pat_nobody"}), 404, "patient_not_found")
    patient_id, _ = await clinic.enrolled_patient()
    body["patient_id"] = patient_id
    r = await api.his_post("/v1/his/visits", body)
    assert r.status_code == 201, r.text
    visit = r.json()
    assert visit["stage"] == "registered" and visit["payment_status"] == "open"
    assert visit["bill"]["total_fen"] == 500 and visit["bill"]["lines"][0]["name"] == "挂号费"
    again = await api.his_post("/v1/his/visits", body)
    assert again.status_code == 200 and again.json()["bill"]["total_fen"] == 500
    assert_problem(await api.his_post("/v1/his/visits", {**body, "department": "外科"}), 409, "visit_exists")


async def test_events_transitions_and_duplicates(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    path = f"/v1/his/visits/{visit_id}/events"
    r = await api.his_post(path, {"event_id": "x1", "type": "consultation_started", "occurred_at": now_iso()})
    body = assert_problem(r, 409, "invalid_transition")
    assert body["stage"] == "registered" and "checked_in" in body["allowed"] and "registered" in body["detail"]
    await clinic.event(visit_id, "checked_in", channel="nurse_station")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    order = {
        "event_id": "order-1",
        "type": "orders_placed",
        "occurred_at": now_iso(),
        "items": [item("ct", "exam", 30000)],
    }
    first = await api.his_post(path, order)
    assert first.status_code == 200 and first.json()["bill"]["total_fen"] == 30500
    # the HIS retries: the original answer, and one charge
    retries = await asyncio.gather(*(api.his_post(path, order) for _ in range(5)))
    assert {r.status_code for r in retries} == {200}
    assert all(r.json() == first.json() for r in retries)
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert [line["item_id"] for line in visit["bill"]["lines"] if line["kind"] == "charge"] == [None, "ct"]
    assert visit["bill"]["total_fen"] == 30500
    assert_problem(await api.his_post(path, {**order, "items": [item("ct", "exam", 1)]}), 409, "event_id_reused")
    # the same item ordered again under another event id is refused
    assert_problem(await api.his_post(path, {**order, "event_id": "order-2"}), 409, "duplicate_item")
    assert_problem(
        await api.his_post(
            path, {"event_id": "c-1", "type": "orders_cancelled", "occurred_at": now_iso(), "item_ids": ["nope"]}
        ),
        409,
        "unknown_item",
    )
    assert_problem(await api.his_post("/v1/his/visits/nope/events", order), 404, "visit_not_found")


@pytest.mark.parametrize(
    "bad_item",
    [
        {"unit_price_fen": -100},
        {"unit_price_fen": 0},
        {"unit_price_fen": 12.5},
        {"unit_price_fen": "100"},
        {"unit_price_fen": 10**12},
        {"quantity": 0},
        {"quantity": 1.5},
        {"category": "massage"},
        {"unit_price_fen": 600_000_000, "quantity": 2},
        {"surprise": True},
    ],
)
async def test_bad_items_are_refused(api, clinic: Clinic, bad_item: dict[str, Any]) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    for t in ("checked_in",):
        await clinic.event(visit_id, t, channel="app")
    body = {
        "event_id": uid("e"),
        "type": "orders_placed",
        "occurred_at": now_iso(),
        "items": [{**item("a", "exam", 100), **bad_item}],
    }
    r = await api.his_post(f"/v1/his/visits/{visit_id}/events", body)
    problem = assert_problem(r, 422, "invalid_request")
    assert problem["errors"]
    visit = (await api.his_get(f"/v1/his/visits/{visit_id}")).json()
    assert visit["bill"]["total_fen"] == 500 and len(visit["events"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"type": "teleported"},
        {"type": "checked_in"},  # needs a channel
        {"type": "checked_in", "channel": "app", "items": [item("a", "lab", 1)]},  # takes no items
        {"type": "skin_test_result", "result": "maybe"},
        {"type": "called", "occurred_at": "2026-03-01T10:00:00"},  # no offset
    ],
)
async def test_bad_events_are_refused(api, clinic: Clinic, body: dict[str, Any]) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    r = await api.his_post(
        f"/v1/his/visits/{visit_id}/events", {"event_id": uid("e"), "occurred_at": now_iso(), **body}
    )
    assert_problem(r, 422, "invalid_request")


async def test_window_payment_settles_and_is_idempotent(api, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    v1 = (await clinic.register(patient_id, fee=1000))["visit_id"]
    v2 = (await clinic.register(patient_id, fee=2000))["visit_id"]
    for v in (v1, v2):
        await clinic.event(v, "discharged")
    pay = {"patient_id": patient_id, "amount_fen": 1500, "method": "cash"}
    headers = {"Idempotency-Key": uid("key-")}
    answers = await asyncio.gather(*(api.ops_post("/v1/ops/payments", pay, headers=headers) for _ in range(5)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(201) >= 1, [r.text for r in answers]
    ok = [r.json() for r in answers if r.status_code == 201]
    assert all(o["payment_id"] == ok[0]["payment_id"] for o in ok)
    assert ok[0]["allocations"] == [{"visit_id": v1, "amount_fen": 1000}, {"visit_id": v2, "amount_fen": 500}]
    assert_problem(
        await api.ops_post("/v1/ops/payments", {**pay, "amount_fen": 1}, headers=headers), 409, "idempotency_key_reused"
    )
    assert_problem(
        await api.ops_post("/v1/ops/payments", {**pay, "amount_fen": 999_999}), 409, "amount_exceeds_balance"
    )
    for bad in (0, -5, 1.5, "100", None):
        assert_problem(await api.ops_post("/v1/ops/payments", {**pay, "amount_fen": bad}), 422, "invalid_request")
    await api.ops_post("/v1/ops/payments", {**pay, "amount_fen": 1500, "visit_ids": [v2]})
    for v in (v1, v2):
        for _ in range(100):
            visit = (await api.his_get(f"/v1/his/visits/{v}")).json()
            if visit["payment_status"] == "settled":
                break
            await asyncio.sleep(0.1)
        assert visit["payment_status"] == "settled" and visit["bill"]["balance_fen"] == 0
    assert_problem(await api.ops_post("/v1/ops/payments", pay), 409, "nothing_to_pay")
    for _ in range(100):  # the receipt goes out right after the status changes
        texts = [m["template"] for m in (await api.http.get(f"/v1/sandbox/sms?phone={phone}")).json()]
        if texts.count("payment_received") >= 2:
            break
        await asyncio.sleep(0.1)
    assert texts.count("payment_received") == 2
    r = await api.http.get(f"/v1/ops/visits?patient_id={patient_id}&payment_status=settled", headers=api.ops)
    assert {v["visit_id"] for v in r.json()} == {v1, v2}


async def test_unenrol_needs_every_bill_paid(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    v = (await clinic.register(patient_id, fee=800))["visit_id"]
    await clinic.event(v, "discharged")
    r = await api.http.delete(f"/v1/his/patients/{patient_id}/enrollment", headers=api.his)
    assert assert_problem(r, 409, "outstanding_balance")["balance_fen"] == 800
    await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 800, "method": "card"})
    r = await api.http.delete(f"/v1/his/patients/{patient_id}/enrollment", headers=api.his)
    assert r.status_code == 200 and r.json() == {"patient_id": patient_id, "enrolled": False}
    r = await api.http.delete(f"/v1/his/patients/{patient_id}/enrollment", headers=api.his)
    assert_problem(r, 409, "not_enrolled")


async def test_receivables(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    v = (await clinic.register(patient_id, fee=700))["visit_id"]
    before = (await api.http.get("/v1/ops/receivables", headers=api.ops)).json()
    await clinic.event(v, "discharged")
    for _ in range(100):
        after = (await api.http.get("/v1/ops/receivables", headers=api.ops)).json()
        if after["due"]["visits"] == before["due"]["visits"] + 1:
            break
        await asyncio.sleep(0.1)
    assert after["due"]["balance_fen"] == before["due"]["balance_fen"] + 700
    assert after["open"]["balance_fen"] == before["open"]["balance_fen"] - 700


async def test_audit_trail_tells_who_did_what(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    v = (await clinic.register(patient_id, fee=300))["visit_id"]
    await clinic.event(v, "discharged")
    await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 300, "method": "cash"})
    r = await api.http.get(f"/v1/ops/audit?subject_type=patient&subject_id={patient_id}", headers=api.ops)
    actions = [(e["actor"], e["action"]) for e in r.json()]
    assert actions == [("his", "patient_created"), ("his", "enrolled"), ("ops", "window_payment")]
    for _ in range(100):
        r = await api.http.get(f"/v1/ops/audit?subject_type=visit&subject_id={v}", headers=api.ops)
        if any(e["detail"].get("after") == "settled" for e in r.json()):
            break
        await asyncio.sleep(0.1)
    entries = r.json()
    assert [e["action"] for e in entries][:2] == ["registered", "event:discharged"]
    changes = [
        (e["detail"]["before"], e["detail"]["after"], e["actor"], e["reason"])
        for e in entries
        if e["action"] == "payment_status"
    ]
    # open -> (due ->) settled: "due" is skipped when the money landed before the workflow looked
    assert changes[0][0] == "open" and changes[-1][1] == "settled" and len(changes) in (1, 2)
    assert all(actor == "workflow" and reason for _, _, actor, reason in changes)
    assert_problem(
        await api.http.get("/v1/ops/audit?subject_type=nurse&subject_id=x", headers=api.ops), 422, "invalid_request"
    )


async def test_metrics(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await api.his_post(
        f"/v1/his/visits/{visit_id}/events", {"event_id": "m1", "type": "dispensed", "occurred_at": now_iso()}
    )
    text = (await api.http.get("/metrics")).text
    assert 'yhf_visit_events_total{type="checked_in"}' in text
    assert 'yhf_problems_total{code="invalid_transition"}' in text
    assert 'route="/v1/his/visits/{visit_id}/events"' in text and visit_id not in text


async def test_a_visit_whose_workflow_never_started_heals_on_its_next_event(api, clinic: Clinic, factory) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = await add_visit(factory, patient_id, fee=700)  # as if the API died right after its commit
    visit = await clinic.event(visit_id, "checked_in", channel="app")
    assert visit["stage"] == "checked_in" and visit["bill"]["total_fen"] == 700


async def test_events_for_a_settled_visit_are_refused(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=400))["visit_id"]
    await clinic.event(visit_id, "discharged")
    await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 400, "method": "cash"})
    for _ in range(100):
        if (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["payment_status"] == "settled":
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the workflow sends its receipt and completes
    r = await api.his_post(
        f"/v1/his/visits/{visit_id}/events",
        {"event_id": uid("late"), "type": "checked_in", "channel": "app", "occurred_at": now_iso()},
    )
    assert_problem(r, 409, "invalid_transition")
