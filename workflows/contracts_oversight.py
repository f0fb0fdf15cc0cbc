"""The visit's payloads that people's control over sanctions added (issue 10): the status the
workflow records (with the hold), the state it carries across a continue-as-new, and what an
operator action (or a dispute step) writes. Beside workflows/contracts.py, which re-exports
the first two; same rules."""

from dataclasses import dataclass, field
from datetime import datetime

from domain.oversight import PendingApproval
from domain.sanctions import Sanctions

RECORD_OPERATOR_ACTION = "record_operator_action"


@dataclass(frozen=True, kw_only=True)
class RecordPaymentStatusInput:
    visit_id: str
    patient_id: str
    status: str
    at: datetime
    reason: str
    arrears_at: datetime | None = None
    due_at: datetime | None = None
    card_locked: bool = False
    credit_reported: bool = False
    hold_kind: str | None = None  # domain.sanctions.HoldKind
    hold_reason: str | None = None
    hold_since: datetime | None = None
    hold_until: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class VisitCarry:
    """What a visit's workflow carries across a continue-as-new: everything it knows."""

    stage: str
    consultation_open: bool = False
    active_items: dict[str, str] = field(default_factory=dict)  # item_id -> category
    cancelled_items: list[str] = field(default_factory=list)
    pending_results: list[str] = field(default_factory=list)
    infusion_prescribed: bool = False
    infusion_done: bool = False
    seen: list[str] = field(default_factory=list)  # event ids recorded
    discharged_at: datetime | None = None
    his_discharged_at: datetime | None = None
    auto_discharged: bool = False
    status: str = "open"
    recorded: RecordPaymentStatusInput | None = None
    in_arrears: bool = False
    last_dunning_at: datetime | None = None
    dunning_sent: int = 0
    notice_sent_at: datetime | None = None
    sanctions: Sanctions = field(default_factory=Sanctions)
    dispute_id: str | None = None
    pending: PendingApproval | None = None
    refunded_fen: int = 0
    bill_fen: tuple[int, int, int, int] = (0, 0, 0, 0)  # total, paid, balance, waived as last read
    runs: int = 1  # this run's number: 1 for the visit's first


@dataclass(frozen=True, kw_only=True)
class DisputeRecord:
    """A dispute's row as an action leaves it (opened, or resolved)."""

    dispute_id: str
    status: str  # domain.sanctions.DisputeStatus
    reason: str = ""  # the patient's, when opened
    opened_by: str = ""
    outcome: str | None = None  # domain.sanctions.DisputeOutcome
    note: str | None = None
    waived_fen: int | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalRecord:
    """A write-off's approval row as an action leaves it (asked for, or decided)."""

    approval_id: str
    status: str  # domain.sanctions.ApprovalStatus
    action: str = "write_off"
    requested_by: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class RecordOperatorActionInput:
    """Everything one operator action writes, in one transaction: the audit entry, a waiver
    in the ledger, the dispute or approval row, the visit's columns after it."""

    idempotency_key: str  # `{workflow_id}:action:{update_id}`: a retried activity writes once
    visit_id: str
    patient_id: str
    action: str  # domain.sanctions.OperatorAction
    operator: str
    reason: str
    at: datetime
    detail: dict[str, str] = field(default_factory=dict)
    waive_fen: int = 0
    dispute: DisputeRecord | None = None
    approval: ApprovalRecord | None = None
    visit: RecordPaymentStatusInput | None = None  # the visit's status, deadlines, sanctions, hold
