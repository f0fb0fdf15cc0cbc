"""Operators and finance staff (ops key): window payments, visit search, receivables."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from api import payments
from api import schemas as s
from api import services as svc
from api.deps import OpsDep, SessionDep, StateDep
from api.errors import ApiError, responses
from api.metrics import PAYMENTS
from workflows import contracts as c
from workflows.statement import StatementWorkflow
from db.models import AuditLog, InsuranceSettlement, Payment, Refund, StatementRun, Visit
from db.refunds import refund_credit, settle_refund
from db.repositories import audit, lock_patient, totals_by_visit, utcnow
from domain.payment import RefundStatus
from domain.policy import PaymentStatus

log = logging.getLogger("yihoufu.api.ops")
router = APIRouter(prefix="/v1/ops", tags=["operators"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200)]


@router.post("/payments", response_model=s.PaymentOut, status_code=201, responses=responses(401, 404, 409, 422))
async def window_payment(body: s.OpsPaymentIn, state: StateDep, session: SessionDep, actor: OpsDep,
                         idempotency_key: IdempotencyKey = None) -> Any:
    """Money taken at the window, allocated to the patient's unpaid visits oldest first."""
    request_hash = svc.body_hash(body)
    key = f"ops-payment:{idempotency_key}" if idempotency_key else None
    patient = await svc.get_patient(session, body.patient_id)
    bills = await payments.unpaid(session, patient.id, body.visit_ids)  # takes the patient lock
    # looked up under the lock, so a concurrent retry with the same key sees the first one's answer
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    owed = sum(t.balance_fen for _, t in bills)
    if owed == 0:
        raise ApiError(409, "nothing_to_pay", "nothing is owed on these visits")
    if body.amount_fen > owed:
        raise ApiError(409, "amount_exceeds_balance", f"{body.amount_fen} fen is more than the {owed} fen owed",
                       balance_fen=owed)
    now = utcnow()
    payment = Payment(id=svc.new_id("pay_"), patient_id=patient.id, method=body.method, amount_fen=body.amount_fen,
                      status="succeeded", actor=actor, created_at=now, completed_at=now)
    session.add(payment)
    await session.flush()
    parts = payments.book(session, payment, bills)
    PAYMENTS.labels(payment.method).inc(payment.amount_fen)
    audit(session, actor=actor, action="window_payment", subject_type="patient", subject_id=patient.id, at=now,
          payment_id=payment.id, amount_fen=body.amount_fen, method=body.method)
    data = payments.out(payment, parts).model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 201, data)
    await session.commit()
    await payments.tell_workflows(state, payment.id, parts)
    return JSONResponse(data, status_code=201)


@router.get("/visits", response_model=list[s.VisitSummary], responses=responses(401, 422))
async def search_visits(session: SessionDep, _: OpsDep, payment_status: PaymentStatus | None = None,
                        patient_id: str | None = None, limit: int = Query(100, ge=1, le=500)) -> Any:
    stmt = select(Visit).order_by(Visit.created_at.desc(), Visit.id).limit(limit)
    if payment_status is not None:
        stmt = stmt.where(Visit.payment_status == str(payment_status))
    if patient_id is not None:
        stmt = stmt.where(Visit.patient_id == patient_id)
    visits = (await session.scalars(stmt)).all()
    sums = await totals_by_visit(session, [v.id for v in visits])
    return [s.VisitSummary(visit_id=v.id, patient_id=v.patient_id, department=v.department, stage=v.stage,
                           payment_status=v.payment_status, balance_fen=sums[v.id].balance_fen, due_at=v.due_at,
                           card_locked=v.card_locked, created_at=v.created_at) for v in visits]


