"""3201 医药机构费用结算对总账 against the simulated bureau (pinned to 2026-03-08 23:59:59 Beijing): the
bureau counts the day's settlements net of the day's reversals and the mobile orders paid, answers
平 (stmt_rslt 0) for the same figures and 不平 (1) naming both sides' for others; the envelope is
checked as for every transaction (a tampered or unsigned 3201 is refused, a msgid is one request)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from integrations import insurance_bureau as bureau_client, nhsa
from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER, InsuranceBureauClient
from integrations.nhsa_totals import DailyTotals
from simulators import bureau as simulated
from tests.integrations.test_nhsa import (
    CODE,
    NOW,
    PAASID,
    TOKEN,
    Side,
    Wire,
    bureau_side,
    day,
    details,
    msgid,
    settlement_step,
    signed_post,
    visit,
)
from tests.integrations.test_nhsa_mobile import pay, uploaded
from tests.support import uid

DAY = date(2026, 3, 8)  # NOW's Beijing day


@pytest.fixture
async def side() -> AsyncIterator[Side]:
    async with bureau_side() as it:
        yield it


def totals(medfee: int, fund: int, acct: int, count: int, *, insutype: str = "310", on: date = DAY) -> DailyTotals:
    return DailyTotals(
        insutype=insutype,
        clr_type="11",
        setl_optins="110105",
        stmt_begndate=on,
        stmt_enddate=on,
        medfee_sumamt_fen=medfee,
        fund_pay_sumamt_fen=fund,
        acct_pay_fen=acct,
        fixmedins_setl_cnt=count,
    )


async def check(side: Side, figures: DailyTotals, msg: str | None = None) -> tuple[str, str]:
    return await side.client.daily_totals(figures, msgid=msg or msgid(side), operator=WORKER, day=day(side))


async def settled_xray(side: Side) -> tuple[str, str, bureau_client.Split]:
    """A 100-yuan X-ray settled (2206, 2207): pooled 60, personal 40 yuan."""
    psn, batch = uid("p"), uid("b")
    mdtrt_id = await visit(side, psn, details(("03", 10_000)), batch)
    await settlement_step(side, "2206", mdtrt_id, psn, batch, 10_000)
    return psn, mdtrt_id, await settlement_step(side, "2207", mdtrt_id, psn, batch, 10_000)


async def test_the_day_balances_with_a_reversal_and_a_mobile_order(side: Side) -> None:
    await settled_xray(side)
    psn, mdtrt_id, reversed_one = await settled_xray(side)
    await side.client.reverse(
        msgid=msgid(side), setl_id=reversed_one.setl_id, mdtrt_id=mdtrt_id, psn_no=psn, operator=WORKER, day=day(side)
    )
    order = await pay(side, await uploaded(side, uid("p"), ("04", 5_000)))  # no cash part: paid at 6202
    assert order.status == "6" and (order.fund_fen, order.personal_fen) == (3_000, 2_000)
    # the day: one card-less settlement standing, one settled and reversed (nets to nothing), the order
    assert await check(side, totals(15_000, 9_000, 6_000, 2)) == ("0", "平")
    # a day before: nothing
    assert await check(side, totals(0, 0, 0, 0, on=date(2026, 3, 7))) == ("0", "平")
    # another 险种 (390 城乡居民): nothing settled under it
    assert await check(side, totals(0, 0, 0, 0, insutype="390")) == ("0", "平")
    result, description = await check(side, totals(10_000, 6_000, 4_000, 1))
    assert result == "1"
    assert "medfee_sumamt 中心 150.00 / 机构 100.00" in description
    assert "fixmedins_setl_cnt 中心 2 / 机构 1" in description
    assert "acct_pay 中心 60.00 / 机构 40.00" in description


async def test_a_msgid_is_one_3201(side: Side) -> None:
    await settled_xray(side)
    msg = msgid(side)
    assert await check(side, totals(10_000, 6_000, 4_000, 1), msg) == ("0", "平")
    await settled_xray(side)  # the bureau's day changes; the same msgid and figures: the first answer
    assert await check(side, totals(10_000, 6_000, 4_000, 1), msg) == ("0", "平")
    assert (await check(side, totals(10_000, 6_000, 4_000, 1)))[0] == "1"  # a new request sees the second
    with pytest.raises(GatewayError) as err:  # the same msgid with other figures
        await check(side, totals(20_000, 12_000, 8_000, 2), msg)
    assert err.value.code == "MsgidReused" and not err.value.retryable


async def test_the_bureau_refuses_a_3201_it_cannot_read(side: Side) -> None:
    """Negative nets are figures (a day of more reversals than settlements); an optins not this
    area's, or a count that is no whole number, is refused."""
    assert (await check(side, totals(-10_000, -6_000, -4_000, -1)))[0] == "1"
    sign_no = await side.client.sign_in(WORKER, day(side))
    data = totals(0, 0, 0, 0).data()
    for changed in ({"setl_optins": "310000"}, {"fixmedins_setl_cnt": "2"}, {"stmt_enddate": "2026-03-07"}):
        inp = {"data": {**data, **changed}}
        env = json.loads(side.client.envelope("3201", msgid(side), WORKER, sign_no, inp), parse_float=Decimal)
        answer = (await signed_post(side, env)).json()
        assert answer["infcode"] == -1 and answer["err_msg"].startswith("[InvalidParameter]"), answer


