"""The sandbox's stand-in for the platform's cashier (POST /v1/sandbox/insurance/settlements/{id}/cashier):
it pays a paying mobile order's cash part with the order's payToken, as the phone's browser would,
and the platform's notification then completes the settlement; it refuses another patient's
settlement (404), one not paying (409 not_paying) and a card-less one (409 settlement_mode)."""

from __future__ import annotations

from tests.api.test_insurance import drug_and_exam_visit
from tests.api.test_insurance_mobile import ToApi, ordered, paid_methods, pay, settlement_row, status_of
from tests.api.test_patient import sign_in
from tests.api.test_refunds import eventually
from tests.flows import Clinic, assert_problem
from tests.support import Simulators

BOOKED = {"nhsa_mobile": 500, "insurance_pooled": 9000, "insurance_personal": 6000}


def cashier(settlement_id: str) -> str:
    return f"/v1/sandbox/insurance/settlements/{settlement_id}/cashier"


async def test_the_sandbox_cashier_pays_the_cash_part_and_refuses_what_it_may_not_pay(
    api, clinic: Clinic, simulators: Simulators
) -> None:
    simulators.bureau.state.notify_transport = platform = ToApi(api.http)
    _, visit_id, auth, order = await ordered(api, clinic)
    path = cashier(order["settlement_id"])
    # ordered, not paid yet: nothing to pay at the cashier
    assert_problem(await api.http.post(path, headers=auth), 409, "not_paying")
    # another patient's settlement is not there at all
    other_phone = (await clinic.enrolled_patient())[1]
    other, _ = await sign_in(api, clinic, other_phone)
    assert_problem(await api.http.post(path, headers=other), 404, "settlement_not_found")
    assert_problem(await api.http.post(cashier("ins_nosuch"), headers=auth), 404, "settlement_not_found")
    paying = await pay(api, auth, order["settlement_id"])
    assert_problem(await api.http.post(path, headers=other), 404, "settlement_not_found")
    assert await paid_methods(api, visit_id) == {}
    r = await api.http.post(path, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["settlement_id"] == order["settlement_id"]
    # the platform's order was paid at its cashier and the notification reached the API
    seen = await settlement_row(simulators, paying)
    assert (seen["ordStas"], seen["notified"]) == ("6", "200")
    assert platform.answers == [200]
    await eventually(lambda: status_of(api, auth, order["settlement_id"], "completed"), tries=200)
    assert await paid_methods(api, visit_id) == BOOKED
    # completed: not paying any more
    assert_problem(await api.http.post(path, headers=auth), 409, "not_paying")


async def test_a_card_less_settlement_is_not_paid_at_the_mobile_cashier(api, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = await drug_and_exam_visit(clinic, patient_id)
    auth, _ = await sign_in(api, clinic, phone)
    r = await api.http.post("/v1/patient/insurance/presettle", json={"visit_ids": [visit_id]}, headers=auth)
    assert r.status_code == 201, r.text
    assert_problem(await api.http.post(cashier(r.json()["settlement_id"]), headers=auth), 409, "settlement_mode")
