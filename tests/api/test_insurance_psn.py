"""The patient's number at the bureau (人员编号, psn_no): the HIS reads it at the card read (its
1101) and every transaction of the patient's carries it: the card-less pre-settlement and
settlement, the 医保移动支付 order and its authorisation, the card lock. Without it (the sandbox),
our patient id stands for it."""

from __future__ import annotations

from datetime import UTC, datetime

from activities.insurance import InsuranceActivities
from integrations.factory import Integrations
from tests.api.test_insurance import drug_and_exam_visit
from tests.api.test_patient import sign_in
from tests.flows import Clinic, random_phone
from tests.support import Simulators, uid
from workflows import contracts as c


async def read_card_with_psn(clinic: Clinic, psn_no: str) -> tuple[str, str]:
    r = await clinic.post(
        "/v1/his/patients",
        {
            "card_type": "insurance_card",
            "card_no": uid("SI"),
            "name": "李小龙",
            "insured_locally": True,
            "insurance_psn_no": psn_no,
        },
        clinic.his,
    )
    assert r.status_code == 201, r.text
    patient_id, phone = r.json()["patient_id"], random_phone()
    await clinic.enrol(patient_id, phone)
    return patient_id, phone


async def test_the_bureau_knows_the_patient_by_the_psn_no_the_his_read(
    api, clinic: Clinic, simulators: Simulators, integrations: Integrations, factory
) -> None:
    psn_no = "P" + uid("")[-12:].upper().replace("-", "0")
    patient_id, phone = await read_card_with_psn(clinic, psn_no)
    await drug_and_exam_visit(clinic, patient_id)
    auth, _ = await sign_in(api, clinic, phone)
    r = await api.http.post("/v1/patient/insurance/presettle", json={}, headers=auth)
    assert r.status_code == 201, r.text
    # the bureau registered, pre-settled the person psn_no, not our id
    seen = await simulators.inspect.settlements(psn_no)
    assert [s.total_fen for s in seen] == [15500]
    assert await simulators.inspect.settlements(patient_id) == []
    # the sandbox's view by our id finds the same person
    view = await api.http.get(f"/v1/sandbox/insurance-settlements/{patient_id}")
    assert [s["total_fen"] for s in view.json()] == [15500]
    # the mobile payment's authorisation and order are the person's too
    auth_no = (await api.http.post("/v1/sandbox/insurance/pay-auth", headers=auth)).json()["pay_auth_no"]
    r = await api.http.post("/v1/patient/insurance/mobile-orders", json={"pay_auth_no": auth_no}, headers=auth)
    assert r.status_code == 201, r.text  # the bureau bound the payAuthNo to psn_no and took the order under it
    # the card lock goes to the person at the bureau
    lock = c.CardLockInput(patient_id=patient_id, visit_id=uid("V"), reason="default", at=datetime.now(UTC))
    await InsuranceActivities(factory, integrations.bureau).lock_card(lock)
    assert (await simulators.inspect.card(psn_no)).locked
    assert not (await simulators.inspect.card(patient_id)).locked


async def test_a_psn_no_that_is_no_bureau_number_is_refused(clinic: Clinic) -> None:
    for bad in ("", "P-1", "x" * 31):
        body = {"card_type": "insurance_card", "card_no": uid("SI"), "name": "李小龙", "insurance_psn_no": bad}
        r = await clinic.post("/v1/his/patients", body, clinic.his)
        assert r.status_code == 422, r.text
