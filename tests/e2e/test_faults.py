"""Faults through the running processes: kill -9 of the Temporal dev server while a visit
waits for its money. A payment acknowledged while the engine is away still reaches the
visit (the outbox), and nobody is sanctioned for a bill that is paid."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.models import VisitNotification
from db.session import create_engine, session_factory
from devstack import Stack
from tests.e2e.conftest import running_stack
from tests.e2e.test_stack import HIS, OPS, until
from tests.flows import Clinic

pytestmark = pytest.mark.e2e

SANCTIONS = {"arrears", "dunning", "pre_default", "card_locked"}


@pytest.fixture(scope="module")
async def faulty(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A stack of its own, since its engine is killed: the short durations of the others."""
    async with running_stack(tmp_path_factory.mktemp("faults")) as s:
        yield s


async def test_paid_while_temporal_is_dead_never_goes_to_arrears(faulty: Stack) -> None:
    async with httpx.AsyncClient(base_url=faulty.api_url, timeout=60) as http:
        clinic = Clinic.over(http, HIS)
        patient_id, phone = await clinic.enrolled_patient()
        visit_id = (await clinic.register(patient_id, fee=800))["visit_id"]
        await clinic.event(visit_id, "discharged")
        discharged = time.monotonic()  # the visit is due; arrears would follow YHF_ARREARS_AFTER (4 s) later

        await asyncio.to_thread(faulty.kill, "temporal")
        asked = time.monotonic()
        r = await http.post(
            "/v1/ops/payments",
            json={"patient_id": patient_id, "amount_fen": 800, "method": "cash"},
            headers={**OPS, "Idempotency-Key": f"fault-{visit_id}"},
        )
        assert r.status_code == 201, r.text
        paid = r.json()
        print(f"\nwindow payment answered 201 in {time.monotonic() - asked:.1f}s with Temporal dead")
        await asyncio.sleep(max(0.0, discharged + 6 - time.monotonic()))  # the arrears timer is overdue by now

        await asyncio.to_thread(faulty.start_temporal)
        back, back_at = time.monotonic(), datetime.now(UTC)

        async def get_visit() -> dict[str, Any]:
            return (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()

        settled = await until(get_visit, lambda v: v["payment_status"] == "settled", timeout=60)
        print(f"visit settled {time.monotonic() - back:.1f}s after Temporal was back")
        # the visit may settle on its own timer (it reads the ledger) before the deliverer's next round
        [told] = await until(
            lambda: notifications(faulty, paid["payment_id"]), lambda ns: ns[0].delivered_at is not None, timeout=30
        )
        assert told.attempts >= 2  # refused while Temporal was dead
        print(
            f"its pending notification was delivered {(told.delivered_at - back_at).total_seconds():.1f}s "
            f"after Temporal was back, at attempt {told.attempts}"
        )
        assert settled["bill"]["balance_fen"] == 0 and not settled["card_locked"]

        # never arrears: not in its status history, not in the patient's texts
        trail = (await http.get(f"/v1/ops/audit?subject_type=visit&subject_id={visit_id}", headers=OPS)).json()
        statuses = [e["detail"]["after"] for e in trail if e["action"] == "payment_status"]
        assert statuses[-1] == "settled" and "arrears" not in statuses, statuses
        texts = [m["template"] for m in (await http.get(f"/v1/sandbox/sms?phone={phone}")).json()]
        assert not SANCTIONS & set(texts), texts
        profile = (await http.get(f"/v1/his/patients/{patient_id}", headers=HIS)).json()
        assert profile["service_status"] == "normal"
        await clinic.register(patient_id)  # a new visit is not refused (service_suspended)

        # the same request again: the stored answer (nothing booked twice), and the visit told again
        again = await http.post(
            "/v1/ops/payments",
            json={"patient_id": patient_id, "amount_fen": 800, "method": "cash"},
            headers={**OPS, "Idempotency-Key": f"fault-{visit_id}"},
        )
        assert again.status_code == 201 and again.json() == paid


async def notifications(stack: Stack, payment_id: str) -> list[VisitNotification]:
    engine = create_engine(stack.child_env()["YHF_DATABASE_URL"])
    try:
        async with session_factory(engine)() as session:
            return list(
                (
                    await session.scalars(select(VisitNotification).where(VisitNotification.payment_id == payment_id))
                ).all()
            )
    finally:
        await engine.dispose()
