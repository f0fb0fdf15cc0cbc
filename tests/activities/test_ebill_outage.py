"""The e-bill platform away at settlement: our receipt is written and the activity succeeds (the
visit never waits on the platform), the bill left `pending`; the morning statement run's sweep
issues it once the platform is back (once: no second bill at the platform), and what the sweep
cannot issue is a finding of the day's run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError

from activities.receipts import ReceiptActivities
from activities.statements import EBILL, StatementActivities
from db.models import Receipt, StatementRun
from integrations.ebill import EBillClient
from simulators import ebill
from tests.activities.test_ebill_receipts import (
    AGENCY,
    APP,
    KEY,
    Clock,
    add_charge,
    at_platform,
    cancelled_and_refunded,
    clock,
    db,
    receipt_of,
    settled,
    versions,
)
from tests.support import PII, pay
from workflows import contracts as c

__all__ = ["clock", "db"]  # fixtures shared with the e-bill receipts' tests
DAY = "2026-03-02"  # the pinned platform clock's Beijing day


class Outage(httpx.AsyncBaseTransport):
    """The platform's network path: while `down`, the connection is refused (`how` "refused")
    or its gateway answers 503 (`how` "503")."""

    def __init__(self, inner: httpx.AsyncBaseTransport, how: str) -> None:
        self.inner, self.how, self.down = inner, how, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.down:
            return await self.inner.handle_async_request(request)
        if self.how == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(503, text="Service Temporarily Unavailable", request=request)


@pytest.fixture(params=["refused", "503"])
async def platform(request, clock: Clock) -> AsyncIterator[tuple[EBillClient, httpx.AsyncClient, Outage]]:
    app = ebill.simulator_app({APP: KEY}, {APP: AGENCY}, clock=clock)
    async with AsyncExitStack() as stack:
        stack.callback(app.state.store.close)
        outage = Outage(httpx.ASGITransport(app=app), request.param)
        sandbox = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ebill")
        )
        http = await stack.enter_async_context(httpx.AsyncClient(transport=outage, base_url="http://ebill"))
        client = EBillClient(http, app_id=APP, app_key=KEY, agency_code=AGENCY, region_code="440300", place_code="001")
        yield client, sandbox, outage


async def test_the_receipt_lands_and_the_sweep_issues_the_bill_once(db, platform, caplog) -> None:
    client, sandbox, outage = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    statements = StatementActivities(db, {}, client, PII)
    s = await settled(db, fen=12_345)
    outage.down = True
    with caplog.at_level(logging.WARNING, logger="yihoufu.receipts"):
        landed = await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    row = await receipt_of(db, s.visit_id)
    assert landed.receipt_id == row.id and row.ebill_status == "pending" and row.ebill_no is None
    assert row.ebill_request is not None  # the bill as first sent: the sweep re-sends this body
    assert "left pending for the sweep" in caplog.text
    assert await at_platform(sandbox, s.visit_id) == {}
    # the activity's retry (or the next settlement's) does not wait on the platform either
    assert (await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))).receipt_id == row.id

    # the morning run while the platform is still away: retried later, nothing recorded
    inp = c.ReconcileStatementInput(channel=EBILL, day=DAY, timezone="Asia/Shanghai")
    with pytest.raises(ApplicationError) as away:
        await statements.reconcile_statement(inp)
    assert away.value.type == "ebill_unavailable" and not away.value.non_retryable

    outage.down = False
    result = await statements.reconcile_statement(inp)
    row = await receipt_of(db, s.visit_id)
    assert row.ebill_status == "issued" and row.ebill_no and row.ebill_qr_code
    assert await at_platform(sandbox, s.visit_id) == {f"{row.id}-1": ("issued", 12_345)}
    assert (result.matched, result.mismatches) == (1, 0)  # the swept bill counted in the day's totals
    # a second run, and the visit's own retry: no second bill at the platform
    await statements.reconcile_statement(inp)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    assert len((await sandbox.get("/_sandbox/ebills", params={"visit_no": s.visit_id})).json()) == 1


async def test_what_the_sweep_cannot_issue_is_a_finding_of_the_run(db, platform) -> None:
    """A refund while the platform is away (the old bill to write off, the new one pending),
    then a write-off the platform refuses: the sweep leaves that visit, issues the others, and
    the run says how many e-bills are still pending; once the write-off goes, none are."""
    client, sandbox, outage = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    statements = StatementActivities(db, {}, client, PII)
    s = await settled(db, fen=8_000)
    await add_charge(db, s.patient_id, s.visit_id, fen=2_000)
    await pay(db, s.patient_id, s.visit_id, 2_000)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    [v1] = await versions(db, s.visit_id)
    right_no = v1.ebill_no
    outage.down = True
    await cancelled_and_refunded(db, s, fen=8_000)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))  # lands: v2, pending
    other = await settled(db, fen=700)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=other.visit_id))
    async with db() as session, session.begin():
        (await session.get(Receipt, v1.id)).ebill_no = "0000099999"  # the platform will not know it
    outage.down = False
    inp = c.ReconcileStatementInput(channel=EBILL, day=DAY, timezone="Asia/Shanghai")
    await statements.reconcile_statement(inp)
    assert (await receipt_of(db, other.visit_id)).ebill_status == "issued"
    v1, v2 = await versions(db, s.visit_id)
    assert (v1.ebill_status, v2.ebill_status) == ("issued", "pending")
    async with db() as session:
        run = (await session.scalars(select(StatementRun).where(StatementRun.channel == EBILL))).one()
    [pending] = [f for f in run.mismatches if f["problem"] == "ebill_pending"]
    assert pending["ref"].startswith("2 e-bills pending since")  # v1's write-off and v2's bill
    async with db() as session, session.begin():
        (await session.get(Receipt, v1.id)).ebill_no = right_no
    result = await statements.reconcile_statement(inp)
    assert await at_platform(sandbox, s.visit_id) == {
        f"{v1.id}-1": ("written_off", 10_000),
        f"{v2.id}-2": ("issued", 2_000),
    }
    async with db() as session:
        run = (await session.scalars(select(StatementRun).where(StatementRun.channel == EBILL))).one()
    assert not [f for f in run.mismatches if f["problem"] == "ebill_pending"] and result.mismatches == 0
