"""Sandbox only (YHF_SANDBOX=1): what the SMS outbox holds, what the simulated insurance
bureau and credit platform saw (asked over HTTP, at their inspection endpoints), and the knobs
of the simulated credit-score sources."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from api import payments, schemas as s, services as svc
from api.deps import AppState, PatientDep, SessionDep, StateDep, commit_before_call
from api.errors import ApiError, responses
from api.insurance import own_settlement
from api.insurance_mobile import MOBILE
from db.models import LedgerEntry, Patient, Payment, SmsMessage
from db.nhsa import bureau_person
from domain.bill import EntryKind
from domain.insurance import SettlementStatus
from integrations.gateway import GatewayError
from integrations.inspection import SimulatorInspection
from integrations.nhsa_mobile import MobilePayment
from integrations.payments.channels import ChannelError, Paid
from integrations.payments.sandbox import SandboxChannel

router = APIRouter(prefix="/v1/sandbox", tags=["sandbox"])
# the simulated platform's cashier, under the bureau client's base URL (simulators/bureau_mobile.py)
CASHIER_PATH = "mobile/cashier/{pay_ord_id}"


@router.get("/sms", response_model=list[s.SandboxSms], responses=responses(422))
async def sms_outbox(state: StateDep, session: SessionDep, phone: str = Query(pattern=r"^1[3-9]\d{9}$")) -> Any:
    rows = (
        await session.scalars(
            select(SmsMessage).where(SmsMessage.phone_hash == state.pii.lookup("phone", phone)).order_by(SmsMessage.id)
        )
    ).all()
    return [
        s.SandboxSms(phone=phone, template=m.template, params=m.params, text=m.text, sent_at=m.created_at) for m in rows
    ]


def simulators(state: AppState) -> SimulatorInspection:
    """The simulated gateways, over the HTTP clients the product reaches them with."""
    return SimulatorInspection(bureau=state.bureau.http if state.bureau else None, credit=state.credit.http)


@router.put("/credit-scores/{id_number}", response_model=s.CreditScoresIn, responses=responses(422))
async def set_scores(body: s.CreditScoresIn, state: StateDep, id_number: str = Path(pattern=r"^\d{17}[\dXx]$")) -> Any:
    await simulators(state).set_scores(id_number, bank_score=body.bank_score, sesame_score=body.sesame_score)
    return body


async def person(session: SessionDep, patient_id: str) -> str:
    """The patient's psn_no at the simulated bureau (our id when the HIS gave none)."""
    patient = await session.get(Patient, patient_id)
    return bureau_person(patient) if patient else patient_id


@router.get("/insurance-cards/{patient_id}", response_model=s.InsuranceCard)
async def insurance_card(patient_id: str, state: StateDep, session: SessionDep) -> Any:
    card = await simulators(state).card(await person(session, patient_id))
    return s.InsuranceCard(
        locked=card.locked, events=[s.CardEvent(action=e.action, at=e.at, reason=e.reason) for e in card.events]
    )


@router.get("/insurance-settlements/{patient_id}", response_model=list[s.SimSettlement])
async def insurance_settlements(patient_id: str, state: StateDep, session: SessionDep) -> Any:
    """What the simulated bureau recorded of card-less settlements (pre-settle, settle, 冲正)."""
    rows = await simulators(state).settlements(await person(session, patient_id))
    return [
        s.SimSettlement(
            presettle_id=r.presettle_id,
            status=r.status,
            total_fen=r.total_fen,
            pooled_fen=r.pooled_fen,
            personal_fen=r.personal_fen,
            self_pay_fen=r.self_pay_fen,
            settlement_no=r.settlement_no,
        )
        for r in rows
    ]


