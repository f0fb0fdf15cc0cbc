"""Alipay through python-alipay-sdk to the simulated gateway, with keys made here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from integrations.payments.alipay import AlipayClient, AlipayConfig, AlipayError
from simulators.alipay import alipay_simulator_app, unsigned_string
from simulators.keys import new_rsa_pair, rsa_sign
from tests.support import served, uid

APP_ID, SELLER = "2021000000000001", "2088000000000001"


@pytest.fixture(scope="module")
def alipay() -> Iterator[dict[str, Any]]:
    app_private, app_public = new_rsa_pair()
    ali_private, ali_public = new_rsa_pair()
    received: list[dict[str, str]] = []
    receiver = FastAPI()

    @receiver.post("/notify")
    async def capture(request: Request) -> PlainTextResponse:
        received.append(dict(parse_qsl((await request.body()).decode())))
        return PlainTextResponse("success")

    sim = alipay_simulator_app(
        app_id=APP_ID, seller_id=SELLER, app_public_key=app_public, alipay_private_key=ali_private
    )
    with served(sim) as gateway, served(receiver) as hook:
        config = AlipayConfig(
            app_id=APP_ID,
            seller_id=SELLER,
            app_private_key=app_private,
            alipay_public_key=ali_public,
            notify_url=f"http://{hook}/notify",
            gateway=f"http://{gateway}/gateway.do",
        )
        yield {"config": config, "gateway": gateway, "received": received, "ali_private": ali_private}


async def test_pay_query_and_notify(alipay: dict[str, Any]) -> None:
    client = AlipayClient(alipay["config"])
    no = uid("YHF")
    url = client.wap_pay_url(out_trade_no=no, subject="医后付-就诊费用", amount_fen=24501)
    async with httpx.AsyncClient() as http:
        cashier = await http.get(url)  # the phone's browser opens the signed URL
        assert cashier.status_code == 200 and "245.01" in cashier.text
        assert (await client.query(no)).trade_state == "WAIT_BUYER_PAY"
        r = await http.post(f"http://{alipay['gateway']}/_sim/pay/{no}")
    assert r.json() == {"notified": "success"}
    paid = client.verify_notification(alipay["received"][-1])
    assert paid is not None and paid.amount_fen == 24501 and paid.trade_state == "TRADE_SUCCESS"
    queried = await client.query(no)
    assert queried.trade_state == "TRADE_SUCCESS" and queried.amount_fen == 24501


async def test_forged_and_foreign_notifications_are_refused(alipay: dict[str, Any]) -> None:
    client = AlipayClient(alipay["config"])
    no = uid("YHF")
    client.wap_pay_url(out_trade_no=no, subject="x", amount_fen=100)
    async with httpx.AsyncClient() as http:
        await http.get(client.wap_pay_url(out_trade_no=no, subject="x", amount_fen=100))
        await http.post(f"http://{alipay['gateway']}/_sim/pay/{no}")
    form = alipay["received"][-1]
    assert client.verify_notification(form) is not None
    assert client.verify_notification({**form, "total_amount": "1000.00"}) is None  # tampered amount
    assert client.verify_notification({k: v for k, v in form.items() if k != "sign"}) is None
    forger, _ = new_rsa_pair()
    resigned = {**form, "total_amount": "0.01"}
    resigned["sign"] = rsa_sign(forger, unsigned_string(resigned))
    assert client.verify_notification(resigned) is None
    # genuinely signed by Alipay, but for another seller, or with a yuan string that is not exact
    for change in ({"seller_id": "2088999999999999"}, {"total_amount": "1.001"}):
        other = {**form, **change}
        other["sign"] = rsa_sign(alipay["ali_private"], unsigned_string(other))
        assert client.verify_notification(other) is None


async def test_the_gateway_checks_the_app(alipay: dict[str, Any]) -> None:
    intruder, _ = new_rsa_pair()
    client = AlipayClient(replace(alipay["config"], app_private_key=intruder))
    with pytest.raises(AlipayError) as err:
        await client.query(uid("YHF"))
    assert err.value.code == "isv.invalid-signature"
    async with httpx.AsyncClient() as http:
        r = await http.get(client.wap_pay_url(out_trade_no=uid("YHF"), subject="x", amount_fen=100))
    assert r.json()["alipay_trade_wap_pay_response"]["sub_code"] == "isv.invalid-signature"
    with pytest.raises(AlipayError) as err:
        await AlipayClient(alipay["config"]).query("never-created-order")
    assert err.value.code == "ACQ.TRADE_NOT_EXIST"


async def test_refunds_at_the_gateway(alipay: dict[str, Any]) -> None:
    client = AlipayClient(alipay["config"])
    no = uid("YHF")
    url = client.wap_pay_url(out_trade_no=no, subject="医后付-就诊费用", amount_fen=10001)
    async with httpx.AsyncClient() as http:
        await http.get(url)
        unpaid = await client.refund(out_request_no=uid("rfd_"), out_trade_no=no, refund_fen=1, reason="退费")
        assert unpaid.status == "failed" and "ACQ.TRADE_STATUS_ERROR" in unpaid.detail
        await http.post(f"http://{alipay['gateway']}/_sim/pay/{no}")
    request_no = uid("rfd_")
    done = await client.refund(out_request_no=request_no, out_trade_no=no, refund_fen=6001, reason="退费")
    assert (done.status, done.amount_fen) == ("succeeded", 6001)
    # asked again, Alipay answers fund_change=N; the query confirms the money went back once
    again = await client.refund(out_request_no=request_no, out_trade_no=no, refund_fen=6001, reason="退费")
    assert (again.status, again.amount_fen) == ("succeeded", 6001)
    beyond = await client.refund(out_request_no=uid("rfd_"), out_trade_no=no, refund_fen=4001, reason="退费")
    assert beyond.status == "failed" and "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL" in beyond.detail
    assert (await client.query_refund(uid("rfd_"), out_trade_no=no)).status == "processing"  # no such refund
    rest = await client.refund(out_request_no=uid("rfd_"), out_trade_no=no, refund_fen=4000, reason="退费")
    assert rest.status == "succeeded"


async def test_closing_orders(alipay: dict[str, Any]) -> None:
    client = AlipayClient(alipay["config"])
    opened, never_opened, paid = uid("YHF"), uid("YHF"), uid("YHF")
    async with httpx.AsyncClient() as http:
        for no in (opened, paid):
            await http.get(client.wap_pay_url(out_trade_no=no, subject="医后付-就诊费用", amount_fen=100))
        await http.post(f"http://{alipay['gateway']}/_sim/pay/{paid}")
        for no in (opened, never_opened, paid):
            await client.close(no)  # not found and already paid are left to the query
        assert (await client.query(opened)).trade_state == "TRADE_CLOSED"
        assert (await client.query(paid)).trade_state == "TRADE_SUCCESS"
        late = await http.get(client.wap_pay_url(out_trade_no=never_opened, subject="医后付-就诊费用", amount_fen=100))
    assert late.status_code == 400 and "交易已关闭" in late.text
