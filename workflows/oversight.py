"""People's control over a visit's sanctions (issue 10): the `operator_action` update's steps.

An operator pauses and resumes the sanctions, moves the deadline, waives part of the bill,
releases this visit's hold on the card, or asks for a write-off that a second operator
decides; a patient (or the window) opens a dispute that an operator resolves. Each step
changes the visit's domain.sanctions state, then one activity writes what it decided (the
audit entry, a waiver, the dispute or approval row, the visit's columns) before the update
answers. domain.oversight.check has said the action fits the visit."""

from __future__ import annotations

from dataclasses import replace

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from domain.money import yuan
from domain.oversight import ActionRefusal, ActionRequest, PendingApproval, check
from domain.policy import PaymentStatus
from domain.sanctions import (
    ApprovalStatus,
    DisputeOutcome,
    DisputeStatus,
    Hold,
    HoldKind,
    OperatorAction as A,
    extend,
    put_on,
    released,
    take_off,
)
from workflows import activities as a, contracts as c, contracts_oversight as o
from workflows.contracts import OperatorActionInput
from workflows.retries import CLINICAL_EVENT, INVALID_INPUT
from workflows.sanctions import lift, release_card
from workflows.steps import call
from workflows.visit_context import VisitContext


def request(inp: OperatorActionInput) -> ActionRequest:
    try:
        return ActionRequest(
            action=A(inp.action),
            operator=inp.operator,
            reason=inp.reason,
            until=inp.until,
            due_at=inp.due_at,
            amount_fen=inp.amount_fen,
            approval_id=inp.approval_id,
            dispute_id=inp.dispute_id,
            outcome=None if inp.outcome is None else DisputeOutcome(inp.outcome),
        )
    except ValueError as err:
        raise ApplicationError(str(err), type="invalid_action", non_retryable=True) from None


def validate(v: VisitContext, inp: OperatorActionInput) -> ActionRequest:
    """The action as the domain reads it, or the refusal (ApplicationError with its code)."""
    req = request(inp)
    refused = check(req, v.standing(), workflow.now())
    if refused is not None:
        raise ApplicationError(refused.detail, type=str(refused.code), non_retryable=True)
    return req


MONEY = (A.waive, A.resolve_dispute, A.write_off, A.approve)  # judged on the ledger's balance


async def act_on(v: VisitContext, inp: OperatorActionInput) -> None:
    """Carry out an action, checked again under the lock (an earlier action, a payment may have
    moved the visit) on the ledger's balance of now. The visit's state stays as it was unless
    the activity that records the action succeeds: its refusal is the update's."""
    if inp.action in MONEY:
        await read_balance(v)
    req = validate(v, inp)
    before = (v.sanctions, v.dispute_id, v.pending, v.status)
    try:
        await carry_out(v, req)
    except ActivityError as err:
        sanctions, v.dispute_id, v.pending, v.status = before
        s = v.sanctions  # what the bureau and the platform answered stays as they answered
        v.sanctions = replace(
            sanctions, card_locked=s.card_locked, credit_reported=s.credit_reported, reported_fen=s.reported_fen
        )
        v.describe()
        raise not_recorded(err) from None
    v.wake = True  # the payment loop looks again: a hold, a deadline, a balance may have moved
    if v.balance <= 0 and not v.closed and v.discharged_at is not None:
        # read-your-writes: a waiver that settles answers `settled`, the sanctions undone (the
        # payment loop then issues the receipt; undoing twice is harmless)
        await lift(v, "waived")
        await v.set_status(PaymentStatus.settled, "waived")


async def read_balance(v: VisitContext) -> None:
    """The balance from the ledger, bounded: a payment whose signal never came counts."""
    try:
        v.bill = await call(
            a.get_balance, c.BalanceInput(visit_id=v.visit_id), retries=CLINICAL_EVENT, summary="read the balance"
        )
    except ActivityError:
        raise unavailable() from None
    v.describe()


