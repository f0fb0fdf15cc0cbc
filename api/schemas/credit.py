"""The credit platform's calls to us: an objection (异议) to a record we reported."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field

from api.schemas.common import Request

PlatformId = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]


class CreditObjectionIn(Request):
    """`POST /v1/credit/objections`, signed by the platform like our calls to it."""

    objection_id: PlatformId  # the platform's: a retry with the same id is answered once
    record_id: PlatformId  # the record objected to (the id the platform gave our report)
    account_no: str = Field(min_length=1, max_length=64)  # our id of the debt, as reported
    reason: str = Field(min_length=1, max_length=500)
    raised_at: AwareDatetime


class CreditObjectionOut(BaseModel):
    objection_id: str
    visit_id: str
    dispute_id: str  # the dispute opened on the visit; its resolution answers the objection
    status: Literal["open", "corrected", "confirmed"]
