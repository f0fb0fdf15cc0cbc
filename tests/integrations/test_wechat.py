"""WeChat Pay v3 through the wechatpayv3 SDK to the simulator, with keys made here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from integrations.payments.channels import Paid, RefundAnswer
from integrations.payments.wechat import WeChatConfig, WeChatPayClient, WeChatPayError
from simulators.keys import new_rsa_pair, rsa_sign
from simulators.wechat import Merchant, wechat_simulator_app
from tests.support import served, uid

APIV3_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def wechat() -> Iterator[dict[str, Any]]:
    merchant_private, merchant_public = new_rsa_pair()
    platform_private, platform_public = new_rsa_pair()
    received: list[tuple[dict[str, str], bytes]] = []
    receiver = FastAPI()

    @receiver.post("/notify")
    async def capture(request: Request) -> dict[str, str]:
        received.append((dict(request.headers), await request.body()))
        return {"code": "SUCCESS"}

    sim = wechat_simulator_app(
        [Merchant(mchid="1900000109", appid="wx8888888888888888", serial="5157F09EFDC0", public_key=merchant_public)],
        platform_private_key=platform_private,
        platform_public_key_id="PUB_KEY_ID_0114",
        apiv3_key=APIV3_KEY,
    )
    with served(sim) as gateway, served(receiver) as hook:
        config = WeChatConfig(
            mchid="1900000109",
            appid="wx8888888888888888",
            merchant_private_key=merchant_private,
            merchant_serial="5157F09EFDC0",
            apiv3_key=APIV3_KEY,
            platform_public_key=platform_public,
            platform_public_key_id="PUB_KEY_ID_0114",
            notify_url=f"http://{hook}/notify",
            gateway=f"http://{gateway}",
        )
        yield {"config": config, "gateway": gateway, "received": received, "platform_private": platform_private}


async def test_order_query_pay_and_notification(wechat: dict[str, Any]) -> None:
    client = WeChatPayClient(wechat["config"])
    no = uid("YHF")
    url = await client.create_h5(out_trade_no=no, description="医后付-诊疗费", amount_fen=24500, client_ip="10.0.0.8")
    assert url.startswith("https://wx.tenpay.com/")
    assert (await client.query(no)).trade_state == "NOTPAY"
    async with httpx.AsyncClient() as http:
        r = await http.post(f"http://{wechat['gateway']}/_sim/pay/1900000109/{no}")
    assert r.json() == {"notified": 200}
    headers, body = wechat["received"][-1]
    paid = client.verify_notification(headers, body)
    assert isinstance(paid, Paid) and paid.out_trade_no == no and paid.amount_fen == 24500
    assert paid.trade_state == "SUCCESS" and paid.transaction_id.startswith("42")
    assert (await client.query(no)).trade_state == "SUCCESS"


async def test_forged_stale_and_foreign_notifications_are_refused(wechat: dict[str, Any]) -> None:
    client = WeChatPayClient(wechat["config"])
    no = uid("YHF")
    await client.create_h5(out_trade_no=no, description="医后付-诊疗费", amount_fen=100, client_ip="10.0.0.8")
    async with httpx.AsyncClient() as http:
        await http.post(f"http://{wechat['gateway']}/_sim/pay/1900000109/{no}")
    headers, body = wechat["received"][-1]
    assert client.verify_notification(headers, body) is not None
    tampered = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESX")
    assert client.verify_notification(headers, tampered) is None
    assert client.verify_notification(headers, body, now=time.time() + 600) is None  # replayed 10 minutes later
    assert client.verify_notification({**headers, "wechatpay-serial": "PUB_KEY_ID_OTHER"}, body) is None
    # a genuine notification for another merchant's app
    other = WeChatPayClient(replace(wechat["config"], appid="wx0000000000000000"))
    assert other.verify_notification(headers, body) is None
    # signed by someone else's key
    forged_private, _ = new_rsa_pair()

    stamp, nonce = headers["wechatpay-timestamp"], headers["wechatpay-nonce"]
    forged = {**headers, "wechatpay-signature": rsa_sign(forged_private, f"{stamp}\n{nonce}\n{body.decode()}\n")}
    assert client.verify_notification(forged, body) is None


async def test_the_gateway_checks_the_merchant(wechat: dict[str, Any]) -> None:
    intruder_private, _ = new_rsa_pair()
    client = WeChatPayClient(replace(wechat["config"], merchant_private_key=intruder_private))
    with pytest.raises(WeChatPayError) as err:
        await client.create_h5(out_trade_no=uid("YHF"), description="x", amount_fen=100, client_ip="10.0.0.8")
    assert err.value.status == 401 and err.value.code == "SIGN_ERROR"
    honest = WeChatPayClient(wechat["config"])
    no = uid("YHF")
    await honest.create_h5(out_trade_no=no, description="诊疗费", amount_fen=100, client_ip="10.0.0.8")
    with pytest.raises(WeChatPayError) as err:  # the same order number for another amount
        await honest.create_h5(out_trade_no=no, description="诊疗费", amount_fen=200, client_ip="10.0.0.8")
    assert err.value.code == "INVALID_REQUEST"
    with pytest.raises(WeChatPayError) as err:
        await honest.create_h5(out_trade_no=uid("YHF"), description="诊疗费", amount_fen=0, client_ip="10.0.0.8")
    assert err.value.code == "PARAM_ERROR"


async def test_refunds_at_the_gateway(wechat: dict[str, Any]) -> None:
    client = WeChatPayClient(wechat["config"])
    no = uid("YHF")
    await client.create_h5(out_trade_no=no, description="医后付-诊疗费", amount_fen=10000, client_ip="10.0.0.8")
    with pytest.raises(WeChatPayError) as unpaid:  # nothing to refund before the payer pays
        await client.refund(out_refund_no=uid("rfd_"), out_trade_no=no, refund_fen=100, total_fen=10000, reason="退费")
    assert unpaid.value.code == "TRADE_ERROR"
    async with httpx.AsyncClient() as http:
        await http.post(f"http://{wechat['gateway']}/_sim/pay/1900000109/{no}")
    first = uid("rfd_")
    answer = await client.refund(out_refund_no=first, out_trade_no=no, refund_fen=6000, total_fen=10000, reason="退费")
    assert (answer.status, answer.amount_fen) == ("processing", 6000)
    # the same refund number is the same refund; with another amount it is refused
    assert (
        await client.refund(out_refund_no=first, out_trade_no=no, refund_fen=6000, total_fen=10000, reason="退费")
    ).channel_refund_no == answer.channel_refund_no
    with pytest.raises(WeChatPayError) as other:
        await client.refund(out_refund_no=first, out_trade_no=no, refund_fen=5000, total_fen=10000, reason="退费")
    assert other.value.code == "INVALID_REQUEST"
    with pytest.raises(WeChatPayError) as beyond:  # 6000 + 5000 > 10000
        await client.refund(out_refund_no=uid("rfd_"), out_trade_no=no, refund_fen=5000, total_fen=10000, reason="退费")
    assert beyond.value.code == "INVALID_REQUEST"
    with pytest.raises(WeChatPayError) as wrong_total:
        await client.refund(out_refund_no=uid("rfd_"), out_trade_no=no, refund_fen=100, total_fen=9999, reason="退费")
    assert wrong_total.value.code == "PARAM_ERROR"
    for _ in range(50):  # the money reaches the payer, and WeChat notifies the merchant
        if (await client.query_refund(first)).status == "succeeded":
            break
        await asyncio.sleep(0.1)
    assert (await client.query_refund(first)).status == "succeeded"
    told = [client.verify_notification(h, b) for h, b in wechat["received"]]
    refunds = [t for t in told if isinstance(t, RefundAnswer)]
    assert refunds and refunds[-1].out_refund_no == first and refunds[-1].amount_fen == 6000
    with pytest.raises(WeChatPayError) as missing:
        await client.query_refund(uid("rfd_"))
    assert missing.value.status == 404


async def test_closing_orders(wechat: dict[str, Any]) -> None:
    client = WeChatPayClient(wechat["config"])
    unpaid, paid = uid("YHF"), uid("YHF")
    for no in (unpaid, paid):
        await client.create_h5(out_trade_no=no, description="医后付-诊疗费", amount_fen=300, client_ip="10.0.0.8")
    async with httpx.AsyncClient() as http:
        await http.post(f"http://{wechat['gateway']}/_sim/pay/1900000109/{paid}")
        await client.close(unpaid)  # a signed 204: the SDK verifies even an empty answer
        await client.close(paid)  # also 204: only the query tells
        assert (await client.query(unpaid)).trade_state == "CLOSED"
        assert (await client.query(paid)).trade_state == "SUCCESS"
        late = await http.post(f"http://{wechat['gateway']}/_sim/pay/1900000109/{unpaid}")
    assert late.status_code == 400 and late.json()["code"] == "ORDER_CLOSED"
