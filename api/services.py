"""What the routes share: reading a visit as the contract shows it, starting its workflow,
patient profiles, SMS codes and enrolment. Thin: rules live in domain/, SQL in db/."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api import schemas as s
from api.deps import AppState
from api.errors import ApiError
from db.models import (
    Enrolment, IdempotencyRecord, InsuranceSettlement, Patient, Payment, Receipt, Refund, SmsCode, Visit,
    VisitEvent,
)
from db.pii import mask_phone
from db.repositories import (
    active_enrolment, audit, card_locked, ledger_lines, open_visits, patient_service_status, utcnow, visit_totals,
)
from domain import eligibility
from domain.policy import ServiceStatus
from integrations.aliyun_sms import SmsRejected, SmsThrottled
from integrations.sms import OutgoingSms
from workflows import contracts as c
from workflows.visit import VisitWorkflow


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


def body_hash(model: BaseModel | dict[str, Any]) -> str:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- idempotency ---------------------------------------------------------------------


async def replay(session: AsyncSession, key: str, request_hash: str, *, code: str = "idempotency_key_reused"
                 ) -> IdempotencyRecord | None:
    """The stored answer for a retried request, or None for a new one."""
    record = await session.get(IdempotencyRecord, key)
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise ApiError(409, code, "this key was already used with a different request body")
    return record


def remember(session: AsyncSession, key: str, request_hash: str, status: int, response: dict[str, Any]) -> None:
    session.add(IdempotencyRecord(key=key, request_hash=request_hash, status_code=status, response=response,
                                  created_at=utcnow()))


# --- visits --------------------------------------------------------------------------


async def visit_view(session: AsyncSession, visit: Visit) -> s.VisitOut:
    entries = await ledger_lines(session, visit.id)
    totals = await visit_totals(session, visit.id)
    events = (await session.scalars(
        select(VisitEvent).where(VisitEvent.visit_id == visit.id).order_by(VisitEvent.id))).all()
    lines = [s.BillLine(kind=e.kind, item_id=e.item_id, code=e.code, name=e.name, category=e.category,
                        unit_price_fen=e.unit_price_fen, quantity=e.quantity, amount_fen=e.amount_fen,
                        booked_at=e.created_at)
             for e in entries if e.kind in ("charge", "reversal")]
    money = [e for e in entries if e.kind in ("payment", "refund", "refund_reversal")]
    methods = dict((await session.execute(select(Payment.id, Payment.method).where(
        Payment.id.in_({e.payment_id for e in money if e.payment_id})))).all()) if money else {}
    payments = [s.PaymentLine(kind=e.kind, payment_id=e.payment_id, method=methods.get(e.payment_id),
                              amount_fen=e.amount_fen, at=e.created_at) for e in money]
    return s.VisitOut(
        visit_id=visit.id, patient_id=visit.patient_id, department=visit.department, doctor=visit.doctor,
        channel=visit.channel, stage=visit.stage, payment_status=visit.payment_status,
        bill=s.Bill(total_fen=totals.total_fen, paid_fen=totals.paid_fen, balance_fen=totals.balance_fen,
                    lines=lines, payments=payments),
        discharged_at=visit.discharged_at, arrears_at=visit.arrears_at, due_at=visit.due_at,
        card_locked=visit.card_locked, credit_reported=visit.credit_reported,
        events=[s.VisitEventOut(event_id=e.event_id, type=e.type, occurred_at=e.occurred_at,
                                stage_after=e.stage_after) for e in events],
        created_at=visit.created_at,
    )


async def ensure_workflow(state: AppState, visit: Visit) -> WorkflowHandle:
    """Start the visit's workflow, or find the one already running (safe to call again)."""
    client: Client = state.temporal
    try:
        return await client.start_workflow(
            VisitWorkflow.run,
            c.VisitInput(visit_id=visit.id, patient_id=visit.patient_id,
                         registration_fee_fen=visit.registration_fee_fen,
                         policy=state.settings.payment_policy()),
            id=c.workflow_id(visit.id),
            task_queue=state.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Visit {visit.id} · {visit.department}",
        )
    except WorkflowAlreadyStartedError:  # finished already (settled): the id is not reused
        return client.get_workflow_handle(c.workflow_id(visit.id))


# --- patients ------------------------------------------------------------------------


async def get_patient(session: AsyncSession, patient_id: str) -> Patient:
    patient = await session.get(Patient, patient_id)
    if patient is None:
        raise ApiError(404, "patient_not_found", f"no patient {patient_id}")
    return patient


async def patient_found(session: AsyncSession, patient: Patient) -> s.PatientFound:
    return s.PatientFound(patient_id=patient.id,
                          enrolled=await active_enrolment(session, patient.id) is not None,
                          service_status=await patient_service_status(session, patient.id))


