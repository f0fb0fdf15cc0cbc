"""People's control over a visit's sanctions: which operator action (or dispute step) fits the
visit as it stands, and the refusal code when it does not. Pure: the visit workflow's
`operator_action` validator asks `check` before anything enters history."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.policy import PaymentStatus
from domain.sanctions import DisputeOutcome, OperatorAction as A, Sanctions


class ActionRefusal(StrEnum):
    invalid_action = "invalid_action"  # the action does not fit the visit
    same_operator = "same_operator"  # a write-off approved by the operator who asked for it
    dispute_open = "dispute_open"  # a second open dispute
    approval_not_found = "approval_not_found"
    dispute_not_found = "dispute_not_found"


@dataclass(frozen=True, kw_only=True)
class ActionRequest:
    action: A
    operator: str
    reason: str
    until: datetime | None = None
    due_at: datetime | None = None
    amount_fen: int | None = None
    approval_id: str | None = None
    dispute_id: str | None = None
    outcome: DisputeOutcome | None = None


@dataclass(frozen=True, kw_only=True)
class PendingApproval:
    approval_id: str
    requested_by: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Standing:
    """The visit as the workflow holds it when an action arrives."""

    status: PaymentStatus
    balance_fen: int
    due_at: datetime | None  # the deadline as moved so far; None before discharge
    sanctions: Sanctions
    dispute_id: str | None = None  # the open dispute
    pending: PendingApproval | None = None  # a write-off waiting for the second operator


@dataclass(frozen=True, kw_only=True)
class Refused:
    code: ActionRefusal
    detail: str


def _invalid(detail: str) -> Refused:
    return Refused(code=ActionRefusal.invalid_action, detail=detail)


CLOSED = (PaymentStatus.settled, PaymentStatus.written_off)
NEEDS_DISCHARGE = (A.extend_deadline, A.unlock_card, A.write_off)


OPERATOR_MAX = 60  # the API's X-Operator-Id and a dispute's opener
REASON_MAX = 300  # the API's `reason` (api/schemas Text)


def check(req: ActionRequest, v: Standing, now: datetime) -> Refused | None:
    """None when `req` fits the visit `v` at `now`; otherwise why not."""
    bad = _bad_text(req)
    if bad is not None:
        return bad
    found = _not_found(req, v)
    if found is not None:
        return found
    if v.status in CLOSED:
        return _invalid(f"the visit is {v.status}: nothing is left to act on")
    if v.status is PaymentStatus.open and req.action in NEEDS_DISCHARGE:
        return _invalid(f"{req.action} needs a discharged visit")
    return _fits(req, v, now)


def _bad_text(req: ActionRequest) -> Refused | None:
    """The texts as the API takes them, for an action sent from Temporal UI or the CLI."""
    if not req.operator.strip() or not req.reason.strip():
        return _invalid("an action names its operator and its reason")
    if len(req.operator) > OPERATOR_MAX or len(req.reason) > REASON_MAX:
        return _invalid(f"an operator has at most {OPERATOR_MAX} characters, a reason at most {REASON_MAX}")
    texts = (req.operator, req.reason, req.dispute_id or "", req.approval_id or "")
    if any(_control(t) for t in texts):
        return _invalid("control characters are not allowed")
    return None


def _control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def same_operator(a: str, b: str) -> bool:
    """Operators compared as people, not as spellings: case and surrounding spaces aside."""
    return a.strip().casefold() == b.strip().casefold()


def _not_found(req: ActionRequest, v: Standing) -> Refused | None:
    """The approval or dispute an action names must be the visit's pending one."""
    if req.action in (A.approve, A.reject):
        if v.pending is None or req.approval_id != v.pending.approval_id:
            return Refused(code=ActionRefusal.approval_not_found, detail=f"no pending approval {req.approval_id}")
        if same_operator(req.operator, v.pending.requested_by):
            return Refused(code=ActionRefusal.same_operator, detail="a write-off is decided by a second operator")
    if req.action is A.resolve_dispute and (v.dispute_id is None or req.dispute_id != v.dispute_id):
        return Refused(code=ActionRefusal.dispute_not_found, detail=f"no open dispute {req.dispute_id}")
    return None


def _fits(req: ActionRequest, v: Standing, now: datetime) -> Refused | None:
    s = v.sanctions
    match req.action:
        case A.pause_sanctions if s.pause is not None:
            return _invalid("the sanctions are paused already")
        case A.pause_sanctions if req.until is not None and req.until <= now:
            return _invalid("a pause ends in the future")
        case A.resume_sanctions if s.pause is None:
            return _invalid("the sanctions are not paused")
        case A.extend_deadline if s.defaulted:
            return _invalid("the visit has defaulted: its deadline is past moving")
        case A.extend_deadline if req.due_at is None or v.due_at is None or req.due_at <= v.due_at:
            return _invalid("a deadline moves later only")
        case A.waive if req.amount_fen is None or not 0 < req.amount_fen <= v.balance_fen:
            return _invalid(f"a waiver is more than nothing and at most the balance ({v.balance_fen} fen)")
        case A.unlock_card if not s.card_locked or s.card_released:
            return _invalid("this visit does not hold the card locked")
        case A.write_off if v.pending is not None:
            return _invalid("a write-off is already waiting for approval")
        case A.write_off if v.balance_fen <= 0:
            return _invalid("nothing is owed")
        case A.open_dispute if v.dispute_id is not None:
            return Refused(code=ActionRefusal.dispute_open, detail="the visit has an open dispute")
        case A.open_dispute if not req.dispute_id:
            return _invalid("a dispute has an id")
        case A.resolve_dispute if req.outcome is None:
            return _invalid("a dispute is upheld or rejected")
        case A.resolve_dispute if req.amount_fen is not None and not 0 < req.amount_fen <= v.balance_fen:
            return _invalid(f"a waiver is more than nothing and at most the balance ({v.balance_fen} fen)")
    return None
