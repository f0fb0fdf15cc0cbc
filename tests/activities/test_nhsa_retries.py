"""A retry speaks to the insurance bureau with the msgid of its first try: kept in nhsa_message,
so a settlement whose answer was lost is settled once, not twice; a refusal after a try whose
outcome is unknown is not taken for the answer; a 2207 of another split is taken back (2208) and
the settlement failed; a refused 2208 fails visibly; the bureau's err_msg is kept nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.insurance import SettlementActivities, bureau_msgid
from config import Settings
from db.models import AuditLog, InsuranceSettlement
from db.nhsa import message_id
from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER, FeeDetail, InsuranceBureauClient, Split
from tests.support import add_patient, uid
from worker import activity_functions
from workflows import contracts as c

Factory = async_sessionmaker[AsyncSession]


async def test_a_msgid_is_allocated_once_per_request(factory: Factory, integrations) -> None:
    bureau = integrations.bureau
    at = datetime(2026, 3, 8, 2, 0, 0, tzinfo=UTC)
    keys = [uid("k") for _ in range(60)]
    async with factory() as session, session.begin():
        first = [await message_id(session, key=k, infno="2207", now=at, make=bureau.msgid) for k in keys]
    async with factory() as session, session.begin():
        again = [await message_id(session, key=k, infno="2207", now=datetime.now(UTC), make=bureau.msgid) for k in keys]
    assert first == again  # a retry, later, gets the same msgid
    assert len(set(first)) == len(keys)  # 60 requests in one second: 60 msgids
    assert all(len(m) == 30 and m.startswith(bureau.fixmedins_code + "20260308100000") for m in first)  # local time
    assert all(int(m[-4:]) < 9000 for m in first)  # 9000 up: the sign-ins' sequences


async def presettled(factory: Factory, bureau: InsuranceBureauClient) -> tuple[str, str, Split]:
    """A patient's X-ray (100 yuan, covered) pre-settled at the bureau and in our table:
    (patient_id, settlement_id, split). Its msgids come from the allocator, as the product's do."""
    patient_id = await add_patient(factory)
    settlement_id = uid("ins_")
    now = datetime.now(UTC)
    day = bureau.local_day(now)

    async def msg(infno: str) -> str:
        return await bureau_msgid(factory, bureau, f"{infno}:{settlement_id}", infno)

    mdtrt_id = await bureau.register(
        msgid=await msg("2201"), psn_no=patient_id, begntime=now, ipt_otp_no=settlement_id, operator=WORKER, day=day
    )
    fee = FeeDetail(
        feedetl_sn="1", code="xray", name="X", med_chrgitm_type="03", amount_fen=10000, unit_price_fen=10000, quantity=1
    )
    batch = {"mdtrt_id": mdtrt_id, "psn_no": patient_id, "chrg_bchno": settlement_id}
    await bureau.upload_fees(msgid=await msg("2204"), details=[fee], at=now, operator=WORKER, day=day, **batch)
    split = await bureau.presettle(msgid=await msg("2206"), total_fen=10000, operator=WORKER, day=day, **batch)
    async with factory() as session, session.begin():
        session.add(
            InsuranceSettlement(
                id=settlement_id,
                patient_id=patient_id,
                visit_ids=[],
                total_fen=split.total_fen,
                pooled_fen=split.pooled_fen,
                personal_fen=split.personal_fen,
                self_pay_fen=split.self_pay_fen,
                status="presettled",
                channel="sandbox",
                bureau_presettle_id=mdtrt_id,
                created_at=now,
                updated_at=now,
            )
        )
    return patient_id, settlement_id, split


async def row_of(factory: Factory, settlement_id: str) -> InsuranceSettlement:
    async with factory() as session:
        row = await session.get(InsuranceSettlement, settlement_id)
    assert row is not None
    return row


