"""Refunds of the insurance parts (pooled fund, personal account) of a card-less settlement
(医保脱卡支付): the money goes back through the bureau, which takes a settlement back only whole
(2208 结算撤销).

When the open refunds asked against the settlement's insurance payments cover its whole
insurance part, each refund's submit sends the settlement's 2208, under one msgid kept for
the settlement (`2208:refund:{settlement_id}`): the second refund's 2208 is the same request and
gets the same answer. Taken back, every open refund of the settlement succeeds at once (actor
`bureau`) and the settlement is `refunded`. Refused, its open refunds fail (the ledger puts the
credit back) and the settlement carries the refusal; the bureau away is raised and retried by the
refund workflow. A part asked back stays `manual`: the bureau does not take back a part. Once an
operator confirmed a part handed back (actor not `bureau`: the window's revoke and re-settle),
the rest stays `manual` too: a 2208 would return that part a second time.
医保移动支付 (mode "mobile") goes back by 6203, each refund on its own (appRefdSn = the refund's
id), through the part its payment was: the fund, the personal account or the cash part."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from activities.insurance import send_reversal
from activities.insurance_mobile import refund_mobile
from db.models import AuditLog, InsuranceSettlement, Payment, Refund
from db.repositories import audit, utcnow
from domain.insurance import SettlementStatus
from domain.payment import RefundStatus
from integrations.gateway import GatewayError
from integrations.insurance_bureau import InsuranceBureauClient
from ledger.refunds import BUREAU_METHODS, settle_refund
from workflows import contracts as c

ACTOR = "bureau"
PARTIAL = "the bureau takes back only whole settlements: revoke (2208) and re-settle at the insurance window"
NO_SETTLEMENT = "no settlement at the bureau on record for this payment: hand it back and confirm"
BY_HAND = "part of this settlement was handed back at the insurance window: hand the rest back there too"
OPEN = (RefundStatus.created, RefundStatus.processing, RefundStatus.manual)


def _insurance_payments(settlement_id: str) -> Select[Any]:
    return select(Payment.id).where(
        Payment.insurance_settlement_id == settlement_id, Payment.method.in_(BUREAU_METHODS)
    )


async def asked_back(session: AsyncSession, settlement_id: str) -> int:
    """What the open refunds against the settlement's insurance payments ask back (the failed
    ones' credit is back on the bills; a succeeded one went back already)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
            Refund.payment_id.in_(_insurance_payments(settlement_id)), Refund.status.in_(OPEN)
        )
    )
    return int(total or 0)


async def handed_back(session: AsyncSession, settlement_id: str) -> bool:
    """Whether an operator (any actor but the bureau) confirmed a refund of the settlement's
    insurance payments succeeded: that part went back at the window, outside a 2208."""
    done = await session.scalars(
        select(Refund).where(
            Refund.payment_id.in_(_insurance_payments(settlement_id)), Refund.status == RefundStatus.succeeded
        )
    )
    ids = {r.id: r.visit_id for r in done.all()}
    if not ids:
        return False
    confirmed = await session.scalars(
        select(AuditLog).where(
            AuditLog.subject_type == "visit",
            AuditLog.subject_id.in_(set(ids.values())),
            AuditLog.action == f"refund_{RefundStatus.succeeded}",
            AuditLog.actor != ACTOR,
        )
    )
    return any(a.detail.get("refund_id") in ids for a in confirmed.all())


async def open_refunds(session: AsyncSession, settlement_id: str) -> list[Refund]:
    rows = await session.scalars(
        select(Refund)
        .where(Refund.payment_id.in_(_insurance_payments(settlement_id)), Refund.status.in_(OPEN))
        .order_by(Refund.created_at, Refund.id)
    )
    return list(rows.all())