async def credit_scores(state: AppState, session: AsyncSession, patient: Patient) -> tuple[int | None, int | None]:
    """Asks the credit sources: ends the session's transaction first, since no transaction
    may stay open across a call to another system (SQLite would hold its write lock)."""
    await session.commit()
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
        patient_id=patient.id, name=patient.name_masked, id_number=patient.id_number_masked,
        phone=patient.phone_masked, enrolled=enrolment is not None,
        enrollment=None if enrolment is None else s.EnrollmentView(
            agreement_version=enrolment.agreement_version, channel=enrolment.channel,
            phone=enrolment.phone_masked, eligibility_rule=enrolment.eligibility_rule,
            enrolled_at=enrolment.enrolled_at),
        service_status=await patient_service_status(session, patient.id),
        card_locked=await card_locked(session, patient.id),
        credit=credit,
    )


# --- SMS verification codes ----------------------------------------------------------


def _code_hash(state: AppState, phone_hash: str, code: str) -> str:
    return hmac.new(state.settings.data_key.encode(), f"{phone_hash}:{code}".encode(), hashlib.sha256).hexdigest()


async def _throttle(session: AsyncSession, column: Any, value: str, now: datetime,
                    limits: list[tuple[timedelta, int]]) -> None:
    """429 with Retry-After when `value` already had `permits` codes within any window."""
    for window, permits in limits:
        sent = (await session.scalars(select(SmsCode.created_at).where(
            column == value, SmsCode.created_at > now - window).order_by(SmsCode.created_at))).all()
        if len(sent) >= permits:
            wait = int((sent[-permits] + window - now).total_seconds()) + 1
            raise ApiError(429, "rate_limited", f"too many codes; try again in {wait} s",
                           headers={"Retry-After": str(wait)})


async def issue_code(state: AppState, session: AsyncSession, phone: str, *, purpose: str,
                     patient_id: str | None, client_ip: str | None = None) -> s.SmsCodeSent:
    """Send a 6-digit code. Limits are checked before anything is sent, and the answer is the
    same whether the phone belongs to a patient or not."""
    settings = state.settings
    phone_hash = state.pii.lookup("phone", phone)
    ip_hash = state.pii.lookup("ip", client_ip) if client_ip else None
    now = utcnow()
    await _throttle(session, SmsCode.phone_hash, phone_hash, now, [
        (settings.sms_code_min_interval, 1), (timedelta(hours=1), settings.sms_codes_per_hour),
        (timedelta(days=1), settings.sms_codes_per_day)])
    if ip_hash:
        await _throttle(session, SmsCode.client_ip_hash, ip_hash, now,
                        [(timedelta(hours=1), settings.sms_codes_per_ip_hour)])
    # a new code replaces every earlier one for this phone
    for old in (await session.scalars(select(SmsCode).where(
            SmsCode.phone_hash == phone_hash, SmsCode.consumed_at.is_(None)))).all():
        old.consumed_at = now
    code = f"{secrets.randbelow(10**6):06d}"
    row = SmsCode(phone_hash=phone_hash, purpose=purpose, code_hash=_code_hash(state, phone_hash, code),
                  created_at=now, expires_at=now + settings.sms_code_ttl, attempts=0, consumed_at=None,
                  client_ip_hash=ip_hash)
    session.add(row)
    await session.commit()  # the code exists before the text that carries it goes out
    try:
        await state.sms.send(OutgoingSms(idempotency_key=f"sms-code:{row.id}", phone=phone,
                                         template="verification_code", params={"code": code},
                                         patient_id=patient_id))
    except SmsThrottled:
        raise ApiError(429, "rate_limited", "the SMS gateway limits codes to this phone; try again later",
                       headers={"Retry-After": "60"}) from None
    except SmsRejected as err:
        raise ApiError(422, "invalid_phone", f"the SMS gateway refused this number ({err.code})") from None
    return s.SmsCodeSent(phone=mask_phone(phone), expires_in=int(settings.sms_code_ttl.total_seconds()))


async def verify_code(state: AppState, phone: str, code: str) -> None:
    """Check and use up a code. Its own transaction: a wrong attempt counts even though
    the request that made it fails."""
    phone_hash = state.pii.lookup("phone", phone)
    now = utcnow()
    async with state.factory() as session, session.begin():
        row = await session.scalar(select(SmsCode).where(
            SmsCode.phone_hash == phone_hash, SmsCode.consumed_at.is_(None)).order_by(SmsCode.id.desc()))
        if row is None or row.expires_at <= now or row.attempts >= state.settings.sms_code_max_attempts:
            wrong = None
        else:
            row.attempts += 1
            if hmac.compare_digest(row.code_hash, _code_hash(state, phone_hash, code)):
                row.consumed_at = now
                return
            wrong = state.settings.sms_code_max_attempts - row.attempts
    if wrong is None:
        raise ApiError(422, "invalid_code", "the code is wrong, used or expired: ask for a new one")
    raise ApiError(422, "invalid_code", f"the code is wrong ({wrong} attempt(s) left)")


# --- enrolment -----------------------------------------------------------------------


