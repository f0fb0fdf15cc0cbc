"""The statement run's channel `nhsa`: 3201 对总账 of a day, our totals (db/nhsa_totals.py) against the
simulated bureau's, the answer stored as the day's run. The bureau and our clock are pinned to a day
of their own (10:00 Beijing), so the day holds this test's settlements only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.insurance import SettlementActivities, bureau_msgid
from activities.nhsa_statement import NHSA
from activities.statements import StatementActivities
from api import ops
from config import Settings
from db.models import InsuranceSettlement, StatementRun
from db.nhsa import NhsaMessage
from db.nhsa_totals import NhsaDayTotals, nhsa_day_totals
from domain.statement import day_window
from integrations.insurance_bureau import PATH, WORKER, InsuranceBureauClient
from integrations.nhsa_mobile import MobilePayment
from simulators import bureau as simulated
from tests.activities.test_nhsa_retries import Factory, presettled
from tests.integrations.test_nhsa import details
from tests.support import add_patient, uid
from workflows import contracts as c


class Wire(httpx.AsyncBaseTransport):
    """The simulated bureau, every envelope sent kept; `fault` answers in its place where it
    returns a response, and the answer to an infno in `lose` never comes back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, sent: list[dict[str, Any]]) -> None:
        self.inner, self.sent = inner, sent
        self.fault: Callable[[httpx.Request], httpx.Response | None] = lambda r: None
        self.lose: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if request.url.path != PATH:  # the app's authorisation (医保移动支付)
            return await self.inner.handle_async_request(request)
        envelope = json.loads(request.content, parse_float=Decimal)
        self.sent.append(envelope)
        answer = self.fault(request)
        if answer is not None:
            return answer
        response = await self.inner.handle_async_request(request)
        if envelope["infno"] in self.lose:
            self.lose.discard(envelope["infno"])
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


@dataclass
class Pinned:
    transport: Wire
    client: InsuranceBureauClient
    settlements: SettlementActivities
    statements: StatementActivities
    sent: list[dict[str, Any]]  # every envelope sent


def at(day: str) -> Callable[[], datetime]:
    moment = datetime.fromisoformat(f"{day}T02:00:00+00:00")  # 10:00 Beijing
    return lambda: moment


async def pinned_to(day: str, settings: Settings, factory: Factory, monkeypatch) -> AsyncIterator[Pinned]:
    clock = at(day)
    app = simulated.simulator_app({settings.insurance_bureau_app_id: settings.insurance_bureau_secret}, clock=clock)
    sent: list[dict[str, Any]] = []
    transport = Wire(httpx.ASGITransport(app=app), sent)
    # our side's clock: the msgids' times (nhsa_message.created_at) and the sign-in's day
    monkeypatch.setattr("activities.insurance.utcnow", clock)
    monkeypatch.setattr("activities.nhsa_statement.utcnow", clock)
    async with httpx.AsyncClient(base_url="http://bureau", transport=transport) as http:
        client = InsuranceBureauClient(
            http,
            paasid=settings.insurance_bureau_app_id,
            private_key=settings.insurance_bureau_secret,
            fixmedins_code=settings.insurance_fixmedins_code,
            fixmedins_name=settings.insurance_fixmedins_name,
            admvs=settings.insurance_admvs,
            paas_token=settings.insurance_bureau_paas_token,
            clock=clock,
        )
        statements = StatementActivities(factory, {}, bureau=client)
        yield Pinned(transport, client, SettlementActivities(factory, client), statements, sent)
    app.state.store.close()


@pytest.fixture
async def matching_day(settings: Settings, factory: Factory, monkeypatch) -> AsyncIterator[Pinned]:
    async for pinned in pinned_to("2025-07-15", settings, factory, monkeypatch):
        yield pinned


@pytest.fixture
async def lost_day(settings: Settings, factory: Factory, monkeypatch) -> AsyncIterator[Pinned]:
    async for pinned in pinned_to("2025-07-16", settings, factory, monkeypatch):
        yield pinned


async def settled(factory: Factory, side: Pinned) -> str:
    """A 100-yuan X-ray settled card-less (2207): pooled 60, personal 40 yuan."""
    _, settlement_id, _ = await presettled(factory, side.client)
    result = await ActivityEnvironment().run(
        side.settlements.settle_insurance, c.SettlementInput(settlement_id=settlement_id)
    )
    assert result.status == "insurance_settled"
    return settlement_id


