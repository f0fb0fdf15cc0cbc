"""What an operator action (or a dispute step) decided, written in one transaction before the
`operator_action` update answers: the audit entry (operator, action, reason, time), a waiver
through the ledger, the dispute or approval row, the visit's status, deadlines and hold.

Written once: a retry after a commit whose answer was lost finds its audit entry (same
visit, action, operator and workflow time) and writes nothing again."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import refuse_bad_data
from activities.ledger import balance_result, write_status
from db.models import AuditLog, Visit
from db.oversight import Approval, Dispute
from db.repositories import audit, visit_totals
from domain.sanctions import DisputeStatus
from ledger.errors import AmountExceedsBalance
from ledger.waivers import book_waiver
from workflows import contracts as c, contracts_oversight as o


class OversightActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory

    @activity.defn(name=o.RECORD_OPERATOR_ACTION)
    @refuse_bad_data
    async def record_operator_action(self, inp: o.RecordOperatorActionInput) -> c.BalanceResult:
        async with self._factory() as session, session.begin():
            visit = await session.get(Visit, inp.visit_id, with_for_update=True)
            if visit is None:
                raise ApplicationError(
                    f"visit {inp.visit_id} is not in the database", type="invalid_input", non_retryable=True
                )
            if not await self._written(session, inp):
                await self._write(session, visit, inp)
            return balance_result(await visit_totals(session, inp.visit_id))

    @staticmethod
    async def _written(session: AsyncSession, inp: o.RecordOperatorActionInput) -> bool:
        found = await session.scalar(
            select(AuditLog.id).where(
                AuditLog.subject_type == "visit",
                AuditLog.subject_id == inp.visit_id,
                AuditLog.action == inp.action,
                AuditLog.actor == inp.operator,
                AuditLog.at == inp.at,
            )
        )
        return found is not None

    async def _write(self, session: AsyncSession, visit: Visit, inp: o.RecordOperatorActionInput) -> None:
        if inp.waive_fen:
            try:
                await book_waiver(
                    session,
                    visit_id=inp.visit_id,
                    patient_id=inp.patient_id,
                    amount_fen=inp.waive_fen,
                    key=f"{inp.idempotency_key}:waiver",
                    reason=inp.reason,
                    at=inp.at,
                )
            except AmountExceedsBalance as err:
                raise ApplicationError(err.detail, type="invalid_action", non_retryable=True) from err
        if inp.dispute is not None:
            await self._dispute(session, inp, inp.dispute)
        if inp.approval is not None:
            await self._approval(session, inp, inp.approval)
        if inp.visit is not None:
            write_status(session, visit, inp.visit)
        detail = dict(inp.detail)
        if inp.waive_fen:
            detail["waived_fen"] = str(inp.waive_fen)
        if inp.dispute is not None:
            detail["dispute_id"] = inp.dispute.dispute_id
        if inp.approval is not None:
            detail["approval_id"] = inp.approval.approval_id
        audit(
            session,
            actor=inp.operator,
            action=inp.action,
            subject_type="visit",
            subject_id=inp.visit_id,
            reason=inp.reason,
            at=inp.at,
            **detail,
        )

    @staticmethod
    async def _dispute(session: AsyncSession, inp: o.RecordOperatorActionInput, d: o.DisputeRecord) -> None:
        row = await session.get(Dispute, d.dispute_id)
        if row is None:
            session.add(
                Dispute(
                    id=d.dispute_id,
                    visit_id=inp.visit_id,
                    patient_id=inp.patient_id,
                    status=d.status,
                    reason=d.reason or inp.reason,
                    opened_by=d.opened_by or inp.operator,
                    opened_at=inp.at,
                )
            )
            return
        row.status, row.outcome, row.note, row.waived_fen = d.status, d.outcome, d.note, d.waived_fen
        if d.status == DisputeStatus.resolved:  # decided, or closed by the visit's settling
            row.resolved_by, row.resolved_at = inp.operator, inp.at

    @staticmethod
    async def _approval(session: AsyncSession, inp: o.RecordOperatorActionInput, ap: o.ApprovalRecord) -> None:
        row = await session.get(Approval, ap.approval_id)
        if row is None:
            session.add(
                Approval(
                    id=ap.approval_id,
                    visit_id=inp.visit_id,
                    action=ap.action,
                    status=ap.status,
                    requested_by=ap.requested_by or inp.operator,
                    reason=ap.reason or inp.reason,
                    requested_at=inp.at,
                )
            )
            return
        row.status, row.decided_by, row.decision_reason, row.decided_at = ap.status, inp.operator, inp.reason, inp.at
