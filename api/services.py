"""What the routes share: request idempotency, reading a visit as the contract shows it,
starting its workflow, and the answers' shapes of refunds, receipts and settlements. Thin:
rules live in domain/, money in ledger/, SQL in db/. Patients, SMS codes and enrolment have
modules of their own (api/patients.py, api/codes.py, api/enrolment.py)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api import schemas as s
from api.deps import AppState
from api.errors import ApiError
from db.models import IdempotencyRecord, InsuranceSettlement, LedgerEntry, Payment, Receipt, Refund, Visit, VisitEvent
from db.oversight import Dispute
from db.repositories import open_charges, utcnow
from domain.bill import Entry, EntryKind, totals
from domain.sanctions import DisputeOutcome, DisputeStatus, HoldKind
from domain.visit import RESULT_CATEGORIES, Category, EventType
from workflows import contracts as c
from workflows.visit import VisitWorkflow, initial_search_attributes


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


def body_hash(model: BaseModel | dict[str, Any]) -> str:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- idempotency ---------------------------------------------------------------------


async def replay(
    session: AsyncSession, key: str, request_hash: str, *, code: str = "idempotency_key_reused"
) -> IdempotencyRecord | None:
    """The stored answer for a retried request, or None for a new one."""
    record = await session.get(IdempotencyRecord, key)
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise ApiError(409, code, "this key was already used with a different request body")
    return record


def remember(
    session: AsyncSession, key: str, request_hash: str, status: int, response: dict[str, Any] | list[Any]
) -> None:
    session.add(
        IdempotencyRecord(
            key=key, request_hash=request_hash, status_code=status, response=response, created_at=utcnow()
        )
    )


# --- visits --------------------------------------------------------------------------


MONEY = (EntryKind.payment, EntryKind.refund, EntryKind.refund_reversal)


async def ledger_rows(session: AsyncSession, visit_id: str) -> list[tuple[LedgerEntry, str | None]]:
    """The visit's ledger lines in order, each with its payment's method, in one read."""
    rows = await session.execute(
        select(LedgerEntry, Payment.method)
        .outerjoin(Payment, Payment.id == LedgerEntry.payment_id)
        .where(LedgerEntry.visit_id == visit_id)
        .order_by(LedgerEntry.id)
    )
    return [(e, m) for e, m in rows.all()]


def bill(rows: list[tuple[LedgerEntry, str | None]]) -> s.Bill:
    """The bill from the visit's ledger lines (each with its payment's method). The totals
    are summed from the same lines, so the bill adds up even when a payment lands between
    two reads."""
    sums = totals(Entry(kind=EntryKind(e.kind), amount_fen=e.amount_fen) for e, _ in rows)
    return s.Bill(
        total_fen=sums.total_fen,
        paid_fen=sums.paid_fen,
        balance_fen=sums.balance_fen,
        waived_fen=sums.waived_fen,
        lines=[
            s.BillLine(
                kind=e.kind,
                item_id=e.item_id,
                code=e.code,
                name=e.name,
                category=e.category,
                unit_price_fen=e.unit_price_fen,
                quantity=e.quantity,
                amount_fen=e.amount_fen,
                booked_at=e.created_at,
            )
            for e, _ in rows
            if e.kind in (EntryKind.charge, EntryKind.reversal)
        ],
        payments=[
            s.PaymentLine(
                kind=e.kind,
                payment_id=e.payment_id,
                method=method if e.payment_id else None,
                amount_fen=e.amount_fen,
                at=e.created_at,
            )
            for e, method in rows
            if e.kind in MONEY
        ],
    )


def hold_out(kind: str | None, reason: str | None, since: datetime | None, until: datetime | None) -> s.Hold | None:
    """The visit's hold on its sanctions, as the workflow recorded it (None when none is on)."""
    if kind is None or since is None:
        return None
    return s.Hold(kind=HoldKind(kind), since=since, until=until, reason=reason)


