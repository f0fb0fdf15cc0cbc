"""People in control of a visit's sanctions: operators' actions, the second operator's
decision on a write-off, disputes (申诉) opened and resolved.

Every change goes through the visit workflow's `operator_action` update, whichever door it
comes from (this API, or Temporal UI with the same JSON): its validator refuses what does not
fit the visit, its activities write the rows (the ledger's waiver, the dispute, the approval,
the audit entry, the visit's hold and payment status) before it answers. The API writes none
of them; it answers from the update's result and reads what the workflow does not carry."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import schemas as s, services as svc
from api.deps import AppState, commit_before_call
from api.errors import REFUSALS, ApiError
from db.models import Visit
from db.oversight import Approval, Dispute
from domain.oversight import ActionRefusal
from domain.sanctions import ApprovalStatus, DisputeStatus, OperatorAction
from integrations.credit_platform import OBJECTION_OPENER_VISIT_CLOSED
from ledger.errors import VisitNotFound
from workflows import contracts as c
from workflows.visit import VisitWorkflow


class VisitClosed(ApiError):
    """The visit's workflow has closed (settled past its refund window, written off): it takes
    no more actions (409 `invalid_action`)."""

    def __init__(self, visit_id: str) -> None:
        super().__init__(409, ActionRefusal.invalid_action, f"visit {visit_id} is closed: it takes no more actions")


async def get_visit(session: AsyncSession, visit_id: str) -> Visit:
    visit = await session.get(Visit, visit_id)
    if visit is None:
        raise VisitNotFound(f"no visit {visit_id}")
    return visit


async def tell_workflow(
    state: AppState, visit: Visit, inp: c.OperatorActionInput, update_id: str
) -> c.VisitRecordResult:
    """The `operator_action` update (a retry with the same id is answered once); its refusal
    as a problem. A visit whose workflow has closed (settled, past its refund window) takes
    no more actions."""
    handle = state.temporal.get_workflow_handle(c.workflow_id(visit.id))
    try:
        return await handle.execute_update(VisitWorkflow.operator_action, inp, id=update_id)
    except WorkflowUpdateFailedError as err:
        raise refusal(err) from None
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise VisitClosed(visit.id) from None
        raise


def refusal(err: WorkflowUpdateFailedError) -> Exception:
    """The problem for an action the workflow refused (the error itself when it is no refusal).
    The refusal may come wrapped: an activity's ApplicationError (the ledger's
    `invalid_action`) reaches the update as the cause of an ActivityError."""
    for cause in causes(err):
        if not isinstance(cause, ApplicationError):
            continue
        if cause.type in REFUSALS:
            return ApiError(REFUSALS[cause.type], cause.type, cause.message)
        if cause.type == "invalid_request":
            return ApiError(422, "invalid_request", cause.message)
        if cause.type == "ledger_unavailable":
            return ApiError(503, "ledger_unavailable", cause.message, headers={"Retry-After": "5"})
    return err


def causes(err: BaseException) -> list[BaseException]:
    """The chain of `cause`s below an error, nearest first (a cycle ends it)."""
    chain: list[BaseException] = []
    cause = err.__cause__
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__
    return chain


# --- operators' actions ----------------------------------------------------------------


async def act(
    state: AppState,
    session: AsyncSession,
    visit_id: str,
    body: s.OperatorActionIn,
    *,
    operator: str,
    idempotency_key: str | None,
) -> tuple[dict[str, Any], int]:
    """An operator's action on a visit: the visit after it (200), or a write-off waiting for a
    second operator (202). A retry with the same Idempotency-Key gets the first answer."""
    visit = await get_visit(session, visit_id)
    # one namespace for every visit: the same key on another visit is a different body (409)
    key = f"ops-action:{idempotency_key}" if idempotency_key else None
    request_hash = svc.body_hash({**body.model_dump(mode="json"), "operator": operator, "visit_id": visit_id})
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return stored.response, stored.status_code
    inp = c.OperatorActionInput(
        action=str(body.action),
        operator=operator,
        reason=body.reason,
        until=body.until,
        due_at=body.due_at,
        amount_fen=body.amount_fen,
    )
    await commit_before_call(session)  # no transaction is held while the workflow works
    recorded = await tell_workflow(state, visit, inp, key or svc.new_id("act_"))
    if body.action is OperatorAction.write_off and recorded.pending_approval_id:
        data: dict[str, Any] = s.ApprovalPending(
            approval_id=recorded.pending_approval_id, status=ApprovalStatus.pending_approval
        ).model_dump(mode="json")
        status = 202
    else:
        data, status = (await svc.visit_view(session, visit, recorded)).model_dump(mode="json"), 200
    if key:
        svc.remember(session, key, request_hash, status, data)
    return data, status


async def decide(
    state: AppState,
    session: AsyncSession,
    approval_id: str,
    body: s.ApprovalDecisionIn,
    *,
    operator: str,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """The second operator approves (the write-off is carried out) or rejects a write-off. A
    retry of a decision that was made (the same operator, the same decision, or the same
    Idempotency-Key) gets the first answer, even once the visit's workflow has closed."""
    approval = await session.get(Approval, approval_id)
    if approval is None:
        raise ApiError(404, ActionRefusal.approval_not_found, f"no approval {approval_id}")
    key = f"ops-approval:{idempotency_key}" if idempotency_key else None
    request_hash = svc.body_hash({**body.model_dump(mode="json"), "operator": operator, "approval_id": approval_id})
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return dict(stored.response)
    # the update's id, and (prefixed) where its answer is kept: a retry without a key finds it
    decision = f"approval:{approval_id}:{operator}:{body.decision}"
    decided_hash = svc.body_hash({"decision": decision})
    if (stored := await svc.replay(session, f"ops-{decision}", decided_hash)) is not None:
        data = dict(stored.response)
    else:
        visit = await get_visit(session, approval.visit_id)
        if _decided(approval, operator, body):  # made, but its answer was not kept: the visit now
            data = (await svc.visit_view(session, visit)).model_dump(mode="json")
        else:
            inp = c.OperatorActionInput(
                action=str(body.decision), operator=operator, reason=body.reason, approval_id=approval_id
            )
            await commit_before_call(session)
            recorded = await tell_workflow(state, visit, inp, decision)
            data = (await svc.visit_view(session, visit, recorded)).model_dump(mode="json")
            svc.remember(session, f"ops-{decision}", decided_hash, 200, data)
    if key:
        svc.remember(session, key, request_hash, 200, data)
    return data