async def test_a_settlement_whose_answer_was_lost_is_settled_once(
    settings: Settings, factory: Factory, integrations, simulators
) -> None:
    bureau = integrations.bureau
    patient_id, settlement_id, split = await presettled(factory, bureau)
    settle = {f.__name__: f for f in activity_functions(settings, factory, integrations)}["settle_insurance"]
    inp = c.SettlementInput(settlement_id=settlement_id)
    assert (await ActivityEnvironment().run(settle, inp)).status == "insurance_settled"
    async with factory() as session, session.begin():  # as if the answer had never been written
        row = await session.get(InsuranceSettlement, settlement_id)
        assert row is not None
        setl_id = row.bureau_settlement_no
        await session.execute(
            update(InsuranceSettlement)
            .where(InsuranceSettlement.id == settlement_id)
            .values(status="presettled", bureau_settlement_no=None)
        )
    # the retry sends the same msgid: the bureau answers as the first time (a new 2207 would be
    # refused, its 2206 being spent), and settled it once
    assert (await ActivityEnvironment().run(settle, inp)).status == "insurance_settled"
    row = await row_of(factory, settlement_id)
    assert row.bureau_settlement_no == setl_id
    seen = await simulators.inspect.settlements(patient_id)
    assert [(s.status, s.settlement_no, s.personal_fen) for s in seen] == [("settled", setl_id, split.personal_fen)]


Fault = Callable[[httpx.Request], httpx.Response | None]


class Faulty(httpx.AsyncBaseTransport):
    """The simulated bureau, with `fault` in its place for what it answers (None: the bureau
    answers). `lost` raises after the bureau answered: the answer never reaches the client."""

    def __init__(self, bureau_app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=bureau_app)
        self.fault: Fault | None = None
        self.lose: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        infno = str(json.loads(request.content)["infno"])
        answer = self.fault(request) if self.fault else None
        if answer is not None:
            return answer
        response = await self.inner.handle_async_request(request)
        if infno in self.lose:
            self.lose.discard(infno)
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def client_over(
    settings: Settings, transport: httpx.AsyncBaseTransport, http_clients: list[httpx.AsyncClient]
) -> InsuranceBureauClient:
    http = httpx.AsyncClient(base_url="http://bureau", transport=transport)
    http_clients.append(http)
    return InsuranceBureauClient(
        http,
        paasid=settings.insurance_bureau_app_id,
        private_key=settings.insurance_bureau_secret,
        fixmedins_code=settings.insurance_fixmedins_code,
        fixmedins_name=settings.insurance_fixmedins_name,
        admvs=settings.insurance_admvs,
        paas_token=settings.insurance_bureau_paas_token,
    )


