"""The fiscal e-bill (财政电子票据) through the API and the real worker: a settled visit's
receipt carries the platform's bill (number, check code, QR code, picture link) beside our
printable page; a refund after settlement writes the old bill off (冲红) and issues the next
version's, and a refund of everything writes the bill off with no next version, as the
simulated platform's records show."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.api.test_patient import sign_in
from tests.api.test_refunds import eventually, exam_visit, refunds
from tests.flows import Clinic, item
from tests.support import Simulators


async def platform_bills(simulators: Simulators, visit_id: str) -> list[dict[str, Any]]:
    assert simulators.ebill is not None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulators.ebill), base_url="http://ebill") as http:
        r = await http.get("/_sandbox/ebills", params={"visit_no": visit_id})
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_settled_visits_receipt_carries_the_platforms_bill_and_a_refund_writes_it_off(
    api, clinic: Clinic, simulators: Simulators
) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = await exam_visit(clinic, patient_id)
    await clinic.event(visit_id, "discharged")
    r = await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 12500, "method": "cash"})
    assert r.status_code == 201, r.text
    auth, _ = await sign_in(api, clinic, phone)

    async def issued(n: int) -> list[dict[str, Any]]:
        found = (await api.http.get("/v1/patient/receipts", headers=auth)).json()
        done = [x for x in found if x["ebill"] and x["ebill"]["status"] in ("issued", "written_off")]
        return found if len(found) == n and len(done) == n else []

    [first] = await eventually(lambda: issued(1))
    [bill] = await platform_bills(simulators, visit_id)
    ebill = first["ebill"]
    assert (ebill["bill_no"], ebill["bill_batch_code"], ebill["random"]) == (
        bill["bill_no"],
        bill["bill_batch_code"],
        bill["random"],
    )
    assert bill["bus_no"] == f"{first['receipt_id']}-1" and bill["total_fen"] == 12500 == first["total_fen"]
    assert base64.b64decode(ebill["qr_code_png"]).startswith(b"\x89PNG") and ebill["picture_url"]
    page = await api.http.get(first["download_url"], headers=auth)
    assert page.status_code == 200 and "医疗门诊收费电子票据" in page.text and first["check_code"] in page.text
    assert ebill["bill_no"] in page.text and ebill["picture_url"] in page.text.replace("&amp;", "&")

    # 退费 after settlement: the cash refund an operator confirms, then the receipt's next version
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])
    [refund] = await eventually(lambda: refunds(api, visit_id=visit_id, status="manual"))
    assert (await api.ops_post(f"/v1/ops/refunds/{refund['refund_id']}/complete", {})).status_code == 200
    second, old = await eventually(lambda: issued(2))
    assert (second["version"], second["total_fen"], old["version"], old["voided_at"] is not None) == (2, 500, 1, True)
    assert old["ebill"]["status"] == "written_off" and old["ebill"]["written_off_no"]
    assert second["ebill"]["status"] == "issued" and second["ebill"]["bill_no"] != old["ebill"]["bill_no"]
    at_platform = {b["bus_no"]: b for b in await platform_bills(simulators, visit_id)}
    assert {k: (b["state"], b["total_fen"]) for k, b in at_platform.items()} == {
        f"{first['receipt_id']}-1": ("written_off", 12500),
        f"{second['receipt_id']}-2": ("issued", 500),
    }
    assert at_platform[f"{first['receipt_id']}-1"]["scarlet_bill_no"] == old["ebill"]["written_off_no"]


async def test_everything_cancelled_and_refunded_writes_the_bill_off(
    api, clinic: Clinic, simulators: Simulators
) -> None:
    """退费 of the whole visit: no receipt is left to issue; the one on record is voided and its
    bill written off (冲红) at the platform."""
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=0))["visit_id"]  # only the X-ray: all of it cancelled
    await clinic.event(visit_id, "checked_in", channel="app")
    for event in ("called", "consultation_started"):
        await clinic.event(visit_id, event)
    await clinic.event(visit_id, "orders_placed", items=[item("xray", "exam", 12000)])
    await clinic.event(visit_id, "consultation_ended")
    await clinic.event(visit_id, "discharged")
    r = await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 12000, "method": "cash"})
    assert r.status_code == 201, r.text
    auth, _ = await sign_in(api, clinic, phone)

    async def receipts_with(status: str) -> list[dict[str, Any]]:
        found = (await api.http.get("/v1/patient/receipts", headers=auth)).json()
        return found if found and all(x["ebill"] and x["ebill"]["status"] == status for x in found) else []

    [first] = await eventually(lambda: receipts_with("issued"))
    await clinic.event(visit_id, "orders_cancelled", item_ids=["xray"])
    [refund] = await eventually(lambda: refunds(api, visit_id=visit_id, status="manual"))
    assert refund["amount_fen"] == 12000
    assert (await api.ops_post(f"/v1/ops/refunds/{refund['refund_id']}/complete", {})).status_code == 200
    [voided] = await eventually(lambda: receipts_with("written_off"))
    assert (voided["receipt_id"], voided["version"], voided["voided_at"] is not None) == (first["receipt_id"], 1, True)
    [bill] = await platform_bills(simulators, visit_id)
    assert (bill["bus_no"], bill["state"], bill["total_fen"]) == (f"{first['receipt_id']}-1", "written_off", 12000)
    assert bill["scarlet_bill_no"] == voided["ebill"]["written_off_no"]
