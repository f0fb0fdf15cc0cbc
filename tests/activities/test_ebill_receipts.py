"""Receipts and their fiscal e-bills, on a database of their own (the day's totals are the
whole database's): the receipt is issued, then the platform's bill recorded on it; a retry
issues nothing twice; a refusal is recorded, not raised; the morning run's totals check
matches the platform's, and a bill the platform holds but we do not is a stored mismatch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from activities.receipts import ReceiptActivities, outpatient_bill
from activities.statements import EBILL, StatementActivities
from db.models import LedgerEntry, Patient, Receipt, StatementRun, Visit
from db.receipts import issue_receipt as write_receipt
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


class Clock:
    """The platform's time, pinned (mid-morning in Beijing: both days' edges far away)."""

    def __init__(self) -> None:
        self.at = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def platform(clock: Clock) -> AsyncIterator[tuple[EBillClient, httpx.AsyncClient]]:
    app = ebill.simulator_app({APP: KEY}, {APP: AGENCY}, clock=clock)
    async with AsyncExitStack() as stack:
        stack.callback(app.state.store.close)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ebill")
        )
        client = EBillClient(http, app_id=APP, app_key=KEY, agency_code=AGENCY, region_code="440300", place_code="001")
        yield client, http


async def charged_and_paid(db, *, fen: int, method: str = "cash") -> str:
    return (await settled(db, fen=fen, method=method)).visit_id


@dataclass(frozen=True)
class Settled:
    patient_id: str
    visit_id: str
    item_id: str
    payment_id: str


async def settled(db, *, fen: int, method: str = "cash", created_at: datetime | None = None) -> Settled:
    patient_id = await add_patient(db)
    visit_id = await add_visit(db, patient_id)
    if created_at is not None:
        async with db() as session, session.begin():
            (await session.get(Visit, visit_id)).created_at = created_at
    item_id = await add_charge(db, patient_id, visit_id, fen=fen)
    payment_id = await pay(db, patient_id, visit_id, fen, method=method)
    return Settled(patient_id, visit_id, item_id, payment_id)


async def cancelled_and_refunded(db, s: Settled, *, fen: int) -> None:
    """The order cancelled after payment (退费) and its money on its way back."""
    async with db() as session, session.begin():
        for kind, ref in (("reversal", {"item_id": s.item_id}), ("refund", {"payment_id": s.payment_id})):
            session.add(
                LedgerEntry(
                    idempotency_key=uid(f"{kind}-"),
                    visit_id=s.visit_id,
                    patient_id=s.patient_id,
                    kind=kind,
                    amount_fen=fen,
                    created_at=now(),
                    **ref,
                )
            )


async def versions(db, visit_id: str) -> list[Receipt]:
    async with db() as session:
        return list(
            (await session.scalars(select(Receipt).where(Receipt.visit_id == visit_id).order_by(Receipt.version))).all()
        )


async def at_platform(http: httpx.AsyncClient, visit_id: str) -> dict[str, tuple[str, int]]:
    bills = (await http.get("/_sandbox/ebills", params={"visit_no": visit_id})).json()
    return {b["bus_no"]: (b["state"], b["total_fen"]) for b in bills}


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
    # the platform's answer lost after it issued the bill: the row as it was before the call
    # (pending, no bill); the retry sends the same busNo and body and gets the same bill back
    async with db() as session, session.begin():
        lost = await session.get(Receipt, row.id)
        lost.ebill_status = "pending"
        for column in (
            "ebill_batch_code",
            "ebill_no",
            "ebill_random",
            "ebill_qr_code",
            "ebill_picture_url",
            "ebill_issued_at",
            "ebill_written_off_no",
            "ebill_written_off_at",
            "ebill_error",
        ):
            setattr(lost, column, None)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    again = await receipt_of(db, visit_id)
    assert (again.ebill_status, again.ebill_batch_code, again.ebill_no, again.ebill_random) == (
        "issued",
        bill["bill_batch_code"],
        bill["bill_no"],
        bill["random"],
    )
    assert again.ebill_issued_at is not None and again.ebill_qr_code and again.ebill_picture_url
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
    statements = StatementActivities(db, {}, client, PII)
    visits = [await charged_and_paid(db, fen=fen) for fen in (500, 1_250)]
    for visit_id in visits:
        await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    issued = [await receipt_of(db, v) for v in visits]
    day = "2026-03-02"  # the platform's clock: both bills that Beijing day
    assert {r.ebill_issued_at.astimezone(PLATFORM_TZ).date().isoformat() for r in issued if r.ebill_issued_at} == {day}
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


async def test_a_full_refund_writes_the_bill_off(db, platform) -> None:
    """Everything cancelled and refunded: no receipt left to issue, and the one on record is
    voided and its bill written off (冲红)."""
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    s = await settled(db, fen=8_000)
    first = await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    assert await at_platform(http, s.visit_id) == {f"{first.receipt_id}-1": ("issued", 8_000)}
    await cancelled_and_refunded(db, s, fen=8_000)
    result = await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    assert result.receipt_id == ""
    assert await at_platform(http, s.visit_id) == {f"{first.receipt_id}-1": ("written_off", 8_000)}
    [only] = await versions(db, s.visit_id)
    assert only.voided_at is not None and only.ebill_status == "written_off" and only.ebill_written_off_no


async def test_a_voided_version_whose_answer_was_lost_is_written_off(db, platform) -> None:
    """Version 1 sent but its answer lost (the platform issued it, our call timed out),
    then a refund: its stored request is sent again, which gives its bill, written off; the
    second version issued. A voided version never sent has no bill: nothing to write off."""
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    s = await settled(db, fen=8_000)
    await add_charge(db, s.patient_id, s.visit_id, fen=2_000)
    await pay(db, s.patient_id, s.visit_id, 2_000)
    real_issue = client.issue_outpatient

    async def answer_lost(bill: OutpatientBill) -> IssuedEBill:
        await real_issue(bill)
        raise httpx.ReadTimeout("the platform's answer never came")

    client.issue_outpatient = answer_lost
    # the answer lost is the platform away: the receipt stands, its bill left pending (swept later)
    assert (await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))).receipt_id
    client.issue_outpatient = real_issue
    [v1] = await versions(db, s.visit_id)
    assert v1.ebill_status == "pending"
    await cancelled_and_refunded(db, s, fen=8_000)  # the 8,000 order cancelled: version 2 of 2,000
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    v1, v2 = await versions(db, s.visit_id)
    assert await at_platform(http, s.visit_id) == {
        f"{v1.id}-1": ("written_off", 10_000),
        f"{v2.id}-2": ("issued", 2_000),
    }
    assert (v1.ebill_status, v2.ebill_status) == ("written_off", "issued") and v1.ebill_no
    # a version voided before it was ever sent (the worker stopped between our commit and the
    # call): the platform has no bill under its busNo; marked so, nothing sent
    t = await settled(db, fen=3_000)
    async with db() as session, session.begin():  # our receipt committed, no call made
        await write_receipt(session, PII, t.visit_id, hospital="示范医院", ebills=True)
    await add_charge(db, t.patient_id, t.visit_id, fen=1_000)
    await pay(db, t.patient_id, t.visit_id, 1_000)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=t.visit_id))
    u1, u2 = await versions(db, t.visit_id)
    assert (u1.ebill_status, u1.ebill_no, u2.ebill_status) == ("not_required", None, "issued")
    assert await at_platform(http, t.visit_id) == {f"{u2.id}-2": ("issued", 4_000)}


async def test_a_refused_write_off_is_raised_and_the_next_bill_waits(db, platform) -> None:
    """The platform refuses the old bill's write-off (here: it does not know the bill our row
    names): raised for the step to retry with its alert, the new bill not issued meanwhile;
    once the write-off goes through, the new bill is issued."""
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    s = await settled(db, fen=8_000)
    await add_charge(db, s.patient_id, s.visit_id, fen=2_000)
    await pay(db, s.patient_id, s.visit_id, 2_000)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    [v1] = await versions(db, s.visit_id)
    right_no = v1.ebill_no
    async with db() as session, session.begin():
        (await session.get(Receipt, v1.id)).ebill_no = "0000099999"
    await cancelled_and_refunded(db, s, fen=8_000)
    with pytest.raises(ApplicationError) as raised:
        await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    assert raised.value.type == "ebill_write_off_refused" and not raised.value.non_retryable
    v1, v2 = await versions(db, s.visit_id)
    assert (v1.ebill_status, (v1.ebill_error or "")[:5], v2.ebill_status) == ("issued", "E1007", "pending")
    assert await at_platform(http, s.visit_id) == {f"{v1.id}-1": ("issued", 10_000)}
    async with db() as session, session.begin():
        (await session.get(Receipt, v1.id)).ebill_no = right_no
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))  # the step's retry
    assert await at_platform(http, s.visit_id) == {
        f"{v1.id}-1": ("written_off", 10_000),
        f"{v2.id}-2": ("issued", 2_000),
    }


async def test_the_consultation_date_is_the_beijing_day_of_the_visit(db, platform) -> None:
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    s = await settled(db, fen=1_000, created_at=datetime(2026, 3, 1, 17, 30, tzinfo=UTC))
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    [bill] = (await http.get("/_sandbox/ebills", params={"visit_no": s.visit_id})).json()
    assert bill["received"]["consultationDate"] == "20260302"
    assert (await receipt_of(db, s.visit_id)).content["visit_date"] == "2026-03-01"  # our receipt as it was


async def test_the_totals_check_counts_the_platforms_day_whatever_the_hospitals(db, platform, clock) -> None:
    """busDate is a Beijing day: a bill issued at 01:30 Beijing (17:30 UTC the day before) is
    counted on that Beijing day though the hospital's timezone is UTC."""
    client, _ = platform
    clock.at = datetime(2026, 3, 1, 17, 30, tzinfo=UTC)
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    statements = StatementActivities(db, {}, client, PII)
    visit_id = await charged_and_paid(db, fen=700)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=visit_id))
    result = await statements.reconcile_statement(
        c.ReconcileStatementInput(channel=EBILL, day="2026-03-02", timezone="UTC")
    )
    assert (result.matched, result.mismatches) == (1, 0)


