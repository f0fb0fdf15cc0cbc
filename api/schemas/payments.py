"""Money as the operators and the patient app read it: payments, their allocations, refunds,
receipts, channel payments and insurance settlements."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from api.schemas.visits import ItemLine
from domain.insurance import SettlementStatus
from domain.payment import PaymentProgress, RefundStatus


class Allocation(BaseModel):
    visit_id: str
    amount_fen: int


class PaymentOut(BaseModel):
    payment_id: str
    patient_id: str
    method: str
    amount_fen: int
    status: PaymentProgress
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


class ReceiptEBill(BaseModel):
    """The fiscal platform's bill (财政电子票据) of this receipt version."""

    status: str  # pending | issued | written_off (冲红) | failed | not_required
    bill_batch_code: str | None  # 票据代码
    bill_no: str | None  # 票据号码
    random: str | None  # 校验码
    qr_code_png: str | None  # base64 PNG of the bill's QR code
    picture_url: str | None  # the platform's page of the bill
    issued_at: datetime | None
    written_off_no: str | None  # the red bill's number
    written_off_at: datetime | None


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
    ebill: ReceiptEBill | None = None  # None: no e-bill platform at this hospital


class ChannelPayment(BaseModel):
    payment_id: str
    channel: str
    status: PaymentProgress
    amount_fen: int
    visit_ids: list[str]
    pay_url: str | None
    created_at: datetime


class InsuranceSettlementOut(BaseModel):
    settlement_id: str
    visit_ids: list[str]
    total_fen: int
    pooled_fen: int  # 统筹基金
    personal_fen: int  # 个人账户
    self_pay_fen: int  # 自付, paid at a channel
    status: SettlementStatus
    channel: str | None
    self_pay: ChannelPayment | None = None
    detail: str | None
    created_at: datetime
    # "card": 医保脱卡支付; "mobile": 医保移动支付 (the self-pay part is the cash part, paid at the
    # platform's cashier: `cashier_url`, in the answer of its pay)
    mode: Literal["card", "mobile"] = "card"
    cashier_url: str | None = None
