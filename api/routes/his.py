"""Clinical systems (HIS key): card reads, kiosk enrolment, registration, visit events."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import schemas as s
from api import services as svc
from api.deps import HisDep, SessionDep, StateDep
from api.errors import ApiError, responses
from api.metrics import EVENTS
from db.models import LedgerEntry, Patient, PatientCard, Visit
from db.pii import mask_card, mask_id_number, mask_name, mask_phone
from db.repositories import active_enrolment, audit, patient_service_status, utcnow
from workflows import contracts as c
from workflows.visit import VisitWorkflow

log = logging.getLogger("yihoufu.api.his")
router = APIRouter(prefix="/v1/his", tags=["clinical systems"])


@router.post("/patients", response_model=s.PatientFound, status_code=201,
             responses={200: {"model": s.PatientFound, "description": "an existing patient"}, **responses(401, 422)})
async def card_read(body: s.CardRead, state: StateDep, session: SessionDep, actor: HisDep) -> Any:
    """A card was read at a kiosk or window: find the patient, or create one."""
    pii = state.pii
    card_hash = pii.lookup(f"card:{body.card_type}", body.card_no)
    card = await session.scalar(select(PatientCard).where(PatientCard.card_type == body.card_type,
                                                          PatientCard.card_no_hash == card_hash))
    patient: Patient | None = None
    created = False
    if card is not None:
        patient = await session.get(Patient, card.patient_id)
    elif body.id_number:
        patient = await session.scalar(select(Patient).where(
            Patient.id_number_hash == pii.lookup("id_number", body.id_number)).limit(1))
    if patient is None:
        created = True
        patient = Patient(id=svc.new_id("pat_"), name_masked=mask_name(body.name), name_cipher=pii.encrypt(body.name),
                          insured_locally=bool(body.insured_locally), created_at=utcnow())
        session.add(patient)
        await session.flush()  # before the card that refers to it
    if body.id_number and not patient.id_number_hash:
        patient.id_number_hash = pii.lookup("id_number", body.id_number)
        patient.id_number_masked = mask_id_number(body.id_number)
        patient.id_number_cipher = pii.encrypt(body.id_number)
    if body.phone and not patient.phone_hash:
        patient.phone_hash = pii.lookup("phone", body.phone)
        patient.phone_masked = mask_phone(body.phone)
        patient.phone_cipher = pii.encrypt(body.phone)
    if body.insured_locally is not None:
        patient.insured_locally = body.insured_locally
    if card is None:
        session.add(PatientCard(patient_id=patient.id, card_type=body.card_type, card_no_hash=card_hash,
                                card_no_masked=mask_card(body.card_no), created_at=utcnow()))
    try:
        await session.flush()
    except IntegrityError:  # the same card read twice at once: the other request created it
        raise ApiError(409, "conflict", "this card is being registered by another request; retry") from None
    if created:
        audit(session, actor=actor, action="patient_created", subject_type="patient", subject_id=patient.id,
              card_type=body.card_type)
    found = await svc.patient_found(session, patient)
    return JSONResponse(found.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/patients/{patient_id}", response_model=s.PatientProfile, responses=responses(401, 404))
async def get_patient(patient_id: str, state: StateDep, session: SessionDep, _: HisDep,
                      credit: bool = Query(False, description="also ask the credit sources for the scores")) -> Any:
    patient = await svc.get_patient(session, patient_id)
    return await svc.profile(state, session, patient, with_credit=credit)


@router.post("/patients/{patient_id}/sms-code", response_model=s.SmsCodeSent, status_code=202,
             responses=responses(401, 404, 422, 429))
async def send_code(patient_id: str, body: s.SmsCodeRequest, state: StateDep, session: SessionDep, _: HisDep) -> Any:
    """Send a 6-digit enrolment code to the phone the patient gives at the kiosk."""
    await svc.get_patient(session, patient_id)
    return await svc.issue_code(state, session, body.phone, purpose="enrol", patient_id=patient_id)


@router.post("/patients/{patient_id}/enrollment", response_model=s.PatientProfile, status_code=201,
             responses=responses(401, 403, 404, 409, 422))
async def enrol(patient_id: str, body: s.EnrollRequest, state: StateDep, session: SessionDep, actor: HisDep) -> Any:
    patient = await svc.get_patient(session, patient_id)
    return await svc.enrol(state, session, patient, body, channel="kiosk", actor=actor)


@router.delete("/patients/{patient_id}/enrollment", response_model=s.Unenrolled, responses=responses(401, 404, 409))
async def unenrol(patient_id: str, session: SessionDep, actor: HisDep) -> Any:
    patient = await svc.get_patient(session, patient_id)
    return await svc.unenrol(session, patient, actor=actor)


@router.post("/visits", response_model=s.VisitOut, status_code=201,
             responses={200: {"model": s.VisitOut, "description": "the same registration again"},
                        **responses(401, 404, 409, 422)})
async def register(body: s.RegisterVisit, state: StateDep, session: SessionDep, actor: HisDep) -> Any:
    """Registration (挂号): starts the visit's workflow and books the registration fee."""
    request_hash = svc.body_hash(body)
    existing = await session.get(Visit, body.visit_id)
    if existing is not None:
        if existing.request_hash != request_hash:
            raise ApiError(409, "visit_exists", f"visit {body.visit_id} was registered with different details")
        await svc.ensure_workflow(state, existing)
        return JSONResponse((await svc.visit_view(session, existing)).model_dump(mode="json"), status_code=200)
    patient = await svc.get_patient(session, body.patient_id)
    if await active_enrolment(session, patient.id) is None:
        raise ApiError(409, "not_enrolled", "the patient is not enrolled in post-pay: enrol first")
    svc.require_normal_service(await patient_service_status(session, patient.id))
    now = utcnow()
    visit = Visit(id=body.visit_id, patient_id=patient.id, department=body.department, doctor=body.doctor,
                  channel=body.channel, registration_fee_fen=body.registration_fee_fen, request_hash=request_hash,
                  stage="registered", payment_status="open", discharged_at=None, arrears_at=None, due_at=None,
                  created_at=now, updated_at=now)
    session.add(visit)
    try:
        await session.flush()  # the visit row first: the ledger line refers to it
    except IntegrityError:
        raise ApiError(409, "visit_exists", f"visit {body.visit_id} is being registered by another request") from None
    if body.registration_fee_fen > 0:  # the workflow books it too, under the same key: once in all
        session.add(LedgerEntry(
            idempotency_key=f"visit-{visit.id}:registration", visit_id=visit.id, patient_id=patient.id,
            kind="charge", amount_fen=body.registration_fee_fen, code="REG", name="挂号费", category="other",
            unit_price_fen=body.registration_fee_fen, quantity=1, created_at=now))
    audit(session, actor=actor, action="registered", subject_type="visit", subject_id=visit.id, at=now,
          channel=body.channel)
    await session.commit()  # the row exists before its workflow does
    await svc.ensure_workflow(state, visit)
    return await svc.visit_view(session, visit)


