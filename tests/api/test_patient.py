"""The patient side of the contract: sign-in, identity, enrolment, own visits, the merged
bill, paying it through the sandbox channel, and the security a patient relies on."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from db.models import Enrolment
from integrations.payments.sandbox import signature as sandbox_signature
from tests.flows import Clinic, assert_problem, random_id_number, random_phone
from tests.support import uid


async def sign_in(api, clinic: Clinic, phone: str) -> tuple[dict[str, str], dict[str, Any]]:
    for _ in range(30):  # codes to one phone are a second apart in the tests
        r = await api.http.post("/v1/patient/sms-code", json={"phone": phone})
        if r.status_code != 429:
            break
        await asyncio.sleep(0.2)
    assert r.status_code == 202, r.text
    r = await api.http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}, r.json()


async def new_code(
    api,
    clinic: Clinic,
    phone: str,
    auth: dict[str, str],
    purpose: str = "login",
) -> str:
    for _ in range(30):
        r = await api.http.post("/v1/patient/sms-code", json={"phone": phone, "purpose": purpose})
        if r.status_code == 202:
            return await clinic.last_code(phone)
        await asyncio.sleep(0.2)
    raise AssertionError(r.text)


async def test_enrolled_patient_pays_the_merged_bill(api, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    v1 = (await clinic.register(patient_id, fee=1200))["visit_id"]
    v2 = (await clinic.register(patient_id, fee=800))["visit_id"]
    for v in (v1, v2):
        await clinic.event(v, "discharged")
    auth, login = await sign_in(api, clinic, phone)
    assert login["patient_id"] == patient_id
    me = (await api.http.get("/v1/patient/me", headers=auth)).json()
    assert me["enrolled"] and me["phone"] == phone[:3] + "****" + phone[-4:]
    visits = (await api.http.get("/v1/patient/visits", headers=auth)).json()
    assert {v["visit_id"] for v in visits} == {v1, v2}
    bill = (await api.http.get("/v1/patient/bill", headers=auth)).json()
    assert bill["balance_fen"] == 2000 and [v["visit_id"] for v in bill["visits"]] == [v1, v2]

    key = {"Idempotency-Key": uid("pay-key-")}
    started = await api.http.post("/v1/patient/payments", json={"channel": "sandbox"}, headers={**auth, **key})
    assert started.status_code == 201, started.text
    again = await api.http.post("/v1/patient/payments", json={"channel": "sandbox"}, headers={**auth, **key})
    assert again.json() == started.json()
    payment = started.json()
    assert payment["amount_fen"] == 2000 and payment["status"] == "pending" and payment["visit_ids"] == [v1, v2]
    done = await api.http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["allocations"] == [{"visit_id": v1, "amount_fen": 1200}, {"visit_id": v2, "amount_fen": 800}]
    # the channel repeats its notification: nothing is paid twice
    await api.http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")
    for _ in range(100):
        statuses = {v["payment_status"] for v in (await api.http.get("/v1/patient/visits", headers=auth)).json()}
        if statuses == {"settled"}:
            break
        await asyncio.sleep(0.1)
    assert statuses == {"settled"}
    bill = (await api.http.get("/v1/patient/bill", headers=auth)).json()
    assert bill == {"visits": [], "balance_fen": 0}
    detail = (await api.http.get(f"/v1/patient/visits/{v1}", headers=auth)).json()
    assert detail["bill"]["paid_fen"] == 1200 and len(detail["bill"]["payments"]) == 1


async def test_new_phone_binds_identity_then_enrols(api, clinic: Clinic) -> None:
    id_number = random_id_number()
    r = await api.his_post(
        "/v1/his/patients",
        {"card_type": "id_card", "card_no": uid("ID"), "name": "赵敏", "id_number": id_number, "insured_locally": True},
    )
    patient_id = r.json()["patient_id"]
    phone = random_phone()
    auth, login = await sign_in(api, clinic, phone)
    assert login["patient_id"] is None
    assert_problem(await api.http.get("/v1/patient/me", headers=auth), 403, "identity_required")
    assert_problem(
        await api.http.post("/v1/patient/identity", json={"name": "赵明", "id_number": id_number}, headers=auth),
        404,
        "patient_not_found",
    )
    r = await api.http.post("/v1/patient/identity", json={"name": "赵敏", "id_number": id_number}, headers=auth)
    assert r.status_code == 200 and r.json() == {"patient_id": patient_id}
    code = await new_code(api, clinic, phone, auth, purpose="enrol")
    r = await api.http.post(
        "/v1/patient/enrollment", json={"agreement_version": "2026-01", "phone": phone, "code": code}, headers=auth
    )
    assert r.status_code == 201, r.text
    assert r.json()["enrollment"]["channel"] == "app"
    # unenrolment ends every sign-in of the patient
    r = await api.http.delete("/v1/patient/enrollment", headers=auth)
    assert r.status_code == 200 and r.json()["enrolled"] is False
    assert_problem(await api.http.get("/v1/patient/me", headers=auth), 401, "unauthorized")


async def test_a_patient_sees_only_their_own(api, clinic: Clinic) -> None:
    alice, alice_phone = await clinic.enrolled_patient()
    bob, _ = await clinic.enrolled_patient()
    bobs_visit = (await clinic.register(bob))["visit_id"]
    auth, _ = await sign_in(api, clinic, alice_phone)
    assert_problem(await api.http.get(f"/v1/patient/visits/{bobs_visit}", headers=auth), 404, "visit_not_found")
    assert_problem(await api.http.get("/v1/patient/visits/no-such-visit", headers=auth), 404, "visit_not_found")
    r = await api.http.post(
        "/v1/patient/payments", json={"channel": "sandbox", "visit_ids": [bobs_visit]}, headers=auth
    )
    assert_problem(r, 404, "visit_not_found")
    # a patient token opens no HIS or operator door
    assert_problem(await api.http.get(f"/v1/his/visits/{bobs_visit}", headers=auth), 401, "unauthorized")
    assert_problem(await api.http.get("/v1/ops/receivables", headers=auth), 401, "unauthorized")
    assert (await api.http.get("/v1/patient/visits", headers=auth)).json() == []
    _ = alice


async def test_tokens_are_checked_and_revoked(api, clinic: Clinic) -> None:
    _, phone = await clinic.enrolled_patient()
    auth, _ = await sign_in(api, clinic, phone)
    assert (await api.http.get("/v1/patient/me", headers=auth)).status_code == 200
    token = auth["Authorization"].split()[1]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_problem(
        await api.http.get("/v1/patient/me", headers={"Authorization": f"Bearer {forged}"}), 401, "unauthorized"
    )
    assert (await api.http.post("/v1/patient/logout", headers=auth)).status_code == 204
    assert_problem(await api.http.get("/v1/patient/me", headers=auth), 401, "unauthorized")


async def test_codes_and_limits(api, clinic: Clinic) -> None:
    phone = random_phone()
    first = await api.http.post("/v1/patient/sms-code", json={"phone": phone})
    assert first.status_code == 202
    unknown = await api.http.post("/v1/patient/sms-code", json={"phone": random_phone()})
    assert unknown.status_code == 202 and unknown.json().keys() == first.json().keys()  # no account probing
    r = await api.http.post("/v1/patient/sms-code", json={"phone": phone})
    assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 2
    code = await clinic.last_code(phone)
    r = await api.http.post("/v1/patient/login", json={"phone": phone, "code": code})
    assert r.status_code == 200
    # single use
    assert_problem(await api.http.post("/v1/patient/login", json={"phone": phone, "code": code}), 422, "invalid_code")
    assert_problem(
        await api.http.post("/v1/patient/sms-code", json={"phone": phone, "admin": True}), 422, "invalid_request"
    )
    assert_problem(await api.http.post("/v1/patient/sms-code", json={"phone": "12345"}), 422, "invalid_request")


async def test_a_resend_invalidates_the_old_code(api, clinic: Clinic) -> None:
    phone = random_phone()
    await api.http.post("/v1/patient/sms-code", json={"phone": phone})
    old = await clinic.last_code(phone)
    new = await new_code(api, clinic, phone, {})
    if old != new:
        assert_problem(
            await api.http.post("/v1/patient/login", json={"phone": phone, "code": old}), 422, "invalid_code"
        )
    assert (await api.http.post("/v1/patient/login", json={"phone": phone, "code": new})).status_code == 200


async def test_channel_notifications_are_verified(api, clinic: Clinic, settings) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    v = (await clinic.register(patient_id, fee=900))["visit_id"]
    auth, _ = await sign_in(api, clinic, phone)
    payment = (await api.http.post("/v1/patient/payments", json={"channel": "sandbox"}, headers=auth)).json()
    body = (f'{{"payment_id":"{payment["payment_id"]}","trade_no":"T1","amount_fen":900,"status":"success"}}').encode()
    forged = await api.http.post(
        "/v1/payments/notify/sandbox", content=body, headers={"X-Sandbox-Signature": sandbox_signature("guess", body)}
    )
    assert_problem(forged, 401, "invalid_signature")
    wrong_amount = body.replace(b"900", b"1")
    r = await api.http.post(
        "/v1/payments/notify/sandbox",
        content=wrong_amount,
        headers={"X-Sandbox-Signature": sandbox_signature(settings.sandbox_channel_secret, wrong_amount)},
    )
    assert_problem(r, 400, "amount_mismatch")
    visit = (await api.his_get(f"/v1/his/visits/{v}")).json()
    assert visit["bill"]["paid_fen"] == 0
    good = {"X-Sandbox-Signature": sandbox_signature(settings.sandbox_channel_secret, body)}
    answers = await asyncio.gather(
        *(api.http.post("/v1/payments/notify/sandbox", content=body, headers=good) for _ in range(5))
    )
    assert {r.status_code for r in answers} == {200}
    visit = (await api.his_get(f"/v1/his/visits/{v}")).json()
    assert visit["bill"]["paid_fen"] == 900 and len(visit["bill"]["payments"]) == 1


async def test_every_text_lands_in_the_inbox(api, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    v = (await clinic.register(patient_id, fee=600))["visit_id"]
    await clinic.event(v, "discharged")
    auth, _ = await sign_in(api, clinic, phone)
    for _ in range(100):
        inbox = (await api.http.get("/v1/patient/notifications", headers=auth)).json()
        if inbox:
            break
        await asyncio.sleep(0.1)
    assert inbox[0]["template"] == "bill_ready" and "6.00元" in inbox[0]["text"] and inbox[0]["visit_id"] == v


async def test_codes_expire(api, clinic: Clinic, settings) -> None:
    settings.sms_code_ttl = timedelta(seconds=1)
    phone = random_phone()
    await api.http.post("/v1/patient/sms-code", json={"phone": phone})
    code = await clinic.last_code(phone)
    await asyncio.sleep(1.2)
    assert_problem(await api.http.post("/v1/patient/login", json={"phone": phone, "code": code}), 422, "invalid_code")


async def test_hourly_and_ip_limits_hold_before_any_text(api, clinic: Clinic, settings) -> None:
    settings.sms_code_min_interval = timedelta(milliseconds=1)
    phone = random_phone()
    for _ in range(5):
        assert (await api.http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
        await asyncio.sleep(0.01)
    r = await api.http.post("/v1/patient/sms-code", json={"phone": phone})
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) > 3000  # the hour's window
    assert len((await api.http.get(f"/v1/sandbox/sms?phone={phone}")).json()) == 5  # nothing sent for the 6th
    settings.sms_codes_per_ip_hour = 6  # this client IP asked for more than that within the hour
    other = random_phone()
    assert_problem(await api.http.post("/v1/patient/sms-code", json={"phone": other}), 429, "rate_limited")
    assert (await api.http.get(f"/v1/sandbox/sms?phone={other}")).json() == []


async def test_fifty_concurrent_requests_with_one_key_make_one_payment(api, clinic: Clinic, settings) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    v = (await clinic.register(patient_id, fee=2500))["visit_id"]
    auth, _ = await sign_in(api, clinic, phone)
    key = {"Idempotency-Key": uid("fifty-")}
    answers = await asyncio.gather(
        *(
            api.http.post("/v1/patient/payments", json={"channel": "sandbox"}, headers={**auth, **key})
            for _ in range(50)
        )
    )
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["payment_id"] for r in answers}) == 1
    payment_id = answers[0].json()["payment_id"]
    # the channel's notification, twenty times at once, lands the money once
    body = (f'{{"payment_id":"{payment_id}","trade_no":"T20","amount_fen":2500,"status":"success"}}').encode()
    good = {"X-Sandbox-Signature": sandbox_signature(settings.sandbox_channel_secret, body)}
    notes = await asyncio.gather(
        *(api.http.post("/v1/payments/notify/sandbox", content=body, headers=good) for _ in range(20))
    )
    assert {r.status_code for r in notes} == {200}
    visit = (await api.his_get(f"/v1/his/visits/{v}")).json()
    assert visit["bill"]["paid_fen"] == 2500 and len(visit["bill"]["payments"]) == 1


async def test_identity_cannot_be_guessed(api, clinic: Clinic) -> None:
    auth, _ = await sign_in(api, clinic, random_phone())
    for _ in range(5):
        r = await api.http.post(
            "/v1/patient/identity", json={"name": "某人", "id_number": random_id_number()}, headers=auth
        )
        assert_problem(r, 404, "patient_not_found")
    r = await api.http.post(
        "/v1/patient/identity", json={"name": "某人", "id_number": random_id_number()}, headers=auth
    )
    assert_problem(r, 429, "rate_limited")


async def kiosk_code(api, clinic: Clinic, patient_id: str, phone: str) -> str:
    for _ in range(30):  # codes to one phone are a second apart in the tests
        r = await api.his_post(f"/v1/his/patients/{patient_id}/sms-code", {"phone": phone})
        if r.status_code == 202:
            return await clinic.last_code(phone)
        await asyncio.sleep(0.2)
    raise AssertionError(r.text)


class Crash(Exception):
    """The API process dying in the middle of a request."""


async def test_an_enrolment_cut_short_can_be_retried_with_the_same_code(api, clinic: Clinic) -> None:
    patient_id = await clinic.read_card()
    phone = random_phone()
    body = {"agreement_version": "2026-01", "phone": phone, "code": await kiosk_code(api, clinic, patient_id, phone)}

    def crash(session: Session, *_: Any) -> None:  # the enrolment is about to be written: the API dies
        if any(isinstance(o, Enrolment) for o in session.new):
            raise Crash()

    event.listen(Session, "before_flush", crash)
    try:
        try:
            r = await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", body)
            assert r.status_code == 500, r.text
        except Crash:
            pass
    finally:
        event.remove(Session, "before_flush", crash)
    assert not (await api.his_get(f"/v1/his/patients/{patient_id}")).json()["enrolled"]
    r = await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", body)  # the HIS retries the same body
    assert r.status_code == 201, r.text
    # and the code is used up now: unenrolled, the same code enrols no more
    assert (await api.http.delete(f"/v1/his/patients/{patient_id}/enrollment", headers=api.his)).status_code == 200
    assert_problem(await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", body), 422, "invalid_code")


async def test_a_code_serves_only_its_purpose(api, clinic: Clinic) -> None:
    patient_id = await clinic.read_card()
    phone = random_phone()
    enrol = f"/v1/his/patients/{patient_id}/enrollment"
    login_code = await new_code(api, clinic, phone, {})
    assert_problem(
        await api.his_post(enrol, {"agreement_version": "2026-01", "phone": phone, "code": login_code}),
        422,
        "invalid_code",
    )
    enrol_code = await kiosk_code(api, clinic, patient_id, phone)
    assert_problem(
        await api.http.post("/v1/patient/login", json={"phone": phone, "code": enrol_code}), 422, "invalid_code"
    )
    # the app asks for an enrolment code with purpose "enrol"; it does not sign in either
    app_code = await new_code(api, clinic, phone, {}, purpose="enrol")
    assert_problem(
        await api.http.post("/v1/patient/login", json={"phone": phone, "code": app_code}), 422, "invalid_code"
    )
    r = await api.his_post(enrol, {"agreement_version": "2026-01", "phone": phone, "code": app_code})
    assert r.status_code == 201, r.text
    assert_problem(
        await api.http.post("/v1/patient/sms-code", json={"phone": phone, "purpose": "pay"}), 422, "invalid_request"
    )


async def test_wrong_codes_count_though_the_request_fails(api, clinic: Clinic, settings) -> None:
    patient_id = await clinic.read_card()
    phone = random_phone()
    code = await kiosk_code(api, clinic, patient_id, phone)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    enrol = f"/v1/his/patients/{patient_id}/enrollment"
    for _ in range(settings.sms_code_max_attempts):
        assert_problem(
            await api.his_post(enrol, {"agreement_version": "2026-01", "phone": phone, "code": wrong}),
            422,
            "invalid_code",
        )
    assert_problem(
        await api.his_post(enrol, {"agreement_version": "2026-01", "phone": phone, "code": code}), 422, "invalid_code"
    )


async def test_a_patient_reads_their_own_payment(api, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=700))["visit_id"]
    await clinic.event(visit_id, "discharged")
    auth, _ = await sign_in(api, clinic, phone)
    payment = (await api.http.post("/v1/patient/payments", json={"channel": "sandbox"}, headers=auth)).json()
    path = f"/v1/patient/payments/{payment['payment_id']}"
    r = await api.http.get(path, headers=auth)
    assert r.status_code == 200, r.text
    got = r.json()
    assert {k: got[k] for k in ("payment_id", "status", "final", "amount_fen", "channel", "visit_ids")} == {
        "payment_id": payment["payment_id"],
        "status": "pending",
        "final": False,
        "amount_fen": 700,
        "channel": "sandbox",
        "visit_ids": [visit_id],
    }
    assert got["completed_at"] is None and got["allocations"] == []
    assert (await api.http.post(f"/v1/sandbox/payments/{payment['payment_id']}/complete")).status_code == 200
    got = (await api.http.get(path, headers=auth)).json()
    assert got["status"] == "succeeded" and got["final"] is True and got["completed_at"]
    assert got["allocations"] == [{"visit_id": visit_id, "amount_fen": 700}]
    # another patient's payment does not exist for you, nor does a made-up one
    _, other_phone = await clinic.enrolled_patient()
    other, _ = await sign_in(api, clinic, other_phone)
    assert_problem(await api.http.get(path, headers=other), 404, "payment_not_found")
    assert_problem(
        await api.http.get("/v1/patient/payments/pay_0000000000000000", headers=auth), 404, "payment_not_found"
    )
    assert_problem(await api.http.get(path), 401, "unauthorized")


async def test_a_code_signs_in_once_however_many_ask_at_once(api, clinic: Clinic) -> None:
    _, phone = await clinic.enrolled_patient()
    code = await new_code(api, clinic, phone, {})
    answers = await asyncio.gather(
        *(api.http.post("/v1/patient/login", json={"phone": phone, "code": code}) for _ in range(10))
    )
    assert sorted(r.status_code for r in answers) == [200] + [422] * 9
