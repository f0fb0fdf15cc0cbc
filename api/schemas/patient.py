"""The patient app: sign-in, identity, profiles, the merged bill, paying it and notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from api.schemas.common import Id, IdNumber, Phone, Request, SmsCode, Text50
from api.schemas.his import SmsCodeRequest
from api.schemas.payments import Allocation
from api.schemas.visits import Bill, Hold
from domain.channels import ChannelName
from domain.payment import PaymentProgress
from domain.policy import PaymentStatus


class LoginRequest(Request):
    phone: Phone
    code: SmsCode


class LoginOut(BaseModel):
    token: str
    patient_id: str | None
    expires_at: datetime


class IdentityRequest(Request):
    name: Text50
    id_number: IdNumber


class IdentityOut(BaseModel):
    patient_id: str


class BillVisit(BaseModel):
    visit_id: str
    department: str
    created_at: datetime
    payment_status: PaymentStatus  # `open`: still in the hospital, not payable yet
    due_at: datetime | None
    bill: Bill
    arrears_at: datetime | None = Field(None, description="unpaid by then, a `due` visit turns to arrears")
    hold: Hold | None = Field(None, description="sanctions suspended (a dispute or an operator's pause)")


class MergedBill(BaseModel):
    visits: list[BillVisit]
    balance_fen: int  # every visit's balance, those still in progress (`open`) included


class PatientPaymentIn(Request):
    visit_ids: Annotated[list[Id], Field(min_length=1, max_length=100)] | None = None
    channel: ChannelName


class PaymentOptions(BaseModel):
    channels: list[ChannelName]  # those the hospital connected, in the order of domain.channels
    labels: dict[str, str]  # every channel's label (domain.channels.LABELS): the app's buttons, payments, receipts
    insurance: bool
    insurance_mobile: bool = False  # 医保移动支付 (the 医保电子凭证's authorisation)


class InsurancePresettleIn(Request):
    visit_ids: Annotated[list[Id], Field(min_length=1, max_length=100)] | None = None


class InsurancePayIn(Request):
    channel: ChannelName | Literal["nhsa_mobile"]  # nhsa_mobile: a mobile settlement (医保移动支付)


class InsuranceMobileOrderIn(Request):
    visit_ids: Annotated[list[Id], Field(min_length=1, max_length=100)] | None = None
    # the patient's authorisation from the 医保电子凭证 app (sandbox: POST /v1/sandbox/insurance/pay-auth)
    pay_auth_no: str = Field(min_length=1, max_length=128)


class Notification(BaseModel):
    template: str
    text: str
    visit_id: str | None
    sent_at: datetime


class PatientSmsCodeRequest(SmsCodeRequest):
    purpose: Literal["login", "enrol"] = Field(
        "login", description="`login` signs in (POST /v1/patient/login); `enrol` enrols (POST /v1/patient/enrollment)"
    )


class ProfileChoice(BaseModel):
    patient_id: str
    name: str  # masked
    enrolled: bool
    current: bool  # the patient this token is bound to


class PatientPaymentStatus(BaseModel):
    payment_id: str
    status: PaymentProgress
    final: bool  # no longer waiting for the channel (domain.payment.WAITING): paid, failed or refunded
    amount_fen: int
    channel: str  # sandbox, wechat, alipay, or cash, card, insurance… for window and insurance payments
    visit_ids: list[str]  # the visits it was asked for
    allocations: list[Allocation]  # where the money landed
    refunded_fen: int
    created_at: datetime
    completed_at: datetime | None