@router.get("/receivables", response_model=s.Receivables, responses=responses(401))
async def receivables(session: SessionDep, _: OpsDep) -> Any:
    """What patients owe, by how late it is."""
    visits = (await session.execute(select(Visit.id, Visit.payment_status).where(
        Visit.payment_status.in_(["open", "due", "arrears", "defaulted"])))).all()
    sums = await totals_by_visit(session, [v for v, _ in visits])
    buckets = {k: s.ReceivableBucket(visits=0, balance_fen=0) for k in ("open", "due", "arrears", "defaulted")}
    for visit_id, status in visits:
        balance = sums[visit_id].balance_fen
        if balance > 0:
            buckets[status].visits += 1
            buckets[status].balance_fen += balance
    return s.Receivables(**buckets, total_fen=sum(b.balance_fen for b in buckets.values()))


@router.get("/audit", response_model=list[s.AuditEntry], responses=responses(401, 422))
async def audit_trail(session: SessionDep, _: OpsDep,
                      subject_type: Literal["patient", "visit"] = Query(description="what the entries are about"),
                      subject_id: str = Query(min_length=1, max_length=64),
                      limit: int = Query(200, ge=1, le=1000)) -> Any:
    """Who did what and when, and why: for a patient (enrolment, card lock and unlock,
    credit reports, window payments) or a visit (events, payment status changes)."""
    rows = (await session.scalars(select(AuditLog).where(
        AuditLog.subject_type == subject_type, AuditLog.subject_id == subject_id)
        .order_by(AuditLog.id).limit(limit))).all()
    return [s.AuditEntry(at=r.at, actor=r.actor, action=r.action, subject_type=r.subject_type,
                         subject_id=r.subject_id, reason=r.reason, detail=r.detail) for r in rows]


# --- refunds ---------------------------------------------------------------------------


@router.get("/refunds", response_model=list[s.RefundOut], responses=responses(401, 422))
async def list_refunds(session: SessionDep, _: OpsDep, status: RefundStatus | None = None,
                       patient_id: str | None = None, visit_id: str | None = None,
                       limit: int = Query(200, ge=1, le=1000)) -> Any:
    """Refunds, newest first: `manual` ones wait for money handed back at the window,
    `failed` ones for an operator's decision (their credit is back on the visit)."""
    stmt = select(Refund).order_by(Refund.created_at.desc(), Refund.id).limit(limit)
    if status is not None:
        stmt = stmt.where(Refund.status == str(status))
    if patient_id is not None:
        stmt = stmt.where(Refund.patient_id == patient_id)
    if visit_id is not None:
        stmt = stmt.where(Refund.visit_id == visit_id)
    return [svc.refund_out(r) for r in (await session.scalars(stmt)).all()]


@router.post("/refunds/{refund_id}/complete", response_model=s.RefundOut, responses=responses(401, 404, 409))
async def complete_refund(refund_id: str, state: StateDep, session: SessionDep, actor: OpsDep) -> Any:
    """The money of a window refund was handed back: confirm it (a repeat is harmless)."""
    refund = await session.get(Refund, refund_id)
    if refund is None:
        raise ApiError(404, "refund_not_found", f"no refund {refund_id}")
    if refund.status not in (RefundStatus.manual, RefundStatus.succeeded):
        raise ApiError(409, "refund_not_manual", f"refund {refund_id} is {refund.status}: the channel returns it")
    refund = await settle_refund(session, refund_id, RefundStatus.succeeded, actor=actor,
                                 detail="handed back at the window")
    assert refund is not None
    data = svc.refund_out(refund)
    await session.commit()
    await payments.wake_refund(state, refund_id)
    return data


@router.post("/visits/{visit_id}/refunds", response_model=list[s.RefundOut], status_code=201,
             responses=responses(401, 404, 409, 422))
