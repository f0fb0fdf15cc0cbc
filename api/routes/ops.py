"""Operators and finance staff (ops key): window payments, visit search, receivables."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api import payments
from api import schemas as s
from api import services as svc
from api.deps import OpsDep, SessionDep, StateDep
from api.errors import ApiError, responses
from api.metrics import PAYMENTS
from db.models import AuditLog, Payment, Visit
from db.repositories import audit, totals_by_visit, utcnow
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
