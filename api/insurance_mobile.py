"""医保移动支付 (NHSA mobile payment) at the API: the bureau's order of the unpaid bill (6201,
authorised by the patient's payAuthNo from the 医保电子凭证 app), paying it (6202: the fund and
the personal account pay at once, the cash part at the platform's cashier), and the platform's
signed notification, which only wakes MobileInsurancePaymentWorkflow: the money is booked by its
activity from what 6301 says, never from the notification's body.

The payAuthNo is kept on the settlement only: never logged, never in a workflow payload."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import WorkflowIDConflictPolicy

from api import insurance, schemas as s, services as svc
from api.deps import AppState, commit_before_call
from api.errors import ApiError
from api.insurance import _items, own_settlement, split_adds_up
from db.models import InsuranceSettlement, Patient
from db.nhsa import bureau_person, message_id, order_of
from db.repositories import utcnow
from domain.insurance import SettlementStatus
from integrations.gateway import GatewayError
from integrations.insurance_bureau import PATIENT_APP, FeeDetail, InsuranceBureauClient, Split
from integrations.nhsa_mobile import MobileOrder, MobilePayment, NotificationRefused
from ledger import payments as money
from ledger.errors import NothingToPay
from workflows import contracts_mobile as m
from workflows.insurance_mobile import MobileInsurancePaymentWorkflow

log = logging.getLogger("yihoufu.api.insurance_mobile")

MOBILE = "mobile"
CHANNEL = "nhsa_mobile"  # the settlement's channel, and the method of its cash part
# refusals of a request the bureau did not take (a stale signature; the sign-in refused twice,
# the call not recorded): a 6202 refused so paid nothing, and is sent again with its msgid
NOT_TAKEN = frozenset({"StaleRequest", "SignInInvalid"})
NOTIFY_PATH = "/v1/payments/notify/nhsa-mobile"


def _bureau(state: AppState, patient: Patient) -> InsuranceBureauClient:
    if not patient.insured_locally:
        raise ApiError(409, "not_insured", "insurance mobile payment is for the locally insured")
    if state.bureau is None:
        raise ApiError(409, "channel_unavailable", "the insurance bureau is not connected")
    return state.bureau


def _refused(err: GatewayError, step: str, *, keeps_writes: bool = False) -> ApiError:
    """The bureau's refusal in our words (its err_msg may carry personal data: never passed on)."""
    if err.code == "PayAuthInvalid":
        text = "the insurance authorisation was refused or has expired: authorise again"
        return ApiError(409, "pay_auth_refused", text, keeps_writes=keeps_writes)
    if err.code == "CardLocked":
        return ApiError(409, "card_locked", "the insurance card is locked: pay at a channel", keeps_writes=keeps_writes)
    text = f"the insurance bureau refused the {step} ({err.code})"
    return ApiError(502, "bureau_error", text, keeps_writes=keeps_writes)


def _unavailable(settlement_id: str, step: str, err: Exception) -> ApiError:
    log.warning("insurance mobile %s: the %s failed: %s", settlement_id, step, type(err).__name__)
    return ApiError(502, "bureau_unavailable", "the insurance bureau did not answer: try again later")


def _split(order: MobileOrder) -> Split:
    return Split(
        mdtrt_id=order.pay_ord_id,
        total_fen=order.total_fen,
        pooled_fen=order.fund_fen,
        personal_fen=order.personal_fen,
        self_pay_fen=order.cash_fen,
        setl_id="",
    )


async def _upload(
    state: AppState,
    bureau: InsuranceBureauClient,
    patient: Patient,
    pay_auth_no: str,
    settlement_id: str,
    items: list[FeeDetail],
    msgid: str,
) -> MobileOrder:
    """6201: the bill's fee details up, the order and its split back; refusals in our words."""
    now = utcnow()
    try:
        return await MobilePayment(bureau).upload(
            msgid=msgid,
            psn_no=bureau_person(patient),
            pay_auth_no=pay_auth_no,
            med_org_ord=settlement_id,
            details=items,
            at=now,
            operator=PATIENT_APP,
            day=bureau.local_day(now),
            notify_url=state.settings.public_base_url.rstrip("/") + NOTIFY_PATH,
        )
    except GatewayError as err:
        raise _refused(err, "order (6201)") from None
    except (httpx.HTTPError, KeyError, ValueError) as err:  # unreachable, too slow, or an answer we cannot read
        raise _unavailable(settlement_id, "order (6201)", err) from None


