"""电子票据: the electronic receipt of a settled visit, built from the ledger alone.

Issued when the visit settles; a refund afterwards voids it and issues the next version
(红冲 and re-issue), so every version stays on record. Each carries a check code, a keyed
HMAC over its content, with which the hospital verifies a copy shown to it.

Each version is also a bill at the provincial fiscal e-bill platform (财政电子票据), when one
is configured: its busNo ("{receipt id}-{version}") is set here, with the row; the platform is
called after this transaction (activities/receipts.py) and its bill recorded on the row by
`record_ebill`; a voided version's bill is written off (冲红) by `record_write_off`."""

from __future__ import annotations

import html
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Patient, Payment, Receipt, Visit
from db.pii import Pii
from db.repositories import ledger_lines, open_charges, utcnow, visit_totals
from domain.channels import LABELS
from domain.money import format_fen

METHODS = {
    **LABELS,  # the payment channels'
    "cash": "现金",
    "card": "银行卡",
    "insurance": "医保",
    "insurance_pooled": "医保统筹基金",
    "insurance_personal": "医保个人账户",
    "nhsa_mobile": "医保移动支付（自付部分）",
}


def check_code(pii: Pii, content: dict[str, Any]) -> str:
    return pii.lookup("receipt", json.dumps(content, sort_keys=True, ensure_ascii=False))[:20].upper()


async def receipt_content(session: AsyncSession, visit: Visit, hospital: str) -> dict[str, Any]:
    entries = await ledger_lines(session, visit.id)
    lines = [
        {
            "code": e.code,
            "name": e.name,
            "category": e.category,
            "unit_price_fen": e.unit_price_fen,
            "quantity": e.quantity,
            "amount_fen": e.amount_fen,
        }
        for e in open_charges(entries)
    ]
    by_payment: dict[str, int] = {}
    for e in entries:
        if e.payment_id and e.kind in ("payment", "refund", "refund_reversal"):
            by_payment[e.payment_id] = (
                by_payment.get(e.payment_id, 0) + (-1 if e.kind == "refund" else 1) * e.amount_fen
            )
    payments = []
    for payment_id, fen in by_payment.items():
        p = await session.get(Payment, payment_id)
        if p is not None and fen:
            payments.append({"payment_id": payment_id, "method": p.method, "amount_fen": fen})
    patient = await session.get(Patient, visit.patient_id)
    totals = await visit_totals(session, visit.id)
    return {
        "hospital": hospital,
        "visit_id": visit.id,
        "department": visit.department,
        "patient_name": patient.name_masked if patient else "",
        "lines": lines,
        "payments": payments,
        "total_fen": totals.total_fen,
        "paid_fen": totals.paid_fen,
        "visit_date": visit.created_at.date().isoformat(),
    }


async def issue_receipt(
    session: AsyncSession, pii: Pii, visit_id: str, *, hospital: str, ebills: bool = False
) -> Receipt | None:
    """The visit's current receipt: the one on record when nothing changed, else a new
    version (the old one voided). None while the visit still owes money. `ebills`: the
    hospital has a fiscal e-bill platform (a new version's bill is then `pending`)."""
    visit = await session.get(Visit, visit_id, with_for_update=True)
    if visit is None or (await visit_totals(session, visit_id)).balance_fen != 0:
        return None
    content = await receipt_content(session, visit, hospital)
    latest = await session.scalar(
        select(Receipt)
        .where(Receipt.visit_id == visit_id, Receipt.voided_at.is_(None))
        .order_by(Receipt.version.desc())
        .limit(1)
    )
    if content["total_fen"] == 0 and not content["payments"]:
        # nothing charged (or all of it cancelled and refunded): nothing to receipt, and the
        # receipt on record, if any, voided (its bill then written off, 冲红)
        if latest is not None:
            latest.voided_at = utcnow()
        return None
    if latest is not None and latest.content == content:
        return latest
    now = utcnow()
    version = 1
    if latest is not None:
        latest.voided_at = now
        version = latest.version + 1
    receipt_id = "R" + now.strftime("%Y%m%d") + secrets.token_hex(6).upper()
    receipt = Receipt(
        id=receipt_id,
        ebill_bus_no=f"{receipt_id}-{version}",
        ebill_status=EBillStatus.pending if ebills else None,
        visit_id=visit_id,
        patient_id=visit.patient_id,
        version=version,
        total_fen=content["total_fen"],
        paid_fen=content["paid_fen"],
        content=content,
        check_code=check_code(pii, content),
        issued_at=now,
        voided_at=None,
    )
    session.add(receipt)
    await session.flush()
    return receipt


