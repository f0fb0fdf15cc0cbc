"""Electronic receipts (电子票据), issued from the ledger when a visit settles, and their bills at
the provincial fiscal e-bill platform (财政电子票据, integrations/ebill.py).

The platform is never called inside a database transaction: our receipt is written and
committed first (with its busNo), then a voided version's bill is written off (冲红) and the
current version's bill issued, each answer recorded on its receipt row in a short transaction
of its own. The bill is stored with its version at its first send (`ebill_request`); a retry
(the activity's, or the next settlement's) finds the work still undone and re-sends that
same body with the same busNo, which the platform deduplicates. A refused bill is recorded on
the row (`ebill_error`, status failed) and logged; a refused write-off is raised (retried
with the step's alert: the next bill waits for the old one's write-off). A platform away never
holds the visit: its receipt stands, the bill stays `pending`, and the morning statement run
sweeps every visit with work left (`EBillSync.sweep`) before it checks the day's totals."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx
from cryptography.fernet import InvalidToken
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import Patient, Receipt, Visit
from db.pii import Pii
from db.receipts import (
    EBillStatus,
    ebill_work,
    issue_receipt,
    record_ebill,
    record_ebill_request,
    record_ebill_status,
    record_write_off,
)
from db.repositories import utcnow, visit_totals
from integrations.ebill import ChargeLine, Code, EBillClient, EBillRefused, EBillUnavailable, OutpatientBill
from integrations.ebill_wire import PLATFORM_TZ
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
SYNC_ROUNDS = 10  # each round finishes some work: a visit's versions are few
SWEEP_LIMIT = 200  # visits one sweep takes; the next run takes the rest
# the platform not answering, or answering as a platform in trouble: the bill waits for the sweep
PLATFORM_AWAY = (EBillUnavailable, httpx.TransportError)
# a receipt with platform work left: its bill pending, or a voided version's bill still valid
OUTSTANDING = or_(
    Receipt.ebill_status == EBillStatus.pending,
    and_(Receipt.voided_at.is_not(None), Receipt.ebill_status == EBillStatus.issued),
)


@dataclass(frozen=True, kw_only=True)
class PendingEBills:
    """The e-bills still owed to patients: how many, and since when (the oldest receipt's time)."""

    count: int
    oldest_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    visits: int  # visits synced
    refused: list[str]  # visits whose write-off the platform refused (left for the next run)
    pending: PendingEBills  # what is left after the sweep


async def pending_ebills(session: AsyncSession) -> PendingEBills:
    count, oldest = (await session.execute(select(func.count(), func.min(Receipt.issued_at)).where(OUTSTANDING))).one()
    return PendingEBills(count=int(count or 0), oldest_at=oldest)


class PayerUnknown(Exception):
    """The patient's real name cannot be read: a fiscal bill must name its payer."""


def _payer(pii: Pii, cipher: str | None) -> str:
    if not cipher:
        raise PayerUnknown("no name on record")
    try:
        name = pii.decrypt(cipher)
    except (InvalidToken, ValueError) as e:
        raise PayerUnknown("the name on record cannot be decrypted") from e
    if not name.strip():
        raise PayerUnknown("the name on record is empty")
    return name


async def bill_request(session: AsyncSession, pii: Pii, receipt: Receipt) -> dict[str, Any]:
    """The platform's bill of a receipt version, as stored at its first send (JSON, fen; the
    payer's name encrypted): the lines, the payments by method (insurance split into accountPay
    and fundPay, the rest ownPay), the waived part as its own channel so the channels sum to the
    total, and the day of the visit in the platform's timezone. PayerUnknown when the patient's
    real name cannot be read (the masked name is never a payer)."""
    content = receipt.content
    patient = await session.get(Patient, receipt.patient_id)
    payer = _payer(pii, patient.name_cipher if patient is not None else None)
    visit = await session.get(Visit, receipt.visit_id)
    assert visit is not None
    channels: dict[str, int] = {}
    for p in content["payments"]:
        code = PAY_CHANNELS.get(p["method"], OTHER_CHANNEL)
        channels[code] = channels.get(code, 0) + p["amount_fen"]
    waived = (await visit_totals(session, receipt.visit_id)).waived_fen
    if waived:
        channels[WAIVED_CHANNEL] = waived
    return {
        "bus_no": receipt.ebill_bus_no or f"{receipt.id}-{receipt.version}",
        "bus_time": receipt.issued_at.isoformat(),
        "payer_cipher": pii.encrypt(payer),
        "patient_no": receipt.patient_id,
        "visit_no": receipt.visit_id,
        "department": content["department"],
        "visit_date": visit.created_at.astimezone(PLATFORM_TZ).date().isoformat(),
        "total_fen": receipt.total_fen,
        "account_pay_fen": sum(p["amount_fen"] for p in content["payments"] if p["method"] in ACCOUNT_PAY),
        "fund_pay_fen": sum(p["amount_fen"] for p in content["payments"] if p["method"] in FUND_PAY),
        "channels": [[code, fen] for code, fen in channels.items()],
        "lines": [
            {
                "code": line["code"] or "",
                "name": line["name"],
                "category": line["category"] or "other",
                "quantity": line["quantity"] or 1,
                "unit_price_fen": line["unit_price_fen"] or line["amount_fen"],
                "amount_fen": line["amount_fen"],
            }
            for line in content["lines"]
        ],
        "remark": f"第{receipt.version}版",
    }


def bill_of(pii: Pii, request: dict[str, Any]) -> OutpatientBill:
    """The bill a stored request describes (PayerUnknown when its payer cannot be decrypted)."""
    return OutpatientBill(
        bus_no=request["bus_no"],
        bus_time=datetime.fromisoformat(request["bus_time"]),
        payer=_payer(pii, request["payer_cipher"]),
        patient_no=request["patient_no"],
        visit_no=request["visit_no"],
        department=request["department"],
        visit_date=date.fromisoformat(request["visit_date"]),
        total_fen=request["total_fen"],
        account_pay_fen=request["account_pay_fen"],
        fund_pay_fen=request["fund_pay_fen"],
        channels=[(str(code), int(fen)) for code, fen in request["channels"]],
        lines=[ChargeLine(**line) for line in request["lines"]],
        remark=request["remark"],
    )


async def outpatient_bill(session: AsyncSession, pii: Pii, receipt: Receipt) -> OutpatientBill:
    """The bill of a receipt version: the one stored at its first send, else built now."""
    return bill_of(pii, receipt.ebill_request or await bill_request(session, pii, receipt))


class ReceiptActivities:
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], pii: Pii, hospital: str, ebill: EBillClient | None = None
    ) -> None:
        self._factory = factory
        self._pii = pii
        self._hospital = hospital
        self._ebills = EBillSync(factory, pii, ebill) if ebill is not None else None

    @activity.defn(name=c.ISSUE_RECEIPT)
    async def issue_receipt(self, inp: c.IssueReceiptInput) -> c.IssueReceiptResult:
        """Our receipt, written and committed whatever the platform does; then its e-bill, once:
        a platform away leaves it `pending` for the morning run's sweep (never holds the visit)."""
        async with self._factory() as session, session.begin():
            receipt = await issue_receipt(
                session, self._pii, inp.visit_id, hospital=self._hospital, ebills=self._ebills is not None
            )
            result = (
                c.IssueReceiptResult(receipt_id="", version=0)
                if receipt is None
                else c.IssueReceiptResult(receipt_id=receipt.id, version=receipt.version)
            )
        if self._ebills is not None:
            try:
                await self._ebills.sync(inp.visit_id)
            except PLATFORM_AWAY as away:
                log.warning(
                    "e-bill platform away: the e-bill of visit %s left pending for the sweep (%s)",
                    inp.visit_id,
                    type(away).__name__,
                )
        return result