async def enrol(state: AppState, session: AsyncSession, patient: Patient, body: s.EnrollRequest, *,
                channel: str, actor: str) -> s.PatientProfile:
    if await active_enrolment(session, patient.id) is not None:
        raise ApiError(409, "already_enrolled", "the patient is already enrolled in post-pay")
    if body.agreement_version != state.settings.agreement_version:
        raise ApiError(409, "agreement_outdated",
                       f"the current service agreement is version {state.settings.agreement_version}",
                       current_version=state.settings.agreement_version)
    bank, sesame = await credit_scores(state, session, patient)
    decision = eligibility.decide(
        eligibility.EligibilityFacts(insured_locally=patient.insured_locally, bank_score=bank, sesame_score=sesame),
        eligibility.Thresholds(bank_score=state.settings.bank_score_threshold,
                               sesame_score=state.settings.sesame_score_threshold))
    rules = [{"rule": str(o.rule), "passed": o.passed, "reason": o.reason} for o in decision.outcomes]
    if not decision.eligible:
        raise ApiError(403, "not_eligible", "none of the eligibility rules is met: " + "; ".join(decision.reasons()),
                       reasons=decision.reasons(), rules=rules)
    await verify_code(state, body.phone, body.code)
    now = utcnow()
    phone_hash = state.pii.lookup("phone", body.phone)
    enrolment = Enrolment(patient_id=patient.id, active_patient_id=patient.id,
                          agreement_version=body.agreement_version, channel=channel, phone_hash=phone_hash,
                          phone_masked=mask_phone(body.phone), eligibility_rule=str(decision.passed_rule),
                          eligibility={"rules": rules}, enrolled_at=now, unenrolled_at=None)
    session.add(enrolment)
    patient.phone_hash = phone_hash
    patient.phone_masked = mask_phone(body.phone)
    patient.phone_cipher = state.pii.encrypt(body.phone)
    audit(session, actor=actor, action="enrolled", subject_type="patient", subject_id=patient.id, at=now,
          channel=channel, agreement_version=body.agreement_version, rule=str(decision.passed_rule))
    try:
        await session.flush()
    except IntegrityError:  # enrolled by a concurrent request
        raise ApiError(409, "already_enrolled", "the patient is already enrolled in post-pay") from None
    return await profile(state, session, patient, with_credit=False)


async def unenrol(session: AsyncSession, patient: Patient, *, actor: str) -> s.Unenrolled:
    enrolment = await active_enrolment(session, patient.id)
    if enrolment is None:
        raise ApiError(409, "not_enrolled", "the patient is not enrolled in post-pay")
    unpaid = await open_visits(session, patient.id)
    if unpaid:
        owed = sum(t.balance_fen for _, t in unpaid)
        raise ApiError(409, "outstanding_balance", f"{len(unpaid)} visit(s) still owe {owed} fen",
                       balance_fen=owed, visit_ids=[v.id for v, _ in unpaid])
    running = await session.scalar(select(func.count()).select_from(Visit).where(
        Visit.patient_id == patient.id, Visit.stage != "discharged"))
    if running:
        raise ApiError(409, "outstanding_balance", "a visit is still in progress")
    enrolment.active_patient_id = None
    enrolment.unenrolled_at = utcnow()
    audit(session, actor=actor, action="unenrolled", subject_type="patient", subject_id=patient.id)
    return s.Unenrolled(patient_id=patient.id, enrolled=False)


def require_normal_service(status: ServiceStatus) -> None:
    if status is not ServiceStatus.normal:
        raise ApiError(409, "service_suspended", f"post-pay is suspended while the patient is in {status}",
                       service_status=str(status))



def refund_out(refund: Refund) -> s.RefundOut:
    return s.RefundOut(refund_id=refund.id, payment_id=refund.payment_id, patient_id=refund.patient_id,
                       visit_id=refund.visit_id, method=refund.method, amount_fen=refund.amount_fen,
                       reason=refund.reason, status=refund.status, detail=refund.detail,
                       channel_refund_no=refund.channel_refund_no, created_at=refund.created_at,
                       completed_at=refund.completed_at)


def receipt_out(receipt: Receipt) -> s.ReceiptOut:
    c = receipt.content
    return s.ReceiptOut(receipt_id=receipt.id, visit_id=receipt.visit_id, version=receipt.version,
                        total_fen=receipt.total_fen, paid_fen=receipt.paid_fen, hospital=c["hospital"],
                        department=c["department"], patient_name=c["patient_name"],
                        lines=[s.ReceiptLine(**line) for line in c["lines"]],
                        payments=[s.ReceiptPayment(**p) for p in c["payments"]], check_code=receipt.check_code,
                        issued_at=receipt.issued_at, voided_at=receipt.voided_at,
                        download_url=f"/v1/patient/receipts/{receipt.id}?format=html")


def settlement_out(row: InsuranceSettlement, self_pay: s.ChannelPayment | None = None) -> s.InsuranceSettlementOut:
    return s.InsuranceSettlementOut(settlement_id=row.id, visit_ids=list(row.visit_ids), total_fen=row.total_fen,
                                    pooled_fen=row.pooled_fen, personal_fen=row.personal_fen,
                                    self_pay_fen=row.self_pay_fen, status=row.status,
                                    channel=row.channel or None, self_pay=self_pay, detail=row.detail,
                                    created_at=row.created_at)