class EBillStatus(StrEnum):
    pending = "pending"  # written with the receipt, not at the platform yet
    issued = "issued"
    written_off = "written_off"  # 冲红
    # the platform refused it (ebill_error, logged): not tried again; the next version (a later
    # change of the visit) is a bill of its own
    failed = "failed"
    not_required = "not_required"  # no bill: nothing charged, or a voided version never sent


async def ebill_work(session: AsyncSession, visit_id: str) -> tuple[list[Receipt], Receipt | None]:
    """The visit's platform work: voided versions whose bill may be valid at the platform (to
    write off: issued, or pending, whose answer may have been lost), and the current version
    when its bill is not issued yet."""
    rows = (await session.scalars(select(Receipt).where(Receipt.visit_id == visit_id).order_by(Receipt.version))).all()
    stale = [r for r in rows if r.voided_at is not None and r.ebill_status in (EBillStatus.issued, EBillStatus.pending)]
    current = next((r for r in rows if r.voided_at is None), None)
    if current is not None and current.ebill_status not in (None, EBillStatus.pending):
        current = None  # issued, not required, or refused (failed: not tried again)
    return stale, current


async def record_ebill(
    session: AsyncSession,
    receipt_id: str,
    *,
    batch_code: str,
    bill_no: str,
    random: str,
    qr_code: str,
    picture_url: str,
    issued_at: datetime,
) -> None:
    row = await session.get(Receipt, receipt_id, with_for_update=True)
    assert row is not None
    row.ebill_status, row.ebill_error = EBillStatus.issued, None
    row.ebill_batch_code, row.ebill_no, row.ebill_random = batch_code, bill_no, random
    row.ebill_qr_code, row.ebill_picture_url, row.ebill_issued_at = qr_code, picture_url, issued_at


