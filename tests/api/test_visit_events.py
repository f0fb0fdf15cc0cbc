"""The answer to a clinical event is built from the workflow's update (the visit as it was
recorded) and one read of the lines and events: it must be the visit as stored, the same as
`GET /v1/his/visits/{visit_id}` shows it right after."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tests.flows import Clinic, item


async def stored(api, visit_id: str) -> dict[str, Any]:
    return (await api.his_get(f"/v1/his/visits/{visit_id}")).json()


async def test_each_answer_is_the_visit_as_stored(api, clinic: Clinic) -> None:
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    steps: list[tuple[str, dict[str, Any]]] = [
        ("checked_in", {"channel": "nurse_station"}),
        ("called", {"room": "3诊室"}),
        ("consultation_started", {}),
        ("orders_placed", {"items": [item("ct", "exam", 30000), item("lab", "lab", 2000)]}),
        ("orders_cancelled", {"item_ids": ["lab"]}),
        ("consultation_ended", {}),
    ]
    for type_, fields in steps:
        answer = await clinic.event(visit_id, type_, **fields)
        assert answer == await stored(api, visit_id), type_
    assert answer["bill"]["total_fen"] == 30500 and [e["type"] for e in answer["events"]] == [t for t, _ in steps]


async def test_discharge_and_after_with_a_payment_and_an_offset(api, clinic: Clinic) -> None:
    """The HIS's time with its offset comes back as the database keeps it (UTC); a window
    payment shows with its method; a cancellation after discharge shows the recorded status."""
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=800))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "orders_placed", items=[item("x", "exam", 1000)])
    await clinic.event(visit_id, "consultation_ended")
    local = datetime.now(ZoneInfo("Asia/Shanghai")).isoformat()  # +08:00
    r = await api.his_post(
        f"/v1/his/visits/{visit_id}/events", {"event_id": "out", "type": "discharged", "occurred_at": local}
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    after = await stored(api, visit_id)  # read-your-writes: no waiting for the payment phase
    assert answer == after
    assert answer["discharged_at"] is not None and answer["stage"] == "discharged"
    assert answer["payment_status"] == "due" and answer["due_at"] is not None
    body = {"patient_id": patient_id, "visit_ids": [visit_id], "amount_fen": 300, "method": "cash"}
    paid = await api.ops_post("/v1/ops/payments", body)
    assert paid.status_code == 201, paid.text
    answer = await clinic.event(visit_id, "orders_cancelled", item_ids=["x"])
    assert answer == await stored(api, visit_id)
    assert answer["payment_status"] != "open" and answer["due_at"] == after["due_at"] is not None
    assert [(p["kind"], p["method"]) for p in answer["bill"]["payments"]] == [("payment", "cash")]
    assert answer["bill"]["balance_fen"] == 500
