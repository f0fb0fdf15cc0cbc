"""A retry speaks to the insurance bureau with the msgid of its first try: kept in nhsa_message,
so a settlement whose answer was lost is settled once, not twice."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from config import Settings
from db.models import InsuranceSettlement
from db.nhsa import message_id
from integrations.insurance_bureau import WORKER, FeeDetail
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


async def test_a_settlement_whose_answer_was_lost_is_settled_once(
    settings: Settings, factory: Factory, integrations, simulators
) -> None:
    bureau = integrations.bureau
    patient_id = await add_patient(factory)
    settlement_id = uid("ins_")
    now = datetime.now(UTC)
    day = bureau.local_day(now)
    mdtrt_id = await bureau.register(
        msgid=bureau.msgid(now, 1), psn_no=patient_id, begntime=now, ipt_otp_no=settlement_id, operator=WORKER, day=day
    )
    fee = FeeDetail(
        feedetl_sn="1", code="xray", name="X", med_chrgitm_type="03", amount_fen=10000, unit_price_fen=10000, quantity=1
    )
    batch = {"mdtrt_id": mdtrt_id, "psn_no": patient_id, "chrg_bchno": settlement_id}
    await bureau.upload_fees(msgid=bureau.msgid(now, 2), details=[fee], at=now, operator=WORKER, day=day, **batch)
    split = await bureau.presettle(msgid=bureau.msgid(now, 3), total_fen=10000, operator=WORKER, day=day, **batch)
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
    async with factory() as session:
        row = await session.get(InsuranceSettlement, settlement_id)
        assert row is not None and row.bureau_settlement_no == setl_id
    seen = await simulators.inspect.settlements(patient_id)
    assert [(s.status, s.settlement_no, s.personal_fen) for s in seen] == [("settled", setl_id, split.personal_fen)]
