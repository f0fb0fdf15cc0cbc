"""The hospital's systems (HIS): patients at the desk, enrolment, visits and their events."""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, StrictBool, StrictInt, model_validator

from api.schemas.common import (
    Fen,
    FenOrZero,
    Id,
    IdNumber,
    Phone,
    Request,
    SmsCode,
    Text40,
    Text50,
    Text64,
    Text100,
    Text200,
)
from domain.money import MAX_AMOUNT_FEN
from domain.policy import ServiceStatus
from domain.visit import Category, EventType

# --- patients ------------------------------------------------------------------------


class CardRead(Request):
    card_type: Literal["insurance_card", "id_card", "visit_card"]
    card_no: Annotated[str, Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9\-]+$")]
    name: Text50
    id_number: IdNumber | None = None
    phone: Phone | None = None
    insured_locally: StrictBool | None = None
    # 人员编号 (psn_no): the patient's number at the insurance bureau, as the HIS's 1101 answered
    # at the card read; the bureau's transactions carry it (unset: the patient id stands for it)
    insurance_psn_no: Annotated[str, Field(min_length=1, max_length=30, pattern=r"^[0-9A-Za-z]+$")] | None = None


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
    agreement_version: Text40
    phone: Phone
    code: SmsCode


class Unenrolled(BaseModel):
    patient_id: str
    enrolled: bool


# --- visits --------------------------------------------------------------------------


class RegisterVisit(Request):
    visit_id: Id
    patient_id: Id
    department: Text100
    channel: Literal["kiosk", "window", "app"]
    doctor: Text100 | None = None
    registration_fee_fen: FenOrZero = 0


class OrderItem(Request):
    item_id: Id
    code: Text64
    name: Text200
    category: Category
    unit_price_fen: Fen
    quantity: Annotated[StrictInt, Field(ge=1, le=10_000)]

    @model_validator(mode="after")
    def _amount(self) -> OrderItem:
        if self.unit_price_fen * self.quantity > MAX_AMOUNT_FEN:
            raise ValueError(f"unit_price_fen x quantity exceeds {MAX_AMOUNT_FEN} fen")
        return self


# --- visit events: one body per event type, a union on `type` -------------------------

CheckInChannel = Literal["app", "nurse_station"]
Items = Annotated[list[OrderItem], Field(min_length=1, max_length=200)]
ItemIds = Annotated[list[Id], Field(min_length=1, max_length=200)]
# the fields some event types take; the flat body of v1.0 had them all, None where not given
EVENT_OPTIONAL = ("channel", "room", "items", "item_ids", "skin_test_required", "result")
_BASE = frozenset({"event_id", "type", "occurred_at"})
_AT = "2026-03-02T09:15:00+08:00"
_DRUG = {"item_id": "rx-1", "code": "J01CA04", "name": "阿莫西林胶囊 0.25g", "category": "drug"}


def _example(kind: EventType, **fields: Any) -> ConfigDict:
    body = {"event_id": f"evt-{kind.value.replace('_', '-')}-1", "type": kind.value, "occurred_at": _AT, **fields}
    return ConfigDict(json_schema_extra={"examples": [body]})


class _Event(Request):
    event_id: Id
    type: EventType
    occurred_at: AwareDatetime = Field(description="when it happened in the HIS, with its offset")


class CheckedInEvent(_Event):
    """签到: the patient checked in for the doctor, in the app or at the nurse station."""

    model_config = _example(EventType.checked_in, channel="nurse_station")
    type: Literal[EventType.checked_in]
    channel: CheckInChannel


class CalledEvent(_Event):
    """叫号: the patient was called to a room."""

    model_config = _example(EventType.called, room="内科 3 诊室")
    type: Literal[EventType.called]
    room: Text50 | None = None


class ConsultationStartedEvent(_Event):
    """The doctor started the consultation."""

    model_config = _example(EventType.consultation_started)
    type: Literal[EventType.consultation_started]


class ConsultationEndedEvent(_Event):
    """The doctor ended the consultation (needed before results come back)."""

    model_config = _example(EventType.consultation_ended)
    type: Literal[EventType.consultation_ended]


