"""Two children, one phone: a parent who enrolled both signs in once, chooses a child, and
each child's token sees that child's data alone."""

from __future__ import annotations

from typing import Any

from tests.api.test_patient import kiosk_code, sign_in
from tests.flows import Clinic, assert_problem, random_phone

ENROL = {"agreement_version": "2026-01"}


async def enrolled_with(api, clinic: Clinic, phone: str) -> str:
    patient_id = await clinic.read_card()
    code = await kiosk_code(api, clinic, patient_id, phone)
    r = await api.his_post(f"/v1/his/patients/{patient_id}/enrollment", {**ENROL, "phone": phone, "code": code})
    assert r.status_code == 201, r.text
    return patient_id


async def choose(api, auth: dict[str, str], patient_id: str) -> dict[str, str]:
    r = await api.http.post(f"/v1/patient/profiles/{patient_id}/session", headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["patient_id"] == patient_id
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_two_children_one_phone_each_sees_only_their_own(api, clinic: Clinic) -> None:
    phone = random_phone()
    first, second = await enrolled_with(api, clinic, phone), await enrolled_with(api, clinic, phone)
    visits = {p: (await clinic.register(p, fee=fee))["visit_id"] for p, fee in ((first, 300), (second, 400))}
    for v in visits.values():
        await clinic.event(v, "discharged")

    auth, login = await sign_in(api, clinic, phone)
    assert login["patient_id"] is None  # several: the app asks which one
    assert_problem(await api.http.get("/v1/patient/me", headers=auth), 403, "identity_required")
    profiles = (await api.http.get("/v1/patient/profiles", headers=auth)).json()
    assert [p["patient_id"] for p in profiles] == [first, second]
    assert all(p["enrolled"] and "*" in p["name"] for p in profiles)

    tokens = {p: await choose(api, auth, p) for p in (first, second)}
    paid: dict[str, Any] = {}
    for me, other in ((first, second), (second, first)):
        mine = tokens[me]
        assert (await api.http.get("/v1/patient/me", headers=mine)).json()["patient_id"] == me
        assert [v["visit_id"] for v in (await api.http.get("/v1/patient/visits", headers=mine)).json()] == [visits[me]]
        bill = (await api.http.get("/v1/patient/bill", headers=mine)).json()
        assert [v["visit_id"] for v in bill["visits"]] == [visits[me]]
        assert_problem(await api.http.get(f"/v1/patient/visits/{visits[other]}", headers=mine), 404, "visit_not_found")
        assert_problem(
            await api.http.post(
                "/v1/patient/payments", json={"channel": "sandbox", "visit_ids": [visits[other]]}, headers=mine
            ),
            404,
            "visit_not_found",
        )
        r = await api.http.post("/v1/patient/payments", json={"channel": "sandbox"}, headers=mine)
        assert r.status_code == 201 and r.json()["visit_ids"] == [visits[me]], r.text
        paid[me] = r.json()["payment_id"]
    for me, other in ((first, second), (second, first)):
        assert (await api.http.get(f"/v1/patient/payments/{paid[me]}", headers=tokens[me])).status_code == 200
        assert_problem(
            await api.http.get(f"/v1/patient/payments/{paid[other]}", headers=tokens[me]), 404, "payment_not_found"
        )
    # either child's token may switch to the other: both are linked to the phone that signed in
    assert [p["patient_id"] for p in (await api.http.get("/v1/patient/profiles", headers=tokens[first])).json()] == [
        first,
        second,
    ]


async def test_a_profile_outside_the_phone_cannot_be_chosen(api, clinic: Clinic) -> None:
    phone = random_phone()
    mine = await enrolled_with(api, clinic, phone)
    stranger, _ = await clinic.enrolled_patient()
    auth, login = await sign_in(api, clinic, phone)
    assert login["patient_id"] == mine  # one patient: chosen at once, as before
    assert [p["patient_id"] for p in (await api.http.get("/v1/patient/profiles", headers=auth)).json()] == [mine]
    assert_problem(
        await api.http.post(f"/v1/patient/profiles/{stranger}/session", headers=auth), 404, "patient_not_found"
    )
    assert_problem(
        await api.http.post("/v1/patient/profiles/pat_nobody/session", headers=auth), 404, "patient_not_found"
    )
    assert_problem(await api.http.get("/v1/patient/profiles"), 401, "unauthorized")
    # a chosen profile's token lives no longer than the sign-in that made it
    r = await api.http.post(f"/v1/patient/profiles/{mine}/session", headers=auth)
    assert r.json()["expires_at"] == login["expires_at"]
    # signing out of the chosen token leaves the sign-in's own token alone
    chosen = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await api.http.post("/v1/patient/logout", headers=chosen)).status_code == 204
    assert_problem(await api.http.get("/v1/patient/me", headers=chosen), 401, "unauthorized")
    assert (await api.http.get("/v1/patient/me", headers=auth)).status_code == 200