def _store(
    session: AsyncSession,
    patient: Patient,
    bills: money.Bills,
    order: MobileOrder,
    pay_auth_no: str,
    settlement_id: str,
) -> InsuranceSettlement:
    """The settlement of the bureau's order, its split as the order has it (the payAuthNo on it only)."""
    return insurance.store_settlement(
        session,
        patient,
        bills,
        _split(order),
        settlement_id,
        action="insurance_mobile_ordered",
        audited={"pay_ord_id": order.pay_ord_id},
        mode=MOBILE,
        pay_ord_id=order.pay_ord_id,
        pay_token=order.pay_token,
        pay_auth_no=pay_auth_no,
    )


async def create_order(
    state: AppState,
    session: AsyncSession,
    patient: Patient,
    body: s.InsuranceMobileOrderIn,
    *,
    idempotency_key: str | None,
) -> JSONResponse:
    """Upload the unpaid bill (or chosen visits) to the bureau as a mobile order (6201) with the
    patient's authorisation; answers the split. Nothing is paid yet."""
    bureau = _bureau(state, patient)
    request_hash = svc.body_hash(body)
    key = f"insurance-mobile-order:{patient.id}:{idempotency_key}" if idempotency_key else None
    bills = await money.unpaid(session, patient.id, body.visit_ids)  # takes the patient's lock
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    if not bills:
        raise NothingToPay("nothing is owed on these visits")
    await insurance.refuse_overlap(session, patient.id, [v.id for v, _ in bills])
    settlement_id = svc.new_id("ins_")
    items = await _items(session, bills, settlement_id)
    total = sum(i.amount_fen for i in items)
    msgid = await message_id(session, key=f"6201:{settlement_id}", infno="6201", now=utcnow(), make=bureau.msgid)
    await commit_before_call(session)  # no transaction (SQLite: the write lock) held across the bureau's call
    order = await _upload(state, bureau, patient, body.pay_auth_no, settlement_id, items, msgid)
    split = _split(order)
    if not split_adds_up(split, total):  # an unpaid order is harmless: it expires at the bureau
        raise ApiError(502, "bureau_error", f"the bureau's 6201 split does not add up to {total} fen")
    row = _store(session, patient, bills, order, body.pay_auth_no, settlement_id)
    data = svc.settlement_out(row).model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 201, data)
    return JSONResponse(data, status_code=201)


def workflow_input(row: InsuranceSettlement, timeout: timedelta) -> m.MobilePaymentInput:
    return m.MobilePaymentInput(
        settlement_id=row.id,
        fund_fen=row.pooled_fen,
        personal_fen=row.personal_fen,
        cash_fen=row.self_pay_fen,
        timeout_seconds=max(timeout.total_seconds(), 0.0),
    )


async def _start(state: AppState, row: InsuranceSettlement, *, signal: bool) -> None:
    """Start the settlement's workflow (one already running is used; `signal`: told the order
    changed). The deadline counts from when 6202 was sent (the row's `updated_at` then)."""
    left = state.settings.insurance_self_pay_timeout - (utcnow() - row.updated_at)
    inp, wid, summary = workflow_input(row, left), m.mobile_workflow_id(row.id), f"医保移动支付 {row.id}"
    queue = state.settings.task_queue
    # signal-with-start: the running workflow is signalled, a missing one started and signalled
    how: dict[str, Any] = (
        {"start_signal": m.ORDER_UPDATED} if signal else {"id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING}
    )
    await state.temporal.start_workflow(
        MobileInsurancePaymentWorkflow.run, inp, id=wid, task_queue=queue, static_summary=summary, **how
    )


async def pay(
    state: AppState,
    session: AsyncSession,
    patient: Patient,
    row: InsuranceSettlement,
    body: s.InsurancePayIn,
    *,
    idempotency_key: str | None,
) -> JSONResponse:
    """Pay a mobile order (6202): the fund and the personal account pay their parts; the cash
    part is paid at the platform's cashier (`cashier_url`). Unpaid in time, it is taken back."""
    bureau = _bureau(state, patient)
    if body.channel != CHANNEL:
        raise ApiError(409, "settlement_mode", f"a mobile settlement is paid with channel {CHANNEL}")
    request_hash = svc.body_hash({"settlement_id": row.id, **body.model_dump(mode="json")})
    key = f"insurance-pay:{patient.id}:{idempotency_key}" if idempotency_key else None
    bills = await money.unpaid(session, patient.id, None)  # takes the patient's lock
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    await session.refresh(row)
    if row.status != SettlementStatus.presettled or row.channel:
        raise ApiError(409, "settlement_used", f"settlement {row.id} is {row.status}")
    await insurance.refuse_overlap(session, patient.id, list(row.visit_ids), row.id)
    owed = sum(t.balance_fen for v, t in bills if v.id in row.visit_ids and t.paid_fen == 0)
    if owed != row.total_fen:
        raise ApiError(409, "bill_changed", "the bill changed since the order: order again")
    order = await _send(state, session, bureau, row)
    data = svc.settlement_out(row, cashier_url=order.cashier_url or None).model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 200, data)
    await commit_before_call(session)  # the answer is kept before the workflow starts
    await _start(state, row, signal=False)
    return JSONResponse(data, status_code=200)


