"""Request and response bodies of the HTTP contract. Requests forbid unknown fields;
money is a strict integer of fen."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from domain.money import MAX_AMOUNT_FEN
from domain.payment import RefundStatus
from domain.policy import PaymentStatus, ServiceStatus
from domain.visit import Category, EventType, Stage

Fen = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_FEN, description="an amount in fen (分), a whole number")]
FenOrZero = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT_FEN)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
Phone = Annotated[str, Field(pattern=r"^1[3-9]\d{9}$", description="a mainland mobile number, 11 digits")]
IdNumber = Annotated[str, Field(pattern=r"^\d{17}[\dXx]$", description="an 18-character resident ID number")]
SmsCode = Annotated[str, Field(pattern=r"^\d{6}$")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- patients ------------------------------------------------------------------------


class CardRead(Request):
    card_type: Literal["insurance_card", "id_card", "visit_card"]
    card_no: Annotated[str, Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9\-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=50)]
    id_number: IdNumber | None = None
    phone: Phone | None = None
    insured_locally: StrictBool | None = None


class PatientFound(BaseModel):
    patient_id: str
    enrolled: bool
    service_status: ServiceStatus


class EnrollmentView(BaseModel):
    agreement_version: str
    channel: str
    phone: str
    eligibility_rule: str
    enrolled_at: datetime


class CreditScores(BaseModel):
    bank_score: int | None
    sesame_score: int | None


class PatientProfile(BaseModel):
    patient_id: str
    name: str
    id_number: str | None
    phone: str | None
    enrolled: bool
    enrollment: EnrollmentView | None
    service_status: ServiceStatus
    card_locked: bool
    credit: CreditScores | None = None


class SmsCodeRequest(Request):
    phone: Phone


class SmsCodeSent(BaseModel):
    phone: str
    expires_in: int


class EnrollRequest(Request):
    agreement_version: Annotated[str, Field(min_length=1, max_length=40)]
    phone: Phone
    code: SmsCode


class Unenrolled(BaseModel):
    patient_id: str
    enrolled: bool


# --- visits --------------------------------------------------------------------------


class RegisterVisit(Request):
    visit_id: Id
    patient_id: Id
    department: Annotated[str, Field(min_length=1, max_length=100)]
    channel: Literal["kiosk", "window", "app"]
    doctor: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    registration_fee_fen: FenOrZero = 0


class OrderItem(Request):
    item_id: Id
    code: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    category: Category
    unit_price_fen: Fen
    quantity: Annotated[StrictInt, Field(ge=1, le=10_000)]

    @model_validator(mode="after")
    def _amount(self) -> OrderItem:
        if self.unit_price_fen * self.quantity > MAX_AMOUNT_FEN:
            raise ValueError(f"unit_price_fen x quantity exceeds {MAX_AMOUNT_FEN} fen")
        return self


# which fields each event type needs (and takes)
EVENT_FIELDS: dict[EventType, set[str]] = {
    EventType.checked_in: {"channel"},
    EventType.called: {"room"},
    EventType.orders_placed: {"items"},
    EventType.orders_cancelled: {"item_ids"},
    EventType.results_ready: {"item_ids"},
    EventType.prescribed: {"items", "skin_test_required"},
    EventType.skin_test_result: {"result"},
}
REQUIRED_FIELDS: dict[EventType, set[str]] = {
    EventType.checked_in: {"channel"},
    EventType.orders_placed: {"items"},
    EventType.orders_cancelled: {"item_ids"},
    EventType.results_ready: {"item_ids"},
    EventType.prescribed: {"items"},
    EventType.skin_test_result: {"result"},
}


class VisitEventIn(Request):
    event_id: Id
    type: EventType
    occurred_at: AwareDatetime
    channel: Literal["app", "nurse_station"] | None = None
    room: Annotated[str, Field(max_length=50)] | None = None
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=200)] | None = None
    item_ids: Annotated[list[Id], Field(min_length=1, max_length=200)] | None = None
    skin_test_required: StrictBool | None = None
    result: Literal["positive", "negative"] | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> VisitEventIn:
        allowed = EVENT_FIELDS.get(self.type, set())
        given = {f for f in ("channel", "room", "items", "item_ids", "skin_test_required", "result")
                 if getattr(self, f) is not None}
        if extra := given - allowed:
            raise ValueError(f"{self.type} does not take {', '.join(sorted(extra))}")
        if missing := REQUIRED_FIELDS.get(self.type, set()) - given:
            raise ValueError(f"{self.type} needs {', '.join(sorted(missing))}")
        return self


class ItemLine(BaseModel):
    code: str | None
    name: str | None
    category: str | None
    unit_price_fen: int | None
    quantity: int | None
    amount_fen: int


class BillLine(ItemLine):
    kind: Literal["charge", "reversal"]
    item_id: str | None
    booked_at: datetime


class PaymentLine(BaseModel):
    kind: Literal["payment", "refund", "refund_reversal"]
    payment_id: str | None
    method: str | None = None  # sandbox, wechat, alipay, cash, card, insurance, insurance_pooled, insurance_personal
    amount_fen: int
    at: datetime


class Bill(BaseModel):
    total_fen: int
    paid_fen: int
    balance_fen: int
    lines: list[BillLine]
    payments: list[PaymentLine]


class VisitEventOut(BaseModel):
    event_id: str
    type: str
    occurred_at: datetime
    stage_after: str


class VisitOut(BaseModel):
    visit_id: str
    patient_id: str
    department: str
    doctor: str | None
    channel: str
    stage: Stage
    payment_status: PaymentStatus
    bill: Bill
    discharged_at: datetime | None
    arrears_at: datetime | None
    due_at: datetime | None
    card_locked: bool
    credit_reported: bool
    events: list[VisitEventOut]
    created_at: datetime


# --- operators -----------------------------------------------------------------------


class OpsPaymentIn(Request):
    patient_id: Id
    visit_ids: Annotated[list[Id], Field(min_length=1, max_length=100)] | None = None
    amount_fen: Fen
    method: Literal["cash", "card", "insurance"]


class Allocation(BaseModel):
    visit_id: str
    amount_fen: int


class PaymentOut(BaseModel):
    payment_id: str
    patient_id: str
    method: str
    amount_fen: int
    status: str
    allocations: list[Allocation]
    created_at: datetime


class RefundOut(BaseModel):
    refund_id: str
    payment_id: str
    patient_id: str
    visit_id: str
    method: str
    amount_fen: int
    reason: str
    status: RefundStatus
    detail: str | None
    channel_refund_no: str | None
    created_at: datetime
    completed_at: datetime | None


class ReceiptLine(ItemLine):
    pass


class ReceiptPayment(BaseModel):
    payment_id: str
    method: str
    amount_fen: int


class ReceiptOut(BaseModel):
    receipt_id: str
    visit_id: str
    version: int
    total_fen: int
    paid_fen: int
    hospital: str
    department: str
    patient_name: str  # masked
    lines: list[ReceiptLine]
    payments: list[ReceiptPayment]
    check_code: str
    issued_at: datetime
    voided_at: datetime | None
    download_url: str


class StatementFinding(BaseModel):
    kind: str
    ref: str
    problem: str
    channel_fen: int | None
    ledger_fen: int | None


class StatementRunOut(BaseModel):
    channel: str
    day: str
    matched: int
    mismatches: list[StatementFinding]
    channel_total_fen: int
    ledger_total_fen: int
    checked_at: datetime


class StatementRunIn(Request):
    channel: Literal["wechat", "alipay"]
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


class VisitRefundIn(Request):
    reason: str = Field("operator", min_length=1, max_length=20)


class VisitSummary(BaseModel):
    visit_id: str
    patient_id: str
    department: str
    stage: Stage
    payment_status: PaymentStatus
    balance_fen: int
    due_at: datetime | None
    card_locked: bool
    created_at: datetime


class ReceivableBucket(BaseModel):
    visits: int
    balance_fen: int


class Receivables(BaseModel):
    due: ReceivableBucket
    arrears: ReceivableBucket
    defaulted: ReceivableBucket
    open: ReceivableBucket
    total_fen: int


# --- sandbox -------------------------------------------------------------------------


class SandboxSms(BaseModel):
    phone: str
    template: str
    params: dict[str, str]
    text: str
    sent_at: datetime


class CreditScoresIn(Request):
    bank_score: Annotated[StrictInt, Field(ge=0, le=1000)] | None
    sesame_score: Annotated[StrictInt, Field(ge=350, le=950)] | None


class CardEvent(BaseModel):
    action: Literal["lock", "unlock"]
    at: datetime
    reason: str


class InsuranceCard(BaseModel):
    locked: bool
    events: list[CardEvent]


class CreditRecord(BaseModel):
    kind: Literal["report", "correction"]
    visit_id: str
    amount_fen: int
    at: datetime


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    reason: str | None
    detail: dict[str, object]


# --- the patient app -----------------------------------------------------------------


class LoginRequest(Request):
    phone: Phone
    code: SmsCode


class LoginOut(BaseModel):
    token: str
    patient_id: str | None
    expires_at: datetime


class IdentityRequest(Request):
    name: Annotated[str, Field(min_length=1, max_length=50)]
    id_number: IdNumber


class IdentityOut(BaseModel):
    patient_id: str


class BillVisit(BaseModel):
    visit_id: str
    department: str
    created_at: datetime
    payment_status: PaymentStatus
    due_at: datetime | None
    bill: Bill


class MergedBill(BaseModel):
    visits: list[BillVisit]
    balance_fen: int


class PatientPaymentIn(Request):
    visit_ids: Annotated[list[Id], Field(min_length=1, max_length=100)] | None = None
    channel: Literal["sandbox", "wechat", "alipay"]


class ChannelPayment(BaseModel):
    payment_id: str
    channel: str
    status: str
    amount_fen: int
    visit_ids: list[str]
    pay_url: str | None
    created_at: datetime


class PaymentOptions(BaseModel):
    channels: list[Literal["wechat", "alipay", "sandbox"]]
    insurance: bool


class InsurancePresettleIn(Request):
    visit_ids: Annotated[list[Id], Field(min_length=1, max_length=100)] | None = None


class InsurancePayIn(Request):
    channel: Literal["sandbox", "wechat", "alipay"]


class InsuranceSettlementOut(BaseModel):
    settlement_id: str
    visit_ids: list[str]
    total_fen: int
    pooled_fen: int  # 统筹基金
    personal_fen: int  # 个人账户
    self_pay_fen: int  # 自付, paid at a channel
    status: Literal["presettled", "insurance_settled", "completed", "reversed", "failed"]
    channel: str | None
    self_pay: ChannelPayment | None = None
    detail: str | None
    created_at: datetime


class SimSettlement(BaseModel):
    presettle_id: str
    status: str
    total_fen: int
    pooled_fen: int
    personal_fen: int
    self_pay_fen: int
    settlement_no: str | None


class Notification(BaseModel):
    template: str
    text: str
    visit_id: str | None
    sent_at: datetime