class OrdersPlacedEvent(_Event):
    """检查/检验/治疗: the doctor ordered items; each is charged."""

    model_config = _example(
        EventType.orders_placed,
        items=[
            {
                "item_id": "ex-1",
                "code": "CBC",
                "name": "血常规",
                "category": "lab",
                "unit_price_fen": 2500,
                "quantity": 1,
            }
        ],
    )
    type: Literal[EventType.orders_placed]
    items: Items


class OrdersCancelledEvent(_Event):
    """Ordered items cancelled before they were performed; their charges are reversed."""

    model_config = _example(EventType.orders_cancelled, item_ids=["ex-1"])
    type: Literal[EventType.orders_cancelled]
    item_ids: ItemIds


class ResultsReadyEvent(_Event):
    """Results of ordered items are back (after consultation_ended; the stage does not move)."""

    model_config = _example(EventType.results_ready, item_ids=["ex-1"])
    type: Literal[EventType.results_ready]
    item_ids: ItemIds


class PrescribedEvent(_Event):
    """处方: drugs prescribed; `skin_test_required` when one needs a skin test first."""

    model_config = _example(
        EventType.prescribed, items=[{**_DRUG, "unit_price_fen": 1250, "quantity": 2}], skin_test_required=True
    )
    type: Literal[EventType.prescribed]
    items: Items
    skin_test_required: StrictBool | None = None


class SkinTestResultEvent(_Event):
    """皮试: the skin test's result."""

    model_config = _example(EventType.skin_test_result, result="negative")
    type: Literal[EventType.skin_test_result]
    result: Literal["positive", "negative"]


class DispensedEvent(_Event):
    """取药: the pharmacy handed out the drugs."""

    model_config = _example(EventType.dispensed)
    type: Literal[EventType.dispensed]


class InfusionStartedEvent(_Event):
    """输液: the infusion started."""

    model_config = _example(EventType.infusion_started)
    type: Literal[EventType.infusion_started]


class InfusionFinishedEvent(_Event):
    """The infusion finished."""

    model_config = _example(EventType.infusion_finished)
    type: Literal[EventType.infusion_finished]


class DischargedEvent(_Event):
    """离院: the patient left; the bill is final and the payment deadline starts."""

    model_config = _example(EventType.discharged)
    type: Literal[EventType.discharged]


VisitEvent = Annotated[
    CheckedInEvent
    | CalledEvent
    | ConsultationStartedEvent
    | ConsultationEndedEvent
    | OrdersPlacedEvent
    | OrdersCancelledEvent
    | ResultsReadyEvent
    | PrescribedEvent
    | SkinTestResultEvent
    | DispensedEvent
    | InfusionStartedEvent
    | InfusionFinishedEvent
    | DischargedEvent,
    Field(discriminator="type"),
]
EVENT_MODELS: dict[EventType, type[_Event]] = {
    typing.get_args(m.model_fields["type"].annotation)[0]: m for m in typing.get_args(typing.get_args(VisitEvent)[0])
}
# which fields each event type takes, and which of them it needs (from the models above)
EVENT_FIELDS: dict[EventType, set[str]] = {
    kind: set(m.model_fields) - _BASE for kind, m in EVENT_MODELS.items() if set(m.model_fields) - _BASE
}
REQUIRED_FIELDS: dict[EventType, set[str]] = {
    kind: {n for n, f in m.model_fields.items() if f.is_required()} - _BASE
    for kind, m in EVENT_MODELS.items()
    if {n for n, f in m.model_fields.items() if f.is_required()} - _BASE
}
# /docs: a body to try per event type
EVENT_EXAMPLES: dict[str, Any] = {
    kind.value: {"summary": kind.value, "value": m.model_config["json_schema_extra"]["examples"][0]}  # type: ignore[index]
    for kind, m in EVENT_MODELS.items()
}


class VisitEventIn(RootModel[VisitEvent]):
    """A clinical event: one body per `type`, each with exactly its fields."""

    def flat(self) -> dict[str, Any]:
        """The body as JSON in the shape of v1.0's flat body (every optional field, None where
        absent), so the idempotency hash of a retried event is the one stored before the union."""
        return {**dict.fromkeys(EVENT_OPTIONAL), **self.root.model_dump(mode="json")}