def refusal(code: str, text: str = "") -> Fault:
    """The bureau's refusal of any 2207/2208, as a bureau that does not answer a msgid again would."""

    def fault(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["infno"] in ("2207", "2208"):
            return httpx.Response(200, json={"infcode": -1, "err_msg": f"[{code}] {text or '已结算'}"})
        return None

    return fault


@pytest.fixture
async def faulty(settings: Settings, factory: Factory, simulators):
    transport = Faulty(simulators.bureau)
    clients: list[httpx.AsyncClient] = []
    bureau = client_over(settings, transport, clients)
    yield transport, SettlementActivities(factory, bureau), bureau
    for http in clients:
        await http.aclose()


async def test_a_refusal_after_a_lost_answer_is_not_taken_for_failed(factory: Factory, faulty, simulators) -> None:
    transport, acts, bureau = faulty
    patient_id, settlement_id, _ = await presettled(factory, bureau)
    inp = c.SettlementInput(settlement_id=settlement_id)
    transport.lose = {"2207"}  # the bureau settles; its answer is lost
    with pytest.raises(httpx.ReadTimeout):
        await ActivityEnvironment().run(acts.settle_insurance, inp)
    # the next try is answered with something that is not the bureau's JSON: unknown, retried
    transport.fault = lambda r: httpx.Response(200, content=b"<html>busy</html>")
    with pytest.raises(GatewayError) as unreadable:
        await ActivityEnvironment().run(acts.settle_insurance, inp)
    assert unreadable.value.retryable
    # then refused (a bureau that does not answer the msgid again: its 2206 is spent): not failed,
    # a retryable error the saga's step alerts on, the money at the bureau still the settlement's
    transport.fault = refusal("NotPresettled", "该就诊没有有效的预结算")
    with pytest.raises(ApplicationError) as unknown:
        await ActivityEnvironment().run(acts.settle_insurance, inp)
    assert unknown.value.type == "bureau_outcome_unknown" and not unknown.value.non_retryable
    assert (await row_of(factory, settlement_id)).status == "presettled"
    [bureau_side] = await simulators.inspect.settlements(patient_id)
    assert bureau_side.status == "settled"
    # the bureau reachable again: the same msgid, answered as the first time: settled once
    transport.fault = None
    assert (await ActivityEnvironment().run(acts.settle_insurance, inp)).status == "insurance_settled"
    row = await row_of(factory, settlement_id)
    assert (row.status, row.bureau_settlement_no) == ("insurance_settled", bureau_side.settlement_no)


async def test_a_first_refusal_fails_the_settlement_without_the_bureaus_text(
    factory: Factory, faulty, caplog: pytest.LogCaptureFixture
) -> None:
    transport, acts, bureau = faulty
    _, settlement_id, _ = await presettled(factory, bureau)
    transport.fault = refusal("PersonInvalid", "参保人张三（身份证号110105199001011234）信息不符")
    caplog.set_level(logging.DEBUG)
    result = await ActivityEnvironment().run(acts.settle_insurance, c.SettlementInput(settlement_id=settlement_id))
    row = await row_of(factory, settlement_id)
    assert (result.status, row.status) == ("failed", "failed")
    assert row.detail == result.detail == "PersonInvalid: the bureau refused 2207 (PersonInvalid)"
    async with factory() as session:
        audited = " ".join(
            json.dumps(a.detail, ensure_ascii=False)
            for a in (await session.scalars(select(AuditLog).where(AuditLog.subject_id == row.patient_id))).all()
        )
    for seen in (row.detail, result.detail, audited, caplog.text):
        assert "110105199001011234" not in seen and "张三" not in seen


async def test_a_2207_of_another_split_is_reversed_and_failed(factory: Factory, faulty, simulators) -> None:
    _, acts, bureau = faulty
    patient_id, settlement_id, split = await presettled(factory, bureau)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulators.bureau), base_url="http://b") as http:
        knob = await http.post(f"/_sandbox/settle-differently/{patient_id}", params={"fen": 100})
        assert knob.status_code == 200, knob.text
    inp = c.SettlementInput(settlement_id=settlement_id)
    result = await ActivityEnvironment().run(acts.settle_insurance, inp)
    [bureau_side] = await simulators.inspect.settlements(patient_id)
    assert (bureau_side.status, bureau_side.pooled_fen) == ("reversed", split.pooled_fen - 100)  # 2208 sent
    row = await row_of(factory, settlement_id)
    assert (result.status, row.status, row.bureau_settlement_no) == ("failed", "failed", bureau_side.settlement_no)
    assert "reversed (2208)" in (row.detail or "") and f"pooled {split.pooled_fen - 100}" in (row.detail or "")
    async with factory() as session:
        mismatch = await session.scalar(
            select(AuditLog).where(AuditLog.subject_id == patient_id, AuditLog.action == "insurance_split_mismatch")
        )
    assert mismatch is not None and mismatch.detail["bureau_self_pay_fen"] == split.self_pay_fen + 100
    # tried again (the saga's step, or an operator): the same answer, nothing more at the bureau
    assert (await ActivityEnvironment().run(acts.settle_insurance, inp)).status == "failed"
    assert [s.status for s in await simulators.inspect.settlements(patient_id)] == ["reversed"]


async def test_a_refused_2208_fails_visibly_and_is_recorded(factory: Factory, faulty) -> None:
    transport, acts, bureau = faulty
    _, settlement_id, _ = await presettled(factory, bureau)
    inp = c.SettlementInput(settlement_id=settlement_id)
    assert (await ActivityEnvironment().run(acts.settle_insurance, inp)).status == "insurance_settled"
    transport.fault = refusal("SettlementLocked", "结算已对账，不能撤销")
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.reverse_insurance, inp)
    assert err.value.type == "bureau_reversal_refused" and err.value.non_retryable
    row = await row_of(factory, settlement_id)
    assert row.status == "insurance_settled" and "冲正 refused" in (row.detail or "")
    assert "SettlementLocked" in (row.detail or "") and "对账" not in (row.detail or "")
    # a transient failure is still retried, not final
    transport.fault = lambda r: httpx.Response(503, text="busy")
    with pytest.raises(GatewayError) as busy:
        await ActivityEnvironment().run(acts.reverse_insurance, inp)
    assert busy.value.retryable