async def mobile_paid(factory: Factory, side: Pinned) -> None:
    """A 医保移动支付 order of 50 yuan (lab, no cash part) paid at 6202 and booked on our side."""
    patient_id, settlement_id = await add_patient(factory), uid("ins_")
    mobile = MobilePayment(side.client)
    now, day = at("2025-07-15")(), side.client.local_day(at("2025-07-15")())
    order = await mobile.upload(
        msgid=await bureau_msgid(factory, side.client, f"6201:{settlement_id}", "6201"),
        psn_no=patient_id,
        pay_auth_no=(auth := await mobile.sandbox_authorize(patient_id)),
        med_org_ord=settlement_id,
        details=details(("04", 5_000)),
        at=now,
        operator=WORKER,
        day=day,
        notify_url="",
    )
    msgid = await bureau_msgid(factory, side.client, f"6202:{settlement_id}", "6202")
    order = await mobile.pay(msgid=msgid, order=order, pay_auth_no=auth, operator=WORKER, day=day)
    assert order.status == "6" and order.setl_id
    async with factory() as session, session.begin():
        session.add(
            InsuranceSettlement(
                id=settlement_id,
                patient_id=patient_id,
                visit_ids=[],
                total_fen=order.total_fen,
                pooled_fen=order.fund_fen,
                personal_fen=order.personal_fen,
                self_pay_fen=order.cash_fen,
                status="completed",
                channel="nhsa_mobile",
                mode="mobile",
                pay_ord_id=order.pay_ord_id,
                bureau_settlement_no=order.setl_id,
                created_at=now,
                updated_at=now,
            )
        )


async def run_of(factory: Factory, day: str) -> StatementRun:
    async with factory() as session:
        runs = (
            await session.scalars(select(StatementRun).where(StatementRun.channel == NHSA, StatementRun.day == day))
        ).all()
    assert len(runs) == 1  # a re-run replaces the day's run
    return runs[0]


def checks(side: Pinned) -> list[dict[str, Any]]:
    return [e for e in side.sent if e["infno"] == "3201"]


async def test_a_matching_day_answers_balanced_and_is_stored_matched(factory: Factory, matching_day: Pinned) -> None:
    side, day = matching_day, "2025-07-15"
    await settled(factory, side)
    reversed_one = await settled(factory, side)
    inp = c.SettlementInput(settlement_id=reversed_one)
    assert (await ActivityEnvironment().run(side.settlements.reverse_insurance, inp)).status == "reversed"
    await mobile_paid(factory, side)
    result = await side.statements.reconcile_statement(
        c.ReconcileStatementInput(channel=NHSA, day=day, timezone="Asia/Shanghai")
    )
    # two card-less settlements and the order, one settlement reversed: 4 records, 平
    assert (result.channel, result.matched, result.mismatches) == (NHSA, 4, 0)
    [sent] = checks(side)
    assert sent["input"]["data"] == {
        "insutype": "310",
        "clr_type": "11",
        "setl_optins": side.client.admvs,
        "stmt_begndate": day,
        "stmt_enddate": day,
        "medfee_sumamt": Decimal("150.00"),
        "fund_pay_sumamt": Decimal("90.00"),
        "acct_pay": Decimal("60.00"),
        "fixmedins_setl_cnt": 2,
        "refd_setl_flag": "1",
    }
    run = await run_of(factory, day)
    assert (run.matched, run.mismatches, run.ledger_total_fen, run.channel_total_fen) == (4, [], 15_000, 15_000)
    async with factory() as session:  # what GET /v1/ops/statements?channel=nhsa answers
        [shown] = await ops.statements(session, channel=NHSA, day=day, mismatched=False, limit=10)
    assert (shown.channel, shown.matched, shown.mismatches) == (NHSA, 4, [])


async def test_a_settlement_we_never_booked_is_a_finding_and_a_rerun_is_the_same_request(
    factory: Factory, lost_day: Pinned
) -> None:
    side, day = lost_day, "2025-07-16"
    await settled(factory, side)
    _, lost, _ = await presettled(factory, side.client)
    side.transport.lose = {"2207"}  # the bureau settles; its answer never reaches us: nothing booked
    with pytest.raises(httpx.ReadTimeout):
        await ActivityEnvironment().run(side.settlements.settle_insurance, c.SettlementInput(settlement_id=lost))
    async with factory() as session:
        assert await session.scalar(
            select(func.count()).where(
                InsuranceSettlement.id == lost, InsuranceSettlement.bureau_settlement_no.is_(None)
            )
        )
    inp = c.ReconcileStatementInput(channel=NHSA, day=day, timezone="Asia/Shanghai")
    result = await side.statements.reconcile_statement(inp)
    assert (result.matched, result.mismatches) == (0, 1)  # a finding, not a failure
    run = await run_of(factory, day)
    [finding] = run.mismatches
    assert finding["problem"] == "nhsa_totals_mismatch" and finding["ledger_fen"] == 10_000
    assert "ours 1 settlements, medfee 10000" in finding["ref"]  # ours
    assert "medfee_sumamt 中心 200.00 / 机构 100.00" in finding["ref"]  # the bureau's, in its words
    assert (run.ledger_total_fen, run.channel_total_fen) == (10_000, 0)
    # the morning run again: the same figures, the same msgid, the bureau's first answer
    again = await side.statements.reconcile_statement(inp)
    assert (again.matched, again.mismatches) == (0, 1)
    first, second = checks(side)
    assert first["msgid"] == second["msgid"] and first["input"] == second["input"]
    assert (await run_of(factory, day)).mismatches == [finding]


