"""The visit's bill and clinical record in the database. Every write is keyed, so a
retried activity books nothing twice."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import LedgerEntry, Visit, VisitEvent
from db.repositories import audit, utcnow, visit_totals
from domain.bill import EntryKind
from domain.policy import PaymentStatus
from workflows import contracts as c


def _balance(t) -> c.BalanceResult:  # type: ignore[no-untyped-def]
    return c.BalanceResult(total_fen=t.total_fen, paid_fen=t.paid_fen, balance_fen=t.balance_fen)


class LedgerActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory

    async def _visit(self, session: AsyncSession, visit_id: str) -> Visit:
        visit = await session.get(Visit, visit_id, with_for_update=True)
        if visit is None:
            raise ApplicationError(f"visit {visit_id} is not in the database", type="invalid_input",
                                   non_retryable=True)
        return visit

    @staticmethod
    async def _add_once(session: AsyncSession, entry: LedgerEntry) -> bool:
        exists = await session.scalar(
            select(LedgerEntry.id).where(LedgerEntry.idempotency_key == entry.idempotency_key))
        if exists is not None:
            return False
        session.add(entry)
        return True

    @activity.defn(name=c.BOOK_REGISTRATION)
    async def book_registration(self, inp: c.BookRegistrationInput) -> c.BalanceResult:
        async with self._factory() as session, session.begin():
            await self._visit(session, inp.visit_id)
            if inp.registration_fee_fen > 0:
                await self._add_once(session, LedgerEntry(
                    idempotency_key=f"visit-{inp.visit_id}:registration", visit_id=inp.visit_id,
                    patient_id=inp.patient_id, kind=EntryKind.charge, amount_fen=inp.registration_fee_fen,
                    code="REG", name="挂号费", category="other", unit_price_fen=inp.registration_fee_fen,
                    quantity=1, created_at=utcnow()))
                await session.flush()
            return _balance(await visit_totals(session, inp.visit_id))

    @activity.defn(name=c.APPLY_VISIT_EVENT)
    async def apply_visit_event(self, inp: c.ApplyVisitEventInput) -> c.BalanceResult:
        ev = inp.event
        now = utcnow()
        async with self._factory() as session, session.begin():
            visit = await self._visit(session, inp.visit_id)
            done = await session.scalar(select(VisitEvent.id).where(
                VisitEvent.visit_id == inp.visit_id, VisitEvent.event_id == ev.event_id))
            if done is None:
                payload = {
                    "items": [vars(i) for i in ev.items], "item_ids": list(ev.item_ids),
                    "skin_test_required": ev.skin_test_required, "result": ev.result,
                    "channel": ev.channel, "room": ev.room,
                }
                session.add(VisitEvent(visit_id=inp.visit_id, event_id=ev.event_id, type=ev.type,
                                       occurred_at=ev.occurred_at, payload=payload,
                                       stage_after=inp.stage_after, recorded_at=now))
                for item in inp.charge:
                    await self._add_once(session, LedgerEntry(
                        idempotency_key=f"visit-{inp.visit_id}:charge:{item.item_id}", visit_id=inp.visit_id,
                        patient_id=inp.patient_id, kind=EntryKind.charge,
                        amount_fen=item.unit_price_fen * item.quantity, item_id=item.item_id, code=item.code,
                        name=item.name, category=item.category, unit_price_fen=item.unit_price_fen,
                        quantity=item.quantity, created_at=now))
                if inp.reverse:
                    charges = (await session.scalars(select(LedgerEntry).where(
                        LedgerEntry.visit_id == inp.visit_id, LedgerEntry.kind == EntryKind.charge,
                        LedgerEntry.item_id.in_(inp.reverse)))).all()
                    for charge in charges:
                        await self._add_once(session, LedgerEntry(
                            idempotency_key=f"visit-{inp.visit_id}:reverse:{charge.item_id}",
                            visit_id=inp.visit_id, patient_id=inp.patient_id, kind=EntryKind.reversal,
                            amount_fen=charge.amount_fen, item_id=charge.item_id, code=charge.code,
                            name=charge.name, category=charge.category, unit_price_fen=charge.unit_price_fen,
                            quantity=charge.quantity, created_at=now))
                visit.stage = inp.stage_after
                if inp.stage_after == "discharged" and visit.discharged_at is None:
                    visit.discharged_at = ev.occurred_at
                visit.updated_at = now
                audit(session, actor="his", action=f"event:{ev.type}", subject_type="visit",
                      subject_id=inp.visit_id, at=now, event_id=ev.event_id, stage=inp.stage_after)
                await session.flush()
            return _balance(await visit_totals(session, inp.visit_id))

    @activity.defn(name=c.GET_BALANCE)
    async def get_balance(self, inp: c.BalanceInput) -> c.BalanceResult:
        async with self._factory() as session:
            return _balance(await visit_totals(session, inp.visit_id))

    @activity.defn(name=c.RECORD_PAYMENT_STATUS)
    async def record_payment_status(self, inp: c.RecordPaymentStatusInput) -> None:
        status = PaymentStatus(inp.status)
        async with self._factory() as session, session.begin():
            visit = await self._visit(session, inp.visit_id)
            if visit.payment_status != status:
                audit(session, actor="workflow", action="payment_status", subject_type="visit",
                      subject_id=inp.visit_id, reason=inp.reason, at=inp.at,
                      before=visit.payment_status, after=str(status))
            visit.payment_status = str(status)
            visit.arrears_at = inp.arrears_at
            visit.due_at = inp.due_at
            visit.card_locked = inp.card_locked
            visit.credit_reported = inp.credit_reported
            visit.updated_at = utcnow()
