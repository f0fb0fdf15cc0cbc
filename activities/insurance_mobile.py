"""医保移动支付 (NHSA mobile payment) in the worker: where an order stands (6301) and, paid,
its three parts booked once, exactly as 6301 says and only if that is the split the order was
made with; an unpaid order taken back (6401); the orders the reconciliation must look at; and a
refund of one of its parts (6203, `refund_mobile`, called by the refunds' dispatcher).

No transaction is held across a call to the bureau. The msgid of a request that changes
something (6401, 6203) is kept per logical request, so a retry sends the same one; a 6301 only
asks, and asks afresh each time (a kept msgid would be answered as the first time)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.insurance import bureau_message, bureau_msgid, outcome_unknown, record_settlement, unknown_settlement
from db.models import InsuranceSettlement, Payment, Refund
from db.nhsa import order_of
from db.repositories import audit, utcnow
from domain.insurance import SettlementStatus
from domain.oversight import ActionRefusal
from domain.payment import REFUND_FINAL
from domain.sanctions import OperatorAction
from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER, InsuranceBureauClient
from integrations.nhsa_mobile import FAILED, PAID, PAYING, REVOKED, UPLOADED, MobileOrder, MobilePayment, MobileRefund
from integrations.payments.channels import RefundAnswer
from ledger.payments import land_insurance_part
from ledger.refunds import refund_input
from ledger.repository import payment_parts
from workflows import contracts as c, contracts_mobile as m

MOBILE, CASH_METHOD = "mobile", "nhsa_mobile"
SPLIT_MISMATCH = m.SPLIT_MISMATCH
# the operator hold a paid order that cannot be booked puts on its visits (their sanctions stop)
MISMATCH_HOLD = "paid at the bureau, figures differ: reconcile by hand"
# each part of a mobile settlement as a payment: (part, method; "" is insurance_{part})
PARTS = (("pooled", ""), ("personal", ""), ("cash", CASH_METHOD))
# a refund's method -> the 6203 amount it goes back through
REFUND_FIELDS = {"insurance_pooled": "fund_fen", "insurance_personal": "personal_fen", CASH_METHOD: "cash_fen"}


def same_split(row: InsuranceSettlement, order: MobileOrder) -> bool:
    return (order.total_fen, order.fund_fen, order.personal_fen, order.cash_fen) == (
        row.total_fen,
        row.pooled_fen,
        row.personal_fen,
        row.self_pay_fen,
    )


class MobileActivities:
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient, deadline: timedelta
    ) -> None:
        self._factory = factory
        self._bureau = bureau
        self._mobile = MobilePayment(bureau)
        self._deadline = deadline  # settings.insurance_self_pay_timeout

    async def _load(self, settlement_id: str) -> InsuranceSettlement:
        async with self._factory() as session:
            row = await session.get(InsuranceSettlement, settlement_id)
        if row is None or row.mode != MOBILE or not row.pay_ord_id:
            raise unknown_settlement(settlement_id)
        return row

    async def _query(self, row: InsuranceSettlement) -> MobileOrder:
        msgid = await bureau_msgid(self._factory, self._bureau, f"6301:{row.id}:{secrets.token_hex(6)}", "6301")
        try:
            return await self._mobile.query(
                msgid=msgid, order=order_of(row), operator=WORKER, day=self._bureau.local_day(utcnow())
            )
        except GatewayError as err:
            if err.retryable:
                raise
            raise ApplicationError(
                f"settlement {row.id}: 6301 refused ({err.code})", type="bureau_query_refused"
            ) from err

    async def _record(self, settlement_id: str, action: str, facts: dict[str, Any], **fields: object) -> None:
        await record_settlement(self._factory, settlement_id, action, facts, **fields)

    async def _conclude(self, row: InsuranceSettlement, order: MobileOrder) -> c.SettlementResult:
        """What 6301 said, acted on: paid (the stored split): booked; revoked or failed: marked;
        uploaded or paying: still paying. Paid with other figures, or an ordStas we cannot book
        nor wait on (refunded at the bureau before we booked, or unknown): recorded, nothing
        booked, the visits put on an operator's hold (no sanction for a bill the patient may
        have paid), and raised (SPLIT_MISMATCH: the workflow raises its alert and holds until
        it is told again)."""
        if order.status == PAID and same_split(row, order):
            return await self._book(row.id, order.setl_id)
        if order.status in (REVOKED, FAILED):
            status = SettlementStatus.revoked if order.status == REVOKED else SettlementStatus.failed
            detail = f"the bureau has the order as {order.status} (ordStas): nothing was paid"
            await self._record(row.id, f"insurance_{status}", {}, status=status, detail=detail)
            return c.SettlementResult(settlement_id=row.id, status=status, detail=detail)
        if order.status in (UPLOADED, PAYING):
            return c.SettlementResult(settlement_id=row.id, status=SettlementStatus.paying)
        figures = {"ord_stas": order.status, "total_fen": order.total_fen, "fund_fen": order.fund_fen}
        figures |= {"personal_fen": order.personal_fen, "cash_fen": order.cash_fen}
        if order.status == PAID:
            detail = (
                f"6301 says paid as total {order.total_fen}, fund {order.fund_fen}, personal "
                f"{order.personal_fen}, cash {order.cash_fen} fen: not the ordered split; nothing booked"
            )
            hold, action = MISMATCH_HOLD, "insurance_split_mismatch"
        else:
            detail = f"the bureau has the order as {order.status} (ordStas), neither paid nor unpaid: nothing booked"
            hold = f"the bureau has the order as {order.status} (ordStas): reconcile by hand"
            action = "insurance_order_unexpected"
        if row.detail != detail[:300]:
            await self._record(row.id, action, figures, detail=detail[:300])
        await hold_visits(row, hold)
        raise ApplicationError(f"settlement {row.id}: {detail}", type=SPLIT_MISMATCH, non_retryable=True)

    async def _already(self, row: InsuranceSettlement) -> c.SettlementResult:
        """A settlement no longer paying, as it ended: booked, its results read again (a retry
        after the try that booked it committed, its answer lost); else its status."""
        if row.status == SettlementStatus.completed:
            async with self._factory() as session:
                return await booked(session, row)
        return c.SettlementResult(settlement_id=row.id, status=row.status, detail=row.detail or "")

    async def _book(self, settlement_id: str, setl_id: str) -> c.SettlementResult:
        """The three parts as payments, once: a retry finds the settlement completed."""
        async with self._factory() as session, session.begin():
            row = await session.get(InsuranceSettlement, settlement_id, with_for_update=True)
            assert row is not None
            if row.status == SettlementStatus.completed:  # a retry after the first try committed
                return await booked(session, row)
            if row.status != SettlementStatus.paying:
                return c.SettlementResult(settlement_id=row.id, status=row.status, detail=row.detail or "")
            landed: list[c.AllocationResult] = []
            refunds: list[c.RefundInput] = []
            for (part, method), fen in zip(PARTS, (row.pooled_fen, row.personal_fen, row.self_pay_fen), strict=True):
                if fen <= 0:
                    continue
                money = await land_insurance_part(  # the ledger writes the money
                    session,
                    settlement_id=row.id,
                    part=part,
                    patient_id=row.patient_id,
                    visit_ids=list(row.visit_ids),
                    amount_fen=fen,
                    bureau_settlement_no=setl_id or None,
                    method=method,
                )
                landed += [c.AllocationResult(visit_id=v, amount_fen=a) for v, a in money.parts]
                refunds += [refund_input(r) for r in money.refunds]
            row.status, row.bureau_settlement_no, row.detail = SettlementStatus.completed, setl_id or None, None
            row.updated_at = utcnow()
            audit(
                session,
                actor="insurance",
                action="insurance_booked",
                subject_type="patient",
                subject_id=row.patient_id,
                settlement_id=row.id,
                pooled_fen=row.pooled_fen,
                personal_fen=row.personal_fen,
                cash_fen=row.self_pay_fen,
            )
        return c.SettlementResult(settlement_id=settlement_id, status="completed", landed=landed, refunds=refunds)

    @activity.defn(name=m.SETTLE_MOBILE_ORDER)
    async def settle_mobile_order(self, inp: c.SettlementInput) -> c.SettlementResult:
        row = await self._load(inp.settlement_id)
        if row.status != SettlementStatus.paying:
            return await self._already(row)
        return await self._conclude(row, await self._query(row))

    @activity.defn(name=m.REVOKE_MOBILE_ORDER)
    async def revoke_mobile_order(self, inp: c.SettlementInput) -> c.SettlementResult:
        row = await self._load(inp.settlement_id)
        if row.status != SettlementStatus.paying:
            return await self._already(row)
        msgid = await bureau_msgid(self._factory, self._bureau, f"6401:{row.id}", "6401")
        try:
            status = await self._mobile.revoke(
                msgid=msgid, order=order_of(row), operator=WORKER, day=self._bureau.local_day(utcnow())
            )
        except GatewayError as err:
            if err.retryable:
                raise
            status = ""  # refused: paid meanwhile (OrderPaid), or gone: 6301 says which
        if status == REVOKED:
            detail = "not paid in time: the order was taken back (6401)"
            await self._record(row.id, "insurance_revoked", {}, status=SettlementStatus.revoked, detail=detail)
            return c.SettlementResult(settlement_id=row.id, status=SettlementStatus.revoked, detail=detail)
        result = await self._conclude(row, await self._query(row))
        if result.status == SettlementStatus.paying:
            raise ApplicationError(
                f"settlement {row.id}: 6401 refused, the order still unpaid", type="bureau_revoke_refused"
            )
        return result

    @activity.defn(name=m.FIND_ORPHANED_MOBILE_ORDERS)
    async def find_orphaned_mobile_orders(self, inp: c.ReconcileInput) -> m.MobileOrdersResult:
        """Mobile orders still paying past the deadline: their workflow may be gone (a crash
        between the commit and its start); the reconciliation starts one where none runs."""
        cutoff = utcnow() - self._deadline
        async with self._factory() as session:
            rows = (
                await session.scalars(
                    select(InsuranceSettlement)
                    .where(
                        InsuranceSettlement.mode == MOBILE,
                        InsuranceSettlement.status == SettlementStatus.paying,
                        InsuranceSettlement.updated_at < cutoff,
                    )
                    .order_by(InsuranceSettlement.updated_at)
                    .limit(500)
                )
            ).all()
        return m.MobileOrdersResult(
            orders=[
                m.MobilePaymentInput(
                    settlement_id=r.id,
                    fund_fen=r.pooled_fen,
                    personal_fen=r.personal_fen,
                    cash_fen=r.self_pay_fen,
                    timeout_seconds=0,
                )
                for r in rows
            ]
        )


async def refund_mobile(
    session_factory: async_sessionmaker[AsyncSession],
    bureau: InsuranceBureauClient,
    refund: Refund,
    payment: Payment,
    settlement: InsuranceSettlement,
) -> RefundAnswer:
    """6203 of one refund of a mobile settlement's payment: appRefdSn is the refund's id (its
    msgid kept, so a retry is the same request); the amount goes back through the part the
    payment was (the fund, the personal account or the cash part). Transient failures and a
    refusal of a request an earlier try may have carried through are raised (retried)."""
    field = REFUND_FIELDS.get(payment.method)
    if field is None or settlement.mode != MOBILE or not settlement.pay_ord_id or refund.payment_id != payment.id:
        detail = f"payment {payment.id} ({payment.method}) is not a part of a mobile settlement"
        return RefundAnswer(out_refund_no=refund.id, status="failed", detail=detail)
    amounts = {"fund_fen": 0, "personal_fen": 0, "cash_fen": 0} | {field: refund.amount_fen}
    msgid, first = await bureau_message(session_factory, bureau, f"6203:{refund.id}", "6203")
    try:  # appRefdTime is when the refund was asked for: a retry is the same request, byte for byte
        answer = await MobilePayment(bureau).refund(
            msgid=msgid,
            pay_ord_id=settlement.pay_ord_id,
            app_refd_sn=refund.id,
            **amounts,
            at=refund.created_at,
            operator=WORKER,
            day=bureau.local_day(utcnow()),
        )
    except GatewayError as err:
        if err.retryable:
            raise
        if not first:
            raise outcome_unknown(settlement.id, "6203", err) from err
        detail = f"the bureau refused the refund (6203, {err.code})"
        return RefundAnswer(out_refund_no=refund.id, status="failed", detail=detail)
    return refund_answer(refund, answer, amounts)


def refund_answer(refund: Refund, answer: MobileRefund, asked: dict[str, int]) -> RefundAnswer:
    """The 6203 answer checked: SUCC for our appRefdSn with the amounts we asked (those it names)
    succeeded; FAIL failed; anything else still on its way (processing: checked again by the
    same request). Another appRefdSn or other amounts: refund_mismatch, for a person."""
    said = {"fund_fen": answer.fund_fen, "personal_fen": answer.personal_fen, "cash_fen": answer.cash_fen}
    said["total_fen"] = answer.total_fen
    wanted = asked | {"total_fen": sum(asked.values())}
    differs = [f"{k} {v} (asked {wanted[k]})" for k, v in said.items() if v is not None and v != wanted[k]]
    if answer.app_refd_sn != refund.id or differs:
        raise ApplicationError(
            f"6203 answered appRefdSn {answer.app_refd_sn} {', '.join(differs)} for refund {refund.id}: "
            "reconcile by hand",
            type="refund_mismatch",
            non_retryable=True,
        )
    if answer.ref_status == "SUCC":
        return RefundAnswer(
            out_refund_no=refund.id, status="succeeded", channel_refund_no=refund.id, amount_fen=refund.amount_fen
        )
    if answer.ref_status == "FAIL":
        detail = "the bureau refused the refund (6203, refStatus FAIL)"
        return RefundAnswer(out_refund_no=refund.id, status="failed", detail=detail)
    return RefundAnswer(out_refund_no=refund.id, status="processing", detail=f"6203 refStatus {answer.ref_status}")


async def booked(session: AsyncSession, row: InsuranceSettlement) -> c.SettlementResult:
    """A booked settlement's results read again (a retry after the first try committed, its
    answer lost): where each part landed, and the refunds of money beyond the bills still open."""
    ids = [f"{row.id}-{part}" for part, _ in PARTS]
    landed = [c.AllocationResult(visit_id=v, amount_fen=a) for pid in ids for v, a in await payment_parts(session, pid)]
    rows = await session.scalars(
        select(Refund)
        .where(Refund.payment_id.in_(ids), Refund.status.not_in([str(s) for s in REFUND_FINAL]))
        .order_by(Refund.created_at, Refund.id)
    )
    refunds = [refund_input(r) for r in rows.all()]
    return c.SettlementResult(settlement_id=row.id, status="completed", landed=landed, refunds=refunds)


async def hold_visits(row: InsuranceSettlement, reason: str) -> None:
    """The settlement's visits put on hold the way an operator does (the visit workflow's
    `operator_action` update, pause_sanctions: audited, in the ops visit view), the actor
    naming the settlement: no reminder, lock or report until an operator resumes. A visit
    already paused or closed, or whose workflow is gone, needs none; the rest is retried."""
    client = activity.client()
    action = c.OperatorActionInput(
        action=str(OperatorAction.pause_sanctions), operator=f"settlement {row.id}", reason=reason
    )
    for visit_id in row.visit_ids:
        handle = client.get_workflow_handle(c.workflow_id(str(visit_id)))
        try:
            await handle.execute_update("operator_action", action, id=f"{row.id}:hold", result_type=c.VisitRecordResult)
        except WorkflowUpdateFailedError as err:
            cause: BaseException | None = err.cause
            while cause is not None and not isinstance(cause, ApplicationError):
                cause = cause.__cause__
            if not (isinstance(cause, ApplicationError) and cause.type in set(ActionRefusal)):
                raise
        except RPCError as err:
            if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise
