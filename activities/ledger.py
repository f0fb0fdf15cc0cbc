"""The visit's bill and clinical record in the database: the events and stages here, the
money through ledger/. Every write is keyed, so a retried activity books nothing twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import refuse_bad_data
from db.models import Visit, VisitEvent
from db.repositories import audit, utcnow, visit_totals
from domain.bill import Totals
from domain.policy import PaymentStatus
from domain.visit import Stage
from ledger import charges
from workflows import contracts as c


def balance_result(t: Totals) -> c.BalanceResult:
    return c.BalanceResult(
        total_fen=t.total_fen, paid_fen=t.paid_fen, balance_fen=t.balance_fen, waived_fen=t.waived_fen
    )


class LedgerActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory

    async def _visit(self, session: AsyncSession, visit_id: str) -> Visit:
        visit = await session.get(Visit, visit_id, with_for_update=True)
        if visit is None:
            raise ApplicationError(f"visit {visit_id} is not in the database", type="invalid_input", non_retryable=True)
        return visit

    @activity.defn(name=c.BOOK_REGISTRATION)
    @refuse_bad_data
    async def book_registration(self, inp: c.BookRegistrationInput) -> c.BalanceResult:
        """Confirms the fee the registration booked (ledger.charges: one writer, one key)."""
        async with self._factory() as session, session.begin():
            await self._visit(session, inp.visit_id)
            await charges.book_registration_fee(
                session, visit_id=inp.visit_id, patient_id=inp.patient_id, fee_fen=inp.registration_fee_fen
            )
            return balance_result(await visit_totals(session, inp.visit_id))

    @staticmethod
    def _record(session: AsyncSession, inp: c.ApplyVisitEventInput, now: datetime) -> None:
        """The event in the visit's clinical record."""
        ev = inp.event
        payload = {
            "items": [vars(i) for i in ev.items],
            "item_ids": list(ev.item_ids),
            "skin_test_required": ev.skin_test_required,
            "result": ev.result,
            "channel": ev.channel,
            "room": ev.room,
        }
        if inp.auto:
            payload["auto"] = True  # discharged by the workflow: the HIS never sent one
        session.add(
            VisitEvent(
                visit_id=inp.visit_id,
                event_id=ev.event_id,
                type=ev.type,
                occurred_at=ev.occurred_at,
                payload=payload,
                stage_after=inp.stage_after,
                recorded_at=now,
            )
        )

    @activity.defn(name=c.APPLY_VISIT_EVENT)
    @refuse_bad_data
    async def apply_visit_event(self, inp: c.ApplyVisitEventInput) -> c.BalanceResult:
        """The event, its charges and reversals (through the ledger) and the visit's new stage, once."""
        ev = inp.event
        now = utcnow()
        async with self._factory() as session, session.begin():
            visit = await self._visit(session, inp.visit_id)
            done = await session.scalar(
                select(VisitEvent.id).where(VisitEvent.visit_id == inp.visit_id, VisitEvent.event_id == ev.event_id)
            )
            if done is None:
                self._record(session, inp, now)
                visit_id, patient_id = inp.visit_id, inp.patient_id
                await charges.book_charges(session, visit_id=visit_id, patient_id=patient_id, items=inp.charge, at=now)
                await charges.reverse_charges(
                    session, visit_id=visit_id, patient_id=patient_id, item_ids=inp.reverse, at=now
                )
                visit.stage = inp.stage_after
                if inp.stage_after == Stage.discharged and visit.discharged_at is None:
                    visit.discharged_at = ev.occurred_at
                visit.auto_discharged = visit.auto_discharged or inp.auto
                visit.updated_at = now
                audit(
                    session,
                    actor="workflow" if inp.auto else "his",
                    action="auto_discharged" if inp.auto else f"event:{ev.type}",
                    subject_type="visit",
                    subject_id=inp.visit_id,
                    at=now,
                    event_id=ev.event_id,
                    stage=inp.stage_after,
                )
                await session.flush()
            return balance_result(await visit_totals(session, inp.visit_id))

    @activity.defn(name=c.GET_BALANCE)
    async def get_balance(self, inp: c.BalanceInput) -> c.BalanceResult:
        async with self._factory() as session:
            return balance_result(await visit_totals(session, inp.visit_id))

    @activity.defn(name=c.RECORD_PAYMENT_STATUS)
    @refuse_bad_data
    async def record_payment_status(self, inp: c.RecordPaymentStatusInput) -> None:
        async with self._factory() as session, session.begin():
            write_status(session, await self._visit(session, inp.visit_id), inp)


def write_status(session: AsyncSession, visit: Visit, inp: c.RecordPaymentStatusInput) -> None:
    """The visit's payment status, deadlines, sanctions and hold as the workflow holds them
    (a change of status audited)."""
    status = PaymentStatus(inp.status)
    if visit.payment_status != status:
        audit(
            session,
            actor="workflow",
            action="payment_status",
            subject_type="visit",
            subject_id=inp.visit_id,
            reason=inp.reason,
            at=inp.at,
            before=visit.payment_status,
            after=str(status),
        )
    visit.payment_status = str(status)
    visit.arrears_at = inp.arrears_at
    visit.due_at = inp.due_at
    visit.card_locked = inp.card_locked
    visit.credit_reported = inp.credit_reported
    visit.hold_kind = inp.hold_kind
    visit.hold_reason = inp.hold_reason
    visit.hold_started_at = inp.hold_since
    visit.hold_until_at = inp.hold_until
    visit.updated_at = utcnow()
