"""Electronic receipts (电子票据), issued from the ledger when a visit settles, and their bills at
the provincial fiscal e-bill platform (财政电子票据, integrations/ebill.py).

The platform is never called inside a database transaction: our receipt is written and
committed first (with its busNo), then a voided version's bill is written off (冲红) and the
current version's bill issued, each answer recorded on its receipt row in a short transaction
of its own. A retry (the activity's, or the next settlement's) finds the work still undone
and repeats it with the same busNo, which the platform deduplicates. A refusal is recorded on
the row (`ebill_error`) and logged, never blocks the visit; a platform away is retried."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from db.models import Patient, Receipt
from db.pii import Pii
from db.receipts import (
    EBillStatus,
    ebill_work,
    issue_receipt,
    record_ebill,
    record_ebill_status,
    record_write_off,
)
from db.repositories import utcnow, visit_totals
from integrations.ebill import ChargeLine, Code, EBillClient, EBillRefused, OutpatientBill
from workflows import contracts as c

log = logging.getLogger("yihoufu.receipts")

# our payment methods as the platform's payment channels (payChannelCode)
PAY_CHANNELS = {
    "wechat": "WX",
    "alipay": "ZFB",
    "cash": "XJ",
    "card": "YHK",
    "insurance_personal": "YBZH",
    "insurance_pooled": "YBTCJJ",
    "insurance": "YBTCJJ",
}
OTHER_CHANNEL = "QT"  # the sandbox's and any other channel
WAIVED_CHANNEL = "JM"  # 减免: what an operator waived
ACCOUNT_PAY = {"insurance_personal"}  # 医保个人账户 -> accountPay
FUND_PAY = {"insurance_pooled", "insurance"}  # 医保统筹基金 -> fundPay
WRITE_OFF_REASON = "退费或医保冲正后重开"


async def outpatient_bill(session: AsyncSession, pii: Pii, receipt: Receipt) -> OutpatientBill:
    """The platform's bill of a receipt version, from what the receipt holds: the lines, the
    payments by method (insurance split into accountPay and fundPay, the rest ownPay), and the
    waived part as its own channel so the channels sum to the total."""
    content = receipt.content
    patient = await session.get(Patient, receipt.patient_id)
    payer = pii.decrypt(patient.name_cipher) if patient is not None and patient.name_cipher else ""
    channels: dict[str, int] = {}
    for p in content["payments"]:
        code = PAY_CHANNELS.get(p["method"], OTHER_CHANNEL)
        channels[code] = channels.get(code, 0) + p["amount_fen"]
    waived = (await visit_totals(session, receipt.visit_id)).waived_fen
    if waived:
        channels[WAIVED_CHANNEL] = waived
    return OutpatientBill(
        bus_no=receipt.ebill_bus_no or f"{receipt.id}-{receipt.version}",
        bus_time=receipt.issued_at,
        payer=payer or content["patient_name"],
        patient_no=receipt.patient_id,
        visit_no=receipt.visit_id,
        department=content["department"],
        visit_date=datetime.fromisoformat(content["visit_date"]).date(),
        total_fen=receipt.total_fen,
        account_pay_fen=sum(p["amount_fen"] for p in content["payments"] if p["method"] in ACCOUNT_PAY),
        fund_pay_fen=sum(p["amount_fen"] for p in content["payments"] if p["method"] in FUND_PAY),
        channels=list(channels.items()),
        lines=[
            ChargeLine(
                code=line["code"] or "",
                name=line["name"],
                category=line["category"] or "other",
                quantity=line["quantity"] or 1,
                unit_price_fen=line["unit_price_fen"] or line["amount_fen"],
                amount_fen=line["amount_fen"],
            )
            for line in content["lines"]
        ],
        remark=f"第{receipt.version}版",
    )


class ReceiptActivities:
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], pii: Pii, hospital: str, ebill: EBillClient | None = None
    ) -> None:
        self._factory = factory
        self._pii = pii
        self._hospital = hospital
        self._ebill = ebill

    @activity.defn(name=c.ISSUE_RECEIPT)
    async def issue_receipt(self, inp: c.IssueReceiptInput) -> c.IssueReceiptResult:
        async with self._factory() as session, session.begin():
            receipt = await issue_receipt(
                session, self._pii, inp.visit_id, hospital=self._hospital, ebills=self._ebill is not None
            )
            result = (
                c.IssueReceiptResult(receipt_id="", version=0)
                if receipt is None
                else c.IssueReceiptResult(receipt_id=receipt.id, version=receipt.version)
            )
        if self._ebill is not None:
            await self.sync_ebills(self._ebill, inp.visit_id)
        return result

    async def sync_ebills(self, client: EBillClient, visit_id: str) -> None:
        """Write off the bills of voided versions, then issue the current version's."""
        async with self._factory() as session:
            stale, current = await ebill_work(session, visit_id)
            bill = await outpatient_bill(session, self._pii, current) if current and current.total_fen > 0 else None
        for old in stale:
            await self._write_off(client, old)
        if current is not None and bill is None:
            await self._record_status(current.id, EBillStatus.not_required, None)
        elif current is not None and bill is not None:
            await self._issue(client, current.id, bill)

    async def _issue(self, client: EBillClient, receipt_id: str, bill: OutpatientBill) -> None:
        try:
            issued = await client.issue_outpatient(bill)
        except EBillRefused as refused:
            log.warning("e-bill of receipt %s refused: %s", receipt_id, refused)
            await self._record_status(receipt_id, EBillStatus.failed, str(refused))
            return
        async with self._factory() as session, session.begin():
            await record_ebill(
                session,
                receipt_id,
                batch_code=issued.batch_code,
                bill_no=issued.bill_no,
                random=issued.random,
                qr_code=issued.qr_code,
                picture_url=issued.picture_url,
                issued_at=issued.created_at,
            )

    async def _write_off(self, client: EBillClient, receipt: Receipt) -> None:
        """冲红 of a voided version's bill. Written off already (our record of it lost to a
        crash): the platform's state says so, and gives the red bill's number."""
        assert receipt.ebill_batch_code and receipt.ebill_no
        try:
            red = await client.write_off(
                receipt.ebill_batch_code,
                receipt.ebill_no,
                reason=WRITE_OFF_REASON,
                at=receipt.voided_at or utcnow(),
            )
            red_no, at = red.bill_no, red.created_at
        except EBillRefused as refused:
            state = (
                await client.state(receipt.ebill_batch_code, receipt.ebill_no)
                if refused.code == Code.wrong_state
                else None
            )
            if state is None or state.valid:
                log.warning("write-off of the e-bill of receipt %s refused: %s", receipt.id, refused)
                await self._record_status(receipt.id, EBillStatus.issued, str(refused))
                return
            red_no, at = state.scarlet_bill_no, utcnow()
        async with self._factory() as session, session.begin():
            await record_write_off(session, receipt.id, red_bill_no=red_no, at=at)

    async def _record_status(self, receipt_id: str, status: str, error: str | None) -> None:
        async with self._factory() as session, session.begin():
            await record_ebill_status(session, receipt_id, status, error)
