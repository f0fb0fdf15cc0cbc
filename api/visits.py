"""Registration (挂号): the visit's row and its registration fee (through the ledger) in one
transaction, committed before the visit's workflow starts; a repeat answers the same visit."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api import schemas as s
from api.deps import AppState, commit_before_call
from api.enrolment import require_normal_service
from api.errors import ApiError
from api.patients import get_patient
from api.services import body_hash, ensure_workflow, visit_view
from db.models import Visit
from db.repositories import active_enrolment, audit, patient_service_status, utcnow
from domain.eligibility import EnrolmentRefusal
from domain.policy import PaymentStatus
from domain.visit import Stage
from ledger import charges


async def _new_visit(session: AsyncSession, body: s.RegisterVisit, request_hash: str, *, actor: str) -> Visit:
    """The visit and its registration fee, for an enrolled patient in normal service."""
    patient = await get_patient(session, body.patient_id)
    if await active_enrolment(session, patient.id) is None:
        raise ApiError(409, EnrolmentRefusal.not_enrolled, "the patient is not enrolled in post-pay: enrol first")
    require_normal_service(await patient_service_status(session, patient.id))
    now = utcnow()
    visit = Visit(
        id=body.visit_id,
        patient_id=patient.id,
        department=body.department,
        doctor=body.doctor,
        channel=body.channel,
        registration_fee_fen=body.registration_fee_fen,
        request_hash=request_hash,
        stage=Stage.registered,
        payment_status=PaymentStatus.open,
        discharged_at=None,
        arrears_at=None,
        due_at=None,
        created_at=now,
        updated_at=now,
    )
    session.add(visit)
    try:
        await session.flush()  # the visit row first: the ledger line refers to it
    except IntegrityError:
        raise ApiError(409, "visit_exists", f"visit {body.visit_id} is being registered by another request") from None
    await charges.book_registration_fee(
        session, visit_id=visit.id, patient_id=patient.id, fee_fen=body.registration_fee_fen
    )
    audit(
        session,
        actor=actor,
        action="registered",
        subject_type="visit",
        subject_id=visit.id,
        at=now,
        channel=body.channel,
    )
    return visit


async def register(
    state: AppState, session: AsyncSession, body: s.RegisterVisit, *, actor: str
) -> tuple[s.VisitOut, bool]:
    """The visit registered and its workflow started; True when new (False: the same
    registration again, its workflow started if it never was)."""
    request_hash = body_hash(body)
    existing = await session.get(Visit, body.visit_id)
    if existing is not None:
        if existing.request_hash != request_hash:
            raise ApiError(409, "visit_exists", f"visit {body.visit_id} was registered with different details")
        await ensure_workflow(state, existing)
        return await visit_view(session, existing), False
    visit = await _new_visit(session, body, request_hash, actor=actor)
    await commit_before_call(session)  # the row exists before its workflow does
    await ensure_workflow(state, visit)
    return await visit_view(session, visit), True
