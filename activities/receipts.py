"""Electronic receipts (电子票据), issued from the ledger when a visit settles."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from db.pii import Pii
from db.receipts import issue_receipt
from workflows import contracts as c


class ReceiptActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], pii: Pii, hospital: str) -> None:
        self._factory = factory
        self._pii = pii
        self._hospital = hospital

    @activity.defn(name=c.ISSUE_RECEIPT)
    async def issue_receipt(self, inp: c.IssueReceiptInput) -> c.IssueReceiptResult:
        async with self._factory() as session, session.begin():
            receipt = await issue_receipt(session, self._pii, inp.visit_id, hospital=self._hospital)
            if receipt is None:
                return c.IssueReceiptResult(receipt_id="", version=0)
            return c.IssueReceiptResult(receipt_id=receipt.id, version=receipt.version)