# the event that performs an item of each category (exams and labs: their results_ready, by id)
PERFORMED_BY = {EventType.dispensed: Category.drug, EventType.infusion_finished: Category.infusion}
TRACKED = RESULT_CATEGORIES | set(PERFORMED_BY.values())
ORDERING = (EventType.orders_placed, EventType.prescribed)


def unperformed_items(entries: Sequence[LedgerEntry], events: Sequence[VisitEvent]) -> list[s.UnperformedItem]:
    """Items charged (a charge no reversal undid) that no event performed: an exam or a lab
    without its results, a drug ordered before no `dispensed`, an infusion before no
    `infusion_finished`. Treatments, materials and others have no event that performs them:
    never listed. Walked from the events in the order recorded."""
    waiting: dict[str, str] = {}  # item_id -> category
    for ev in events:
        if ev.type in ORDERING:
            waiting |= {i["item_id"]: i["category"] for i in ev.payload.get("items", []) if i["category"] in TRACKED}
        elif ev.type == EventType.results_ready:
            for item_id in ev.payload.get("item_ids", []):
                waiting.pop(item_id, None)
        elif (category := PERFORMED_BY.get(EventType(ev.type))) is not None:
            waiting = {k: c for k, c in waiting.items() if c != category}
    return [
        s.UnperformedItem(item_id=e.item_id, category=e.category or waiting[e.item_id], name=e.name)
        for e in open_charges(entries)
        if e.item_id is not None and e.item_id in waiting
    ]


async def latest_dispute(session: AsyncSession, visit_id: str) -> s.VisitDispute | None:
    row = await session.scalar(
        select(Dispute).where(Dispute.visit_id == visit_id).order_by(Dispute.opened_at.desc(), Dispute.id).limit(1)
    )
    if row is None:
        return None
    return s.VisitDispute(
        dispute_id=row.id,
        status=DisputeStatus(row.status),
        reason=row.reason,
        opened_at=row.opened_at,
        outcome=DisputeOutcome(row.outcome) if row.outcome else None,
        note=row.note,
        resolved_at=row.resolved_at,
    )


async def visit_events(session: AsyncSession, visit_id: str) -> Sequence[VisitEvent]:
    return (
        await session.scalars(select(VisitEvent).where(VisitEvent.visit_id == visit_id).order_by(VisitEvent.id))
    ).all()


def events_out(events: Sequence[VisitEvent]) -> list[s.VisitEventOut]:
    return [
        s.VisitEventOut(event_id=e.event_id, type=e.type, occurred_at=e.occurred_at, stage_after=e.stage_after)
        for e in events
    ]


async def visit_view(session: AsyncSession, visit: Visit, recorded: c.VisitRecordResult | None = None) -> s.VisitOut:
    """A visit as the contract shows it: its bill from the ledger, its hold, what is still
    to be performed, its latest dispute and its events. The stage, status, deadlines and
    sanctions are what the visit's workflow recorded: its row, or the answer of the update
    that just recorded them (`recorded`, for the answer to an event or an action)."""
    rows = await ledger_rows(session, visit.id)
    events = await visit_events(session, visit.id)
    the_bill = bill(rows)
    r: Visit | c.VisitRecordResult = visit if recorded is None else recorded
    if recorded is None:
        hold = hold_out(visit.hold_kind, visit.hold_reason, visit.hold_started_at, visit.hold_until_at)
    else:
        hold = hold_out(recorded.hold_kind, recorded.hold_reason, recorded.hold_since, recorded.hold_until)
    return s.VisitOut(
        visit_id=visit.id,
        patient_id=visit.patient_id,
        department=visit.department,
        doctor=visit.doctor,
        channel=visit.channel,
        stage=r.stage,
        payment_status=r.payment_status,
        bill=the_bill,
        discharged_at=r.discharged_at,
        arrears_at=r.arrears_at,
        due_at=r.due_at,
        card_locked=r.card_locked,
        credit_reported=r.credit_reported,
        hold=hold,
        unperformed_items=unperformed_items([e for e, _ in rows], events),
        dispute=await latest_dispute(session, visit.id),
        events=events_out(events),
        created_at=visit.created_at,
    )


