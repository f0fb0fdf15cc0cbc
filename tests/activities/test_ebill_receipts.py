"""Receipts and their fiscal e-bills, on a database of their own (the day's totals are the
whole database's): the receipt is issued, then the platform's bill recorded on it; a retry
issues nothing twice; a refusal is recorded, not raised; the morning run's totals check
matches the platform's, and a bill the platform holds but we do not is a stored mismatch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.receipts import ReceiptActivities, outpatient_bill
from activities.statements import EBILL, StatementActivities
from db.models import LedgerEntry, Receipt, StatementRun
from db.session import create_engine, session_factory
from integrations.ebill import EBillClient, IssuedEBill, OutpatientBill
from integrations.ebill_wire import PLATFORM_TZ
from simulators import ebill
from tests.support import PII, add_patient, add_visit, fresh_database, now, pay, uid
from workflows import contracts as c

APP, KEY, AGENCY = "yhf-hospital", "ebill-key-for-tests", "AG-0001"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with fresh_database(tmp_path) as url:
        engine = create_engine(url)
        yield session_factory(engine)
        await engine.dispose()


@pytest.fixture
async def platform() -> AsyncIterator[tuple[EBillClient, httpx.AsyncClient]]:
    app = ebill.simulator_app({APP: KEY}, {APP: AGENCY})
    async with AsyncExitStack() as stack:
        stack.callback(app.state.store.close)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ebill")
        )
        client = EBillClient(http, app_id=APP, app_key=KEY, agency_code=AGENCY, region_code="440300", place_code="001")
        yield client, http


async def charged_and_paid(db, *, fen: int, method: str = "cash") -> str:
    patient_id = await add_patient(db)
    visit_id = await add_visit(db, patient_id)
    await add_charge(db, patient_id, visit_id, fen=fen)
    await pay(db, patient_id, visit_id, fen, method=method)
    return visit_id


async def receipt_of(db, visit_id: str) -> Receipt:
    async with db() as session:
        return (await session.scalars(select(Receipt).where(Receipt.visit_id == visit_id))).one()


async def test_a_settled_visits_receipt_carries_the_platforms_bill_once(db, platform) -> None:
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    visit_id = await charged_and_paid(db, fen=12_345, method="wechat")
    result = await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    row = await receipt_of(db, visit_id)
    assert (result.receipt_id, row.ebill_status, row.ebill_bus_no) == (row.id, "issued", f"{row.id}-1")
    [bill] = (await http.get("/_sandbox/ebills")).json()
    assert (row.ebill_batch_code, row.ebill_no, row.ebill_random) == (
        bill["bill_batch_code"],
        bill["bill_no"],
        bill["random"],
    )
    assert row.ebill_qr_code and row.ebill_picture_url and row.ebill_issued_at is not None
    assert bill["received"]["payer"] == "张三丰"  # the bill names its payer; no other personal data
    assert bill["received"]["payChannelDetail"] == [{"payChannelCode": "WX", "payChannelValue": "123.45"}]
    assert (bill["received"]["ownPay"], bill["received"]["fundPay"]) == ("123.45", "0.00")
    # a retry (the activity's, after a crash) issues nothing more
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    assert len((await http.get("/_sandbox/ebills")).json()) == 1
    # our record lost after the platform issued it: the busNo gives the same bill back
    async with db() as session, session.begin():
        (await session.get(Receipt, row.id)).ebill_status = None
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    assert (await receipt_of(db, visit_id)).ebill_no == row.ebill_no
    assert len((await http.get("/_sandbox/ebills")).json()) == 1


async def test_a_refused_bill_is_recorded_not_raised(db, platform, caplog) -> None:
    client, _ = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    visit_id = await charged_and_paid(db, fen=500)
    async with db() as session:
        row = (await session.scalars(select(Receipt).where(Receipt.visit_id == visit_id))).one_or_none()
    assert row is None
    # the platform already holds this busNo for another body (say, a bug that changed it)
    real_issue = client.issue_outpatient

    async def changed(bill: OutpatientBill) -> IssuedEBill:
        await real_issue(replace(bill, remark="another body"))
        return await real_issue(bill)

    client.issue_outpatient = changed
    with caplog.at_level(logging.WARNING, logger="yihoufu.receipts"):
        result = await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    row = await receipt_of(db, visit_id)
    assert result.receipt_id == row.id
    assert row.ebill_status == "failed" and row.ebill_no is None and (row.ebill_error or "").startswith("E1006")
    assert "refused" in caplog.text


async def test_the_morning_totals_check_matches_then_finds_a_bill_we_do_not_hold(db, platform, caplog) -> None:
    client, _ = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    statements = StatementActivities(db, {}, client)
    visits = [await charged_and_paid(db, fen=fen) for fen in (500, 1_250)]
    for visit_id in visits:
        await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    issued = [await receipt_of(db, v) for v in visits]
    days = {r.ebill_issued_at.astimezone(PLATFORM_TZ).date().isoformat() for r in issued if r.ebill_issued_at}
    [day] = days  # the platform's day of both bills
    inp = c.ReconcileStatementInput(channel=EBILL, day=day, timezone="Asia/Shanghai")
    result = await statements.reconcile_statement(inp)
    assert (result.matched, result.mismatches) == (2, 0)
    # a bill issued at the platform that our books do not show
    async with db() as session:
        stray = await outpatient_bill(session, PII, issued[1])
    await client.issue_outpatient(replace(stray, bus_no="STRAY-1"))
    with caplog.at_level(logging.WARNING, logger="yihoufu.statements"):
        result = await statements.reconcile_statement(inp)
    assert (result.matched, result.mismatches) == (0, 1)
    async with db() as session:
        run = (await session.scalars(select(StatementRun).where(StatementRun.channel == EBILL))).one()
    assert run.day == day and (run.channel_total_fen, run.ledger_total_fen) == (3_000, 1_750)
    [finding] = run.mismatches
    assert finding["kind"] == "issued" and finding["problem"] == "ebill_totals_mismatch"
    assert (finding["channel_fen"], finding["ledger_fen"]) == (3_000, 1_750)
    assert "platform 3, ours 2" in finding["ref"] and "e-bill totals" in caplog.text


async def test_the_bill_splits_insurance_from_own_pay_and_shows_a_waiver(db, platform) -> None:
    """accountPay from the personal account, fundPay from the pooled fund, ownPay the rest (a
    waived part included, as channel JM): each sums to the total, in yuan to two decimals."""
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    visit_id = await charged_and_paid(db, fen=6_001, method="insurance_pooled")
    async with db() as session:
        patient_id = await patient_of(session, visit_id)
    await add_charge(db, patient_id, visit_id, fen=4_000)
    await pay(db, patient_id, visit_id, 2_999, method="insurance_personal")
    await pay(db, patient_id, visit_id, 900, method="alipay")
    async with db() as session, session.begin():
        session.add(
            LedgerEntry(
                idempotency_key=uid("waiver-"),
                visit_id=visit_id,
                patient_id=patient_id,
                kind="waiver",
                amount_fen=101,
                created_at=now(),
            )
        )
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    assert (await receipt_of(db, visit_id)).ebill_status == "issued"
    [bill] = (await http.get("/_sandbox/ebills")).json()
    sent = bill["received"]
    assert (sent["totalAmt"], sent["accountPay"], sent["fundPay"], sent["ownPay"]) == (
        "100.01",
        "29.99",
        "60.01",
        "10.01",
    )
    assert {r["payChannelCode"]: r["payChannelValue"] for r in sent["payChannelDetail"]} == {
        "YBTCJJ": "60.01",
        "YBZH": "29.99",
        "ZFB": "9.00",
        "JM": "1.01",
    }
    assert [(r["chargeCode"], r["amt"]) for r in sent["chargeDetail"]] == [("exam", "100.01")]
    assert [r["amt"] for r in sent["listDetail"]] == ["60.01", "40.00"]


async def patient_of(session: AsyncSession, visit_id: str) -> str:
    entry = (await session.scalars(select(LedgerEntry).where(LedgerEntry.visit_id == visit_id))).first()
    assert entry is not None
    return entry.patient_id


async def add_charge(db, patient_id: str, visit_id: str, *, fen: int) -> None:
    async with db() as session, session.begin():
        session.add(
            LedgerEntry(
                idempotency_key=uid("charge-"),
                visit_id=visit_id,
                patient_id=patient_id,
                kind="charge",
                amount_fen=fen,
                item_id=uid("item-"),
                code="XR01",
                name="胸部X线",
                category="exam",
                unit_price_fen=fen,
                quantity=1,
                created_at=now(),
            )
        )
