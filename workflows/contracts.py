"""Everything that crosses the workflow boundary: workflow input, update, signal and query
types, and every activity's name, input and result. Ids and amounts only, never personal
data. Frozen keyword-only dataclasses; a field added later must have a default."""

from dataclasses import dataclass, field
from datetime import datetime

from domain.policy import PaymentPolicy
from workflows.contracts_oversight import (  # re-exported: the visit's own payloads
    RecordPaymentStatusInput as RecordPaymentStatusInput,
    VisitCarry as VisitCarry,
)

TASK_QUEUE = "yihoufu-visits"


def workflow_id(visit_id: str) -> str:
    return f"visit-{visit_id}"


def refund_workflow_id(refund_id: str) -> str:
    return f"refund-{refund_id}"


# --- the workflow ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VisitInput:
    visit_id: str
    patient_id: str
    registration_fee_fen: int
    policy: PaymentPolicy
    department: str = ""  # for the Department search attribute
    # for the PatientTag search attribute: a keyed hash of the patient's id (the API's), so a
    # patient's visits group in Temporal UI while the index holds no id of theirs
    patient_tag: str = ""
    # the history length after which the visit continues as new (the server's own suggestion too)
    continue_after_events: int = 5000
    carried: VisitCarry | None = None  # set by a continue-as-new: the run before's state


@dataclass(frozen=True, kw_only=True)
class ItemInput:
    item_id: str
    code: str
    name: str
    category: str
    unit_price_fen: int
    quantity: int


@dataclass(frozen=True, kw_only=True)
class RecordEventInput:
    event_id: str
    type: str
    occurred_at: datetime
    items: list[ItemInput] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    skin_test_required: bool = False
    result: str | None = None  # skin test: positive | negative
    channel: str | None = None
    room: str | None = None


@dataclass(frozen=True, kw_only=True)
class PaymentReceivedInput:
    payment_id: str
    amount_fen: int


@dataclass(frozen=True, kw_only=True)
class VisitStateResult:
    visit_id: str
    stage: str
    payment_status: str
    balance_fen: int
    arrears_at: datetime | None = None
    due_at: datetime | None = None
    card_locked: bool = False
    credit_reported: bool = False
    dunning_sent: int = 0
    notice_sent_at: datetime | None = None
    lock_at: datetime | None = None  # the earliest card lock and credit report, while one is ahead


@dataclass(frozen=True, kw_only=True)
class VisitRecordResult:
    """The answer to `record_event`: the visit as the workflow has recorded it in the database
    (the stage and bill the event left, the payment status last written), times in UTC. The
    API answers the HIS from it and reads only the lines and events it does not carry."""

    visit_id: str
    stage: str
    payment_status: str
    total_fen: int
    paid_fen: int
    balance_fen: int
    discharged_at: datetime | None = None  # the HIS's time of the discharge
    arrears_at: datetime | None = None
    due_at: datetime | None = None
    card_locked: bool = False
    credit_reported: bool = False
    # the hold on the visit's sanctions (domain.sanctions.HoldKind), if one is on
    hold_kind: str | None = None
    hold_reason: str | None = None
    hold_since: datetime | None = None
    hold_until: datetime | None = None
    waived_fen: int = 0
    pending_approval_id: str | None = None  # a write-off waiting for the second operator


@dataclass(frozen=True, kw_only=True)
class OperatorActionInput:
    """The `operator_action` update: the body of `POST /v1/ops/visits/{id}/actions` plus the
    operator, the same JSON an operator sends from Temporal UI. `action` is a
    domain.sanctions.OperatorAction; the fields each action reads are named beside them."""

    action: str
    operator: str  # X-Operator-Id; a dispute's opener: `patient:{patient_id}` or `his:{actor}`
    reason: str
    until: datetime | None = None  # pause_sanctions (None: until resumed)
    due_at: datetime | None = None  # extend_deadline: later only
    amount_fen: int | None = None  # waive; resolve_dispute upheld (None: the whole balance)
    approval_id: str | None = None  # approve, reject
    dispute_id: str | None = None  # open_dispute, resolve_dispute
    outcome: str | None = None  # resolve_dispute: domain.sanctions.DisputeOutcome


# --- activities ------------------------------------------------------------------------

BOOK_REGISTRATION = "book_registration"
APPLY_VISIT_EVENT = "apply_visit_event"
GET_BALANCE = "get_balance"
RECORD_PAYMENT_STATUS = "record_payment_status"
SEND_SMS = "send_sms"
LOCK_CARD = "lock_card"
UNLOCK_CARD = "unlock_card"
REPORT_CREDIT = "report_credit"


@dataclass(frozen=True, kw_only=True)
class BookRegistrationInput:
    visit_id: str
    patient_id: str
    registration_fee_fen: int


@dataclass(frozen=True, kw_only=True)
class ApplyVisitEventInput:
    visit_id: str
    patient_id: str
    event: RecordEventInput
    stage_after: str
    charge: list[ItemInput] = field(default_factory=list)
    reverse: list[str] = field(default_factory=list)
    auto: bool = False  # a discharge by the workflow: the HIS never sent one


@dataclass(frozen=True, kw_only=True)
class BalanceInput:
    visit_id: str


@dataclass(frozen=True, kw_only=True)
class BalanceResult:
    total_fen: int
    paid_fen: int
    balance_fen: int
    waived_fen: int = 0