def patient_tag(state: AppState, patient_id: str) -> str:
    """The patient's pseudonym in Temporal's search index (PatientTag): a keyed hash of the id."""
    return state.pii.lookup("patient", patient_id)[:16]


async def ensure_workflow(state: AppState, visit: Visit) -> WorkflowHandle[Any, Any]:
    """Start the visit's workflow, or find the one already running (safe to call again)."""
    client: Client = state.temporal
    inp = c.VisitInput(
        visit_id=visit.id,
        patient_id=visit.patient_id,
        registration_fee_fen=visit.registration_fee_fen,
        policy=state.settings.payment_policy(),
        department=visit.department,
        patient_tag=patient_tag(state, visit.patient_id),
    )
    try:
        return await client.start_workflow(
            VisitWorkflow.run,
            inp,
            search_attributes=initial_search_attributes(inp),
            id=c.workflow_id(visit.id),
            task_queue=state.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Visit {visit.id} · {visit.department}",
        )
    except WorkflowAlreadyStartedError:  # finished already (settled): the id is not reused
        return client.get_workflow_handle(c.workflow_id(visit.id))


def refund_out(refund: Refund) -> s.RefundOut:
    return s.RefundOut(
        refund_id=refund.id,
        payment_id=refund.payment_id,
        patient_id=refund.patient_id,
        visit_id=refund.visit_id,
        method=refund.method,
        amount_fen=refund.amount_fen,
        reason=refund.reason,
        status=refund.status,
        detail=refund.detail,
        channel_refund_no=refund.channel_refund_no,
        created_at=refund.created_at,
        completed_at=refund.completed_at,
    )


def receipt_out(receipt: Receipt) -> s.ReceiptOut:
    c = receipt.content
    return s.ReceiptOut(
        receipt_id=receipt.id,
        visit_id=receipt.visit_id,
        version=receipt.version,
        total_fen=receipt.total_fen,
        paid_fen=receipt.paid_fen,
        hospital=c["hospital"],
        department=c["department"],
        patient_name=c["patient_name"],
        lines=[s.ReceiptLine(**line) for line in c["lines"]],
        payments=[s.ReceiptPayment(**p) for p in c["payments"]],
        check_code=receipt.check_code,
        issued_at=receipt.issued_at,
        voided_at=receipt.voided_at,
        download_url=f"/v1/patient/receipts/{receipt.id}?format=html",
        ebill=receipt_ebill(receipt),
    )


def receipt_ebill(receipt: Receipt) -> s.ReceiptEBill | None:
    if receipt.ebill_status is None and receipt.ebill_no is None:
        return None
    return s.ReceiptEBill(
        status=receipt.ebill_status or "pending",
        bill_batch_code=receipt.ebill_batch_code,
        bill_no=receipt.ebill_no,
        random=receipt.ebill_random,
        qr_code_png=receipt.ebill_qr_code,
        picture_url=receipt.ebill_picture_url,
        issued_at=receipt.ebill_issued_at,
        written_off_no=receipt.ebill_written_off_no,
        written_off_at=receipt.ebill_written_off_at,
    )


def settlement_out(
    row: InsuranceSettlement, self_pay: s.ChannelPayment | None = None, *, cashier_url: str | None = None
) -> s.InsuranceSettlementOut:
    return s.InsuranceSettlementOut(
        mode=row.mode or "card",
        cashier_url=cashier_url,
        settlement_id=row.id,
        visit_ids=list(row.visit_ids),
        total_fen=row.total_fen,
        pooled_fen=row.pooled_fen,
        personal_fen=row.personal_fen,
        self_pay_fen=row.self_pay_fen,
        status=row.status,
        channel=row.channel or None,
        self_pay=self_pay,
        detail=row.detail,
        created_at=row.created_at,
    )
