"""What operators and finance staff look up (visits, receivables, the audit trail, refunds,
insurance settlements, statements), and matching a channel's statement on demand."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from api import schemas as s, services as svc
from api.deps import AppState, commit_before_call
from api.errors import ApiError
from db.models import AuditLog, InsuranceSettlement, Refund, StatementRun, Visit
from db.repositories import totals_by_visit
from domain.payment import RefundStatus
from domain.policy import PaymentStatus
from workflows import contracts as c
from workflows.statement import StatementWorkflow

# the visit payment statuses receivables are bucketed by (all but settled)
OWING = (PaymentStatus.open, PaymentStatus.due, PaymentStatus.arrears, PaymentStatus.defaulted)


async def search_visits(
    session: AsyncSession, *, payment_status: PaymentStatus | None, patient_id: str | None, limit: int
) -> list[s.VisitSummary]:
    stmt = select(Visit).order_by(Visit.created_at.desc(), Visit.id).limit(limit)
    if payment_status is not None:
        stmt = stmt.where(Visit.payment_status == str(payment_status))
    if patient_id is not None:
        stmt = stmt.where(Visit.patient_id == patient_id)
    visits = (await session.scalars(stmt)).all()
    sums = await totals_by_visit(session, [v.id for v in visits])
    return [
        s.VisitSummary(
            visit_id=v.id,
            patient_id=v.patient_id,
            department=v.department,
            stage=v.stage,
            payment_status=v.payment_status,
            balance_fen=sums[v.id].balance_fen,
            due_at=v.due_at,
            card_locked=v.card_locked,
            hold=svc.hold_out(v.hold_kind, v.hold_reason, v.hold_started_at, v.hold_until_at),
            created_at=v.created_at,
        )
        for v in visits
    ]


async def receivables(session: AsyncSession) -> s.Receivables:
    """What patients owe, by how late it is."""
    visits = (
        await session.execute(select(Visit.id, Visit.payment_status).where(Visit.payment_status.in_(OWING)))
    ).all()
    sums = await totals_by_visit(session, [v for v, _ in visits])
    buckets = {str(k): s.ReceivableBucket(visits=0, balance_fen=0) for k in OWING}
    for visit_id, status in visits:
        balance = sums[visit_id].balance_fen
        if balance > 0:
            buckets[status].visits += 1
            buckets[status].balance_fen += balance
    return s.Receivables(**buckets, total_fen=sum(b.balance_fen for b in buckets.values()))


async def audit_trail(
    session: AsyncSession,
    *,
    subject_type: str | None,
    subject_id: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
) -> list[s.AuditEntry]:
    """A subject's trail, oldest first; without a subject (an operator's actions across
    visits, say), the newest first."""
    stmt = select(AuditLog).limit(limit)
    for column, value in (
        (AuditLog.subject_type, subject_type),
        (AuditLog.subject_id, subject_id),
        (AuditLog.actor, actor),
        (AuditLog.action, action),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    trail = subject_type is not None and subject_id is not None
    rows = (await session.scalars(stmt.order_by(AuditLog.id if trail else AuditLog.id.desc()))).all()
    return [
        s.AuditEntry(
            at=r.at,
            actor=r.actor,
            operator=r.actor,
            action=r.action,
            subject_type=r.subject_type,
            subject_id=r.subject_id,
            reason=r.reason,
            detail=r.detail,
        )
        for r in rows
    ]


async def refunds(
    session: AsyncSession,
    *,
    status: RefundStatus | None,
    patient_id: str | None,
    visit_id: str | None,
    limit: int,
) -> list[s.RefundOut]:
    stmt = select(Refund).order_by(Refund.created_at.desc(), Refund.id).limit(limit)
    if status is not None:
        stmt = stmt.where(Refund.status == str(status))
    if patient_id is not None:
        stmt = stmt.where(Refund.patient_id == patient_id)
    if visit_id is not None:
        stmt = stmt.where(Refund.visit_id == visit_id)
    return [svc.refund_out(r) for r in (await session.scalars(stmt)).all()]


async def settlements(
    session: AsyncSession, *, status: str | None, patient_id: str | None, limit: int
) -> list[s.InsuranceSettlementOut]:
    stmt = select(InsuranceSettlement).order_by(InsuranceSettlement.created_at.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(InsuranceSettlement.status == status)
    if patient_id is not None:
        stmt = stmt.where(InsuranceSettlement.patient_id == patient_id)
    return [svc.settlement_out(r) for r in (await session.scalars(stmt)).all()]


# --- daily statements ----------------------------------------------------------------------


def statement_out(run: StatementRun) -> s.StatementRunOut:
    return s.StatementRunOut(
        channel=run.channel,
        day=run.day,
        matched=run.matched,
        mismatches=[s.StatementFinding(**m) for m in run.mismatches],
        channel_total_fen=run.channel_total_fen,
        ledger_total_fen=run.ledger_total_fen,
        checked_at=run.created_at,
    )


async def statements(
    session: AsyncSession, *, channel: str | None, day: str | None, mismatched: bool, limit: int
) -> list[s.StatementRunOut]:
    stmt = select(StatementRun).order_by(StatementRun.day.desc(), StatementRun.channel).limit(limit)
    if channel is not None:
        stmt = stmt.where(StatementRun.channel == channel)
    if day is not None:
        stmt = stmt.where(StatementRun.day == day)
    runs = (await session.scalars(stmt)).all()
    return [statement_out(r) for r in runs if r.mismatches or not mismatched]


async def run_statement(
    state: AppState, session: AsyncSession, body: s.StatementRunIn, *, actor: str
) -> s.StatementRunOut:
    """Match one channel's statement of one day now (again), or check the day's totals with the
    e-bill platform (`ebill`) or the insurance bureau (`nhsa`), and answer the result."""
    here = {*state.channels, *(["nhsa"] if state.bureau else []), *(["ebill"] if state.ebill else [])}
    if body.channel not in here:
        raise ApiError(409, "channel_unavailable", f"{body.channel} is not set up at this hospital")
    await commit_before_call(session)
    try:
        await state.temporal.execute_workflow(
            StatementWorkflow.run,
            c.StatementInput(channels=[body.channel], day=body.day, timezone=state.settings.timezone),
            id=f"statement-{body.channel}-{body.day}",
            task_queue=state.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            execution_timeout=timedelta(minutes=2),
            static_summary=f"{body.channel} statement of {body.day} (asked by {actor})",
        )
    except WorkflowFailureError as err:
        raise ApiError(
            502, "channel_error", f"the {body.channel} statement could not be matched: {err.cause}"
        ) from None
    run = await session.scalar(
        select(StatementRun).where(StatementRun.channel == body.channel, StatementRun.day == body.day)
    )
    assert run is not None
    return statement_out(run)
