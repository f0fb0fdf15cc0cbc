"""电子票据: the electronic receipt of a settled visit, built from the ledger alone.

Issued when the visit settles; a refund afterwards voids it and issues the next version
(红冲 and re-issue), so every version stays on record. Each carries a check code, a keyed
HMAC over its content, with which the hospital verifies a copy shown to it."""

from __future__ import annotations

import html
import json
import secrets
from typing import Any

from sqlalchemy import select
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


async def issue_receipt(session: AsyncSession, pii: Pii, visit_id: str, *, hospital: str) -> Receipt | None:
    """The visit's current receipt: the one on record when nothing changed, else a new
    version (the old one voided). None while the visit still owes money."""
    visit = await session.get(Visit, visit_id, with_for_update=True)
    if visit is None or (await visit_totals(session, visit_id)).balance_fen != 0:
        return None
    content = await receipt_content(session, visit, hospital)
    if content["total_fen"] == 0 and not content["payments"]:
        return None  # nothing was charged: nothing to receipt
    latest = await session.scalar(
        select(Receipt)
        .where(Receipt.visit_id == visit_id, Receipt.voided_at.is_(None))
        .order_by(Receipt.version.desc())
        .limit(1)
    )
    if latest is not None and latest.content == content:
        return latest
    now = utcnow()
    version = 1
    if latest is not None:
        latest.voided_at = now
        version = latest.version + 1
    receipt = Receipt(
        id="R" + now.strftime("%Y%m%d") + secrets.token_hex(6).upper(),
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
<p>合计：{format_fen(c["total_fen"])}　实收：{format_fen(c["paid_fen"])}</p><ul>{pays}</ul>
</html>"""
