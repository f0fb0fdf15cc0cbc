"""Clinical systems (HIS key): card reads, kiosk enrolment, registration, visit events."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query
from fastapi.responses import JSONResponse

from api import codes, enrolment, oversight, patients, schemas as s, services as svc, visit_events, visits
from api.deps import HisDep, SessionDep, StateDep
from api.errors import responses
from db.models import Visit
from db.session import read_only
from ledger.errors import VisitNotFound

log = logging.getLogger("yihoufu.api.his")
router = APIRouter(prefix="/v1/his", tags=["clinical systems"])


@router.post(
    "/patients",
    response_model=s.PatientFound,
    status_code=201,
    responses={200: {"model": s.PatientFound, "description": "an existing patient"}, **responses(401, 409, 422)},
)
async def card_read(body: s.CardRead, state: StateDep, session: SessionDep, actor: HisDep) -> Any:
    """A card was read at a kiosk or window: find the patient, or create one."""
    found, created = await patients.card_read(state, session, body, actor=actor)
    return JSONResponse(found.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/patients/{patient_id}", response_model=s.PatientProfile, responses=responses(401, 404))
async def get_patient(
    patient_id: str,
    state: StateDep,
    session: SessionDep,
    _: HisDep,
    credit: bool = Query(False, description="also ask the credit sources for the scores"),
) -> Any:
    return await patients.profile(state, session, await patients.get_patient(session, patient_id), with_credit=credit)


@router.post(
    "/patients/{patient_id}/sms-code",
    response_model=s.SmsCodeSent,
    status_code=202,
    responses=responses(401, 404, 422, 429),
)
async def send_code(patient_id: str, body: s.SmsCodeRequest, state: StateDep, session: SessionDep, _: HisDep) -> Any:
    """Send a 6-digit enrolment code to the phone the patient gives at the kiosk."""
    await patients.get_patient(session, patient_id)
    return await codes.issue_code(state, session, body.phone, purpose="enrol", patient_id=patient_id)


@router.post(
    "/patients/{patient_id}/enrollment",
    response_model=s.PatientProfile,
    status_code=201,
    responses=responses(401, 403, 404, 409, 422),
)
async def enrol(patient_id: str, body: s.EnrollRequest, state: StateDep, session: SessionDep, actor: HisDep) -> Any:
    patient = await patients.get_patient(session, patient_id)
    return await enrolment.enrol(state, session, patient, body, channel="kiosk", actor=actor)


@router.delete("/patients/{patient_id}/enrollment", response_model=s.Unenrolled, responses=responses(401, 404, 409))
async def unenrol(patient_id: str, session: SessionDep, actor: HisDep) -> Any:
    return await enrolment.unenrol(session, await patients.get_patient(session, patient_id), actor=actor)


@router.post(
    "/visits",
    response_model=s.VisitOut,
    status_code=201,
    responses={
        200: {"model": s.VisitOut, "description": "the same registration again"},
        **responses(401, 404, 409, 422, 503),
    },
)
async def register(body: s.RegisterVisit, state: StateDep, session: SessionDep, actor: HisDep) -> Any:
    """Registration (挂号): starts the visit's workflow and books the registration fee."""
    view, created = await visits.register(state, session, body, actor=actor)
    return JSONResponse(view.model_dump(mode="json"), status_code=201 if created else 200)


async def _visit(session: SessionDep, visit_id: str) -> Visit:
    visit = await session.get(Visit, visit_id)
    if visit is None:
        raise VisitNotFound(f"no visit {visit_id}")
    return visit


@router.get("/visits/{visit_id}", response_model=s.VisitOut, responses=responses(401, VisitNotFound))
async def get_visit(visit_id: str, session: SessionDep, _: HisDep) -> Any:
    await read_only(session)
    return await svc.visit_view(session, await _visit(session, visit_id))


@router.post("/visits/{visit_id}/events", response_model=s.VisitOut, responses=responses(401, 404, 409, 422, 503))
async def record_event(
    visit_id: str,
    body: Annotated[s.VisitEventIn, Body(openapi_examples=s.EVENT_EXAMPLES)],
    state: StateDep,
    session: SessionDep,
    _: HisDep,
) -> Any:
    """One clinical event: a body per `type`, with exactly that type's fields (422 otherwise).
    Refused with 409 `invalid_transition` where the stage does not allow it."""
    await read_only(session)  # the answer is written in a transaction of its own, after the update
    data, status = await visit_events.record_event(state, session, await _visit(session, visit_id), body)
    return JSONResponse(data, status_code=status)


@router.post(
    "/visits/{visit_id}/disputes",
    response_model=s.DisputeOpened,
    status_code=201,
    responses=responses(401, VisitNotFound, 409, 422, 503),
)
async def dispute(
    visit_id: str,
    body: s.DisputeIn,
    state: StateDep,
    session: SessionDep,
    actor: HisDep,
    clerk: Annotated[
        str | None,
        Header(alias="X-Operator-Id", max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@\-]*$"),
    ] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200)] = None,
) -> Any:
    """The window opens a dispute (申诉) for the patient (`X-Operator-Id`: the clerk, recorded).
    One open dispute per visit (409 `dispute_open`); a retry with the same Idempotency-Key
    gets the first answer and the same dispute_id."""
    visit = await _visit(session, visit_id)
    return await oversight.open_dispute(
        state,
        session,
        visit,
        body,
        opener=f"his:{clerk or actor}",
        keys=f"his:{actor}",
        idempotency_key=idempotency_key,
    )
