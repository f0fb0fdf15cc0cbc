"""Card-less insurance payment (医保脱卡支付) at the API: the bureau's pre-settlement split of
the unpaid bill, then paying it (the self-pay part at a channel, the insurance part by the
saga InsurancePaymentWorkflow, started after the commit). The bureau speaks NHSA: a pre-settlement
is 2201 (the visit at the bureau, mdtrt_id), 2204 (the bill's fee details) and 2206."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi.responses import JSONResponse
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import WorkflowIDConflictPolicy

from api import schemas as s, services as svc
from api.deps import AppState, commit_before_call
from api.errors import ApiError
from api.payments import open_order
from db.models import InsuranceSettlement, Patient
from db.nhsa import bureau_person, message_id
from db.repositories import audit, ledger_lines, open_charges, utcnow
from domain.insurance import SettlementStatus, charge_item_type
from integrations.gateway import GatewayError
from integrations.insurance_bureau import PATIENT_APP, FeeDetail, InsuranceBureauClient, Split
from ledger import payments as money
from ledger.errors import NothingToPay
from workflows import contracts as c
from workflows.insurance import InsurancePaymentWorkflow

log = logging.getLogger("yihoufu.api.insurance")


async def own_settlement(session: AsyncSession, patient: Patient, settlement_id: str) -> InsuranceSettlement:
    row = await session.get(InsuranceSettlement, settlement_id)
    if row is None or row.patient_id != patient.id:
        raise ApiError(404, "settlement_not_found", f"no settlement {settlement_id}")
    return row


async def refuse_overlap(session: AsyncSession, patient_id: str, visit_ids: list[str], settlement_id: str = "") -> None:
    """409 `payment_in_progress` while another settlement over any of these visits is being
    paid (a mobile order paying, an insurance part settled, or a pre-settlement with its channel
    chosen): a second would have the fund and the personal account pay the same bill again.
    Asked under the patient's lock (money.unpaid), so two payments do not both pass."""
    found = await session.scalars(
        select(InsuranceSettlement).where(
            InsuranceSettlement.patient_id == patient_id,
            InsuranceSettlement.id != settlement_id,
            or_(
                InsuranceSettlement.status.in_([SettlementStatus.paying, SettlementStatus.insurance_settled]),
                (InsuranceSettlement.status == SettlementStatus.presettled) & (InsuranceSettlement.channel != ""),
            ),
        )
    )
    for other in found.all():
        if set(other.visit_ids) & set(visit_ids):
            raise ApiError(
                409, "payment_in_progress", f"settlement {other.id} over these visits is being paid: wait for it"
            )


async def _items(session: AsyncSession, bills: money.Bills, settlement_id: str) -> list[FeeDetail]:
    """The fee details (2204) of every open charge of the bills; a visit partly paid is refused."""
    items: list[FeeDetail] = []
    for visit, totals in bills:
        if totals.paid_fen != 0:
            raise ApiError(409, "partly_paid", f"visit {visit.id} is partly paid: pay the rest at a channel")
        for e in open_charges(await ledger_lines(session, visit.id)):
            price, count = e.unit_price_fen, e.quantity
            if price is None or not count or price * count != e.amount_fen:
                price, count = e.amount_fen, 1
            items.append(
                FeeDetail(
                    feedetl_sn=f"{settlement_id}-{len(items) + 1:04d}",
                    code=e.code or e.item_id or "other",
                    name=e.name or "",
                    med_chrgitm_type=charge_item_type(e.category),
                    amount_fen=e.amount_fen,
                    unit_price_fen=price,
                    quantity=count,
                )
            )
    return items


async def _msgids(session: AsyncSession, bureau: InsuranceBureauClient, settlement_id: str) -> dict[str, str]:
    """The msgids of the pre-settlement's transactions, kept before any is sent."""
    now = utcnow()
    return {
        infno: await message_id(session, key=f"{infno}:{settlement_id}", infno=infno, now=now, make=bureau.msgid)
        for infno in ("2201", "2204", "2206", "2205", "2202")
    }