class EBillSync:
    """The platform's side of receipts: a visit's bills issued and written off (`sync`), and
    the sweep of every visit with work left (`sweep`, run by the morning statement run)."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], pii: Pii, client: EBillClient) -> None:
        self._factory = factory
        self._pii = pii
        self._client = client

    async def sweep(self, limit: int = SWEEP_LIMIT) -> SweepResult:
        """Every visit whose e-bill work is left (a bill pending, a voided version's bill still
        valid), oldest first: synced. A platform away raises (the run retries); a write-off
        refused leaves that visit's work for the next run and goes on with the others."""
        async with self._factory() as session:
            visits = list(
                (
                    await session.scalars(
                        select(Receipt.visit_id)
                        .where(OUTSTANDING)
                        .group_by(Receipt.visit_id)
                        .order_by(func.min(Receipt.issued_at))
                        .limit(limit)
                    )
                ).all()
            )
        refused = []
        for visit_id in visits:
            try:
                await self.sync(visit_id)
            except ApplicationError as e:  # a write-off refused (recorded on its row)
                log.warning("e-bill sweep: visit %s left for the next run: %s", visit_id, e)
                refused.append(visit_id)
        async with self._factory() as session:
            left = await pending_ebills(session)
        return SweepResult(visits=len(visits), refused=refused, pending=left)

    async def sync(self, visit_id: str) -> None:
        """The visit's platform work until none is left: the bills of voided versions written
        off first (a version whose answer was lost re-sent first, to learn its bill), then the
        current version's issued. A write-off refused raises (retried, with the step's alert),
        so the new bill is never issued while the old one stands."""
        client = self._client
        for _ in range(SYNC_ROUNDS):
            async with self._factory() as session:
                stale, current = await ebill_work(session, visit_id)
            if not stale and current is None:
                return
            for old in stale:
                if old.ebill_status == EBillStatus.pending:
                    await self._issue(client, old.id)  # its bill learnt (or none): written off next round
                else:
                    await self._write_off(client, old)
            if not stale and current is not None:
                await self._issue(client, current.id)
        raise ApplicationError(f"the e-bills of visit {visit_id} still have work after {SYNC_ROUNDS} rounds")

    async def _issue(self, client: EBillClient, receipt_id: str) -> None:
        """Issue a version's bill: the request stored at its first send, re-sent as it was (the
        platform answers its bill for the same busNo and body). A voided version never sent has
        no bill at the platform: nothing to issue or write off."""
        async with self._factory() as session, session.begin():
            row = await session.get(Receipt, receipt_id, with_for_update=True)
            assert row is not None
            if row.ebill_status not in (None, EBillStatus.pending):
                return  # done meanwhile
            request = row.ebill_request
            if request is None and (row.voided_at is not None or row.total_fen <= 0):
                row.ebill_status = EBillStatus.not_required
                return
            if request is None:
                try:
                    request = await bill_request(session, self._pii, row)
                except PayerUnknown as e:
                    row.ebill_status, row.ebill_error = EBillStatus.failed, f"the payer's name cannot be read: {e}"
                    log.warning("e-bill of receipt %s not issued: the payer's name cannot be read", receipt_id)
                    return
                request = await record_ebill_request(session, receipt_id, request)
        try:
            bill = bill_of(self._pii, request)
        except PayerUnknown as e:
            log.warning("e-bill of receipt %s not issued: the payer's name cannot be read", receipt_id)
            await self._record_status(receipt_id, EBillStatus.failed, f"the payer's name cannot be read: {e}")
            return
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
        crash): the platform's state says so, and gives the red bill's number (and its time,
        when it gives one). Any other refusal is recorded and raised: retried, with an alert."""
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
                raise ApplicationError(
                    f"the write-off (冲红) of the e-bill of receipt {receipt.id} was refused: {refused}",
                    type="ebill_write_off_refused",
                ) from refused
            red_no, at = state.scarlet_bill_no, state.scarlet_at or utcnow()
        async with self._factory() as session, session.begin():
            await record_write_off(session, receipt.id, red_bill_no=red_no, at=at)

    async def _record_status(self, receipt_id: str, status: str, error: str | None) -> None:
        async with self._factory() as session, session.begin():
            await record_ebill_status(session, receipt_id, status, error)
