"""The insurance card lock. Each defaulted visit holds the lock; the bureau is asked to
lock when the first hold appears and to unlock when the last one is released, so a patient
with several overdue visits gets one lock. Work on one patient is serialised, and the
bureau's answer is recorded only after it arrived; a retry asks again with the same
msgid (kept in nhsa_message), which the bureau deduplicates. The bureau speaks NHSA: the lock is
its regional extension `yhf-card-lock`, settlement 2207, 冲正 2208, and 2601 of a 2207 whose answer
was lost (integrations/insurance_bureau.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import CardLockHold, InsuranceSettlement, Patient
from db.nhsa import NhsaMessage, bureau_person, message
from db.repositories import audit, patient_mutex, utcnow
from integrations.gateway import GatewayError
from integrations.insurance_bureau import CARD_LOCK, WORKER, InsuranceBureauClient, Split
from ledger.payments import land_insurance_part
from ledger.refunds import refund_input
from workflows import contracts as c


async def record_settlement(
    factory: async_sessionmaker[AsyncSession], settlement_id: str, action: str, facts: dict[str, Any], **fields: object
) -> None:
    """Write `fields` on the settlement and audit `action` with `facts` (ids and amounts)."""
    async with factory() as session, session.begin():
        row = await session.get(InsuranceSettlement, settlement_id, with_for_update=True)
        assert row is not None
        before = row.status
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        audit(
            session,
            actor="workflow",
            action=action,
            subject_type="patient",
            subject_id=row.patient_id,
            settlement_id=settlement_id,
            before=before,
            **facts,
        )


class InsuranceActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient) -> None:
        self._factory = factory
        self._bureau = bureau

    async def _holds(self, session: AsyncSession, patient_id: str) -> list[CardLockHold]:
        return list((await session.scalars(select(CardLockHold).where(CardLockHold.patient_id == patient_id))).all())

    async def _call(self, action: str, inp: c.CardLockInput) -> bool:
        msgid = await bureau_msgid(self._factory, self._bureau, f"{action}:{inp.patient_id}:{inp.visit_id}", CARD_LOCK)
        async with self._factory() as session:
            patient = await session.get(Patient, inp.patient_id)
        try:
            return await self._bureau.set_card_lock(
                action=action,
                msgid=msgid,
                psn_no=bureau_person(patient) if patient else inp.patient_id,
                reason=inp.reason,
                at=inp.at,
                operator=WORKER,
                day=self._bureau.local_day(utcnow()),
            )
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
                session.add(
                    CardLockHold(patient_id=inp.patient_id, visit_id=inp.visit_id, reason=inp.reason, held_at=inp.at)
                )
                audit(
                    session,
                    actor="workflow",
                    action="card_locked" if call else "card_lock_hold",
                    subject_type="patient",
                    subject_id=inp.patient_id,
                    reason=inp.reason,
                    at=inp.at,
                    visit_id=inp.visit_id,
                    note=None if call else "card already locked by another overdue visit",
                )
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
                audit(
                    session,
                    actor="workflow",
                    action="card_unlocked" if call else "card_lock_released",
                    subject_type="patient",
                    subject_id=inp.patient_id,
                    reason=inp.reason,
                    at=inp.at,
                    visit_id=inp.visit_id,
                    note=None if call else f"card stays locked: {len(others)} other overdue visit(s)",
                )
            return c.CardLockResult(locked=locked, bureau_called=call)


async def bureau_msgid(
    factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient, key: str, infno: str
) -> str:
    """The msgid of one logical request, the same on every retry (its own short transaction)."""
    return (await bureau_message(factory, bureau, key, infno))[0]


async def bureau_message(
    factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient, key: str, infno: str
) -> tuple[str, bool]:
    """(msgid, first): `first` False when this request may have been sent before, by an earlier
    try of this activity (its attempt above 1) or by an earlier activity (the msgid was kept)."""
    async with factory() as session, session.begin():
        msgid, new = await message(session, key=key, infno=infno, now=utcnow(), make=bureau.msgid)
    return msgid, new and (not activity.in_activity() or activity.info().attempt == 1)


# 2601 refusals that say the bureau holds nothing of the message: it never got it, refused it, or
# its settlement was reversed already
NOTHING_HELD = frozenset({"OriginalNotFound", "OriginalFailed", "NotSettled"})


def outcome_unknown(settlement_id: str, infno: str, err: GatewayError) -> ApplicationError:
    """A refusal of a request an earlier try may have carried through: not an answer to that
    try. Retryable: the step raises its alert and tries again (the bureau answers the msgid as
    the first time); never concluded failed while the bureau may hold the money."""
    return ApplicationError(
        f"settlement {settlement_id}: {err}, but an earlier {infno} of it may have gone through",
        type="bureau_outcome_unknown",
    )


def unknown_settlement(settlement_id: str) -> ApplicationError:
    return ApplicationError(
        f"settlement {settlement_id} is not in the database", type="invalid_input", non_retryable=True
    )


class SettlementActivities:
    """医保脱卡支付: settle the insurance part of a bill with the bureau, reverse it (冲正),
    and book it in the ledger once the self-pay part has landed."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient) -> None:
        self._factory = factory
        self._bureau = bureau

    async def _load(self, settlement_id: str) -> InsuranceSettlement:
        async with self._factory() as session:
            row = await session.get(InsuranceSettlement, settlement_id)
        if row is None or not row.bureau_presettle_id:
            raise unknown_settlement(settlement_id)
        return row

    async def _mark(self, settlement_id: str, status: str, **fields: object) -> None:
        await self._record(settlement_id, f"insurance_{status}", {}, status=status, **fields)

    async def _record(self, settlement_id: str, action: str, facts: dict[str, Any], **fields: object) -> None:
        await record_settlement(self._factory, settlement_id, action, facts, **fields)

    async def _reverse_at_bureau(self, row: InsuranceSettlement, setl_id: str) -> None:
        """2208 of `setl_id`. Transient failures are raised and retried; a refusal is recorded on
        the settlement and raised non-retryable (`bureau_reversal_refused`): the bureau keeps
        the settlement, which only a person can resolve now; a refusal of a 2208 an earlier try
        may have carried through is not that (retried, `bureau_outcome_unknown`)."""
        refused = await send_reversal(self._factory, self._bureau, row, setl_id, key=f"2208:{row.id}")
        if refused is not None:
            detail = f"冲正 refused, settlement {setl_id} stands at the bureau: {refused}"
            await self._record(row.id, "insurance_reversal_refused", {"code": refused.code}, detail=detail[:300])
            raise ApplicationError(detail, type="bureau_reversal_refused", non_retryable=True) from refused

    async def _cancel_lost_settle(self, row: InsuranceSettlement) -> None:
        """2601 of the settlement's 2207 (its msgid, kept), when its answer never came: the bureau
        may hold a settlement whose setl_id we do not know. A 2207 it never got, or refused, holds
        nothing (`NOTHING_HELD`); any other refusal is recorded and raised as a refused 2208 is."""
        async with self._factory() as session:
            omsgid = await session.scalar(select(NhsaMessage.msgid).where(NhsaMessage.request_key == f"2207:{row.id}"))
        if omsgid is None:
            return
        msgid, first = await bureau_message(self._factory, self._bureau, f"2601:{row.id}", "2601")
        try:
            await self._bureau.cancel(
                msgid=msgid,
                psn_no=row.psn_no or row.patient_id,
                omsgid=omsgid,
                oinfno="2207",
                operator=WORKER,
                day=self._bureau.local_day(utcnow()),
            )
        except GatewayError as err:
            if err.retryable:
                raise
            if err.code in NOTHING_HELD:
                return
            if not first:
                raise outcome_unknown(row.id, "2601", err) from err
            detail = f"冲正 (2601) of the 2207 refused, the bureau may hold the settlement: {err}"
            await self._record(row.id, "insurance_reversal_refused", {"code": err.code}, detail=detail[:300])
            raise ApplicationError(detail, type="bureau_reversal_refused", non_retryable=True) from err
        await self._record(row.id, "insurance_cancelled", {"omsgid": omsgid, "oinfno": "2207"})

    async def _settled_otherwise(self, row: InsuranceSettlement, split: Split) -> c.SettlementResult:
        """The bureau settled another split than it pre-settled: its setl_id and split are kept
        first, then the settlement is reversed (2208) and marked failed, so the saga closes the
        self-pay order and the patient pays the whole bill another way."""
        bureau_split = {
            "bureau_pooled_fen": split.pooled_fen,
            "bureau_personal_fen": split.personal_fen,
            "bureau_self_pay_fen": split.self_pay_fen,
        }
        if row.bureau_settlement_no != split.setl_id:
            await self._record(row.id, "insurance_split_mismatch", bureau_split, bureau_settlement_no=split.setl_id)
        await self._reverse_at_bureau(row, split.setl_id)
        detail = (
            f"the bureau settled {split.setl_id} as pooled {split.pooled_fen}, personal {split.personal_fen}, "
            f"self-pay {split.self_pay_fen} fen, not the pre-settled split: reversed (2208); pay the bill at a channel"
        )
        await self._mark(row.id, "failed", detail=detail[:300])
        return c.SettlementResult(settlement_id=row.id, status="failed", detail=detail)

    @activity.defn(name=c.SETTLE_INSURANCE)
    async def settle_insurance(self, inp: c.SettlementInput) -> c.SettlementResult:
        row = await self._load(inp.settlement_id)
        if row.status != "presettled":
            return c.SettlementResult(settlement_id=row.id, status=row.status, detail=row.detail or "")
        # no transaction is held across the call (on SQLite every transaction holds the write lock)
        msgid, first = await bureau_message(self._factory, self._bureau, f"2207:{row.id}", "2207")
        try:
            split = await self._bureau.settle(
                msgid=msgid,
                mdtrt_id=str(row.bureau_presettle_id),
                psn_no=row.psn_no or row.patient_id,
                chrg_bchno=row.id,
                total_fen=row.total_fen,
                operator=WORKER,
                day=self._bureau.local_day(utcnow()),
            )
        except GatewayError as err:
            if err.retryable:
                raise
            if not first:  # an earlier try may have settled: this refusal does not say it did not
                raise outcome_unknown(row.id, "2207", err) from err
            await self._mark(row.id, "failed", detail=str(err)[:300])
            return c.SettlementResult(settlement_id=row.id, status="failed", detail=str(err))
        if (split.pooled_fen, split.personal_fen, split.self_pay_fen) != (
            row.pooled_fen,
            row.personal_fen,
            row.self_pay_fen,
        ):  # the bureau settles only against the same pre-settlement: another split is taken back
            return await self._settled_otherwise(row, split)
        await self._mark(row.id, "insurance_settled", bureau_settlement_no=split.setl_id)
        return c.SettlementResult(settlement_id=row.id, status="insurance_settled")

    @activity.defn(name=c.REVERSE_INSURANCE)
    async def reverse_insurance(self, inp: c.SettlementInput) -> c.SettlementResult:
        row = await self._load(inp.settlement_id)
        if row.status in ("reversed", "completed", "failed"):  # failed: never settled, or taken back
            return c.SettlementResult(settlement_id=row.id, status=row.status)
        if row.bureau_settlement_no:  # settled at the bureau: 2208
            await self._reverse_at_bureau(row, row.bureau_settlement_no)
        else:  # a 2207 whose answer never came is taken back by its msgid (2601); none sent: nothing
            await self._cancel_lost_settle(row)
        await self._mark(row.id, "reversed", detail="冲正: the self-pay part did not complete in time")
        return c.SettlementResult(settlement_id=row.id, status="reversed")

    @activity.defn(name=c.BOOK_INSURANCE)
    async def book_insurance(self, inp: c.SettlementInput) -> c.SettlementResult:
        async with self._factory() as session, session.begin():
            row = await session.get(InsuranceSettlement, inp.settlement_id, with_for_update=True)
            if row is None:
                raise unknown_settlement(inp.settlement_id)
            if row.status not in ("insurance_settled", "completed"):
                raise ApplicationError(f"settlement {row.id} is {row.status}", type="invalid_input", non_retryable=True)
            landed: list[c.AllocationResult] = []
            refunds: list[c.RefundInput] = []
            if row.status == "insurance_settled":
                now = utcnow()
                for part, fen in (("pooled", row.pooled_fen), ("personal", row.personal_fen)):
                    if fen <= 0:
                        continue
                    money = await land_insurance_part(  # the ledger writes the money
                        session,
                        settlement_id=row.id,
                        part=part,
                        patient_id=row.patient_id,
                        visit_ids=list(row.visit_ids),
                        amount_fen=fen,
                        bureau_settlement_no=row.bureau_settlement_no,
                    )
                    landed += [c.AllocationResult(visit_id=v, amount_fen=a) for v, a in money.parts]
                    refunds += [refund_input(r) for r in money.refunds]
                row.status, row.updated_at = "completed", now
                audit(
                    session,
                    actor="insurance",
                    action="insurance_booked",
                    subject_type="patient",
                    subject_id=row.patient_id,
                    settlement_id=row.id,
                    pooled_fen=row.pooled_fen,
                    personal_fen=row.personal_fen,
                )
            return c.SettlementResult(settlement_id=row.id, status="completed", landed=landed, refunds=refunds)


async def send_reversal(
    factory: async_sessionmaker[AsyncSession],
    bureau: InsuranceBureauClient,
    row: InsuranceSettlement,
    setl_id: str,
    *,
    key: str,
) -> GatewayError | None:
    """2208 of `setl_id` under the msgid kept for `key`: None when the bureau took it back, its
    refusal when refused at the first send. The bureau away is raised (retried); a refusal of a
    2208 an earlier try may have carried through is not an answer (retried, `bureau_outcome_unknown`)."""
    msgid, first = await bureau_message(factory, bureau, key, "2208")
    try:
        await bureau.reverse(
            msgid=msgid,
            setl_id=setl_id,
            mdtrt_id=str(row.bureau_presettle_id),
            psn_no=row.psn_no or row.patient_id,
            operator=WORKER,
            day=bureau.local_day(utcnow()),
        )
    except GatewayError as err:
        if err.retryable:
            raise
        if not first:
            raise outcome_unknown(row.id, "2208", err) from err
        return err
    return None