class InsuranceRefunds:
    """The submit of a refund whose method is insurance_pooled or insurance_personal
    (activities/refunds.py dispatches to it)."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient) -> None:
        self._factory = factory
        self._bureau = bureau

    async def submit(self, refund: Refund, payment: Payment) -> c.RefundStatusResult:
        async with self._factory() as session:
            row = None
            if payment.insurance_settlement_id:
                row = await session.get(InsuranceSettlement, payment.insurance_settlement_id)
            asked = 0 if row is None else await asked_back(session, row.id)
            by_hand = row is not None and row.mode != "mobile" and await handed_back(session, row.id)
        if row is None:
            return await self._record(refund.id, RefundStatus.manual, actor="workflow", detail=NO_SETTLEMENT)
        if row.mode == "mobile":
            return await self._mobile(refund, payment, row)
        if row.status != SettlementStatus.refunded:
            if not row.bureau_settlement_no:
                return await self._record(refund.id, RefundStatus.manual, actor="workflow", detail=NO_SETTLEMENT)
            if by_hand:
                return await self._record(refund.id, RefundStatus.manual, actor="workflow", detail=BY_HAND)
            if asked < row.pooled_fen + row.personal_fen:
                return await self._record(refund.id, RefundStatus.manual, actor="workflow", detail=PARTIAL)
            refused = await self._reverse(row)
            if refused is not None:
                return await self._refused(row, refund.id, refused)
        return await self._taken_back(row, refund.id)

    async def _mobile(self, refund: Refund, payment: Payment, row: InsuranceSettlement) -> c.RefundStatusResult:
        """医保移动支付: the bureau refunds the order by 6203 (activities/insurance_mobile.py); the
        bureau away is raised (retried by the refund workflow), a refusal fails the refund."""
        answer = await refund_mobile(self._factory, self._bureau, refund, payment, row)
        if answer.status == RefundStatus.succeeded and answer.amount_fen != refund.amount_fen:
            raise ApplicationError(
                f"the bureau refunded {answer.amount_fen} fen for a {refund.amount_fen} fen refund: reconcile by hand",
                type="refund_mismatch",
                non_retryable=True,
            )
        async with self._factory() as session, session.begin():
            await settle_refund(
                session,
                refund.id,
                RefundStatus(answer.status),
                actor=ACTOR,
                channel_refund_no=answer.channel_refund_no or None,
                detail=answer.detail or None,
            )
            return await self._result(session, refund.id)

    async def _reverse(self, row: InsuranceSettlement) -> GatewayError | None:
        """2208 of the settlement, under its refund msgid: None when taken back, the refusal when
        refused at the first send. The bureau away is raised (retried); a refusal of a 2208 an
        earlier try may have carried through is not an answer (retried, `bureau_outcome_unknown`)."""
        return await send_reversal(
            self._factory, self._bureau, row, str(row.bureau_settlement_no), key=f"2208:refund:{row.id}"
        )

    async def _taken_back(self, row: InsuranceSettlement, refund_id: str) -> c.RefundStatusResult:
        """The bureau took the settlement back: it is `refunded`, and every open refund of it
        succeeded (the one asking, and any other of its refunds, manual ones included)."""
        detail = f"taken back by the bureau: 2208 of settlement {row.bureau_settlement_no}"
        async with self._factory() as session, session.begin():
            settlement = await session.get(InsuranceSettlement, row.id, with_for_update=True)
            assert settlement is not None
            if settlement.status != SettlementStatus.refunded:
                before = settlement.status
                settlement.status, settlement.updated_at = str(SettlementStatus.refunded), utcnow()
                settlement.detail = detail[:300]
                audit(
                    session,
                    actor=ACTOR,
                    action="insurance_refunded",
                    subject_type="patient",
                    subject_id=settlement.patient_id,
                    settlement_id=settlement.id,
                    before=before,
                    pooled_fen=settlement.pooled_fen,
                    personal_fen=settlement.personal_fen,
                )
            for other in await open_refunds(session, row.id):
                await settle_refund(
                    session,
                    other.id,
                    RefundStatus.succeeded,
                    actor=ACTOR,
                    channel_refund_no=settlement.bureau_settlement_no,
                    detail=detail,
                )
            return await self._result(session, refund_id)

    async def _refused(self, row: InsuranceSettlement, refund_id: str, err: GatewayError) -> c.RefundStatusResult:
        """The bureau refused the 2208: the settlement's refunds not yet with an operator fail
        (their credit is back on the bills), and the settlement carries the refusal's code."""
        detail = f"the bureau refused to take back settlement {row.bureau_settlement_no}: {err}"
        async with self._factory() as session, session.begin():
            settlement = await session.get(InsuranceSettlement, row.id, with_for_update=True)
            assert settlement is not None
            settlement.detail, settlement.updated_at = detail[:300], utcnow()
            audit(
                session,
                actor=ACTOR,
                action="insurance_refund_refused",
                subject_type="patient",
                subject_id=settlement.patient_id,
                settlement_id=settlement.id,
                code=err.code,
            )
            for other in await open_refunds(session, row.id):
                if other.status != RefundStatus.manual:  # an operator's: stays theirs
                    await settle_refund(session, other.id, RefundStatus.failed, actor=ACTOR, detail=detail[:300])
            return await self._result(session, refund_id)

    async def _record(self, refund_id: str, to: RefundStatus, *, actor: str, detail: str) -> c.RefundStatusResult:
        async with self._factory() as session, session.begin():
            await settle_refund(session, refund_id, to, actor=actor, detail=detail)
            return await self._result(session, refund_id)

    async def _result(self, session: AsyncSession, refund_id: str) -> c.RefundStatusResult:
        refund = await session.get(Refund, refund_id)
        assert refund is not None
        return c.RefundStatusResult(refund_id=refund_id, status=refund.status, detail=refund.detail or "")
