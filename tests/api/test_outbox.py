"""Telling the visits is durable: a payment booked while Temporal cannot be reached leaves
its notifications in the outbox, the worker's deliverer tells the visits once Temporal is
back, a retried request tells them again, and a paid visit suspends no one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.client import Client

from api.main import create_app
from db.models import Visit, VisitNotification
from db.session import transaction
from ledger import outbox
from ledger.handoff import Deliverer
from tests.flows import Clinic, assert_problem
from tests.support import free_port, uid


@pytest.fixture
async def cut_off(settings, integrations) -> AsyncIterator[httpx.AsyncClient]:
    """The same API, database and simulators, with a Temporal that cannot be reached (nothing listens there)."""
    nowhere = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    app = create_app(settings, temporal=nowhere, integrations=integrations)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {settings.ops_api_key}"},
        ) as http:
            yield http


async def discharged_visit(clinic: Clinic, fee: int = 1200) -> tuple[str, str]:
    """An enrolled patient's visit, discharged and `due` (the workflow has written it)."""
    patient_id, _ = await clinic.enrolled_patient()
    visit_id = (await clinic.register(patient_id, fee=fee))["visit_id"]
    await clinic.event(visit_id, "discharged")
    for _ in range(100):
        if (await clinic.get(f"/v1/his/visits/{visit_id}", clinic.his)).json()["payment_status"] == "due":
            break
        await asyncio.sleep(0.1)
    return patient_id, visit_id


async def notifications(factory, payment_id: str) -> list[VisitNotification]:
    async with factory() as session:
        return list(
            (await session.scalars(select(VisitNotification).where(VisitNotification.payment_id == payment_id))).all()
        )


async def status_of(factory, visit_id: str) -> str:
    """What the visit's workflow has decided (the column it writes), not what a read shows."""
    async with factory() as session:
        return (await session.get(Visit, visit_id)).payment_status


async def until_settled(factory, visit_id: str, seconds: float = 15) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if await status_of(factory, visit_id) == "settled":
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"visit {visit_id} is {await status_of(factory, visit_id)} after {seconds}s")


async def pay_while_cut_off(
    cut_off: httpx.AsyncClient,
    factory,
    patient_id: str,
    visit_id: str,
    key: str,
) -> dict[str, Any]:
    r = await cut_off.post(
        "/v1/ops/payments",
        json={"patient_id": patient_id, "amount_fen": 1200, "method": "cash"},
        headers={"Idempotency-Key": key},
    )
    assert r.status_code == 201, r.text  # the money is booked; Temporal is someone else's problem
    [pending] = await notifications(factory, r.json()["payment_id"])
    assert (pending.visit_id, pending.amount_fen, pending.delivered_at) == (visit_id, 1200, None)
    assert pending.attempts == 1 and pending.last_error
    return r.json()


async def test_deliverer_tells_the_visit_once_temporal_takes_it(
    api,
    clinic: Clinic,
    cut_off,
    factory,
    temporal_env,
) -> None:
    patient_id, visit_id = await discharged_visit(clinic)
    paid = await pay_while_cut_off(cut_off, factory, patient_id, visit_id, uid("window-"))
    await asyncio.sleep(1)
    assert await status_of(factory, visit_id) == "due"  # nobody told the visit

    stop = asyncio.Event()
    delivering = asyncio.create_task(Deliverer(temporal_env.client, factory).run(stop))
    try:
        took = await until_settled(factory, visit_id)
    finally:
        stop.set()
        await delivering
    print(f"\npending notification delivered and the visit settled {took:.2f}s after the deliverer started")
    [told] = await notifications(factory, paid["payment_id"])
    assert told.delivered_at is not None and told.attempts >= 2


async def test_a_retried_window_payment_tells_the_visits_again(api, clinic: Clinic, cut_off, factory) -> None:
    patient_id, visit_id = await discharged_visit(clinic)
    key = uid("window-")
    paid = await pay_while_cut_off(cut_off, factory, patient_id, visit_id, key)
    again = await api.ops_post(
        "/v1/ops/payments",
        {"patient_id": patient_id, "amount_fen": 1200, "method": "cash"},
        headers={"Idempotency-Key": key},
    )
    assert again.status_code == 201 and again.json() == paid  # the stored answer, nothing booked twice
    await until_settled(factory, visit_id)
    [told] = await notifications(factory, paid["payment_id"])
    assert told.delivered_at is not None


async def test_a_paid_visit_whose_status_is_stale_suspends_no_one(api, clinic: Clinic, cut_off, factory) -> None:
    patient_id, visit_id = await discharged_visit(clinic)
    other_id, owing = await discharged_visit(clinic)
    await pay_while_cut_off(cut_off, factory, patient_id, visit_id, uid("window-"))
    async with factory() as session, session.begin():  # the visit went to arrears before it heard of the money
        await session.execute(update(Visit).where(Visit.id.in_([visit_id, owing])).values(payment_status="arrears"))

    assert (await api.his_get(f"/v1/his/patients/{patient_id}")).json()["service_status"] == "normal"
    await clinic.register(patient_id)  # registration is not refused
    # a visit that is late and still owes money does suspend
    assert (await api.his_get(f"/v1/his/patients/{other_id}")).json()["service_status"] == "arrears"
    r = await api.his_post(
        "/v1/his/visits",
        {
            "visit_id": uid("V"),
            "patient_id": other_id,
            "department": "内科",
            "channel": "kiosk",
            "registration_fee_fen": 500,
        },
    )
    assert_problem(r, 409, "service_suspended")


async def test_two_deliverers_never_claim_the_same_notification(factory, temporal_env) -> None:
    payment_id = uid("pay_")
    async with transaction(factory) as session:  # visits whose workflows are gone (or never were)
        outbox.enqueue(session, payment_id, [(uid("gone-"), 100 + i) for i in range(6)])
    async with transaction(factory) as session:
        await session.execute(
            update(VisitNotification)
            .where(VisitNotification.payment_id == payment_id)
            .values(next_attempt_at=VisitNotification.created_at)
        )

    async def claim_and_hold() -> set[int]:
        async with transaction(factory) as session:
            rows = await outbox.claim(session)
            await asyncio.sleep(0.3)  # still in the transaction while the other claims
            return {r.id for r in rows if r.payment_id == payment_id}

    first, second = await asyncio.gather(claim_and_hold(), claim_and_hold())
    assert not first & second and len(first | second) == 6

    rows = await notifications(factory, payment_id)
    assert await Deliverer(temporal_env.client, factory).deliver(rows, retry_in=timedelta(seconds=1)) == []
    # nothing waits for a signal to an ended (or unknown) workflow: delivered, not retried forever
    assert all(r.delivered_at is not None for r in await notifications(factory, payment_id))


async def test_a_window_payment_answers_once_its_visit_recorded_settled(api, clinic: Clinic, factory) -> None:
    """Read-your-writes: the 201 comes after the visit's workflow recorded `settled`, so no read
    after it shows the visit owing."""
    patient_id, visit_id = await discharged_visit(clinic)
    r = await api.ops_post(
        "/v1/ops/payments",
        {"patient_id": patient_id, "amount_fen": 1200, "method": "cash"},
        headers={"Idempotency-Key": uid("window-")},
    )
    assert r.status_code == 201, r.text
    assert await status_of(factory, visit_id) == "settled"  # the column the workflow writes, read at once
    assert (await api.his_get(f"/v1/his/visits/{visit_id}")).json()["payment_status"] == "settled"
