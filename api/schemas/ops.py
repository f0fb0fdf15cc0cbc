"""The operators' console: window payments, refunds, statements, receivables and the audit log."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from api.schemas.common import Fen, Id, Request, Text20
from api.schemas.visits import Hold
from db.receivables import AgeBucket
from domain.channels import STATEMENT_CHANNELS, TOTALS_CHECKS, ChannelName
from domain.policy import PaymentStatus
from domain.visit import Stage

if TYPE_CHECKING:
    StatementChannel = ChannelName | str
else:  # a Literal of the channels that keep statements and the totals checks: the OpenAPI lists just those
    StatementChannel = Literal[STATEMENT_CHANNELS + TOTALS_CHECKS]


class OpsPaymentIn(Request):
    patient_id: Id
    visit_ids: Annotated[list[Id], Field(min_length=1, max_length=100)] | None = None
    amount_fen: Fen
    method: Literal["cash", "card", "insurance"]


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
    channel: StatementChannel
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")

    @field_validator("day")
    @classmethod
    def _a_calendar_day(cls, value: str) -> str:
        """2025-02-30 has the shape of a day but is none: refused here, not by the counterpart."""
        date.fromisoformat(value)  # ValueError: a 422
        return value


class VisitRefundIn(Request):
    reason: Text20 = "operator"


class VisitSummary(BaseModel):
    visit_id: str
    patient_id: str
    department: str
    stage: Stage
    payment_status: PaymentStatus
    balance_fen: int
    due_at: datetime | None
    card_locked: bool
    hold: Hold | None  # what suspends the visit's sanctions, if anything
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


class AgedBalance(BaseModel):
    bucket: AgeBucket
    visits: int
    balance_fen: int


class ReceivablesByAge(BaseModel):
    """`?by=age`: every bucket, youngest first (empty ones too); ages count from discharge."""

    as_of: datetime
    buckets: list[AgedBalance]
    total_fen: int


class DepartmentReceivable(BaseModel):
    department: str
    visits: int
    balance_fen: int
    buckets: list[AgedBalance]


class ReceivablesByDepartment(BaseModel):
    """`?by=department`: departments that are owed something, the largest balance first."""

    as_of: datetime
    departments: list[DepartmentReceivable]
    total_fen: int


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    operator: str  # the same as `actor` (the contract's word for the person who acted)
    action: str
    subject_type: str
    subject_id: str
    reason: str | None
    detail: dict[str, object]
