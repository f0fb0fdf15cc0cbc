"""The insurance card lock. Each defaulted visit holds the lock; the bureau is asked to
lock when the first hold appears and to unlock when the last one is released, so a patient
with several overdue visits gets one lock. Work on one patient is serialised, and the
bureau's answer is recorded only after it arrived; a retry asks again with the same
request id, which the bureau deduplicates."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import CardLockHold
from db.repositories import audit, patient_mutex
from integrations.gateway import GatewayError
from integrations.insurance_bureau import InsuranceBureauClient
from workflows import contracts as c


class InsuranceActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient) -> None:
        self._factory = factory
        self._bureau = bureau

    async def _holds(self, session: AsyncSession, patient_id: str) -> list[CardLockHold]:
        return list((await session.scalars(select(CardLockHold).where(CardLockHold.patient_id == patient_id))).all())

    async def _call(self, action: str, inp: c.CardLockInput) -> bool:
        try:
            return await self._bureau.set_card_lock(
                action=action, request_id=f"{action}:{inp.patient_id}:{inp.visit_id}",
                patient_id=inp.patient_id, reason=inp.reason, at=inp.at)
        except GatewayError as err:
            if err.retryable:
                raise
            raise ApplicationError(str(err), type="bureau_rejected", non_retryable=True) from err

    @activity.defn(name=c.LOCK_CARD)
    async def lock_card(self, inp: c.CardLockInput) -> c.CardLockResult:
        async with patient_mutex(self._factory, inp.patient_id):
            async with self._factory() as session:
                holds = await self._holds(session, inp.patient_id)
            mine = next((h for h in holds if h.visit_id == inp.visit_id), None)
            others = [h for h in holds if h.visit_id != inp.visit_id and h.released_at is None]
            if mine is not None:
                # held already (the bureau answered before the hold was written), or this
                # visit was paid already: never lock again for it
                return c.CardLockResult(locked=mine.released_at is None or bool(others), bureau_called=False)
            call = not others
            locked = await self._call("lock", inp) if call else True
            async with self._factory() as session, session.begin():
                session.add(CardLockHold(patient_id=inp.patient_id, visit_id=inp.visit_id, reason=inp.reason,
                                         held_at=inp.at))
                audit(session, actor="workflow", action="card_locked" if call else "card_lock_hold",
                      subject_type="patient", subject_id=inp.patient_id, reason=inp.reason, at=inp.at,
                      visit_id=inp.visit_id, note=None if call else "card already locked by another overdue visit")
            return c.CardLockResult(locked=locked, bureau_called=call)

    @activity.defn(name=c.UNLOCK_CARD)
    async def unlock_card(self, inp: c.CardLockInput) -> c.CardLockResult:
        async with patient_mutex(self._factory, inp.patient_id):
            async with self._factory() as session:
                holds = await self._holds(session, inp.patient_id)
            mine = next((h for h in holds if h.visit_id == inp.visit_id), None)
            others = [h for h in holds if h.visit_id != inp.visit_id and h.released_at is None]
            if mine is None or mine.released_at is not None:
                return c.CardLockResult(locked=bool(others), bureau_called=False)
            call = not others
            locked = await self._call("unlock", inp) if call else True
            async with self._factory() as session, session.begin():
                hold = await session.get(CardLockHold, mine.id)
                assert hold is not None
                hold.released_at = inp.at
                audit(session, actor="workflow", action="card_unlocked" if call else "card_lock_released",
                      subject_type="patient", subject_id=inp.patient_id, reason=inp.reason, at=inp.at,
                      visit_id=inp.visit_id,
                      note=None if call else f"card stays locked: {len(others)} other overdue visit(s)")
            return c.CardLockResult(locked=locked, bureau_called=call)
