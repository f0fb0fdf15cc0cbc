"""Enrolment in post-pay: the agreement, the eligibility rules (domain.eligibility) on the
credit sources' scores, the phone's code; and leaving, once nothing is owed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api import schemas as s
from api.codes import use_code
from api.deps import AppState
from api.errors import ApiError
from api.patients import credit_scores, profile, revoke_sessions
from db.models import Enrolment, Patient, Visit
from db.pii import mask_phone
from db.repositories import active_enrolment, audit, open_visits, utcnow
from domain import eligibility
from domain.eligibility import EnrolmentRefusal as Refusal
from domain.policy import ServiceStatus
from domain.visit import Stage


def _already_enrolled() -> ApiError:
    return ApiError(409, Refusal.already_enrolled, "the patient is already enrolled in post-pay")


async def _eligible(state: AppState, session: AsyncSession, patient: Patient) -> eligibility.EligibilityDecision:
    """The rules' decision on the patient's insurance and scores; refused (403) when none is met."""
    bank, sesame = await credit_scores(state, session, patient)
    decision = eligibility.decide(
        eligibility.EligibilityFacts(insured_locally=patient.insured_locally, bank_score=bank, sesame_score=sesame),
        eligibility.Thresholds(
            bank_score=state.settings.bank_score_threshold, sesame_score=state.settings.sesame_score_threshold
        ),
    )
    if not decision.eligible:
        raise ApiError(
            403,
            Refusal.not_eligible,
            "none of the eligibility rules is met: " + "; ".join(decision.reasons()),
            reasons=decision.reasons(),
            rules=_rules(decision),
        )
    return decision


def _rules(decision: eligibility.EligibilityDecision) -> list[dict[str, Any]]:
    return [{"rule": str(o.rule), "passed": o.passed, "reason": o.reason} for o in decision.outcomes]


async def enrol(
    state: AppState, session: AsyncSession, patient: Patient, body: s.EnrollRequest, *, channel: str, actor: str
) -> s.PatientProfile:
    if await active_enrolment(session, patient.id) is not None:
        raise _already_enrolled()
    if body.agreement_version != state.settings.agreement_version:
        raise ApiError(
            409,
            Refusal.agreement_outdated,
            f"the current service agreement is version {state.settings.agreement_version}",
            current_version=state.settings.agreement_version,
        )
    decision = await _eligible(state, session, patient)
    await use_code(state, session, body.phone, body.code, purpose="enrol")
    now = utcnow()
    phone_hash = state.pii.lookup("phone", body.phone)
    session.add(
        Enrolment(
            patient_id=patient.id,
            active_patient_id=patient.id,
            agreement_version=body.agreement_version,
            channel=channel,
            phone_hash=phone_hash,
            phone_masked=mask_phone(body.phone),
            eligibility_rule=str(decision.passed_rule),
            eligibility={"rules": _rules(decision)},
            enrolled_at=now,
            unenrolled_at=None,
        )
    )
    patient.phone_hash = phone_hash
    patient.phone_masked = mask_phone(body.phone)
    patient.phone_cipher = state.pii.encrypt(body.phone)
    audit(
        session,
        actor=actor,
        action="enrolled",
        subject_type="patient",
        subject_id=patient.id,
        at=now,
        channel=channel,
        agreement_version=body.agreement_version,
        rule=str(decision.passed_rule),
    )
    try:
        await session.flush()
    except IntegrityError:  # enrolled by a concurrent request
        raise _already_enrolled() from None
    return await profile(state, session, patient, with_credit=False)


async def unenrol(session: AsyncSession, patient: Patient, *, actor: str, end_sign_ins: bool = False) -> s.Unenrolled:
    """Leave post-pay, once nothing is owed and no visit is in progress; `end_sign_ins`: every
    sign-in of this patient in the app ends with the service."""
    enrolment = await active_enrolment(session, patient.id)
    if enrolment is None:
        raise ApiError(409, Refusal.not_enrolled, "the patient is not enrolled in post-pay")
    unpaid = await open_visits(session, patient.id)
    if unpaid:
        owed = sum(t.balance_fen for _, t in unpaid)
        raise ApiError(
            409,
            Refusal.outstanding_balance,
            f"{len(unpaid)} visit(s) still owe {owed} fen",
            balance_fen=owed,
            visit_ids=[v.id for v, _ in unpaid],
        )
    running = await session.scalar(
        select(func.count()).select_from(Visit).where(Visit.patient_id == patient.id, Visit.stage != Stage.discharged)
    )
    if running:
        raise ApiError(409, Refusal.outstanding_balance, "a visit is still in progress")
    enrolment.active_patient_id = None
    enrolment.unenrolled_at = utcnow()
    audit(session, actor=actor, action="unenrolled", subject_type="patient", subject_id=patient.id)
    if end_sign_ins:
        await revoke_sessions(session, patient.id)
    return s.Unenrolled(patient_id=patient.id, enrolled=False)


def require_normal_service(status: ServiceStatus) -> None:
    if status is not ServiceStatus.normal:
        raise ApiError(
            409,
            Refusal.service_suspended,
            f"post-pay is suspended while the patient is in {status}",
            service_status=str(status),
        )
