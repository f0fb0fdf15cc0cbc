"""The ledger under random interleavings of charges, cancellations, payments (window and
channel, with repeated notifications), refunds and their outcomes, through the real booking
code on the real database. After every step:

- entries already written never change (append-only);
- every landed payment's allocations sum to its amount, and its refunds never exceed it;
- a payment's `refunded_fen` is the sum of its succeeded refunds;
- every visit's figures follow from its entries alone;
and at the end, once the workflows have looked at every visit, no balance is below zero."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import LedgerEntry, Payment, Refund
from db.repositories import visit_totals
from domain.payment import RefundStatus
from ledger.errors import LedgerError
from ledger.payments import book, channel_paid, unpaid
from ledger.refunds import refund_credit, settle_refund
from tests.support import add_patient, add_visit, now, uid

Factory = async_sessionmaker[AsyncSession]
VISITS = 3

op = st.one_of(
    st.tuples(st.just("charge"), st.integers(0, VISITS - 1), st.integers(1, 5000)),
    st.tuples(st.just("cancel"), st.integers(0, VISITS - 1), st.integers(0, 20)),
    st.tuples(st.just("order"), st.integers(0, VISITS), st.integers(0, 1)),  # VISITS: the merged bill
    st.tuples(st.just("notify"), st.integers(0, 20), st.integers(1, 3)),  # repeated 1-3 times
    st.tuples(st.just("window"), st.integers(0, VISITS), st.integers(1, 8000)),
    st.tuples(st.just("refund_outcome"), st.integers(0, 20), st.sampled_from(["succeeded", "failed", "processing"])),
    st.tuples(st.just("look"), st.integers(0, VISITS - 1), st.just(0)),  # a workflow refunds a credit
)


async def charge(session: AsyncSession, patient_id: str, visit_id: str, fen: int) -> None:
    session.add(
        LedgerEntry(
            idempotency_key=f"visit-{visit_id}:charge:{uid('i')}",
            visit_id=visit_id,
            patient_id=patient_id,
            kind="charge",
            amount_fen=fen,
            item_id=uid("item"),
            created_at=now(),
        )
    )


async def cancel(session: AsyncSession, patient_id: str, visit_id: str, pick: int) -> None:
    charges = (
        await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.visit_id == visit_id, LedgerEntry.kind == "charge")
            .order_by(LedgerEntry.id)
        )
    ).all()
    reversed_ = set(
        (
            await session.scalars(
                select(LedgerEntry.item_id).where(LedgerEntry.visit_id == visit_id, LedgerEntry.kind == "reversal")
            )
        ).all()
    )
    open_ = [c for c in charges if c.item_id not in reversed_]
    if open_:
        c = open_[pick % len(open_)]
        session.add(
            LedgerEntry(
                idempotency_key=f"visit-{visit_id}:reverse:{c.item_id}",
                visit_id=visit_id,
                patient_id=patient_id,
                kind="reversal",
                amount_fen=c.amount_fen,
                item_id=c.item_id,
                created_at=now(),
            )
        )


async def snapshot(session: AsyncSession, patient_id: str) -> dict[int, tuple[Any, ...]]:
    entries = (await session.scalars(select(LedgerEntry).where(LedgerEntry.patient_id == patient_id))).all()
    return {e.id: (e.idempotency_key, e.visit_id, e.kind, e.amount_fen, e.payment_id, e.item_id) for e in entries}


async def check(session: AsyncSession, patient_id: str, visit_ids: list[str]) -> None:
    payments = (await session.scalars(select(Payment).where(Payment.patient_id == patient_id))).all()
    for p in payments:
        sums: dict[str, int] = dict(
            (
                await session.execute(
                    select(LedgerEntry.kind, func.sum(LedgerEntry.amount_fen))
                    .where(LedgerEntry.payment_id == p.id)
                    .group_by(LedgerEntry.kind)
                )
            ).all()
        )
        refunds = (await session.scalars(select(Refund).where(Refund.payment_id == p.id))).all()
        if p.status in ("succeeded", "partially_refunded", "refunded"):
            assert sums.get("payment", 0) == p.amount_fen, (p.id, sums)
        else:
            assert sums.get("payment", 0) == 0 and not refunds
        live = sum(r.amount_fen for r in refunds if r.status != RefundStatus.failed)
        assert sums.get("refund", 0) - sums.get("refund_reversal", 0) == live <= p.amount_fen
        assert p.refunded_fen == sum(r.amount_fen for r in refunds if r.status == RefundStatus.succeeded)
        assert (p.status == "refunded") == (p.refunded_fen == p.amount_fen > 0)
    for visit_id in visit_ids:
        entries = (await session.scalars(select(LedgerEntry).where(LedgerEntry.visit_id == visit_id))).all()
        sign = {"charge": 1, "reversal": -1, "payment": -1, "refund": 1, "refund_reversal": -1}
        assert (await visit_totals(session, visit_id)).balance_fen == sum(sign[e.kind] * e.amount_fen for e in entries)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=25))
async def test_ledger_invariants_under_any_interleaving(factory: Factory, ops: list[tuple[str, int, Any]]) -> None:
    patient_id = await add_patient(factory)
    visit_ids = [await add_visit(factory, patient_id, fee=0) for _ in range(VISITS)]
    orders: list[str] = []
    seen: dict[int, tuple[Any, ...]] = {}
    for name, a, b in ops:
        async with factory() as session, session.begin():
            try:
                if name == "charge":
                    await charge(session, patient_id, visit_ids[a], b)
                elif name == "cancel":
                    await cancel(session, patient_id, visit_ids[a], b)
                elif name == "order":  # a phone starts a payment of what is owed now
                    chosen = None if a == VISITS else [visit_ids[a]]
                    owed = sum(t.balance_fen for _, t in await unpaid(session, patient_id, chosen))
                    if owed > 0:
                        p = Payment(
                            id=uid("pay_"),
                            patient_id=patient_id,
                            method="sandbox",
                            amount_fen=owed,
                            status="pending",
                            actor="patient",
                            created_at=now(),
                            completed_at=None,
                            visit_ids=chosen or [v.id for v, _ in await unpaid(session, patient_id, None)],
                        )
                        session.add(p)
                        orders.append(p.id)
                elif name == "notify" and orders:
                    payment_id = orders[a % len(orders)]
                    payment = await session.get(Payment, payment_id)
                    assert payment is not None
                    amount = payment.amount_fen
                    for _ in range(b):
                        await channel_paid(
                            session,
                            channel="sandbox",
                            payment_id=payment_id,
                            amount_fen=amount,
                            trade_no="T" + payment_id,
                        )
                elif name == "window":
                    chosen = None if a == VISITS else [visit_ids[a]]
                    bills = await unpaid(session, patient_id, chosen)
                    owed = sum(t.balance_fen for _, t in bills)
                    if owed > 0:
                        p = Payment(
                            id=uid("pay_"),
                            patient_id=patient_id,
                            method="cash",
                            amount_fen=min(b, owed),
                            status="succeeded",
                            actor="ops",
                            created_at=now(),
                            completed_at=now(),
                        )
                        session.add(p)
                        await session.flush()
                        book(session, p, bills)
                elif name == "refund_outcome":
                    refunds = (
                        await session.scalars(
                            select(Refund.id)
                            .where(Refund.patient_id == patient_id)
                            .order_by(Refund.created_at, Refund.id)
                        )
                    ).all()
                    if refunds:
                        await settle_refund(session, refunds[a % len(refunds)], RefundStatus(b), actor="test")
                elif name == "look":
                    await refund_credit(
                        session, visit_id=visit_ids[a], patient_id=patient_id, reason="cancellation", actor="test"
                    )
            except LedgerError:
                pass  # e.g. nothing to pay: refused, and nothing written
        async with factory() as session:
            now_seen = await snapshot(session, patient_id)
            assert all(now_seen.get(k) == v for k, v in seen.items()), "a ledger entry changed or vanished"
            seen = now_seen
            await check(session, patient_id, visit_ids)
    async with factory() as session, session.begin():  # the workflows look at every visit
        for visit_id in visit_ids:
            await refund_credit(session, visit_id=visit_id, patient_id=patient_id, reason="cancellation", actor="test")
    async with factory() as session:
        await check(session, patient_id, visit_ids)
        for visit_id in visit_ids:
            assert (await visit_totals(session, visit_id)).balance_fen >= 0


async def test_a_credit_asked_back_twenty_times_at_once_is_refunded_once(factory: Factory) -> None:
    patient_id = await add_patient(factory)
    visit_id = await add_visit(factory, patient_id, fee=0)
    async with factory() as session, session.begin():
        await charge(session, patient_id, visit_id, 500)
        p = Payment(
            id=uid("pay_"),
            patient_id=patient_id,
            method="sandbox",
            amount_fen=800,
            status="succeeded",
            actor="test",
            created_at=now(),
            completed_at=now(),
        )
        session.add(p)
        await session.flush()
        book(session, p, await unpaid(session, patient_id, None))  # 300 beyond the bill

    async def ask() -> int:
        async with factory() as session, session.begin():
            return len(
                await refund_credit(
                    session, visit_id=visit_id, patient_id=patient_id, reason="overpayment", actor="test"
                )
            )

    made = await asyncio.gather(*(ask() for _ in range(20)))
    assert sum(made) == 1
    async with factory() as session:
        refunds = (await session.scalars(select(Refund).where(Refund.visit_id == visit_id))).all()
        assert [r.amount_fen for r in refunds] == [300]
        assert (await visit_totals(session, visit_id)).balance_fen == 0