async def test_a_write_off_found_by_the_state_call_keeps_the_platforms_time(db, platform, clock) -> None:
    """The write-off went through but its answer was lost: the retry's E1008 asks the state,
    and the red bill's time is the platform's, not the moment we learnt of it."""
    client, _ = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    s = await settled(db, fen=8_000)
    await add_charge(db, s.patient_id, s.visit_id, fen=2_000)
    await pay(db, s.patient_id, s.visit_id, 2_000)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    [v1] = await versions(db, s.visit_id)
    clock.at = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    red = await client.write_off(v1.ebill_batch_code, v1.ebill_no, reason="lost", at=clock.at)
    clock.at = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    await cancelled_and_refunded(db, s, fen=8_000)
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    v1, v2 = await versions(db, s.visit_id)
    assert (v1.ebill_status, v1.ebill_written_off_no, v2.ebill_status) == ("written_off", red.bill_no, "issued")
    assert v1.ebill_written_off_at == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


async def test_a_retry_sends_the_body_first_sent_whatever_changed(db, platform) -> None:
    """The answer lost, then the patient's name corrected: the retry re-sends the stored body
    (same busNo, same payer), so the platform answers the same bill instead of refusing it."""
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    s = await settled(db, fen=1_500)
    real_issue = client.issue_outpatient

    async def answer_lost(bill: OutpatientBill) -> IssuedEBill:
        await real_issue(bill)
        raise httpx.ReadTimeout("the platform's answer never came")

    client.issue_outpatient = answer_lost
    # the answer lost is the platform away: the receipt stands, its bill left pending (swept later)
    assert (await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))).receipt_id
    client.issue_outpatient = real_issue
    async with db() as session, session.begin():
        (await session.get(Patient, s.patient_id)).name_cipher = PII.encrypt("张三峰")
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    row = await receipt_of(db, s.visit_id)
    [bill] = (await http.get("/_sandbox/ebills", params={"visit_no": s.visit_id})).json()
    assert (row.ebill_status, row.ebill_no, bill["received"]["payer"]) == ("issued", bill["bill_no"], "张三丰")


