"""The patient app (patient token): sign in by SMS code, bind identity, enrol, follow
visits, see the merged bill and pay it. A patient sees only their own data."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response

from api import (
    codes,
    enrolment,
    insurance,
    insurance_mobile,
    mine,
    oversight,
    patients,
    payments,
    schemas as s,
    services as svc,
)
from api.deps import PatientDep, PatientSessionDep, SessionDep, StateDep
from api.errors import responses
from domain.channels import CHANNELS, LABELS
from ledger import errors as le

router = APIRouter(prefix="/v1/patient", tags=["patients"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/sms-code", response_model=s.SmsCodeSent, status_code=202, responses=responses(422, 429))
async def sms_code(body: s.PatientSmsCodeRequest, request: Request, state: StateDep, session: SessionDep) -> Any:
    """Send a code: to sign in (`purpose` `login`, the default) or to enrol in the app (`enrol`);
    a code serves its purpose only. The answer is the same whether the phone is known or not."""
    return await codes.issue_code(
        state, session, body.phone, purpose=body.purpose, patient_id=None, client_ip=client_ip(request)
    )


@router.post("/login", response_model=s.LoginOut, responses=responses(422))
async def login(body: s.LoginRequest, state: StateDep, session: SessionDep) -> Any:
    """Sign in with a login code. `patient_id` is the patient linked to the phone when there is
    exactly one; null when there is none (bind one with /identity) or several (choose one at
    /profiles)."""
    return await patients.login(state, session, body)


@router.get("/profiles", response_model=list[s.ProfileChoice], responses=responses(401))
async def profiles(login: PatientSessionDep, session: SessionDep) -> Any:
    """The patients linked to the signed-in phone (a parent's children), oldest first."""
    return await patients.profile_choices(session, login)


@router.post(
    "/profiles/{patient_id}/session", response_model=s.LoginOut, status_code=201, responses=responses(401, 404)
)
async def choose_profile(patient_id: str, login: PatientSessionDep, state: StateDep, session: SessionDep) -> Any:
    """A token bound to one of the phone's patients; it sees that patient's data alone and
    expires with the sign-in it came from."""
    return await patients.choose_profile(state, session, login, patient_id)


@router.post("/logout", status_code=204, responses=responses(401))
async def logout(login: PatientSessionDep) -> Response:
    patients.sign_out(login)
    return Response(status_code=204)


@router.post("/identity", response_model=s.IdentityOut, responses=responses(401, 404, 409, 422, 429))
async def identity(body: s.IdentityRequest, login: PatientSessionDep, state: StateDep, session: SessionDep) -> Any:
    """Link the signed-in phone to the hospital's record of this person (name + ID number).
    Five wrong tries an hour per sign-in, so ID numbers cannot be guessed through it."""
    return await patients.bind_identity(state, session, login, body)


@router.get("/me", response_model=s.PatientProfile, responses=responses(401, 403))
async def me(
    patient: PatientDep,
    state: StateDep,
    session: SessionDep,
    credit: bool = Query(False, description="also ask the credit sources for the scores"),
) -> Any:
    return await patients.profile(state, session, patient, with_credit=credit)


@router.post("/enrollment", response_model=s.PatientProfile, status_code=201, responses=responses(401, 403, 409, 422))
async def enrol(body: s.EnrollRequest, patient: PatientDep, state: StateDep, session: SessionDep) -> Any:
    return await enrolment.enrol(state, session, patient, body, channel="app", actor="patient")


@router.delete("/enrollment", response_model=s.Unenrolled, responses=responses(401, 403, 409))
async def unenrol(patient: PatientDep, session: SessionDep) -> Any:
    return await enrolment.unenrol(session, patient, actor="patient", end_sign_ins=True)


@router.get("/visits", response_model=list[s.VisitOut], responses=responses(401, 403))
async def my_visits(patient: PatientDep, session: SessionDep) -> Any:
    return await mine.visits(session, patient)


@router.get("/visits/{visit_id}", response_model=s.VisitOut, responses=responses(401, 403, le.VisitNotFound))
async def my_visit(visit_id: str, patient: PatientDep, session: SessionDep) -> Any:
    return await mine.visit(session, patient, visit_id)


@router.post(
    "/visits/{visit_id}/disputes",
    response_model=s.DisputeOpened,
    status_code=201,
    responses=responses(401, 403, le.VisitNotFound, 409, 422, 503),
)
async def dispute(
    visit_id: str,
    body: s.DisputeIn,
    patient: PatientDep,
    state: StateDep,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Contest a bill or a sanction (申诉): while the dispute is open, no reminder, card lock
    or credit report for this visit. One open dispute per visit (409 `dispute_open`); a retry
    with the same Idempotency-Key gets the first answer and the same dispute_id."""
    visit = await mine.own_visit(session, patient, visit_id)
    opener = f"patient:{patient.id}"
    return await oversight.open_dispute(
        state, session, visit, body, opener=opener, keys=opener, idempotency_key=idempotency_key
    )


@router.get("/bill", response_model=s.MergedBill, responses=responses(401, 403))
async def merged_bill(patient: PatientDep, session: SessionDep) -> Any:
    """Every visit that still owes money, old arrears included, and the total."""
    return await mine.merged_bill(session, patient)


@router.post(
    "/payments",
    response_model=s.ChannelPayment,
    status_code=201,
    responses=responses(401, 403, le.VisitNotFound, 409, le.NothingToPay, 422, 502, 504),
)
async def pay(
    body: s.PatientPaymentIn,
    patient: PatientDep,
    state: StateDep,
    session: SessionDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Start paying the merged bill (or chosen visits) at a channel; the money lands when the
    channel notifies us."""
    return await payments.patient_pay(
        state, session, patient, body, client_ip=client_ip(request), idempotency_key=idempotency_key
    )


@router.get(
    "/payments/{payment_id}", response_model=s.PatientPaymentStatus, responses=responses(401, 403, le.PaymentNotFound)
)
async def my_payment(payment_id: str, patient: PatientDep, session: SessionDep) -> Any:
    """One of your payments, for the app to follow after you return from the channel: `final`
    once it is paid, failed or refunded."""
    return await payments.payment_status(session, patient, payment_id)


@router.get("/notifications", response_model=list[s.Notification], responses=responses(401, 403))
async def notifications(patient: PatientDep, session: SessionDep, limit: int = Query(100, ge=1, le=500)) -> Any:
    """The in-app inbox: every message the service sent this patient, newest first."""
    return await mine.notifications(session, patient, limit)


@router.get("/refunds", response_model=list[s.RefundOut], responses=responses(401, 403))
async def my_refunds(patient: PatientDep, session: SessionDep) -> Any:
    """Money on its way back: refunds of overpayments and of cancelled orders (退费)."""
    return await mine.refunds(session, patient)


@router.get("/receipts", response_model=list[s.ReceiptOut], responses=responses(401, 403))
async def my_receipts(patient: PatientDep, session: SessionDep) -> Any:
    """Electronic receipts (电子票据) of settled visits, newest first; a voided one (红冲
    after a refund) stays listed beside its replacement."""
    return await mine.receipts(session, patient)


@router.get(
    "/receipts/{receipt_id}",
    response_model=s.ReceiptOut,
    responses={200: {"content": {"text/html": {}}}, **responses(401, 403, 404)},
    description="`?format=html` downloads the printable receipt.",
)
async def my_receipt(
    receipt_id: str, patient: PatientDep, session: SessionDep, format: Literal["json", "html"] = "json"
) -> Any:
    return await mine.receipt(session, patient, receipt_id, html=format == "html")


# --- insurance card-less payment (医保脱卡支付) ------------------------------------------


@router.post(
    "/insurance/presettle",
    response_model=s.InsuranceSettlementOut,
    status_code=201,
    responses=responses(401, 403, le.VisitNotFound, 409, le.NothingToPay, 422, 502),
)
async def insurance_presettle(
    body: s.InsurancePresettleIn, patient: PatientDep, state: StateDep, session: SessionDep
) -> Any:
    """Ask the insurance bureau to split the unpaid bill (or chosen visits) into pooled fund,
    personal account and self-pay. Nothing is paid yet."""
    return await insurance.presettle(state, session, patient, body)


@router.post(
    "/insurance/settlements/{settlement_id}/pay",
    response_model=s.InsuranceSettlementOut,
    responses=responses(401, 403, 404, 409, 422, 502, 503, 504),
)
async def insurance_pay(
    settlement_id: str,
    body: s.InsurancePayIn,
    patient: PatientDep,
    state: StateDep,
    session: SessionDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Pay a pre-settled bill: the insurance part is settled with the bureau, the self-pay part
    is paid at `channel` (answered in `self_pay`). Unpaid in time, the insurance part is
    reversed (冲正). A mobile settlement (医保移动支付) takes channel `nhsa_mobile`: the fund and
    the personal account pay at once (6202), the cash part at `cashier_url`; unpaid in time, the
    order is taken back (6401). Another pairing of mode and channel: 409 `settlement_mode`."""
    return await insurance_mobile.pay_settlement(
        state,
        session,
        patient,
        settlement_id,
        body,
        client_ip=client_ip(request),
        idempotency_key=idempotency_key,
    )


@router.post(
    "/insurance/mobile-orders",
    response_model=s.InsuranceSettlementOut,
    status_code=201,
    responses=responses(401, 403, le.VisitNotFound, 409, le.NothingToPay, 422, 502),
)
async def insurance_mobile_order(
    body: s.InsuranceMobileOrderIn,
    patient: PatientDep,
    state: StateDep,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """医保移动支付: upload the unpaid bill (or chosen visits) to the bureau as an order (6201),
    authorised by `pay_auth_no` from the 医保电子凭证 app; answers the split (pooled fund,
    personal account, cash part). Nothing is paid yet: pay it with channel `nhsa_mobile`. A
    refused authorisation: 409 `pay_auth_refused`."""
    return await insurance_mobile.create_order(state, session, patient, body, idempotency_key=idempotency_key)


@router.get(
    "/insurance/settlements/{settlement_id}",
    response_model=s.InsuranceSettlementOut,
    responses=responses(401, 403, 404),
)
async def insurance_settlement(settlement_id: str, patient: PatientDep, session: SessionDep) -> Any:
    return svc.settlement_out(await insurance.own_settlement(session, patient, settlement_id))


@router.get("/payment-options", response_model=s.PaymentOptions, responses=responses(401, 403))
async def payment_options(patient: PatientDep, state: StateDep) -> Any:
    """How this patient can pay here: the channels set up, and whether card-less insurance
    payment (医保脱卡支付) is open to them."""
    channels = [name for name in CHANNELS if name in state.channels]
    insured = bool(patient.insured_locally and state.bureau is not None)
    return s.PaymentOptions(channels=channels, labels=dict(LABELS), insurance=insured, insurance_mobile=insured)
