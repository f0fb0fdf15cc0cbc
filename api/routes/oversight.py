"""Operators in control of sanctions (ops key, `X-Operator-Id` naming the person): actions on
a visit, the second operator's decision on a write-off, disputes (申诉) to resolve. Each is the
visit workflow's `operator_action` update (api/oversight.py); the audit shows them all."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from api import oversight, schemas as s
from api.deps import OpsDep, SessionDep, StateDep
from api.errors import responses
from domain.sanctions import DisputeStatus
from ledger import errors as le

router = APIRouter(prefix="/v1/ops", tags=["operators"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200)]
OperatorId = Annotated[
    str,
    Header(
        alias="X-Operator-Id",
        min_length=1,
        max_length=50,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@\-]*$",
        description="the person acting (a staff id), recorded in the audit",
    ),
]


@router.post(
    "/visits/{visit_id}/actions",
    response_model=s.VisitOut,
    responses={
        202: {"model": s.ApprovalPending, "description": "a write-off waits for a second operator"},
        **responses(401, le.VisitNotFound, 409, 422, 503),
    },
)
async def visit_action(
    visit_id: str,
    body: s.OperatorActionIn,
    state: StateDep,
    session: SessionDep,
    _: OpsDep,
    operator: OperatorId,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """An operator's action on a visit's sanctions: `pause_sanctions` {until?},
    `resume_sanctions`, `extend_deadline` {due_at} (later only), `waive` {amount_fen},
    `unlock_card`, `write_off` (202: a second operator decides it). 409 `invalid_action`
    where the action does not fit the visit. The same JSON plus `"operator"` is the visit
    workflow's `operator_action` update in Temporal UI."""
    data, status = await oversight.act(
        state, session, visit_id, body, operator=operator, idempotency_key=idempotency_key
    )
    return JSONResponse(data, status_code=status)


@router.post("/approvals/{approval_id}", response_model=s.VisitOut, responses=responses(401, 404, 409, 422, 503))
async def decide_approval(
    approval_id: str,
    body: s.ApprovalDecisionIn,
    state: StateDep,
    session: SessionDep,
    _: OpsDep,
    operator: OperatorId,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """A second operator approves or rejects a write-off; the one who asked for it may not
    (409 `same_operator`). Approved: sanctions undone, the credit record corrected,
    `payment_status` `written_off`. A retry (the same operator and decision, or the same
    Idempotency-Key) gets the first answer."""
    return await oversight.decide(state, session, approval_id, body, operator=operator, idempotency_key=idempotency_key)


@router.get("/disputes", response_model=list[s.DisputeOut], responses=responses(401, 422))
async def list_disputes(
    session: SessionDep,
    _: OpsDep,
    status: DisputeStatus | None = None,
    visit_id: str | None = None,
    limit: int = Query(200, ge=1, le=1000),
) -> Any:
    """Disputes (申诉), oldest first: `status=open` is the queue to work through."""
    return await oversight.disputes(session, status=status, visit_id=visit_id, limit=limit)


@router.post(
    "/disputes/{dispute_id}/resolve",
    response_model=s.DisputeOut,
    responses=responses(401, 404, 409, 422, 503),
)
async def resolve_dispute(
    dispute_id: str,
    body: s.DisputeResolveIn,
    state: StateDep,
    session: SessionDep,
    _: OpsDep,
    operator: OperatorId,
) -> Any:
    """`upheld` waives `waive_fen` (or the whole balance) and undoes the visit's lock and
    report; `rejected` lifts the hold and the wait goes on, the deadline moved by the time
    the dispute was open. The patient is told by SMS and in the inbox."""
    return await oversight.resolve(state, session, dispute_id, body, operator=operator)