@dataclass(frozen=True, kw_only=True)
class SendSmsInput:
    idempotency_key: str
    patient_id: str
    visit_id: str
    template: str
    params: dict[str, str] = field(default_factory=dict)
    at: datetime | None = None  # the workflow's time when it decided to send


@dataclass(frozen=True, kw_only=True)
class CardLockInput:
    patient_id: str
    visit_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class CardLockResult:
    locked: bool  # the card's state at the bureau afterwards
    bureau_called: bool  # false when another overdue visit already holds the lock


@dataclass(frozen=True, kw_only=True)
class ReportCreditInput:
    kind: str  # domain.sanctions.CreditReportKind
    patient_id: str
    visit_id: str
    amount_fen: int
    at: datetime
    # a report's §15 evidence: when the pre-default notice went (None: the activity finds it)
    notice_sent_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ReportCreditResult:
    record_id: str


@dataclass(frozen=True, kw_only=True)
class AllocationResult:
    visit_id: str
    amount_fen: int


# --- receipts ----------------------------------------------------------------------------

ISSUE_RECEIPT = "issue_receipt"


@dataclass(frozen=True, kw_only=True)
class IssueReceiptInput:
    visit_id: str


@dataclass(frozen=True, kw_only=True)
class IssueReceiptResult:
    receipt_id: str  # empty: the visit still owes money
    version: int


# --- refunds -----------------------------------------------------------------------------

REFUND_CREDIT = "refund_credit"
SUBMIT_REFUND = "submit_refund"
CHECK_REFUND = "check_refund"
FIND_STALE_REFUNDS = "find_stale_refunds"


@dataclass(frozen=True, kw_only=True)
class RefundInput:
    refund_id: str
    patient_id: str
    visit_id: str
    payment_id: str
    method: str
    amount_fen: int


@dataclass(frozen=True, kw_only=True)
class RefundCreditInput:
    visit_id: str
    patient_id: str
    reason: str  # cancellation | overpayment


@dataclass(frozen=True, kw_only=True)
class RefundCreditResult:
    refunds: list[RefundInput] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class RefundStatusInput:
    refund_id: str


@dataclass(frozen=True, kw_only=True)
class RefundStatusResult:
    refund_id: str
    status: str  # domain.payment.RefundStatus
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class StaleRefundsResult:
    refunds: list[RefundInput] = field(default_factory=list)


# --- insurance card-less payment (医保脱卡支付) ----------------------------------------

SETTLE_INSURANCE = "settle_insurance"
REVERSE_INSURANCE = "reverse_insurance"
BOOK_INSURANCE = "book_insurance"


def insurance_workflow_id(settlement_id: str) -> str:
    return f"insurance-pay-{settlement_id}"


@dataclass(frozen=True, kw_only=True)
class InsurancePaymentInput:
    settlement_id: str
    patient_id: str
    self_pay_payment_id: str  # empty when the insurance covers everything
    self_pay_fen: int
    insurance_fen: int
    self_pay_timeout_seconds: float


@dataclass(frozen=True, kw_only=True)
class SettlementInput:
    settlement_id: str


@dataclass(frozen=True, kw_only=True)
class SettlementResult:
    settlement_id: str
    status: str  # presettled | insurance_settled | completed | reversed | failed
    detail: str = ""
    landed: list[AllocationResult] = field(default_factory=list)  # the insurance money, per visit
    refunds: list[RefundInput] = field(default_factory=list)


# --- daily statements ------------------------------------------------------------------

STATEMENT_SCHEDULE_ID = "daily-statements"
RECONCILE_STATEMENT = "reconcile_statement"


@dataclass(frozen=True, kw_only=True)
class StatementInput:
    channels: list[str] = field(default_factory=list)
    day: str = ""  # YYYY-MM-DD local; empty: yesterday
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True, kw_only=True)
class ReconcileStatementInput:
    channel: str
    day: str
    timezone: str


@dataclass(frozen=True, kw_only=True)
class StatementResult:
    channel: str
    day: str
    matched: int
    mismatches: int


@dataclass(frozen=True, kw_only=True)
class StatementsResult:
    day: str
    results: list[StatementResult] = field(default_factory=list)


# --- reconciliation ------------------------------------------------------------------

RECONCILE_SCHEDULE_ID = "reconcile-payments"
FIND_STALE_PAYMENTS = "find_stale_payments"
RECONCILE_PAYMENT = "reconcile_payment"
CLOSE_PAYMENT = "close_payment"


@dataclass(frozen=True, kw_only=True)
class ReconcileInput:
    older_than_seconds: float  # a channel payment pending this long is asked about
    expire_after_seconds: float = 0  # ... and one pending this long is closed at the channel (0: never)


@dataclass(frozen=True, kw_only=True)
class StalePaymentsResult:
    payment_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ReconcilePaymentInput:
    payment_id: str
    close_if_older_than_seconds: float = 0  # unpaid and this old: close the order (0: just ask)


@dataclass(frozen=True, kw_only=True)
class ReconcilePaymentResult:
    payment_id: str
    status: str  # the payment's status after asking the channel
    landed: list[AllocationResult] = field(default_factory=list)  # money that landed just now
    refunds: list[RefundInput] = field(default_factory=list)  # what it paid beyond the bill, to send back


@dataclass(frozen=True, kw_only=True)
class ReconcileResult:
    checked: int
    landed: int
    refunds_resumed: int = 0
