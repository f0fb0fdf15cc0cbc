"""A visit and its bill, as the HIS, the operators and the patient app read it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from domain.bill import EntryKind
from domain.policy import PaymentStatus
from domain.sanctions import DisputeOutcome, DisputeStatus, HoldKind
from domain.visit import Stage


class ItemLine(BaseModel):
    code: str | None
    name: str | None
    category: str | None
    unit_price_fen: int | None
    quantity: int | None
    amount_fen: int


class BillLine(ItemLine):
    kind: Literal[EntryKind.charge, EntryKind.reversal]
    item_id: str | None
    booked_at: datetime


class PaymentLine(BaseModel):
    kind: Literal[EntryKind.payment, EntryKind.refund, EntryKind.refund_reversal]
    payment_id: str | None
    method: str | None = None  # sandbox, wechat, alipay, cash, card, insurance, insurance_pooled, insurance_personal
    amount_fen: int
    at: datetime


class Bill(BaseModel):
    total_fen: int
    paid_fen: int
    balance_fen: int
    waived_fen: int = Field(description="what operators waived (减免), booked as its own ledger entries")
    lines: list[BillLine]
    payments: list[PaymentLine]


class VisitEventOut(BaseModel):
    event_id: str
    type: str
    occurred_at: datetime
    stage_after: str


class Hold(BaseModel):
    """What suspends the visit's sanctions: no reminder, card lock or credit report while it is on."""

    kind: HoldKind
    since: datetime
    until: datetime | None  # null: until resumed (or the dispute is resolved)
    reason: str | None


class UnperformedItem(BaseModel):
    """An item charged but neither performed (results ready, dispensed, infusion finished) nor cancelled."""

    item_id: str
    category: str
    name: str | None


class VisitDispute(BaseModel):
    """The visit's latest dispute (申诉)."""

    dispute_id: str
    status: DisputeStatus
    reason: str
    opened_at: datetime
    outcome: DisputeOutcome | None
    note: str | None
    resolved_at: datetime | None


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
    hold: Hold | None
    unperformed_items: list[UnperformedItem]
    dispute: VisitDispute | None  # the latest one, open or resolved
    events: list[VisitEventOut]
    created_at: datetime