async def refund_visit_credit(visit_id: str, body: s.VisitRefundIn, state: StateDep, session: SessionDep,
                              actor: OpsDep, idempotency_key: IdempotencyKey = None) -> Any:
    """Return a visit's credit now (after a refused refund, or money that arrived after the
    visit closed): one refund per payment that made it, newest first."""
    visit = await session.get(Visit, visit_id)
    if visit is None:
        raise ApiError(404, "visit_not_found", f"no visit {visit_id}")
    await lock_patient(session, visit.patient_id)  # a concurrent retry waits, then sees the first answer
    key = f"ops-refund:{idempotency_key}" if idempotency_key else None
    request_hash = svc.body_hash({"visit_id": visit_id, **body.model_dump()})
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    refunds = await refund_credit(session, visit_id=visit_id, patient_id=visit.patient_id, reason=body.reason,
                                  actor=actor)
    if not refunds:
        raise ApiError(409, "no_credit", f"visit {visit_id} has no credit to refund")
    data = [svc.refund_out(r).model_dump(mode="json") for r in refunds]
    if key:
        svc.remember(session, key, request_hash, 201, data)  # type: ignore[arg-type]
    await session.commit()
    await payments.start_refunds(state, refunds)
    return JSONResponse(data, status_code=201)


@router.get("/insurance-settlements", response_model=list[s.InsuranceSettlementOut], responses=responses(401, 422))
async def insurance_settlements(session: SessionDep, _: OpsDep, status: str | None = None,
                                patient_id: str | None = None, limit: int = Query(200, ge=1, le=1000)) -> Any:
    """Card-less insurance payments, newest first: the bureau's split, and whether the insurance
    part was settled and booked, reversed (冲正) or refused."""
    stmt = select(InsuranceSettlement).order_by(InsuranceSettlement.created_at.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(InsuranceSettlement.status == status)
    if patient_id is not None:
        stmt = stmt.where(InsuranceSettlement.patient_id == patient_id)
    return [svc.settlement_out(r) for r in (await session.scalars(stmt)).all()]


# --- daily statements ----------------------------------------------------------------------


def statement_out(run: StatementRun) -> s.StatementRunOut:
    return s.StatementRunOut(channel=run.channel, day=run.day, matched=run.matched,
                             mismatches=[s.StatementFinding(**m) for m in run.mismatches],
                             channel_total_fen=run.channel_total_fen, ledger_total_fen=run.ledger_total_fen,
                             checked_at=run.created_at)


@router.get("/statements", response_model=list[s.StatementRunOut], responses=responses(401, 422))
async def statements(session: SessionDep, _: OpsDep, channel: str | None = None, day: str | None = None,
                     mismatched: bool = False, limit: int = Query(60, ge=1, le=1000)) -> Any:
    """The daily matching of each channel's statement against the ledger, newest day first;
    `mismatched=true`: only days with something to look at."""
    stmt = select(StatementRun).order_by(StatementRun.day.desc(), StatementRun.channel).limit(limit)
    if channel is not None:
        stmt = stmt.where(StatementRun.channel == channel)
    if day is not None:
        stmt = stmt.where(StatementRun.day == day)
    runs = (await session.scalars(stmt)).all()
    return [statement_out(r) for r in runs if r.mismatches or not mismatched]


@router.post("/statements", response_model=s.StatementRunOut, responses=responses(401, 409, 422, 502))
async def run_statement(body: s.StatementRunIn, state: StateDep, session: SessionDep, actor: OpsDep) -> Any:
    """Match one channel's statement of one day now (again), and answer the result."""
    if body.channel not in state.channels:
        raise ApiError(409, "channel_unavailable", f"{body.channel} is not set up at this hospital")
    await session.commit()
    try:
        await state.temporal.execute_workflow(
            StatementWorkflow.run, c.StatementInput(channels=[body.channel], day=body.day,
                                                    timezone=state.settings.timezone),
            id=f"statement-{body.channel}-{body.day}", task_queue=state.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, execution_timeout=timedelta(minutes=2),
            static_summary=f"{body.channel} statement of {body.day} (asked by {actor})")
    except WorkflowFailureError as err:
        raise ApiError(502, "channel_error", f"the {body.channel} statement could not be matched: {err.cause}") from None
    run = await session.scalar(select(StatementRun).where(StatementRun.channel == body.channel,
                                                          StatementRun.day == body.day))
    assert run is not None
    return statement_out(run)
