"""What a patient sees of their own: visits, the merged bill, the inbox, refunds and
receipts. Another patient's row does not exist for them (404, never 403)."""

from __future__ import annotations

from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api import schemas as s, services as svc
from api.errors import ApiError
from db.models import Patient, Receipt, Refund, SmsMessage, Visit
from db.receipts import receipt_html
from db.repositories import open_visits
from domain.sanctions import HoldKind
from ledger.errors import VisitNotFound


async def visits(session: AsyncSession, patient: Patient) -> list[s.VisitOut]:
    rows = (
        await session.scalars(
            select(Visit).where(Visit.patient_id == patient.id).order_by(Visit.created_at.desc()).limit(100)
        )
    ).all()
    return [for_patient(await svc.visit_view(session, v)) for v in rows]


async def own_visit(session: AsyncSession, patient: Patient, visit_id: str) -> Visit:
    """The patient's visit (another patient's does not exist for them)."""
    row = await session.get(Visit, visit_id)
    if row is None or row.patient_id != patient.id:
        raise VisitNotFound(f"no visit {visit_id}")
    return row


async def visit(session: AsyncSession, patient: Patient, visit_id: str) -> s.VisitOut:
    return for_patient(await svc.visit_view(session, await own_visit(session, patient, visit_id)))


# what the patient reads of an operator's hold: the operator's reason is an internal note
OPERATOR_HOLD = "暂缓催收"


def for_patient(view: s.VisitOut) -> s.VisitOut:
    """The visit as its patient sees it: a dispute hold shows their own words, an operator's
    hold a neutral text in place of the operator's reason."""
    if view.hold is None or view.hold.kind == HoldKind.dispute:
        return view
    return view.model_copy(update={"hold": view.hold.model_copy(update={"reason": OPERATOR_HOLD})})


async def merged_bill(session: AsyncSession, patient: Patient) -> s.MergedBill:
    """Every visit that still owes money, old arrears included, and the total."""
    bills = await open_visits(session, patient.id)
    out = []
    for row, _ in bills:
        view = for_patient(await svc.visit_view(session, row))
        out.append(
            s.BillVisit(
                visit_id=row.id,
                department=row.department,
                created_at=row.created_at,
                payment_status=view.payment_status,
                due_at=row.due_at,
                bill=view.bill,
                arrears_at=view.arrears_at,
                hold=view.hold,
            )
        )
    return s.MergedBill(visits=out, balance_fen=sum(t.balance_fen for _, t in bills))


async def notifications(session: AsyncSession, patient: Patient, limit: int) -> list[s.Notification]:
    rows = (
        await session.scalars(
            select(SmsMessage).where(SmsMessage.patient_id == patient.id).order_by(SmsMessage.id.desc()).limit(limit)
        )
    ).all()
    return [s.Notification(template=m.template, text=m.text, visit_id=m.visit_id, sent_at=m.created_at) for m in rows]


async def refunds(session: AsyncSession, patient: Patient) -> list[s.RefundOut]:
    rows = (
        await session.scalars(select(Refund).where(Refund.patient_id == patient.id).order_by(Refund.created_at.desc()))
    ).all()
    return [svc.refund_out(r) for r in rows]


async def receipts(session: AsyncSession, patient: Patient) -> list[s.ReceiptOut]:
    rows = (
        await session.scalars(
            select(Receipt)
            .where(Receipt.patient_id == patient.id)
            .order_by(Receipt.issued_at.desc(), Receipt.version.desc())
        )
    ).all()
    return [svc.receipt_out(r) for r in rows]


async def receipt(
    session: AsyncSession, patient: Patient, receipt_id: str, *, html: bool
) -> s.ReceiptOut | HTMLResponse:
    """The receipt, or its printable page to download."""
    row = await session.get(Receipt, receipt_id)
    if row is None or row.patient_id != patient.id:
        raise ApiError(404, "receipt_not_found", f"no receipt {receipt_id}")
    if html:
        return HTMLResponse(
            receipt_html(row), headers={"Content-Disposition": f'attachment; filename="receipt-{row.id}.html"'}
        )
    return svc.receipt_out(row)