async def _ask_bureau(
    bureau: InsuranceBureauClient, msgids: dict[str, str], patient: Patient, settlement_id: str, items: list[FeeDetail]
) -> Split:
    """2201, 2204, 2206. Any failure after the 2201 (a refusal, a 5xx, a timeout, a split that
    does not add up) takes the details and the visit back (2205, 2202), best effort."""
    now = utcnow()
    day = bureau.local_day(now)
    psn_no = bureau_person(patient)
    mdtrt_id = await bureau.register(
        msgid=msgids["2201"], psn_no=psn_no, begntime=now, ipt_otp_no=settlement_id, operator=PATIENT_APP, day=day
    )
    batch = {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "chrg_bchno": settlement_id}
    total = sum(i.amount_fen for i in items)
    try:
        await bureau.upload_fees(msgid=msgids["2204"], details=items, at=now, **batch, operator=PATIENT_APP, day=day)
        split = await bureau.presettle(msgid=msgids["2206"], total_fen=total, **batch, operator=PATIENT_APP, day=day)
        if not split_adds_up(split, total):
            raise GatewayError(
                "SplitMismatch", f"the bureau's 2206 split does not add up to {total} fen", retryable=False
            )
        return split
    except Exception:
        try:  # best effort: what is left open at the bureau pays nothing
            await bureau.revoke_fees(msgid=msgids["2205"], operator=PATIENT_APP, day=day, **batch)
            await bureau.revoke_registration(
                msgid=msgids["2202"],
                mdtrt_id=mdtrt_id,
                psn_no=psn_no,
                ipt_otp_no=settlement_id,
                operator=PATIENT_APP,
                day=day,
            )
        except (GatewayError, httpx.HTTPError, KeyError, ValueError) as undo:
            log.warning(
                "insurance %s: the failed pre-settlement was not taken back: %s", settlement_id, type(undo).__name__
            )
        raise


def split_adds_up(split: Split, total_fen: int) -> bool:
    """The bill's total is the sum of its items, and pooled + personal + self-pay is the total."""
    parts = (split.pooled_fen, split.personal_fen, split.self_pay_fen)
    return split.total_fen == total_fen and sum(parts) == total_fen and min(parts) >= 0


async def presettle(
    state: AppState, session: AsyncSession, patient: Patient, body: s.InsurancePresettleIn
) -> s.InsuranceSettlementOut:
    """Ask the bureau to split the unpaid bill (or chosen visits) into pooled fund, personal
    account and self-pay. Nothing is paid yet."""
    if not patient.insured_locally:
        raise ApiError(409, "not_insured", "card-less insurance payment is for the locally insured")
    if state.bureau is None:
        raise ApiError(409, "channel_unavailable", "the insurance bureau is not connected")
    bills = await money.unpaid(session, patient.id, body.visit_ids)
    if not bills:
        raise NothingToPay("nothing is owed on these visits")
    settlement_id = svc.new_id("ins_")
    items = await _items(session, bills, settlement_id)
    msgids = await _msgids(session, state.bureau, settlement_id)
    await commit_before_call(session)  # no transaction (SQLite: the write lock) held across the bureau's call
    try:
        split = await _ask_bureau(state.bureau, msgids, patient, settlement_id, items)
    except GatewayError as err:  # its text is our own (integrations/insurance_bureau.py): no personal data
        if err.code == "CardLocked":
            raise ApiError(409, "card_locked", "the insurance card is locked: pay at a channel") from None
        raise ApiError(502, "bureau_error", f"the insurance bureau did not pre-settle: {err}") from None
    except (httpx.HTTPError, KeyError, ValueError) as err:  # unreachable, too slow, or an answer we cannot read
        log.warning("insurance %s: the pre-settlement failed: %s", settlement_id, type(err).__name__)
        raise ApiError(502, "bureau_unavailable", "the insurance bureau did not answer: try again later") from None
    row = store_settlement(
        session, patient, bills, split, settlement_id, action="insurance_presettled", bureau_presettle_id=split.mdtrt_id
    )
    return svc.settlement_out(row)