def not_recorded(err: ActivityError) -> ApplicationError:
    """The update's answer when the activity that records it failed: a refusal (a waiver over
    the balance) with its code, bad data as invalid_request, else the ledger is unavailable."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in set(ActionRefusal):
        return ApplicationError(cause.message, type=str(cause.type), non_retryable=True)
    if isinstance(cause, ApplicationError) and cause.type == INVALID_INPUT:
        return ApplicationError(cause.message, type="invalid_request", non_retryable=True)
    return unavailable()


def unavailable() -> ApplicationError:
    return ApplicationError(
        "the ledger did not answer; nothing was recorded, send it again", type="ledger_unavailable", non_retryable=True
    )


async def carry_out(v: VisitContext, req: ActionRequest) -> None:
    """One action that `validate` accepted."""
    match req.action:
        case A.pause_sanctions:
            hold = Hold(
                kind=HoldKind.operator, reason=req.reason, since=workflow.now(), until=req.until, by=req.operator
            )
            v.sanctions = put_on(v.sanctions, hold)
            await record(v, req, until=req.until.isoformat() if req.until else "")
        case A.resume_sanctions:
            v.sanctions = take_off(
                v.sanctions, HoldKind.operator, workflow.now(), notice_sent=v.notice_sent_at is not None
            )
            await record(v, req)
        case A.extend_deadline:
            due_at = v.standing().due_at
            assert req.due_at is not None and due_at is not None
            v.sanctions = extend(v.sanctions, req.due_at - due_at)
            await record(v, req, before=due_at.isoformat())
        case A.waive:
            assert req.amount_fen is not None
            await record(v, req, waive_fen=req.amount_fen)
        case A.unlock_card:
            await release_card(v, "released by an operator", by_operator=True)
            await record(v, req)
        case A.write_off:
            v.pending = PendingApproval(approval_id=str(workflow.uuid4()), requested_by=req.operator, reason=req.reason)
            await record(v, req, approval=approval(v.pending, ApprovalStatus.pending_approval))
        case A.approve | A.reject:
            await decide_write_off(v, req)
        case A.open_dispute:
            await open_dispute(v, req)
        case A.resolve_dispute:
            await resolve_dispute(v, req)


def approval(p: PendingApproval, status: ApprovalStatus) -> o.ApprovalRecord:
    return o.ApprovalRecord(approval_id=p.approval_id, status=str(status), requested_by=p.requested_by, reason=p.reason)


async def decide_write_off(v: VisitContext, req: ActionRequest) -> None:
    """The second operator's decision; approved, the debt is given up: sanctions undone, the
    credit record corrected, the visit `written_off` (the bill stays in the books)."""
    assert v.pending is not None
    pending, v.pending = v.pending, None
    if req.action is A.reject:
        await record(v, req, approval=approval(pending, ApprovalStatus.rejected))
        return
    await lift(v, "written off")
    v.sanctions = released(v.sanctions)
    v.status = PaymentStatus.written_off
    await record(v, req, approval=approval(pending, ApprovalStatus.approved), requested_by=pending.requested_by)


async def open_dispute(v: VisitContext, req: ActionRequest) -> None:
    """申诉: a `dispute` hold while it is open."""
    assert req.dispute_id is not None
    hold = Hold(kind=HoldKind.dispute, reason=req.reason, since=workflow.now(), by=req.operator)
    v.sanctions = put_on(v.sanctions, hold)
    v.dispute_id = req.dispute_id
    dispute = o.DisputeRecord(
        dispute_id=req.dispute_id, status=str(DisputeStatus.open), reason=req.reason, opened_by=req.operator
    )
    await record(v, req, dispute=dispute)


async def resolve_dispute(v: VisitContext, req: ActionRequest) -> None:
    """Upheld: waive (part or all) and undo this visit's lock and report for good. Rejected:
    the hold lifts and the wait goes on with the deadline moved by the time it was open."""
    assert req.dispute_id is not None
    v.sanctions = take_off(v.sanctions, HoldKind.dispute, workflow.now(), notice_sent=v.notice_sent_at is not None)
    v.dispute_id = None
    resolved = o.DisputeRecord(
        dispute_id=req.dispute_id, status=str(DisputeStatus.resolved), outcome=str(req.outcome), note=req.reason
    )
    if req.outcome is DisputeOutcome.rejected:
        await record(v, req, dispute=resolved)
        step = f"dispute-{req.dispute_id}"
        if v.sanctions.defaulted:  # the deadline is past: the card stays locked until paid
            await v.sms("dispute_rejected_defaulted", {"amount": yuan(v.balance)}, step=step)
            return
        d = v.deadlines()
        params = {"amount": yuan(v.balance), "deadline": v.policy.local_label(d.default_at) if d else ""}
        await v.sms("dispute_rejected", params, step=step)
        return
    amount = req.amount_fen or v.balance
    await lift(v, "disputed and upheld")
    v.sanctions = released(v.sanctions)
    if v.status is PaymentStatus.defaulted:
        v.status = PaymentStatus.arrears  # nothing is in force any more; what is left is owed
    await record(v, req, waive_fen=amount, dispute=replace(resolved, waived_fen=amount))
    await v.sms("dispute_upheld", {"amount": yuan(amount)}, step=f"dispute-{req.dispute_id}")


SYSTEM = "system"  # the visit's own doing, not a person's
SETTLED_FIRST = "settled before a decision: the bill was paid"


async def close_on_settle(v: VisitContext) -> None:
    """Settled with a dispute open or a write-off waiting: nothing is left to decide. The
    dispute closes `resolved` with no outcome (neither upheld nor rejected: the contract's
    outcomes are decisions, and nobody decided) and a note; the write-off is `rejected`
    ("settled before approval"); each audited, the hold off, Disputed false."""
    if v.dispute_id is not None:
        dispute_id, v.dispute_id = v.dispute_id, None
        v.sanctions = take_off(v.sanctions, HoldKind.dispute, workflow.now(), notice_sent=v.notice_sent_at is not None)
        req = ActionRequest(action=A.resolve_dispute, operator=SYSTEM, reason=SETTLED_FIRST, dispute_id=dispute_id)
        closed = o.DisputeRecord(dispute_id=dispute_id, status=str(DisputeStatus.resolved), note=SETTLED_FIRST)
        await record(v, req, dispute=closed)
    if v.pending is not None:
        pending, v.pending = v.pending, None
        reason = "settled before approval"
        req = ActionRequest(action=A.reject, operator=SYSTEM, reason=reason, approval_id=pending.approval_id)
        await record(v, req, approval=approval(pending, ApprovalStatus.rejected))


async def record(
    v: VisitContext,
    req: ActionRequest,
    *,
    waive_fen: int = 0,
    dispute: o.DisputeRecord | None = None,
    approval: o.ApprovalRecord | None = None,
    **detail: str,
) -> None:
    """One activity writes what the action decided; the update answers after it."""
    update = workflow.current_update_info()
    key = f"{workflow.info().workflow_id}:action:{update.id if update else workflow.uuid4()}"
    snapshot = v.snapshot(f"{req.action} by {req.operator}: {req.reason}")
    written = o.RecordOperatorActionInput(
        idempotency_key=key,
        visit_id=v.visit_id,
        patient_id=v.patient_id,
        action=str(req.action),
        operator=req.operator,
        reason=req.reason,
        at=workflow.now(),
        detail={k: val for k, val in detail.items() if val},
        waive_fen=waive_fen,
        dispute=dispute,
        approval=approval,
        visit=snapshot,
    )
    summary = f"record {req.action} by {req.operator}"
    if update is None:  # the payment loop's: a background step
        v.bill = await v.step(a.record_operator_action, written, summary)
    else:  # an update's: bounded, the operator gets an answer
        v.bill = await call(a.record_operator_action, written, retries=CLINICAL_EVENT, summary=summary)
    v.recorded = snapshot
    v.describe()
