"""Sandbox only (YHF_SANDBOX=1): what the simulated SMS gateway, insurance bureau and
credit platform saw, and the knobs of the simulated credit-score sources."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from api import payments
from api import schemas as s
from api.deps import SessionDep, StateDep
from api.errors import ApiError, responses
from db.models import LedgerEntry, Payment, SimCreditRecord, SimCreditScore, SmsMessage
from db.repositories import utcnow
from integrations.credit_platform import score_key
from integrations.insurance_bureau import card_state
from integrations.payments.alipay import AlipayError
from integrations.payments.wechat import WeChatPayError

router = APIRouter(prefix="/v1/sandbox", tags=["sandbox"])


@router.get("/sms", response_model=list[s.SandboxSms], responses=responses(422))
async def sms_outbox(state: StateDep, session: SessionDep,
                     phone: str = Query(pattern=r"^1[3-9]\d{9}$")) -> Any:
    rows = (await session.scalars(select(SmsMessage).where(
        SmsMessage.phone_hash == state.pii.lookup("phone", phone)).order_by(SmsMessage.id))).all()
    return [s.SandboxSms(phone=phone, template=m.template, params=m.params, text=m.text, sent_at=m.created_at)
            for m in rows]


@router.put("/credit-scores/{id_number}", response_model=s.CreditScoresIn, responses=responses(422))
async def set_scores(body: s.CreditScoresIn, session: SessionDep,
                     id_number: str = Path(pattern=r"^\d{17}[\dXx]$")) -> Any:
    key = score_key(id_number)
    row = await session.get(SimCreditScore, key)
    if row is None:
        row = SimCreditScore(id_number_hash=key, bank_score=None, sesame_score=None, updated_at=utcnow())
        session.add(row)
    row.bank_score, row.sesame_score, row.updated_at = body.bank_score, body.sesame_score, utcnow()
    return body


@router.get("/insurance-cards/{patient_id}", response_model=s.InsuranceCard)
async def insurance_card(patient_id: str, session: SessionDep) -> Any:
    locked, events = await card_state(session, patient_id)
    return s.InsuranceCard(locked=locked, events=[s.CardEvent(action=e.action, at=e.at, reason=e.reason)
                                                  for e in events])


@router.get("/insurance-settlements/{patient_id}", response_model=list[s.SimSettlement])
async def insurance_settlements(patient_id: str, session: SessionDep) -> Any:
    """What the simulated bureau recorded of card-less settlements (pre-settle, settle, 冲正)."""
    from db.models import SimInsuranceSettlement

    rows = (await session.scalars(select(SimInsuranceSettlement).where(
        SimInsuranceSettlement.patient_id == patient_id).order_by(SimInsuranceSettlement.created_at))).all()
    return [s.SimSettlement(presettle_id=r.id, status=r.status, total_fen=r.total_fen, pooled_fen=r.pooled_fen,
                            personal_fen=r.personal_fen, self_pay_fen=r.self_pay_fen, settlement_no=r.settlement_no)
            for r in rows]


@router.get("/credit-reports", response_model=list[s.CreditRecord])
async def credit_reports(session: SessionDep, patient_id: str = Query(min_length=1)) -> Any:
    rows = (await session.scalars(select(SimCreditRecord).where(
        SimCreditRecord.patient_id == patient_id).order_by(SimCreditRecord.id))).all()
    return [s.CreditRecord(kind=r.kind, visit_id=r.visit_id, amount_fen=r.amount_fen, at=r.at) for r in rows]


@router.post("/payments/{payment_id}/complete", response_model=s.PaymentOut, responses=responses(404))
async def complete_payment(payment_id: str, state: StateDep, session: SessionDep) -> Any:
    """The patient pays at the sandbox channel: the channel sends its signed notification."""
    payment = await session.get(Payment, payment_id)
    if payment is not None and payment.method != "sandbox" and (at := state.channels.get(payment.method)):
        # the patient pays at the simulated channel, which notifies us as the real one does
        await session.commit()
        try:
            await at.simulate_payment(payment.id, payment.amount_fen)
        except (WeChatPayError, AlipayError) as err:
            raise ApiError(502, "channel_error", f"the {payment.method} simulator refused: {err}") from None
        await session.refresh(payment)
        entries = (await session.scalars(select(LedgerEntry).where(
            LedgerEntry.payment_id == payment_id, LedgerEntry.kind == "payment"))).all()
        return payments.out(payment, [(e.visit_id, e.amount_fen) for e in entries])
    if payment is None or payment.method != "sandbox":
        raise ApiError(404, "payment_not_found", f"no sandbox payment {payment_id}")
    body, headers = payments.sandbox_notification(state.settings.sandbox_channel_secret, payment)
    money = await payments.sandbox_notified(state, session, body, {k.lower(): v for k, v in headers.items()})
    await session.commit()
    await payments.landed(state, money)
    return payments.out(money.payment, money.parts)