async def record_ebill_request(session: AsyncSession, receipt_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """The bill as first sent, kept with its version: a later send re-sends it (the one stored
    first wins, so two racing senders send one body)."""
    row = await session.get(Receipt, receipt_id, with_for_update=True)
    assert row is not None
    if row.ebill_request is None:
        row.ebill_request = request
    return row.ebill_request


async def record_ebill_status(session: AsyncSession, receipt_id: str, status: str, error: str | None) -> None:
    row = await session.get(Receipt, receipt_id, with_for_update=True)
    assert row is not None
    if row.ebill_status != EBillStatus.issued:  # never undo an issued bill
        row.ebill_status = status
    row.ebill_error = error[:200] if error else None


async def record_write_off(session: AsyncSession, receipt_id: str, *, red_bill_no: str, at: datetime) -> None:
    row = await session.get(Receipt, receipt_id, with_for_update=True)
    assert row is not None
    row.ebill_status, row.ebill_error = EBillStatus.written_off, None
    row.ebill_written_off_no, row.ebill_written_off_at = red_bill_no, at


@dataclass(frozen=True)
class EBillBacklog:
    """What the fiscal e-bill platform still owes us: bills to issue (the current version still
    pending: an outage, swept by the morning statement run), bills to write off (a voided version
    issued or pending) and bills it refused (failed: an operator's). Count and oldest, each."""

    counts: dict[str, int]
    oldest: dict[str, datetime]


BACKLOG_KINDS = ("to_issue", "to_write_off", "refused")


async def ebill_backlog(session: AsyncSession) -> EBillBacklog:
    kind = case(
        (Receipt.voided_at.is_not(None), "to_write_off"),
        (Receipt.ebill_status == EBillStatus.pending, "to_issue"),
        else_="refused",
    )
    owed = or_(
        and_(Receipt.ebill_status.in_([EBillStatus.pending, EBillStatus.failed]), Receipt.voided_at.is_(None)),
        and_(Receipt.ebill_status.in_([EBillStatus.issued, EBillStatus.pending]), Receipt.voided_at.is_not(None)),
    )
    rows = (
        await session.execute(select(kind, func.count(), func.min(Receipt.issued_at)).where(owed).group_by(kind))
    ).all()
    counts = dict.fromkeys(BACKLOG_KINDS, 0) | {str(k): int(n) for k, n, _ in rows}
    return EBillBacklog(counts=counts, oldest={str(k): at for k, _, at in rows if at is not None})


async def ebill_day_totals(session: AsyncSession, start: datetime, end: datetime) -> tuple[int, int, int, int]:
    """Our side of a day at the platform: bills issued in [start, end) (count, fen; written off
    since or not) and write-offs made in it (count, fen)."""
    rows = (
        await session.scalars(
            select(Receipt).where(
                or_(
                    (Receipt.ebill_issued_at >= start) & (Receipt.ebill_issued_at < end),
                    (Receipt.ebill_written_off_at >= start) & (Receipt.ebill_written_off_at < end),
                )
            )
        )
    ).all()
    issued = [r for r in rows if r.ebill_issued_at is not None and start <= r.ebill_issued_at < end]
    off = [r for r in rows if r.ebill_written_off_at is not None and start <= r.ebill_written_off_at < end]
    return len(issued), sum(r.total_fen for r in issued), len(off), sum(r.total_fen for r in off)


def receipt_html(receipt: Receipt) -> str:
    """A printable page (the phone's browser saves or prints it as a PDF)."""
    c = receipt.content
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(line['name']))}</td><td>{e(str(line['code'] or ''))}</td><td>{line['quantity'] or 1}</td>"
        f"<td>{format_fen(line['unit_price_fen'] or line['amount_fen'])}</td>"
        f"<td>{format_fen(line['amount_fen'])}</td></tr>"
        for line in c["lines"]
    )
    pays = "".join(
        f"<li>{e(METHODS.get(p['method'], p['method']))}：{format_fen(p['amount_fen'])}</li>" for p in c["payments"]
    )
    void = f"<p class=void>已作废（红冲）：{receipt.voided_at.isoformat()}</p>" if receipt.voided_at else ""
    fiscal = ""
    if receipt.ebill_no:
        red = f"<br>已冲红，红票号码：{e(receipt.ebill_written_off_no or '')}" if receipt.ebill_written_off_at else ""
        qr = (
            f'<br><img alt="票据二维码" src="data:image/png;base64,{e(receipt.ebill_qr_code)}">'
            if receipt.ebill_qr_code
            else ""
        )
        link = f'<br><a href="{e(receipt.ebill_picture_url)}">查看财政电子票据</a>' if receipt.ebill_picture_url else ""
        fiscal = (
            f"<p>财政电子票据：票据代码 {e(receipt.ebill_batch_code or '')}　票据号码 {e(receipt.ebill_no)}　"
            f"校验码 {e(receipt.ebill_random or '')}{red}{link}{qr}</p>"
        )
    return f"""<!doctype html><html lang="zh-CN"><meta charset="utf-8">
<title>医疗门诊收费电子票据 {e(receipt.id)}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}table{{width:100%;border-collapse:collapse}}
td,th{{border:1px solid #999;padding:.3em}}.void{{color:#b00;font-weight:bold}}</style>
<h1>医疗门诊收费电子票据</h1>{void}
<p>票据号码：{e(receipt.id)}（第 {receipt.version} 版）<br>开票日期：{receipt.issued_at.date().isoformat()}<br>
校验码：{e(receipt.check_code)}</p>
<p>开票单位：{e(c["hospital"])}<br>就诊人：{e(c["patient_name"])}<br>就诊号：{e(c["visit_id"])}<br>
科室：{e(c["department"])}<br>就诊日期：{e(c["visit_date"])}</p>
<table><tr><th>项目</th><th>编码</th><th>数量</th><th>单价</th><th>金额</th></tr>{rows}</table>
<p>合计：{format_fen(c["total_fen"])}　实收：{format_fen(c["paid_fen"])}</p><ul>{pays}</ul>{fiscal}
</html>"""