@pytest.mark.parametrize("cipher", ["", "not-a-token"])
async def test_no_bill_without_the_payers_real_name(db, platform, cipher: str) -> None:
    """The masked name (张*丰) is never a bill's payer: the e-bill failed, nothing sent."""
    client, http = platform
    receipts = ReceiptActivities(db, PII, "示范医院", client)
    s = await settled(db, fen=1_500)
    async with db() as session, session.begin():
        (await session.get(Patient, s.patient_id)).name_cipher = cipher
    await receipts.issue_receipt(c.IssueReceiptInput(visit_id=s.visit_id))
    row = await receipt_of(db, s.visit_id)
    assert row.ebill_status == "failed" and "payer's name cannot be read" in (row.ebill_error or "")
    assert (await http.get("/_sandbox/ebills", params={"visit_no": s.visit_id})).json() == []


async def test_a_refused_totals_check_is_not_retried(db, platform) -> None:
    """The platform refuses the check (here: an agency code not this appid's): the same
    figures would be refused again, so the statement step fails at once."""
    _, http = platform
    wrong = EBillClient(http, app_id=APP, app_key=KEY, agency_code="AG-9999", region_code="440300", place_code="001")
    statements = StatementActivities(db, {}, wrong, PII)
    with pytest.raises(ApplicationError) as raised:
        await statements.reconcile_statement(
            c.ReconcileStatementInput(channel=EBILL, day="2026-03-02", timezone="Asia/Shanghai")
        )
    assert raised.value.non_retryable and raised.value.type == "ebill_refused"


async def patient_of(session: AsyncSession, visit_id: str) -> str:
    entry = (await session.scalars(select(LedgerEntry).where(LedgerEntry.visit_id == visit_id))).first()
    assert entry is not None
    return entry.patient_id


async def add_charge(db, patient_id: str, visit_id: str, *, fen: int) -> str:
    item_id = uid("item-")
    async with db() as session, session.begin():
        session.add(
            LedgerEntry(
                idempotency_key=uid("charge-"),
                visit_id=visit_id,
                patient_id=patient_id,
                kind="charge",
                amount_fen=fen,
                item_id=item_id,
                code="XR01",
                name="胸部X线",
                category="exam",
                unit_price_fen=fen,
                quantity=1,
                created_at=now(),
            )
        )
    return item_id