def store_settlement(
    session: AsyncSession,
    patient: Patient,
    bills: money.Bills,
    split: Split,
    settlement_id: str,
    *,
    action: str,
    audited: dict[str, Any] | None = None,
    **fields: str,
) -> InsuranceSettlement:
    """The pre-settled bill (the bureau's split of it, nothing paid yet), audited as `action` with
    the split and `audited`; `fields` the mode's own columns (the mdtrt_id, or the mobile order)."""
    now = utcnow()
    row = InsuranceSettlement(
        id=settlement_id,
        patient_id=patient.id,
        psn_no=bureau_person(patient),
        visit_ids=[v.id for v, _ in bills],
        total_fen=split.total_fen,
        pooled_fen=split.pooled_fen,
        personal_fen=split.personal_fen,
        self_pay_fen=split.self_pay_fen,
        status=SettlementStatus.presettled,
        channel="",
        created_at=now,
        updated_at=now,
        **fields,
    )
    session.add(row)
    audit(
        session,
        actor="patient",
        action=action,
        subject_type="patient",
        subject_id=patient.id,
        settlement_id=settlement_id,
        **(audited or {}),
        pooled_fen=split.pooled_fen,
        personal_fen=split.personal_fen,
        self_pay_fen=split.self_pay_fen,
    )
    return row


async def _start_saga(state: AppState, row: InsuranceSettlement) -> None:
    await state.temporal.start_workflow(
        InsurancePaymentWorkflow.run,
        c.InsurancePaymentInput(
            settlement_id=row.id,
            patient_id=row.patient_id,
            self_pay_payment_id=row.self_pay_payment_id or "",
            self_pay_fen=row.self_pay_fen,
            insurance_fen=row.pooled_fen + row.personal_fen,
            self_pay_timeout_seconds=state.settings.insurance_self_pay_timeout.total_seconds(),
        ),
        id=c.insurance_workflow_id(row.id),
        task_queue=state.settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"医保脱卡支付 {row.id}",
    )


async def pay(
    state: AppState,
    session: AsyncSession,
    patient: Patient,
    settlement_id: str,
    body: s.InsurancePayIn,
    *,
    client_ip: str | None,
    idempotency_key: str | None,
) -> JSONResponse:
    """Pay a pre-settled bill: the insurance part is settled with the bureau, the self-pay part
    is paid at `channel` (answered in `self_pay`). Unpaid in time, the insurance part is reversed."""
    request_hash = svc.body_hash({"settlement_id": settlement_id, **body.model_dump()})
    key = f"insurance-pay:{patient.id}:{idempotency_key}" if idempotency_key else None
    bills = await money.unpaid(session, patient.id, None)  # takes the patient's lock
    if key and (stored := await svc.replay(session, key, request_hash)) is not None:
        return JSONResponse(stored.response, status_code=stored.status_code)
    row = await own_settlement(session, patient, settlement_id)
    if row.status != SettlementStatus.presettled or row.channel:
        raise ApiError(409, "settlement_used", f"settlement {settlement_id} is {row.status}")
    await refuse_overlap(session, patient.id, list(row.visit_ids), row.id)
    owed = sum(t.balance_fen for v, t in bills if v.id in row.visit_ids and t.paid_fen == 0)
    if owed != row.total_fen:
        raise ApiError(409, "bill_changed", "the bill changed since the pre-settlement: pre-settle again")
    self_pay = None
    if row.self_pay_fen > 0:
        self_pay = await open_order(
            state,
            session,
            patient_id=patient.id,
            visit_ids=list(row.visit_ids),
            amount_fen=row.self_pay_fen,
            channel=body.channel,
            client_ip=client_ip,
            insurance_settlement_id=row.id,
        )
    row.channel = body.channel
    row.self_pay_payment_id = self_pay.payment_id if self_pay else None
    row.updated_at = utcnow()
    data = svc.settlement_out(row, self_pay).model_dump(mode="json")
    if key:
        svc.remember(session, key, request_hash, 200, data)
    await commit_before_call(session)  # the settlement is paid before its saga starts
    await _start_saga(state, row)
    return JSONResponse(data, status_code=200)