async def _send(
    state: AppState, session: AsyncSession, bureau: InsuranceBureauClient, row: InsuranceSettlement
) -> MobileOrder:
    """6202 of a checked settlement: `paying` stored first (its msgid kept), then the call; its
    refusals and an unknown outcome answered as problems (the workflow started where it may
    have paid)."""
    msgid = await message_id(session, key=f"6202:{row.id}", infno="6202", now=utcnow(), make=bureau.msgid)
    row.status, row.channel, row.updated_at = SettlementStatus.paying, CHANNEL, utcnow()
    pay_auth_no = str(row.pay_auth_no)
    # paying is stored before the call: should the request die after it, the reconciliation
    # finds the order (6301) and books or takes it back
    await commit_before_call(session)
    try:
        order = await MobilePayment(bureau).pay(
            msgid=msgid,
            order=order_of(row),
            pay_auth_no=pay_auth_no,
            operator=PATIENT_APP,
            day=bureau.local_day(utcnow()),
        )
    except GatewayError as err:
        if err.code in NOT_TAKEN:  # refused before the bureau took it: nothing paid, the patient tries again
            row.status, row.channel, row.updated_at = SettlementStatus.presettled, "", utcnow()
            log.warning("insurance mobile %s: 6202 not taken (%s): try again", row.id, err.code)
            text = "the insurance bureau did not take the payment: try again"
            raise ApiError(503, "bureau_unavailable", text, headers={"Retry-After": "5"}, keeps_writes=True) from None
        if err.retryable:  # the bureau away or failing: it may have paid; the workflow asks 6301
            await _start(state, row, signal=False)
            raise _unavailable(row.id, "payment (6202)", err) from None
        # refused: nothing was paid; the order is dead (its msgid answers the same)
        row.status, row.detail, row.updated_at = SettlementStatus.failed, f"6202 refused ({err.code})", utcnow()
        raise _refused(err, "payment (6202)", keeps_writes=True) from None
    except (httpx.HTTPError, KeyError, ValueError) as err:  # it may have gone through: the workflow asks 6301
        await _start(state, row, signal=False)
        raise _unavailable(row.id, "payment (6202)", err) from None
    return order


async def notified(state: AppState, session: AsyncSession, headers: Mapping[str, str], body: bytes) -> None:
    """The platform's notification about an order: verified, then it wakes the order's workflow,
    which asks 6301 (its amounts are not trusted). Told again: harmless."""
    if state.bureau is None:
        raise ApiError(404, "unknown_channel", "the insurance bureau is not connected")
    try:
        notice = MobilePayment(state.bureau).verify_notification(headers, body, now=utcnow())
    except NotificationRefused as err:  # our code: the bureau's in snake case (invalid_signature, stale_timestamp, ...)
        code = "invalid_signature" if err.code == "SignatureDoesNotMatch" else re.sub(r"(?<!^)(?=[A-Z])", "_", err.code)
        status = 400 if err.code == "UnreadableNotification" else 401
        raise ApiError(status, code.lower(), "the notification was refused: " + err.message) from None
    row = await session.scalar(
        select(InsuranceSettlement).where(
            InsuranceSettlement.pay_ord_id == notice.pay_ord_id, InsuranceSettlement.mode == MOBILE
        )
    )
    if row is None or row.id != notice.med_org_ord:
        raise ApiError(404, "settlement_not_found", "no mobile order of that payOrdId")
    if row.status != SettlementStatus.paying:  # booked or taken back already
        return
    await commit_before_call(session)
    await _start(state, row, signal=True)


async def pay_settlement(
    state: AppState,
    session: AsyncSession,
    patient: Patient,
    settlement_id: str,
    body: s.InsurancePayIn,
    *,
    client_ip: str | None,
    idempotency_key: str | None,
) -> JSONResponse:
    """A settlement is paid as its mode says: a mobile one with channel nhsa_mobile (6202), a
    card-less one at a payment channel (api/insurance.py); any other pairing is refused."""
    row = await own_settlement(session, patient, settlement_id)
    if row.mode == MOBILE:
        return await pay(state, session, patient, row, body, idempotency_key=idempotency_key)
    if body.channel == CHANNEL:
        raise ApiError(409, "settlement_mode", "a card-less settlement's self-pay part is paid at a payment channel")
    return await insurance.pay(
        state, session, patient, settlement_id, body, client_ip=client_ip, idempotency_key=idempotency_key
    )
