"""The whole stack as processes (dev server on a file, worker, API on a socket), driven
through the HTTP contract alone, with short policy durations."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import Stack
from tests.flows import Clinic

pytestmark = pytest.mark.e2e

OPS = {"Authorization": "Bearer dev-ops-key"}
HIS = {"Authorization": "Bearer dev-his-key"}


async def until(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s; last: {value}")
        await asyncio.sleep(0.3)


async def test_figure_1_then_default_and_recovery(http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit = await clinic.register(patient_id)
    visit_id = visit["visit_id"]
    after = await clinic.figure_1(visit_id)
    assert after["stage"] == "discharged"
    assert after["bill"]["total_fen"] == Clinic.FIGURE_1_TOTAL
    reversed_ids = {line["item_id"] for line in after["bill"]["lines"] if line["kind"] == "reversal"}
    assert reversed_ids == {"crp", "pen"}
    assert len(after["events"]) == 17

    async def get_visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    await until(get_visit, lambda v: v["payment_status"] == "due")
    # registration is refused while the patient is in arrears
    await until(get_visit, lambda v: v["payment_status"] == "arrears")
    r = await http.post(
        "/v1/his/visits",
        json={"visit_id": visit_id + "-2", "patient_id": patient_id, "department": "外科", "channel": "kiosk"},
        headers=HIS,
    )
    assert r.status_code == 409 and r.json()["code"] == "service_suspended"
    defaulted = await until(get_visit, lambda v: v["payment_status"] == "defaulted")
    assert defaulted["card_locked"] and defaulted["credit_reported"]
    card = (await http.get(f"/v1/sandbox/insurance-cards/{patient_id}")).json()
    assert card["locked"] and [e["action"] for e in card["events"]] == ["lock"]
    reports = (await http.get(f"/v1/sandbox/credit-reports?patient_id={patient_id}")).json()
    assert [(r["kind"], r["amount_fen"]) for r in reports] == [("report", Clinic.FIGURE_1_TOTAL)]
    profile = (await http.get(f"/v1/his/patients/{patient_id}", headers=HIS)).json()
    assert profile["service_status"] == "defaulted" and profile["card_locked"]
    receivables = (await http.get("/v1/ops/receivables", headers=OPS)).json()
    assert receivables["defaulted"]["balance_fen"] >= Clinic.FIGURE_1_TOTAL

    r = await http.post(
        "/v1/ops/payments",
        json={"patient_id": patient_id, "amount_fen": Clinic.FIGURE_1_TOTAL, "method": "cash"},
        headers={**OPS, "Idempotency-Key": "e2e-pay-1"},
    )
    assert r.status_code == 201, r.text
    settled = await until(get_visit, lambda v: v["payment_status"] == "settled")
    assert not settled["card_locked"] and not settled["credit_reported"] and settled["bill"]["balance_fen"] == 0
    card = (await http.get(f"/v1/sandbox/insurance-cards/{patient_id}")).json()
    assert not card["locked"] and [e["action"] for e in card["events"]] == ["lock", "unlock"]
    reports = (await http.get(f"/v1/sandbox/credit-reports?patient_id={patient_id}")).json()
    assert [r["kind"] for r in reports] == ["report", "correction"]

    async def outbox() -> list[dict[str, Any]]:
        return (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()

    # the receipt goes out right after the status changes
    texts = await until(outbox, lambda ms: ms[-1]["template"] == "payment_received_unlocked")
    templates = [m["template"] for m in texts]
    assert templates[0] == "verification_code" and templates[1] == "bill_ready" and templates[2] == "arrears"
    assert "dunning" in templates
    assert templates.index("pre_default") < templates.index("card_locked")
    assert templates[-1] == "payment_received_unlocked"
    assert all("【医后付】" in m["text"] for m in texts)
    profile = (await http.get(f"/v1/his/patients/{patient_id}", headers=HIS)).json()
    assert profile["service_status"] == "normal" and not profile["card_locked"]


async def test_worker_killed_and_dev_server_restarted(stack: Stack, http: httpx.AsyncClient, clinic: Clinic) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")

    # kill -9 the worker mid-visit; the HIS keeps reporting once it is back
    await asyncio.to_thread(stack.kill, "worker")
    await asyncio.to_thread(stack.start_worker)
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(
        visit_id,
        "orders_placed",
        items=[
            {"item_id": "us", "code": "US01", "name": "B超", "category": "exam", "unit_price_fen": 15000, "quantity": 1}
        ],
    )
    await clinic.event(visit_id, "consultation_ended")
    await clinic.event(visit_id, "discharged")

    async def get_visit() -> dict[str, Any]:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    async def outbox() -> list[dict[str, Any]]:
        return (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()

    # kill -9 again during the payment wait, after the first reminder went out
    await until(outbox, lambda ms: any(m["template"] == "arrears" for m in ms))
    await asyncio.to_thread(stack.kill, "worker")
    await asyncio.sleep(2)
    await asyncio.to_thread(stack.start_worker)

    # stop and restart the dev server on its database file: the visit goes on
    await asyncio.to_thread(stack.stop_one, "temporal")
    await asyncio.to_thread(stack.start_temporal)
    defaulted = await until(get_visit, lambda v: v["payment_status"] == "defaulted", timeout=60)
    assert defaulted["bill"]["total_fen"] == 15500
    charges = [line for line in defaulted["bill"]["lines"] if line["kind"] == "charge"]
    assert sorted(line["amount_fen"] for line in charges) == [500, 15500 - 500]
    # the lock's text is its own step after the status (quiet hours may hold it): let it go out first
    await until(outbox, lambda ms: any(m["template"] == "card_locked" for m in ms))

    r = await http.post(
        "/v1/ops/payments", json={"patient_id": patient_id, "amount_fen": 15500, "method": "card"}, headers=OPS
    )
    assert r.status_code == 201, r.text
    await until(get_visit, lambda v: v["payment_status"] == "settled", timeout=60)
    card = (await http.get(f"/v1/sandbox/insurance-cards/{patient_id}")).json()
    assert [e["action"] for e in card["events"]] == ["lock", "unlock"]
    # nothing was sent twice: every message of the visit is distinct
    await until(outbox, lambda ms: ms[-1]["template"] == "payment_received_unlocked")
    messages = [(m["template"], m["text"], m["sent_at"]) for m in await outbox()]
    assert len(messages) == len(set(messages))
    once = [
        m[0]
        for m in messages
        if m[0] in ("bill_ready", "arrears", "pre_default", "card_locked", "payment_received_unlocked")
    ]
    assert sorted(once) == sorted(set(once)) and len(once) == 5


# a mainland mobile number / ID number standing alone: not a run of digits inside an id (visit and
# patient ids carry hex, which now and then holds eleven decimal digits in a row)
PHONE = r"(?<![0-9A-Za-z_-])1[3-9]\d{9}(?![0-9A-Za-z_-])"
ID_NUMBER = r"(?<![0-9A-Za-z_-])\d{17}[\dX](?![0-9A-Za-z_-])"


def test_logs_have_no_personal_data(stack: Stack) -> None:
    """The stack's own logs never show a phone number or an ID number in full."""
    assert stack.log_dir is not None

    text = "\n".join(p.read_text(errors="replace") for p in Path(stack.log_dir).glob("*.log"))
    assert "worker polling" in text  # the logs were read
    for pattern in (PHONE, ID_NUMBER):
        found = re.search(pattern, text)
        assert not found, text[max(0, found.start() - 200) : found.end() + 50]
