"""The sandbox's views of the simulated third parties: texts sent, credit scores, the insurance
card, credit reports and the bureau's settlements."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt

from api.schemas.common import Request
from domain.sanctions import CreditReportKind


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
    kind: CreditReportKind
    visit_id: str
    amount_fen: int
    at: datetime


class SimSettlement(BaseModel):
    presettle_id: str
    status: str
    total_fen: int
    pooled_fen: int
    personal_fen: int
    self_pay_fen: int
    settlement_no: str | None


class PayAuthOut(BaseModel):
    pay_auth_no: str  # the 医保电子凭证's authorisation of one mobile order
