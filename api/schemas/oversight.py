"""People in control of sanctions: operators' actions on a visit, the second operator's
decision on a write-off, and disputes (申诉) opened by a patient or at the window."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, model_validator

from api.schemas.common import Fen, Request, Text200
from domain.sanctions import ApprovalStatus, DisputeOutcome, DisputeStatus, OperatorAction as A

VisitAction = Literal[A.pause_sanctions, A.resume_sanctions, A.extend_deadline, A.waive, A.unlock_card, A.write_off]

# the optional fields each action takes, and those it needs
ACTION_FIELDS: dict[A, set[str]] = {
    A.pause_sanctions: {"until"},
    A.extend_deadline: {"due_at"},
    A.waive: {"amount_fen"},
}
ACTION_NEEDS: dict[A, set[str]] = {A.extend_deadline: {"due_at"}, A.waive: {"amount_fen"}}


class OperatorActionIn(Request):
    """`POST /v1/ops/visits/{visit_id}/actions`: the same JSON (plus `operator`) is the visit
    workflow's `operator_action` update in Temporal UI."""

    action: VisitAction
    reason: Text200
    until: AwareDatetime | None = None  # pause_sanctions: the hold ends by itself then (null: until resumed)
    due_at: AwareDatetime | None = None  # extend_deadline: the new deadline, later than the current one
    amount_fen: Fen | None = None  # waive

    @model_validator(mode="after")
    def _fields_for_action(self) -> OperatorActionIn:
        given = {f for f in ("until", "due_at", "amount_fen") if getattr(self, f) is not None}
        if extra := given - ACTION_FIELDS.get(self.action, set()):
            raise ValueError(f"{self.action} does not take {', '.join(sorted(extra))}")
        if missing := ACTION_NEEDS.get(self.action, set()) - given:
            raise ValueError(f"{self.action} needs {', '.join(sorted(missing))}")
        return self


class ApprovalPending(BaseModel):
    """A write-off waits for a second, different operator (`POST /v1/ops/approvals/{approval_id}`)."""

    approval_id: str
    status: Literal[ApprovalStatus.pending_approval]


class ApprovalDecisionIn(Request):
    decision: Literal[A.approve, A.reject]
    reason: Text200


class DisputeIn(Request):
    reason: Text200


class DisputeOpened(BaseModel):
    dispute_id: str
    status: DisputeStatus


class DisputeResolveIn(Request):
    outcome: DisputeOutcome
    note: Text200
    waive_fen: Fen | None = None  # upheld: what is waived (null: the whole balance)

    @model_validator(mode="after")
    def _waive_only_when_upheld(self) -> DisputeResolveIn:
        if self.waive_fen is not None and self.outcome is not DisputeOutcome.upheld:
            raise ValueError("waive_fen goes with the outcome upheld only")
        return self


class DisputeOut(BaseModel):
    dispute_id: str
    visit_id: str
    patient_id: str
    status: DisputeStatus
    reason: str
    opened_by: str  # patient:{patient_id} | his:{actor}
    opened_at: datetime
    outcome: DisputeOutcome | None
    note: str | None
    waived_fen: int | None
    resolved_by: str | None
    resolved_at: datetime | None