def _decided(approval: Approval, operator: str, body: s.ApprovalDecisionIn) -> bool:
    """The approval was decided by this operator, the way this request asks."""
    made = ApprovalStatus.approved if body.decision == OperatorAction.approve else ApprovalStatus.rejected
    return approval.status == made and approval.decided_by == operator


# --- disputes ----------------------------------------------------------------------------


async def open_dispute(
    state: AppState,
    session: AsyncSession,
    visit: Visit,
    body: s.DisputeIn,
    *,
    opener: str,
    keys: str,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """A dispute on the visit (the patient's, or the window's for them): its hold is on once
    this answers. With an Idempotency-Key (in the namespace `keys`: the patient, or the HIS),
    a retry gets the first answer and the same dispute_id; the id comes from the key, so a
    retry whose first answer was lost is the same update to the workflow."""
    key = f"dispute:{keys}:{idempotency_key}" if idempotency_key else None
    request_hash = svc.body_hash({**body.model_dump(mode="json"), "opener": opener, "visit_id": visit.id})
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return dict(stored.response)
    dispute_id = "dsp_" + hashlib.sha256(key.encode()).hexdigest()[:16] if key else svc.new_id("dsp_")
    inp = c.OperatorActionInput(
        action=str(OperatorAction.open_dispute), operator=opener, reason=body.reason, dispute_id=dispute_id
    )
    await commit_before_call(session)
    await tell_workflow(state, visit, inp, f"dispute:{dispute_id}")
    data = s.DisputeOpened(dispute_id=dispute_id, status=DisputeStatus.open).model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 201, data)
    return data


def dispute_out(row: Dispute) -> s.DisputeOut:
    return s.DisputeOut(
        dispute_id=row.id,
        visit_id=row.visit_id,
        patient_id=row.patient_id,
        status=DisputeStatus(row.status),
        reason=row.reason,
        opened_by=row.opened_by,
        opened_at=row.opened_at,
        outcome=row.outcome,
        note=row.note,
        waived_fen=row.waived_fen,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
    )


async def disputes(
    session: AsyncSession, *, status: DisputeStatus | None, visit_id: str | None, limit: int
) -> list[s.DisputeOut]:
    """Disputes, oldest open first (the queue an operator works through)."""
    stmt = select(Dispute).order_by(Dispute.opened_at, Dispute.id).limit(limit)
    if status is not None:
        stmt = stmt.where(Dispute.status == str(status))
    if visit_id is not None:
        stmt = stmt.where(Dispute.visit_id == visit_id)
    return [dispute_out(r) for r in (await session.scalars(stmt)).all()]


async def resolve(
    state: AppState, session: AsyncSession, dispute_id: str, body: s.DisputeResolveIn, *, operator: str
) -> s.DisputeOut:
    """An operator resolves a dispute: upheld waives (`waive_fen`, or the whole balance) and
    undoes the visit's lock and report; rejected lifts the hold, the deadline moved. A credit
    objection's dispute on a visit whose workflow has closed is decided here (api/credit.py)."""
    row = await session.get(Dispute, dispute_id)
    if row is None:
        raise ApiError(404, ActionRefusal.dispute_not_found, f"no dispute {dispute_id}")
    if row.status != DisputeStatus.open:
        raise ApiError(409, ActionRefusal.invalid_action, f"dispute {dispute_id} is resolved already ({row.outcome})")
    visit = await get_visit(session, row.visit_id)
    inp = c.OperatorActionInput(
        action=str(OperatorAction.resolve_dispute),
        operator=operator,
        reason=body.note,
        dispute_id=dispute_id,
        outcome=str(body.outcome),
        amount_fen=body.waive_fen,
    )
    await commit_before_call(session)
    try:
        await tell_workflow(state, visit, inp, f"resolve:{dispute_id}")
    except VisitClosed:
        if row.opened_by != OBJECTION_OPENER_VISIT_CLOSED:
            raise
        from api import credit  # api.credit -> this module

        await credit.resolve_on_closed_visit(session, row, body, operator=operator)
    resolved = await session.scalar(
        select(Dispute).where(Dispute.id == dispute_id).execution_options(populate_existing=True)
    )
    assert resolved is not None
    return dispute_out(resolved)