async def _visit(session: SessionDep, visit_id: str) -> Visit:
    visit = await session.get(Visit, visit_id)
    if visit is None:
        raise ApiError(404, "visit_not_found", f"no visit {visit_id}")
    return visit


@router.get("/visits/{visit_id}", response_model=s.VisitOut, responses=responses(401, 404))
async def get_visit(visit_id: str, session: SessionDep, _: HisDep) -> Any:
    return await svc.visit_view(session, await _visit(session, visit_id))


@router.post("/visits/{visit_id}/events", response_model=s.VisitOut, responses=responses(401, 404, 409, 422))
async def record_event(visit_id: str, body: s.VisitEventIn, state: StateDep, session: SessionDep, _: HisDep,
                       response: Response) -> Any:
    """One clinical event. Refused with 409 `invalid_transition` where the stage does not allow it."""
    visit = await _visit(session, visit_id)
    key = f"event:{visit_id}:{body.event_id}"
    request_hash = svc.body_hash(body)
    if (stored := await svc.replay(session, key, request_hash, code="event_id_reused")) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    await session.commit()  # release the database while the workflow works
    inp = c.RecordEventInput(
        event_id=body.event_id, type=str(body.type), occurred_at=body.occurred_at,
        items=[c.ItemInput(item_id=i.item_id, code=i.code, name=i.name, category=str(i.category),
                           unit_price_fen=i.unit_price_fen, quantity=i.quantity) for i in body.items or []],
        item_ids=list(body.item_ids or []), skin_test_required=bool(body.skin_test_required),
        result=body.result, channel=body.channel, room=body.room)
    try:
        try:
            handle = state.temporal.get_workflow_handle(c.workflow_id(visit_id))
            await handle.execute_update(VisitWorkflow.record_event, inp, id=body.event_id)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            # not running: never started (a registration cut short), or closed; start it and ask once more
            handle = await svc.ensure_workflow(state, visit)
            await handle.execute_update(VisitWorkflow.record_event, inp, id=body.event_id)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type in (
                "invalid_transition", "unknown_item", "duplicate_item", "invalid_item"):
            info = cause.details[0] if cause.details else {}
            code = "invalid_transition" if cause.type == "invalid_transition" else cause.type
            raise ApiError(409, code, f"{cause.message} (stage {info.get('stage')}; allowed: "
                           f"{', '.join(info.get('allowed', [])) or 'none'})",
                           stage=info.get("stage"), allowed=info.get("allowed", [])) from None
        if isinstance(cause, ApplicationError) and cause.type == "invalid_request":
            raise ApiError(422, "invalid_request", cause.message) from None
        raise
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise ApiError(409, "invalid_transition", "the visit is closed: its bill is settled",
                           stage=visit.stage, allowed=[]) from None
        raise
    EVENTS.labels(str(body.type)).inc()
    await session.refresh(visit)
    view = await svc.visit_view(session, visit)
    data = view.model_dump(mode="json")
    svc.remember(session, key, request_hash, 200, data)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent retry of the same event stored the answer first
        await session.rollback()
    return JSONResponse(data, status_code=200)