@router.post("/insurance/pay-auth", response_model=s.PayAuthOut, responses=responses(401, 403, 409, 502))
async def insurance_pay_auth(patient: PatientDep, state: StateDep, session: SessionDep) -> Any:
    """Stands in for the phone's 医保电子凭证 app: the simulated bureau authorises this patient
    and answers the payAuthNo a mobile order takes (POST /v1/patient/insurance/mobile-orders)."""
    if state.bureau is None:
        raise ApiError(409, "channel_unavailable", "the insurance bureau is not connected")
    await commit_before_call(session)
    try:
        return s.PayAuthOut(pay_auth_no=await MobilePayment(state.bureau).sandbox_authorize(bureau_person(patient)))
    except GatewayError as err:
        raise ApiError(502, "bureau_error", f"the simulated platform gave no payAuthNo ({err.code})") from None


@router.post(
    "/insurance/settlements/{settlement_id}/cashier",
    response_model=s.InsuranceSettlementOut,
    responses=responses(401, 403, 404, 409, 502),
)
async def insurance_cashier(settlement_id: str, patient: PatientDep, state: StateDep, session: SessionDep) -> Any:
    """Stands in for the patient paying a mobile order's cash part at the platform's cashier
    (`cashier_url`): posts the order's payToken there as the phone's browser would; the
    platform then notifies the API, whose workflow books the three parts."""
    row = await own_settlement(session, patient, settlement_id)
    if row.mode != MOBILE:
        raise ApiError(409, "settlement_mode", f"settlement {row.id} is not a mobile order")
    if row.status != SettlementStatus.paying:
        raise ApiError(409, "not_paying", f"settlement {row.id} is {row.status}, not paying")
    if state.bureau is None:
        raise ApiError(409, "channel_unavailable", "the insurance bureau is not connected")
    path, token = CASHIER_PATH.format(pay_ord_id=row.pay_ord_id), str(row.pay_token)
    await commit_before_call(session)  # the platform notifies the API within its answer: no lock held
    try:
        answer = await state.bureau.http.post(path, json={"payToken": token})
    except httpx.HTTPError as err:
        raise ApiError(502, "bureau_unavailable", f"the cashier did not answer ({type(err).__name__})") from None
    if answer.status_code == 409:  # the platform's order is no longer payable (taken back, failed)
        raise ApiError(409, "not_paying", f"the platform's order of {row.id} is no longer payable")
    if answer.status_code != 200:
        raise ApiError(502, "bureau_error", f"the simulated cashier answered {answer.status_code}")
    await session.refresh(row)
    return svc.settlement_out(row)


@router.get("/credit-reports", response_model=list[s.CreditRecord])
async def credit_reports(state: StateDep, patient_id: str = Query(min_length=1)) -> Any:
    rows = await simulators(state).credit_records(patient_id=patient_id)
    return [s.CreditRecord(kind=r.kind, visit_id=r.visit_id, amount_fen=r.amount_fen, at=r.at) for r in rows]


@router.post("/payments/{payment_id}/complete", response_model=s.PaymentOut, responses=responses(404, 409, 502))
async def complete_payment(payment_id: str, state: StateDep, session: SessionDep) -> Any:
    """The patient pays at the channel's simulator (or the sandbox channel), which notifies us
    as the real one does: the money lands through the notification's own path."""
    payment = await session.get(Payment, payment_id)
    at = state.channels.get(payment.method) if payment is not None else None
    if payment is None or at is None:
        raise ApiError(404, "payment_not_found", f"no channel payment {payment_id}")
    if isinstance(at, SandboxChannel):
        body, headers = at.notification(payment_id=payment.id, amount_fen=payment.amount_fen)
        told = at.verify(headers, body)
        assert isinstance(told, Paid)  # our own signature over our own body
        await payments.channel_notified(state, session, at.name, told)
    else:
        await commit_before_call(session)
        try:
            await at.simulate_payment(payment.id, payment.amount_fen)
        except ChannelError as err:
            raise ApiError(502, "channel_error", f"the {payment.method} simulator refused: {err}") from None
    await session.refresh(payment)
    entries = (
        await session.scalars(
            select(LedgerEntry).where(LedgerEntry.payment_id == payment_id, LedgerEntry.kind == EntryKind.payment)
        )
    ).all()
    return payments.out(payment, [(e.visit_id, e.amount_fen) for e in entries])
