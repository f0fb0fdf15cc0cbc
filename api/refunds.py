"""Refunds at the API: operators confirm window refunds and return a visit's credit; the
ledger writes them (ledger/refunds.py), the refunds' workflows are started or woken after
the commit."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api import payments, schemas as s, services as svc
from api.deps import AppState, commit_before_call
from db.models import Visit
from db.repositories import lock_patient
from domain.payment import RefundStatus
from integrations.payments.channels import RefundAnswer
from ledger import refunds
from ledger.errors import VisitNotFound


async def complete_refund(state: AppState, session: AsyncSession, refund_id: str, *, actor: str) -> s.RefundOut:
    """The money of a window refund was handed back: confirm it (a repeat is harmless)."""
    refund = await refunds.complete_window_refund(session, refund_id, actor=actor)
    data = svc.refund_out(refund)
    await commit_before_call(session)
    await payments.wake_refund(state, refund_id)
    return data


async def refund_visit_credit(
    state: AppState,
    session: AsyncSession,
    visit_id: str,
    body: s.VisitRefundIn,
    *,
    actor: str,
    idempotency_key: str | None,
) -> JSONResponse:
    """Return a visit's credit now: one refund per payment that made it, newest first."""
    visit = await session.get(Visit, visit_id)
    if visit is None:
        raise VisitNotFound(f"no visit {visit_id}")
    await lock_patient(session, visit.patient_id)  # a concurrent retry waits, then sees the first answer
    key = f"ops-refund:{idempotency_key}" if idempotency_key else None
    request_hash = svc.body_hash({"visit_id": visit_id, **body.model_dump()})
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    made = await refunds.refund_visit_credit(session, visit_id, reason=body.reason, actor=actor)
    data = [svc.refund_out(r).model_dump(mode="json") for r in made]
    if key:
        svc.remember(session, key, request_hash, 201, data)
    await commit_before_call(session)
    await payments.start_refunds(state, made)
    return JSONResponse(data, status_code=201)


async def channel_refund_told(state: AppState, session: AsyncSession, channel: str, told: RefundAnswer) -> None:
    """A channel's refund result (WeChat sends them): recorded, and the refund's workflow woken
    (which would otherwise find it by querying)."""
    refund = await refunds.channel_refund_told(
        session,
        channel=channel,
        refund_id=told.out_refund_no,
        amount_fen=told.amount_fen,
        status=RefundStatus(told.status),
        channel_refund_no=told.channel_refund_no or None,
        detail=told.detail or None,
    )
    await commit_before_call(session)
    await payments.wake_refund(state, refund.id)
