"""Personal data never leaves the places it is kept: a whole visit is run with marker
values, then the stack's logs, the visit's Temporal history and the SMS outbox are
searched for them."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from temporalio.client import Client

from db.session import create_engine
from devstack import Stack
from tests.e2e.test_stack import HIS, OPS, PHONE, until
from tests.flows import Clinic, item, random_id_number, random_phone
from tests.support import uid

pytestmark = pytest.mark.e2e


async def test_markers_appear_in_no_log_history_or_outbox(
    stack: Stack, http: httpx.AsyncClient, clinic: Clinic
) -> None:
    name, id_number, phone = "标记" + uid()[:4], random_id_number(), random_phone()
    r = await http.post(
        "/v1/his/patients",
        headers=HIS,
        json={
            "card_type": "id_card",
            "card_no": uid("ID"),
            "name": name,
            "id_number": id_number,
            "phone": phone,
            "insured_locally": True,
        },
    )
    patient_id = r.json()["patient_id"]
    await clinic.enrol(patient_id, phone)
    visit_id = (await clinic.register(patient_id))["visit_id"]
    await clinic.event(visit_id, "checked_in", channel="app")
    await clinic.event(visit_id, "called")
    await clinic.event(visit_id, "consultation_started")
    await clinic.event(visit_id, "orders_placed", items=[item("x", "lab", 1000)])
    await clinic.event(visit_id, "consultation_ended")
    await clinic.event(visit_id, "discharged")

    async def visit() -> dict:
        return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

    await until(visit, lambda v: v["payment_status"] in ("arrears", "defaulted"))
    await http.post(
        "/v1/ops/payments", headers=OPS, json={"patient_id": patient_id, "amount_fen": 1500, "method": "cash"}
    )
    await until(visit, lambda v: v["payment_status"] == "settled")
    profile = (await http.get(f"/v1/his/patients/{patient_id}", headers=HIS)).json()
    assert name not in str(profile) and id_number not in str(profile) and phone not in str(profile)

    markers = [name, id_number, phone, phone[3:]]  # the last: the phone without its prefix
    client = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
    exported = (await client.get_workflow_handle(f"visit-{visit_id}").fetch_history()).to_json()
    # payloads are base64 in the export: search them decoded
    decoded = [base64.b64decode(d).decode("utf-8", "replace") for d in re.findall(r'"data": "([^"]+)"', exported)]
    history = exported + "\n".join(decoded)
    assert visit_id in history and patient_id in history  # ids travel, people do not
    logs = "\n".join(p.read_text(errors="replace") for p in Path(stack.log_dir or ".").glob("*.log"))
    engine = create_engine(stack.child_env()["YHF_DATABASE_URL"])

    async def sms_rows() -> list[str]:
        async with engine.connect() as conn:
            return [
                " ".join(str(v) for v in row)
                for row in await conn.execute(
                    text(
                        "SELECT phone_hash, phone_masked, template, params, text FROM sms_message WHERE patient_id = :p"
                    ),
                    {"p": patient_id},
                )
            ]

    # the code, the bill and the receipt; the receipt goes out just after the visit settles
    outbox = await until(sms_rows, lambda rows: len(rows) >= 3)
    async with engine.connect() as conn:
        stored = [
            " ".join(str(v) for v in row)
            for row in await conn.execute(
                text(
                    "SELECT name_masked, name_cipher, id_number_hash, id_number_masked, id_number_cipher, phone_hash, "
                    "phone_masked, phone_cipher FROM patient WHERE id = :p"
                ),
                {"p": patient_id},
            )
        ]
    await engine.dispose()
    assert stored
    for marker in markers:
        for where, content in (
            ("history", history),
            ("logs", logs),
            ("outbox", "\n".join(outbox)),
            ("patient row", "\n".join(stored)),
        ):
            assert marker not in content, f"{marker!r} found in the {where}"
    found = re.search(PHONE, logs)
    assert not found, logs[max(0, found.start() - 200) : found.end() + 50]
