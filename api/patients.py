"""Patients: found or created from a card read, their profiles (with the credit sources'
scores when asked), the phones they are linked to, and the app's sign-ins and identity."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api import codes, schemas as s, tokens
from api.deps import AppState, commit_before_call
from api.errors import ApiError
from api.services import new_id
from db.models import AuditLog, Enrolment, Patient, PatientCard, PatientSession
from db.pii import Pii, mask_card, mask_id_number, mask_name, mask_phone
from db.repositories import active_enrolment, audit, card_locked, patient_service_status, utcnow

IDENTITY_TRIES = 5  # wrong tries an hour per sign-in


async def get_patient(session: AsyncSession, patient_id: str) -> Patient:
    patient = await session.get(Patient, patient_id)
    if patient is None:
        raise ApiError(404, "patient_not_found", f"no patient {patient_id}")
    return patient


async def linked_patients(session: AsyncSession, phone_hash: str, also: str | None = None) -> list[Patient]:
    """The patients a phone is linked to (a parent's children, say), oldest first: enrolled
    with it, or recorded with it by the hospital; `also` the one a sign-in bound by identity."""
    enrolled = select(Enrolment.patient_id).where(
        Enrolment.phone_hash == phone_hash, Enrolment.active_patient_id.is_not(None)
    )
    linked = or_(Patient.phone_hash == phone_hash, Patient.id.in_(enrolled), *([Patient.id == also] if also else []))
    return list((await session.scalars(select(Patient).where(linked).order_by(Patient.created_at, Patient.id))).all())


async def patient_found(session: AsyncSession, patient: Patient) -> s.PatientFound:
    return s.PatientFound(
        patient_id=patient.id,
        enrolled=await active_enrolment(session, patient.id) is not None,
        service_status=await patient_service_status(session, patient.id),
    )


# --- card reads ----------------------------------------------------------------------


async def _find(session: AsyncSession, pii: Pii, body: s.CardRead, card: PatientCard | None) -> Patient | None:
    if card is not None:
        return await session.get(Patient, card.patient_id)
    if body.id_number:
        return await session.scalar(
            select(Patient).where(Patient.id_number_hash == pii.lookup("id_number", body.id_number)).limit(1)
        )
    return None


def _fill(patient: Patient, pii: Pii, body: s.CardRead) -> None:
    """What the card read tells that the record lacks (an ID number, a phone), and the insurance."""
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
    if body.insurance_psn_no:
        patient.insurance_psn_no = body.insurance_psn_no


async def card_read(
    state: AppState, session: AsyncSession, body: s.CardRead, *, actor: str
) -> tuple[s.PatientFound, bool]:
    """A card was read at a kiosk or window: the patient found, or created (True)."""
    pii = state.pii
    card_hash = pii.lookup(f"card:{body.card_type}", body.card_no)
    card = await session.scalar(
        select(PatientCard).where(PatientCard.card_type == body.card_type, PatientCard.card_no_hash == card_hash)
    )
    patient = await _find(session, pii, body, card)
    created = patient is None
    if patient is None:
        patient = Patient(
            id=new_id("pat_"),
            name_masked=mask_name(body.name),
            name_cipher=pii.encrypt(body.name),
            insured_locally=bool(body.insured_locally),
            created_at=utcnow(),
        )
        session.add(patient)
        await session.flush()  # before the card that refers to it
    _fill(patient, pii, body)
    if card is None:
        session.add(
            PatientCard(
                patient_id=patient.id,
                card_type=body.card_type,
                card_no_hash=card_hash,
                card_no_masked=mask_card(body.card_no),
                created_at=utcnow(),
            )
        )
    try:
        await session.flush()
    except IntegrityError:  # the same card read twice at once: the other request created it
        raise ApiError(409, "conflict", "this card is being registered by another request; retry") from None
    if created:
        audit(
            session,
            actor=actor,
            action="patient_created",
            subject_type="patient",
            subject_id=patient.id,
            card_type=body.card_type,
        )
    return await patient_found(session, patient), created


# --- profiles ------------------------------------------------------------------------


async def credit_scores(state: AppState, session: AsyncSession, patient: Patient) -> tuple[int | None, int | None]:
    """Asks the credit sources, with no transaction open across the call."""
    await commit_before_call(session)
    if not patient.id_number_cipher:
        return None, None
    return await state.credit.scores(id_number=state.pii.decrypt(patient.id_number_cipher))


async def profile(state: AppState, session: AsyncSession, patient: Patient, *, with_credit: bool) -> s.PatientProfile:
    enrolment = await active_enrolment(session, patient.id)
    credit = None
    if with_credit:
        bank, sesame = await credit_scores(state, session, patient)
        credit = s.CreditScores(bank_score=bank, sesame_score=sesame)
    return s.PatientProfile(
        patient_id=patient.id,
        name=patient.name_masked,
        id_number=patient.id_number_masked,
        phone=patient.phone_masked,
        enrolled=enrolment is not None,
        enrollment=None
        if enrolment is None
        else s.EnrollmentView(
            agreement_version=enrolment.agreement_version,
            channel=enrolment.channel,
            phone=enrolment.phone_masked,
            eligibility_rule=enrolment.eligibility_rule,
            enrolled_at=enrolment.enrolled_at,
        ),
        service_status=await patient_service_status(session, patient.id),
        card_locked=await card_locked(session, patient.id),
        credit=credit,
    )


# --- the app's sign-ins ----------------------------------------------------------------


async def login(state: AppState, session: AsyncSession, body: s.LoginRequest) -> s.LoginOut:
    """Sign in with a login code; bound to the phone's patient when it has exactly one."""
    await codes.use_code(state, session, body.phone, body.code, purpose="login")
    phone_hash = state.pii.lookup("phone", body.phone)
    linked = await linked_patients(session, phone_hash)
    patient_id = linked[0].id if len(linked) == 1 else None
    return signed_in(state, session, phone_hash, patient_id, utcnow() + state.settings.patient_token_ttl)


def signed_in(
    state: AppState, session: AsyncSession, phone_hash: str, patient_id: str | None, expires_at: datetime
) -> s.LoginOut:
    now = utcnow()
    row = PatientSession(
        id=tokens.new_session_id(),
        phone_hash=phone_hash,
        patient_id=patient_id,
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
    )
    session.add(row)
    token = tokens.issue(state.settings.data_key, row.id, issued_at=now, expires_at=expires_at)
    return s.LoginOut(token=token, patient_id=patient_id, expires_at=expires_at)


async def choose_profile(state: AppState, session: AsyncSession, login: PatientSession, patient_id: str) -> s.LoginOut:
    """A token bound to one of the phone's patients, expiring with the sign-in it came from."""
    if patient_id not in {p.id for p in await linked_patients(session, login.phone_hash, login.patient_id)}:
        raise ApiError(404, "patient_not_found", f"no patient {patient_id} is linked to this phone")
    return signed_in(state, session, login.phone_hash, patient_id, login.expires_at)


async def profile_choices(session: AsyncSession, login: PatientSession) -> list[s.ProfileChoice]:
    return [
        s.ProfileChoice(
            patient_id=p.id,
            name=p.name_masked,
            current=p.id == login.patient_id,
            enrolled=await active_enrolment(session, p.id) is not None,
        )
        for p in await linked_patients(session, login.phone_hash, login.patient_id)
    ]


def sign_out(login: PatientSession) -> None:
    login.revoked_at = utcnow()


async def revoke_sessions(session: AsyncSession, patient_id: str) -> None:
    """Every sign-in of this patient ends (with the service)."""
    await session.execute(
        update(PatientSession)
        .where(PatientSession.patient_id == patient_id, PatientSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def bind_identity(
    state: AppState, session: AsyncSession, login: PatientSession, body: s.IdentityRequest
) -> s.IdentityOut:
    """Link the signed-in phone to the hospital's record of this person (name + ID number);
    IDENTITY_TRIES wrong tries an hour per sign-in, so ID numbers cannot be guessed through it."""
    failures = await session.scalar(
        select(func.count())
        .select_from(AuditLog)
        .where(
            AuditLog.subject_type == "session",
            AuditLog.subject_id == login.id,
            AuditLog.action == "identity_failed",
            AuditLog.at > utcnow() - timedelta(hours=1),
        )
    )
    if (failures or 0) >= IDENTITY_TRIES:
        raise ApiError(
            429, "rate_limited", "too many wrong tries; try again in an hour", headers={"Retry-After": "3600"}
        )
    candidates = (
        await session.scalars(
            select(Patient).where(Patient.id_number_hash == state.pii.lookup("id_number", body.id_number))
        )
    ).all()
    match = next((p for p in candidates if state.pii.decrypt(p.name_cipher) == body.name.strip()), None)
    if match is None:
        audit(session, actor="patient", action="identity_failed", subject_type="session", subject_id=login.id)
        raise ApiError(  # the wrong try is counted even though the request fails
            404, "patient_not_found", "no hospital record matches this name and ID number", keeps_writes=True
        )
    if login.patient_id not in (None, match.id):
        raise ApiError(409, "identity_conflict", "this phone is already linked to another patient")
    if match.phone_hash and match.phone_hash != login.phone_hash and await active_enrolment(session, match.id):
        raise ApiError(409, "identity_conflict", "this patient is enrolled with another phone")
    login.patient_id = match.id
    audit(session, actor="patient", action="identity_bound", subject_type="patient", subject_id=match.id)
    return s.IdentityOut(patient_id=match.id)