async def test_the_bureau_away_is_retried_and_a_refusal_is_final(factory: Factory, lost_day: Pinned) -> None:
    side = lost_day
    inp = c.ReconcileStatementInput(channel=NHSA, day="2025-07-17", timezone="Asia/Shanghai")
    side.transport.fault = lambda r: (
        httpx.Response(503, text="busy") if json.loads(r.content)["infno"] == "3201" else None
    )
    with pytest.raises(ApplicationError) as away:
        await side.statements.reconcile_statement(inp)
    assert away.value.type == "bureau_unavailable" and not away.value.non_retryable

    def refused(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["infno"] == "3201":
            return httpx.Response(200, json={"infcode": -1, "err_msg": "[InvalidParameter] 参数错误"})
        return None

    side.transport.fault = refused
    with pytest.raises(ApplicationError) as final:
        await side.statements.reconcile_statement(inp)
    assert final.value.type == "bureau_refused" and final.value.non_retryable
    async with factory() as session:  # nothing stored for a day that was never checked
        assert not (await session.scalars(select(StatementRun).where(StatementRun.day == "2025-07-17"))).all()


async def test_our_reading_counts_what_the_bureau_answered_on_the_day_it_was_sent(factory: Factory) -> None:
    """db/nhsa_totals.py by itself: a settlement counts on its 2207's day, a reversal (2208, the
    saga's or a whole refund's) on its own day, only once the bureau answered it; a 2207 with no
    setl_id kept, or a 2208 refused (the settlement stands), counts nothing."""
    d1, d2 = datetime(2025, 8, 1, 2, tzinfo=UTC), datetime(2025, 8, 2, 2, tzinfo=UTC)  # 10:00 Beijing
    rows = {  # id suffix: (status, setl_id kept, [(infno key prefix, when)])
        "kept": ("completed", True, [("2207", d1)]),
        "refunded": ("refunded", True, [("2207", d1), ("2208:refund", d2)]),
        "otherwise": ("failed", True, [("2207", d1), ("2208", d1)]),
        "lost": ("reversed", False, [("2207", d1), ("2601", d1)]),
        "refused": ("insurance_settled", True, [("2207", d2), ("2208", d2)]),
    }
    patient_id, prefix = await add_patient(factory), uid("t")
    async with factory() as session, session.begin():
        for name, (status, kept, sent) in rows.items():
            sid = f"{prefix}-{name}"
            session.add(
                InsuranceSettlement(
                    id=sid,
                    patient_id=patient_id,
                    visit_ids=[],
                    total_fen=10_000,
                    pooled_fen=6_000,
                    personal_fen=4_000,
                    self_pay_fen=0,
                    status=status,
                    channel="sandbox",
                    bureau_settlement_no=uid("ST") if kept else None,
                    created_at=d1,
                    updated_at=d2,
                )
            )
            for key, when in sent:
                infno = key.split(":")[0]
                session.add(NhsaMessage(request_key=f"{key}:{sid}", infno=infno, msgid=uid("m")[:30], created_at=when))

    async def day(at: datetime) -> NhsaDayTotals:
        async with factory() as session:
            return await nhsa_day_totals(session, *day_window(at.date().isoformat(), "Asia/Shanghai"))

    # 1 Aug: kept, refunded and otherwise settled (+3), otherwise taken back (-1)
    assert await day(d1) == NhsaDayTotals(settled=3, reversed=1, medfee_fen=20_000, fund_fen=12_000, acct_fen=8_000)
    # 2 Aug: refunded taken back whole (-1); refused settled (+1), its refused 2208 nothing
    assert await day(d2) == NhsaDayTotals(settled=1, reversed=1)
    assert (await day(d1)).count == 2 and (await day(d2)).count == 0
