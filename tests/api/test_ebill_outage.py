"""The e-bill platform down when a visit settles, through the API and the real worker: the
visit goes on (its receipt issued, the patient thanked), the receipt is downloadable at once
with its e-bill `pending`; the platform back, the statement run's sweep issues the bill, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.statements import EBILL
from config import Settings
from integrations.factory import Integrations, build_integrations
from tests.activities.test_ebill_outage import Outage
from tests.api.test_ebills import platform_bills
from tests.api.test_patient import sign_in
from tests.api.test_refunds import eventually, exam_visit
from tests.flows import Clinic
from tests.support import Simulators, uid
from workflows import contracts as c
from workflows.statement import StatementWorkflow


@pytest.fixture
async def outage(simulators: Simulators) -> Outage:
    assert simulators.ebill is not None
    return Outage(simulators.transports().ebill, "refused")  # type: ignore[arg-type]


@pytest.fixture
async def integrations(settings: Settings, simulators: Simulators, outage: Outage) -> AsyncIterator[Integrations]:
    """This test's clients, the e-bill platform's behind a path that can go down."""
    async with AsyncExitStack() as stack:
        yield build_integrations(settings, stack, transports=replace(simulators.transports(), ebill=outage))


async def test_the_platform_down_at_settlement_holds_nothing(
    api, clinic: Clinic, simulators: Simulators, outage: Outage, temporal_env: WorkflowEnvironment, worker: str
) -> None:
    patient_id, phone = await clinic.enrolled_patient()
    visit_id = await exam_visit(clinic, patient_id)
    await clinic.event(visit_id, "discharged")
    before = await owed(api)
    outage.down = True
    r = await api.ops_post("/v1/ops/payments", {"patient_id": patient_id, "amount_fen": 12500, "method": "cash"})
    assert r.status_code == 201, r.text
    auth, _ = await sign_in(api, clinic, phone)

    async def thanked() -> bool:  # the step after the receipt: the visit did not wait on the platform
        texts = (await api.http.get("/v1/sandbox/sms", params={"phone": phone})).json()
        return any(m["template"] == "payment_received" for m in texts)

    await eventually(thanked)
    [receipt] = (await api.http.get("/v1/patient/receipts", headers=auth)).json()
    assert receipt["ebill"]["status"] == "pending" and receipt["ebill"]["bill_no"] is None
    page = await api.http.get(receipt["download_url"], headers=auth)
    assert page.status_code == 200 and receipt["check_code"] in page.text
    assert await platform_bills(simulators, visit_id) == []
    # operators see the bill the platform owes (/metrics), and how long it has waited
    during = await owed(api)
    assert during["to_issue"] == before["to_issue"] + 1 and during["oldest_to_issue"] > 0

    outage.down = False
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    for _ in range(2):  # the morning run, and another: one bill at the platform
        await temporal_env.client.execute_workflow(
            StatementWorkflow.run,
            c.StatementInput(channels=[EBILL], day=today),
            id=uid("statements-"),
            task_queue=worker,
        )

    async def issued() -> list[dict[str, Any]]:
        found = (await api.http.get("/v1/patient/receipts", headers=auth)).json()
        return found if found[0]["ebill"]["status"] == "issued" else []

    [receipt] = await eventually(issued)
    assert (await owed(api))["to_issue"] == before["to_issue"]
    [bill] = await platform_bills(simulators, visit_id)
    assert (bill["bus_no"], bill["bill_no"], bill["total_fen"]) == (
        f"{receipt['receipt_id']}-1",
        receipt["ebill"]["bill_no"],
        12500,
    )


async def owed(api: Any) -> dict[str, float]:
    """The e-bill backlog gauges of /metrics: bills to issue, and the oldest one's age."""
    r = await api.http.get("/metrics")
    assert r.status_code == 200, r.text
    lines = dict(line.rsplit(" ", 1) for line in r.text.splitlines() if line.startswith("yhf_ebill"))
    return {
        "to_issue": float(lines['yhf_ebills_owed{kind="to_issue"}']),
        "oldest_to_issue": float(lines['yhf_ebill_owed_oldest_seconds{kind="to_issue"}']),
    }
