"""The patient app (patient token): sign in by SMS code, bind identity, enrol, follow
visits, see the merged bill and pay it. A patient sees only their own data."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from temporalio.common import WorkflowIDConflictPolicy
from sqlalchemy import func, select, update

from api import payments
from api import schemas as s
from api import services as svc
from api import tokens
from api.deps import PatientDep, PatientSessionDep, SessionDep, StateDep
from api.errors import ApiError, responses
from db.models import (AuditLog, InsuranceSettlement, Patient, PatientSession, Receipt, Refund, SmsMessage,
                       Visit)
from db.receipts import receipt_html
from db.repositories import active_enrolment, audit, ledger_lines, open_charges, open_visits, utcnow
from integrations.gateway import GatewayError
from workflows import contracts as c
from workflows.insurance import InsurancePaymentWorkflow

router = APIRouter(prefix="/v1/patient", tags=["patients"])
IDENTITY_TRIES = 5
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/sms-code", response_model=s.SmsCodeSent, status_code=202, responses=responses(422, 429))
async def sms_code(body: s.SmsCodeRequest, request: Request, state: StateDep, session: SessionDep) -> Any:
    """Send a sign-in code. The answer is the same whether the phone is known or not."""
    return await svc.issue_code(state, session, body.phone, purpose="login", patient_id=None,
                                client_ip=client_ip(request))


async def _patient_for_phone(session: SessionDep, phone_hash: str) -> str | None:
    from db.models import Enrolment

    enrolled = await session.scalar(select(Enrolment.patient_id).where(
        Enrolment.phone_hash == phone_hash, Enrolment.active_patient_id.is_not(None)).limit(1))
    if enrolled:
        return enrolled
    return await session.scalar(select(Patient.id).where(Patient.phone_hash == phone_hash).limit(1))


@router.post("/login", response_model=s.LoginOut, responses=responses(422))
async def login(body: s.LoginRequest, state: StateDep, session: SessionDep) -> Any:
    await svc.verify_code(state, body.phone, body.code)
    phone_hash = state.pii.lookup("phone", body.phone)
    now = utcnow()
    row = PatientSession(id=tokens.new_session_id(), phone_hash=phone_hash,
                         patient_id=await _patient_for_phone(session, phone_hash), created_at=now,
                         expires_at=now + state.settings.patient_token_ttl, revoked_at=None)
    session.add(row)
    token = tokens.issue(state.settings.data_key, row.id, issued_at=now, expires_at=row.expires_at)
    return s.LoginOut(token=token, patient_id=row.patient_id, expires_at=row.expires_at)


@router.post("/logout", status_code=204, responses=responses(401))
async def logout(login: PatientSessionDep) -> Response:
    login.revoked_at = utcnow()
    return Response(status_code=204)


@router.post("/identity", response_model=s.IdentityOut, responses=responses(401, 404, 409, 422))
async def identity(body: s.IdentityRequest, login: PatientSessionDep, state: StateDep, session: SessionDep) -> Any:
    """Link the signed-in phone to the hospital's record of this person (name + ID number).
    Five wrong tries an hour per sign-in, so ID numbers cannot be guessed through it."""
    failures = await session.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.subject_type == "session", AuditLog.subject_id == login.id, AuditLog.action == "identity_failed",
        AuditLog.at > utcnow() - timedelta(hours=1)))
    if failures >= IDENTITY_TRIES:
        raise ApiError(429, "rate_limited", "too many wrong tries; try again in an hour",
                       headers={"Retry-After": "3600"})
    candidates = (await session.scalars(select(Patient).where(
        Patient.id_number_hash == state.pii.lookup("id_number", body.id_number)))).all()
    match = next((p for p in candidates if state.pii.decrypt(p.name_cipher) == body.name.strip()), None)
    if match is None:
        audit(session, actor="patient", action="identity_failed", subject_type="session", subject_id=login.id)
        await session.commit()  # counted even though this request fails
        raise ApiError(404, "patient_not_found", "no hospital record matches this name and ID number")
    if login.patient_id not in (None, match.id):
        raise ApiError(409, "identity_conflict", "this phone is already linked to another patient")
    if match.phone_hash and match.phone_hash != login.phone_hash and await active_enrolment(session, match.id):
        raise ApiError(409, "identity_conflict", "this patient is enrolled with another phone")
    login.patient_id = match.id
    audit(session, actor="patient", action="identity_bound", subject_type="patient", subject_id=match.id)
    return s.IdentityOut(patient_id=match.id)


@router.get("/me", response_model=s.PatientProfile, responses=responses(401, 403))
async def me(patient: PatientDep, state: StateDep, session: SessionDep,
             credit: bool = Query(False, description="also ask the credit sources for the scores")) -> Any:
    return await svc.profile(state, session, patient, with_credit=credit)


@router.post("/enrollment", response_model=s.PatientProfile, status_code=201,
             responses=responses(401, 403, 409, 422))
async def enrol(body: s.EnrollRequest, patient: PatientDep, state: StateDep, session: SessionDep) -> Any:
    return await svc.enrol(state, session, patient, body, channel="app", actor="patient")


@router.delete("/enrollment", response_model=s.Unenrolled, responses=responses(401, 403, 409))
async def unenrol(patient: PatientDep, session: SessionDep) -> Any:
    done = await svc.unenrol(session, patient, actor="patient")
    # every sign-in of this patient ends with the service
    await session.execute(update(PatientSession).where(
        PatientSession.patient_id == patient.id, PatientSession.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return done


@router.get("/visits", response_model=list[s.VisitOut], responses=responses(401, 403))
async def my_visits(patient: PatientDep, session: SessionDep) -> Any:
    visits = (await session.scalars(select(Visit).where(Visit.patient_id == patient.id)
                                    .order_by(Visit.created_at.desc()).limit(100))).all()
    return [await svc.visit_view(session, v) for v in visits]


@router.get("/visits/{visit_id}", response_model=s.VisitOut, responses=responses(401, 403, 404))
async def my_visit(visit_id: str, patient: PatientDep, session: SessionDep) -> Any:
    visit = await session.get(Visit, visit_id)
    if visit is None or visit.patient_id != patient.id:  # another patient's visit does not exist for you
        raise ApiError(404, "visit_not_found", f"no visit {visit_id}")
    return await svc.visit_view(session, visit)


@router.get("/bill", response_model=s.MergedBill, responses=responses(401, 403))
async def merged_bill(patient: PatientDep, session: SessionDep) -> Any:
    """Every visit that still owes money, old arrears included, and the total."""
    bills = await open_visits(session, patient.id)
    visits = []
    for visit, _ in bills:
        view = await svc.visit_view(session, visit)
        visits.append(s.BillVisit(visit_id=visit.id, department=visit.department, created_at=visit.created_at,
                                  payment_status=view.payment_status, due_at=visit.due_at, bill=view.bill))
    return s.MergedBill(visits=visits, balance_fen=sum(t.balance_fen for _, t in bills))


@router.post("/payments", response_model=s.ChannelPayment, status_code=201,
             responses=responses(401, 403, 404, 409, 422, 502, 504))
async def pay(body: s.PatientPaymentIn, patient: PatientDep, state: StateDep, session: SessionDep, request: Request,
              idempotency_key: IdempotencyKey = None) -> Any:
    """Start paying the merged bill (or chosen visits) at a channel; the money lands when the
    channel notifies us."""
    request_hash = svc.body_hash(body)
    key = f"patient-payment:{patient.id}:{idempotency_key}" if idempotency_key else None
    bills = await payments.unpaid(session, patient.id, body.visit_ids)
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    owed = sum(t.balance_fen for _, t in bills)
    if owed <= 0:
        raise ApiError(409, "nothing_to_pay", "nothing is owed on these visits")
    out = await payments.open_order(state, session, patient_id=patient.id, visit_ids=[v.id for v, _ in bills],
                                    amount_fen=owed, channel=body.channel, client_ip=client_ip(request))
    data = out.model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 201, data)
    return JSONResponse(data, status_code=201)


@router.get("/notifications", response_model=list[s.Notification], responses=responses(401, 403))
async def notifications(patient: PatientDep, session: SessionDep, limit: int = Query(100, ge=1, le=500)) -> Any:
    """The in-app inbox: every message the service sent this patient, newest first."""
    rows = (await session.scalars(select(SmsMessage).where(SmsMessage.patient_id == patient.id)
                                  .order_by(SmsMessage.id.desc()).limit(limit))).all()
    return [s.Notification(template=m.template, text=m.text, visit_id=m.visit_id, sent_at=m.created_at)
            for m in rows]


@router.get("/refunds", response_model=list[s.RefundOut], responses=responses(401, 403))
async def my_refunds(patient: PatientDep, session: SessionDep) -> Any:
    """Money on its way back: refunds of overpayments and of cancelled orders (退费)."""
    rows = (await session.scalars(select(Refund).where(Refund.patient_id == patient.id)
                                  .order_by(Refund.created_at.desc()))).all()
    return [svc.refund_out(r) for r in rows]


@router.get("/receipts", response_model=list[s.ReceiptOut], responses=responses(401, 403))
async def my_receipts(patient: PatientDep, session: SessionDep) -> Any:
    """Electronic receipts (电子票据) of settled visits, newest first; a voided one (红冲
    after a refund) stays listed beside its replacement."""
    rows = (await session.scalars(select(Receipt).where(Receipt.patient_id == patient.id)
                                  .order_by(Receipt.issued_at.desc(), Receipt.version.desc()))).all()
    return [svc.receipt_out(r) for r in rows]


@router.get("/receipts/{receipt_id}", response_model=s.ReceiptOut, responses=responses(401, 403, 404),
            description="`?format=html` downloads the printable receipt.")
async def my_receipt(receipt_id: str, patient: PatientDep, session: SessionDep,
                     format: Literal["json", "html"] = "json") -> Any:
    receipt = await session.get(Receipt, receipt_id)
    if receipt is None or receipt.patient_id != patient.id:
        raise ApiError(404, "receipt_not_found", f"no receipt {receipt_id}")
    if format == "html":
        return HTMLResponse(receipt_html(receipt), headers={
            "Content-Disposition": f'attachment; filename="receipt-{receipt.id}.html"'})
    return svc.receipt_out(receipt)


# --- insurance card-less payment (医保脱卡支付) ------------------------------------------


async def _own_settlement(session: SessionDep, patient: Patient, settlement_id: str) -> InsuranceSettlement:
    row = await session.get(InsuranceSettlement, settlement_id)
    if row is None or row.patient_id != patient.id:
        raise ApiError(404, "settlement_not_found", f"no settlement {settlement_id}")
    return row


@router.post("/insurance/presettle", response_model=s.InsuranceSettlementOut, status_code=201,
             responses=responses(401, 403, 404, 409, 422, 502))
async def insurance_presettle(body: s.InsurancePresettleIn, patient: PatientDep, state: StateDep,
                              session: SessionDep) -> Any:
    """Ask the insurance bureau to split the unpaid bill (or chosen visits) into pooled fund,
    personal account and self-pay. Nothing is paid yet."""
    if not patient.insured_locally:
        raise ApiError(409, "not_insured", "card-less insurance payment is for the locally insured")
    if state.bureau is None:
        raise ApiError(409, "channel_unavailable", "the insurance bureau is not connected")
    bills = await payments.unpaid(session, patient.id, body.visit_ids)
    if not bills:
        raise ApiError(409, "nothing_to_pay", "nothing is owed on these visits")
    items: list[tuple[str, int]] = []
    for visit, totals in bills:
        if totals.paid_fen != 0:
            raise ApiError(409, "partly_paid", f"visit {visit.id} is partly paid: pay the rest at a channel")
        items += [(e.category or "other", e.amount_fen) for e in open_charges(await ledger_lines(session, visit.id))]
    settlement_id = svc.new_id("ins_")
    await session.commit()  # the bureau may live in this process and write the same database
    try:
        split = await state.bureau.presettle(request_id=f"presettle:{settlement_id}", patient_id=patient.id,
                                             items=items)
    except GatewayError as err:
        if err.code == "CardLocked":
            raise ApiError(409, "card_locked", "the insurance card is locked: pay at a channel") from None
        raise ApiError(502, "bureau_error", f"the insurance bureau refused: {err}") from None
    now = utcnow()
    row = InsuranceSettlement(id=settlement_id, patient_id=patient.id, visit_ids=[v.id for v, _ in bills],
                              total_fen=split.total_fen, pooled_fen=split.pooled_fen, personal_fen=split.personal_fen,
                              self_pay_fen=split.self_pay_fen, status="presettled", channel="",
                              bureau_presettle_id=split.presettle_id, created_at=now, updated_at=now)
    session.add(row)
    audit(session, actor="patient", action="insurance_presettled", subject_type="patient", subject_id=patient.id,
          settlement_id=settlement_id, pooled_fen=split.pooled_fen, personal_fen=split.personal_fen,
          self_pay_fen=split.self_pay_fen)
    return svc.settlement_out(row)


@router.post("/insurance/settlements/{settlement_id}/pay", response_model=s.InsuranceSettlementOut,
             responses=responses(401, 403, 404, 409, 422, 502, 504))
async def insurance_pay(settlement_id: str, body: s.InsurancePayIn, patient: PatientDep, state: StateDep,
                        session: SessionDep, request: Request, idempotency_key: IdempotencyKey = None) -> Any:
    """Pay a pre-settled bill: the insurance part is settled with the bureau, the self-pay part
    is paid at `channel` (answered in `self_pay`). Unpaid in time, the insurance part is
    reversed (冲正)."""
    request_hash = svc.body_hash({"settlement_id": settlement_id, **body.model_dump()})
    key = f"insurance-pay:{patient.id}:{idempotency_key}" if idempotency_key else None
    bills = await payments.unpaid(session, patient.id, None)  # takes the patient's lock
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    row = await _own_settlement(session, patient, settlement_id)
    if row.status != "presettled" or row.channel:
        raise ApiError(409, "settlement_used", f"settlement {settlement_id} is {row.status}")
    owed = sum(t.balance_fen for v, t in bills if v.id in row.visit_ids and t.paid_fen == 0)
    if owed != row.total_fen:
        raise ApiError(409, "bill_changed", "the bill changed since the pre-settlement: pre-settle again")
    self_pay = None
    if row.self_pay_fen > 0:
        self_pay = await payments.open_order(state, session, patient_id=patient.id, visit_ids=list(row.visit_ids),
                                             amount_fen=row.self_pay_fen, channel=body.channel,
                                             client_ip=client_ip(request), insurance_settlement_id=row.id)
    row.channel = body.channel
    row.self_pay_payment_id = self_pay.payment_id if self_pay else None
    row.updated_at = utcnow()
    data = svc.settlement_out(row, self_pay).model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 200, data)
    await session.commit()
    await state.temporal.start_workflow(
        InsurancePaymentWorkflow.run,
        c.InsurancePaymentInput(settlement_id=row.id, patient_id=patient.id,
                                self_pay_payment_id=row.self_pay_payment_id or "", self_pay_fen=row.self_pay_fen,
                                insurance_fen=row.pooled_fen + row.personal_fen,
                                self_pay_timeout_seconds=state.settings.insurance_self_pay_timeout.total_seconds()),
        id=c.insurance_workflow_id(row.id), task_queue=state.settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"医保脱卡支付 {row.id}")
    return JSONResponse(data, status_code=200)


@router.get("/insurance/settlements/{settlement_id}", response_model=s.InsuranceSettlementOut,
            responses=responses(401, 403, 404))
async def insurance_settlement(settlement_id: str, patient: PatientDep, session: SessionDep) -> Any:
    return svc.settlement_out(await _own_settlement(session, patient, settlement_id))


@router.get("/payment-options", response_model=s.PaymentOptions, responses=responses(401, 403))
async def payment_options(patient: PatientDep, state: StateDep) -> Any:
    """How this patient can pay here: the channels set up, and whether card-less insurance
    payment (医保脱卡支付) is open to them."""
    channels = [name for name in ("wechat", "alipay", "sandbox") if name in state.channels]
    return s.PaymentOptions(channels=channels, insurance=bool(patient.insured_locally and state.bureau is not None))
