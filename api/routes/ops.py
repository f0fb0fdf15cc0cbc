"""Operators and finance staff (ops key): window payments, visit search, receivables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query

from api import ops, payments, refunds, schemas as s
from api.deps import OpsDep, SessionDep, StateDep
from api.errors import ApiError, responses
from db import receivables as db_receivables
from domain.payment import RefundStatus
from domain.policy import PaymentStatus
from ledger import errors as le

router = APIRouter(prefix="/v1/ops", tags=["operators"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200)]


@router.post(
    "/payments",
    response_model=s.PaymentOut,
    status_code=201,
    responses=responses(401, 404, le.VisitNotFound, 409, le.NothingToPay, le.AmountExceedsBalance, 422),
)
async def window_payment(
    body: s.OpsPaymentIn, state: StateDep, session: SessionDep, actor: OpsDep, idempotency_key: IdempotencyKey = None
) -> Any:
    """Money taken at the window, allocated to the patient's unpaid visits oldest first."""
    return await payments.window_payment(state, session, body, actor=actor, idempotency_key=idempotency_key)


@router.get("/visits", response_model=list[s.VisitSummary], responses=responses(401, 422))
async def search_visits(
    session: SessionDep,
    _: OpsDep,
    payment_status: PaymentStatus | None = None,
    patient_id: str | None = None,
    limit: int = Query(100, ge=1, le=500),
) -> Any:
    return await ops.search_visits(session, payment_status=payment_status, patient_id=patient_id, limit=limit)


@router.get(
    "/receivables",
    response_model=s.Receivables | s.ReceivablesByAge | s.ReceivablesByDepartment,
    responses=responses(401, 422),
)
async def receivables(
    session: SessionDep,
    _: OpsDep,
    by: Literal["age", "department"] | None = Query(
        None, description="none: by payment status (v1); `age`: by days since discharge; `department`: both"
    ),
) -> Any:
    """What patients owe: by payment status, or (v1.1) by age from discharge, or by department
    and age; counted in one aggregate query."""
    if by is None:
        return await ops.receivables(session)
    as_of = datetime.now(UTC)
    if by == "age":
        return s.ReceivablesByAge.model_validate(
            await db_receivables.by_age(session, as_of=as_of), from_attributes=True
        )
    found = await db_receivables.by_department(session, as_of=as_of)
    return s.ReceivablesByDepartment.model_validate(found, from_attributes=True)


@router.get("/audit", response_model=list[s.AuditEntry], responses=responses(401, 422))
async def audit_trail(
    session: SessionDep,
    _: OpsDep,
    subject_type: Literal["patient", "visit"] | None = Query(None, description="what the entries are about"),
    subject_id: str | None = Query(None, min_length=1, max_length=64),
    actor: str | None = Query(None, min_length=1, max_length=60, description="who acted (an operator's id)"),
    operator: str | None = Query(None, min_length=1, max_length=60, description="the same as `actor`"),
    action: str | None = Query(None, min_length=1, max_length=60),
    limit: int = Query(200, ge=1, le=1000),
) -> Any:
    """Who did what and when, and why: for a patient (enrolment, card lock and unlock,
    credit reports, window payments) or a visit (events, payment status changes, operators'
    actions), oldest first; or, without a subject, filtered by `actor`/`operator` and
    `action` across visits, newest first."""
    if actor is not None and operator is not None and actor != operator:
        raise ApiError(422, "invalid_request", "actor and operator name the same person: give one")
    return await ops.audit_trail(
        session,
        subject_type=subject_type,
        subject_id=subject_id,
        actor=actor or operator,
        action=action,
        limit=limit,
    )


# --- refunds ---------------------------------------------------------------------------


@router.get("/refunds", response_model=list[s.RefundOut], responses=responses(401, 422))
async def list_refunds(
    session: SessionDep,
    _: OpsDep,
    status: RefundStatus | None = None,
    patient_id: str | None = None,
    visit_id: str | None = None,
    limit: int = Query(200, ge=1, le=1000),
) -> Any:
    """Refunds, newest first: `manual` ones wait for money handed back at the window,
    `failed` ones for an operator's decision (their credit is back on the visit)."""
    return await ops.refunds(session, status=status, patient_id=patient_id, visit_id=visit_id, limit=limit)


@router.post(
    "/refunds/{refund_id}/complete",
    response_model=s.RefundOut,
    responses=responses(401, le.RefundNotFound, le.RefundNotManual),
)
async def complete_refund(refund_id: str, state: StateDep, session: SessionDep, actor: OpsDep) -> Any:
    """The money of a window refund was handed back: confirm it (a repeat is harmless)."""
    return await refunds.complete_refund(state, session, refund_id, actor=actor)


@router.post(
    "/visits/{visit_id}/refunds",
    response_model=list[s.RefundOut],
    status_code=201,
    responses=responses(401, le.VisitNotFound, 409, le.NoCredit, 422, 503),
)
async def refund_visit_credit(
    visit_id: str,
    body: s.VisitRefundIn,
    state: StateDep,
    session: SessionDep,
    actor: OpsDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Return a visit's credit now (after a refused refund, or money that arrived after the
    visit closed): one refund per payment that made it, newest first."""
    return await refunds.refund_visit_credit(
        state, session, visit_id, body, actor=actor, idempotency_key=idempotency_key
    )


@router.get("/insurance-settlements", response_model=list[s.InsuranceSettlementOut], responses=responses(401, 422))
async def insurance_settlements(
    session: SessionDep,
    _: OpsDep,
    status: str | None = None,
    patient_id: str | None = None,
    limit: int = Query(200, ge=1, le=1000),
) -> Any:
    """Card-less insurance payments, newest first: the bureau's split, and whether the insurance
    part was settled and booked, reversed (冲正) or refused."""
    return await ops.settlements(session, status=status, patient_id=patient_id, limit=limit)


# --- daily statements ----------------------------------------------------------------------


@router.get("/statements", response_model=list[s.StatementRunOut], responses=responses(401, 422))
async def statements(
    session: SessionDep,
    _: OpsDep,
    channel: str | None = None,
    day: str | None = None,
    mismatched: bool = False,
    limit: int = Query(60, ge=1, le=1000),
) -> Any:
    """The daily matching of each channel's statement against the ledger, newest day first;
    `mismatched=true`: only days with something to look at."""
    return await ops.statements(session, channel=channel, day=day, mismatched=mismatched, limit=limit)


@router.post("/statements", response_model=s.StatementRunOut, responses=responses(401, 409, 422, 502, 503))
async def run_statement(body: s.StatementRunIn, state: StateDep, session: SessionDep, actor: OpsDep) -> Any:
    """Match one channel's statement of one day now (again), and answer the result."""
    return await ops.run_statement(state, session, body, actor=actor)