@pytest.mark.parametrize("tamper", ["body", "unsigned", "sign_no"])
async def test_a_tampered_or_unsigned_3201_is_refused(side: Side, tamper: str) -> None:
    sign_no = await side.client.sign_in(WORKER, day(side))
    env = json.loads(
        side.client.envelope("3201", msgid(side), WORKER, sign_no, {"data": totals(0, 0, 0, 0).data()}),
        parse_float=Decimal,
    )
    body = nhsa.with_cainfo(side.private_key, nhsa.dumps(env))
    headers = nhsa.tif_headers(PAASID, TOKEN, timestamp=int(NOW.timestamp()), nonce=uid("n"))
    if tamper == "body":  # the figures changed after signing
        body = body.replace(b'"fixmedins_setl_cnt":0', b'"fixmedins_setl_cnt":1')
    elif tamper == "unsigned":
        body = nhsa.dumps(env)
    else:  # signed, but under no sign-in
        body = nhsa.with_cainfo(side.private_key, nhsa.dumps({**env, "sign_no": "SN-none"}))
    r = await side.http.post(bureau_client.PATH, content=body, headers=headers)
    answer = json.loads(r.content)
    expected = {"body": "CainfoDoesNotMatch", "unsigned": "MissingSignature", "sign_no": "SignInInvalid"}[tamper]
    assert answer["infcode"] == -1 and answer["err_msg"].startswith(f"[{expected}]")
    assert r.status_code == (200 if tamper == "sign_no" else 401)


@asynccontextmanager
async def side_at(now: list[datetime]) -> AsyncIterator[Side]:
    """The simulated bureau and its client, both on the clock `now[0]` (a test moves it)."""
    private = nhsa.new_sm2_private_key()
    app = simulated.simulator_app(
        {PAASID: nhsa.sm2_public_key(private)}, clock=lambda: now[0], paas_tokens={PAASID: TOKEN}
    )
    async with httpx.AsyncClient(base_url="http://bureau", transport=httpx.ASGITransport(app=app)) as http:
        client = InsuranceBureauClient(
            http,
            paasid=PAASID,
            private_key=private,
            fixmedins_code=CODE,
            fixmedins_name="示范医院",
            admvs="110105",
            clock=lambda: now[0],
            paas_token=TOKEN,
        )
        yield Side(client, http, Wire(), private, nhsa.sm2_public_key(private))
    app.state.store.close()


async def test_a_settlement_reversed_the_next_day_counts_on_both_days() -> None:
    """Settled on the 8th (Beijing), reversed on the 9th: +1 on the 8th, -1 on the 9th."""
    now = [NOW - timedelta(hours=1)]  # 22:59:59 on the 8th, Beijing
    async with side_at(now) as side:
        psn, mdtrt_id, split = await settled_xray(side)
        now[0] = NOW + timedelta(hours=2)  # 01:59:59 on the 9th: the operator signs in again
        ninth = side.client.local_day(now[0])
        await side.client.reverse(
            msgid=side.client.msgid(now[0], 1),
            setl_id=split.setl_id,
            mdtrt_id=mdtrt_id,
            psn_no=psn,
            operator=WORKER,
            day=ninth,
        )
        answer = await side.client.daily_totals(
            totals(10_000, 6_000, 4_000, 1), msgid=side.client.msgid(now[0], 2), operator=WORKER, day=ninth
        )
        assert answer == ("0", "平")
        on_the_ninth = totals(-10_000, -6_000, -4_000, -1, on=ninth)
        answer = await side.client.daily_totals(
            on_the_ninth, msgid=side.client.msgid(now[0], 3), operator=WORKER, day=ninth
        )
        assert answer == ("0", "平")
