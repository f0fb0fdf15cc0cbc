"""医保移动支付 (6201, 6202, 6203, 6301, 6401) against the simulated bureau: an order is paid
once (its cash part at the platform's cashier), refunded no more than was paid, taken back only
while unpaid, and a locked card pays nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER
from integrations.nhsa_mobile import (
    PAID,
    PAYING,
    REFUNDED,
    REVOKED,
    UPLOADED,
    MobileOrder,
    MobilePayment,
    refund_type,
)
from tests.integrations.test_nhsa import Side, bureau_side, day, details, msgid
from tests.support import uid


@pytest.fixture
async def side() -> AsyncIterator[Side]:
    async with bureau_side() as it:
        yield it


AUTHS: dict[str, str] = {}  # payOrdId -> the payAuthNo it was uploaded with
NOTIFY_URL = "http://hospital/v1/payments/notify/nhsa-mobile"


async def uploaded(side: Side, psn: str, *lines: tuple[str, int]) -> MobileOrder:
    mobile = MobilePayment(side.client)
    auth = await mobile.sandbox_authorize(psn)
    order = await mobile.upload(
        msgid=msgid(side),
        psn_no=psn,
        pay_auth_no=auth,
        med_org_ord=uid("ord"),
        details=details(*lines),
        at=datetime.now(UTC),
        operator=WORKER,
        day=day(side),
        notify_url=NOTIFY_URL,
    )
    AUTHS[order.pay_ord_id] = auth
    return order


async def pay(side: Side, order: MobileOrder, *, msg: str | None = None) -> MobileOrder:
    return await MobilePayment(side.client).pay(
        msgid=msg or msgid(side),
        order=order,
        pay_auth_no=AUTHS[order.pay_ord_id],
        operator=WORKER,
        day=day(side),
    )


async def at_the_cashier(side: Side, order: MobileOrder, *, notify: bool = True) -> dict[str, Any]:
    """The patient pays the cash part at the platform's cashier."""
    url = order.cashier_url + ("" if notify else "?notify=0")
    answer = await side.http.post(url, json={"payToken": order.pay_token})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def refund(side: Side, order: MobileOrder, fund: int, personal: int, cash: int, sn: str | None = None) -> str:
    answer = await MobilePayment(side.client).refund(
        msgid=msgid(side),
        pay_ord_id=order.pay_ord_id,
        app_refd_sn=sn or uid("rf"),
        fund_fen=fund,
        personal_fen=personal,
        cash_fen=cash,
        at=datetime.now(UTC),
        operator=WORKER,
        day=day(side),
    )
    assert answer.ref_status == "SUCC" and answer.total_fen == fund + personal + cash
    return answer.status


async def test_an_order_is_uploaded_paid_queried_and_refunded(side: Side) -> None:
    psn = uid("p")
    order = await uploaded(side, psn, ("03", 12000), ("09", 3000), ("14", 500))
    assert (order.status, order.total_fen, order.fund_fen, order.personal_fen, order.cash_fen) == (
        UPLOADED,
        15500,
        9000,
        6000,
        500,
    )
    upload = json.loads(side.wire.sent[-1].content, parse_float=Decimal)
    assert upload["infno"] == "6201" and upload["input"]["data"]["medfeeSumamt"] == Decimal("155.00")
    msg = msgid(side)
    paying = await pay(side, order, msg=msg)
    assert paying.status == PAYING and await pay(side, order, msg=msg) == paying  # a retry: the same answer
    assert paying.cashier_url.startswith("http://bureau/") and not paying.setl_id
    with pytest.raises(GatewayError) as err:  # paid once only
        await pay(side, order)
    assert err.value.code == "OrderNotPayable"
    mobile = MobilePayment(side.client)
    assert (await mobile.query(msgid=msgid(side), order=order, operator=WORKER, day=day(side))) == paying
    await at_the_cashier(side, paying, notify=False)
    paid = await mobile.query(msgid=msgid(side), order=order, operator=WORKER, day=day(side))
    assert paid.status == PAID and paid.setl_id and not paid.cashier_url
    # the personal account paid 60 yuan: a second order of the same bill gets what is left of 200
    assert (await uploaded(side, psn, ("03", 50000))).personal_fen == 14000
    # refunds: never more than each part paid, never the same appRefdSn twice
    sn = uid("rf")
    assert await refund(side, order, 0, 0, 500, sn) == PAID
    for fund, personal, cash, code in ((0, 0, 1, "RefundTooLarge"), (9001, 0, 0, "RefundTooLarge")):
        with pytest.raises(GatewayError) as err:
            await refund(side, order, fund, personal, cash)
        assert err.value.code == code
    with pytest.raises(GatewayError) as err:
        await refund(side, order, 1, 0, 0, sn)
    assert err.value.code == "RefundSnReused"
    assert await refund(side, order, 9000, 6000, 0) == REFUNDED
    with pytest.raises(GatewayError) as err:  # refunded: not revocable
        await mobile.revoke(msgid=msgid(side), order=order, operator=WORKER, day=day(side))
    assert err.value.code == "OrderPaid"


async def test_an_unpaid_order_is_revoked_and_then_not_paid(side: Side) -> None:
    order = await uploaded(side, uid("p"), ("04", 1000))
    mobile = MobilePayment(side.client)
    assert await mobile.revoke(msgid=msgid(side), order=order, operator=WORKER, day=day(side)) == REVOKED
    with pytest.raises(GatewayError) as err:
        await pay(side, order)
    assert err.value.code == "OrderNotPayable"
    with pytest.raises(GatewayError) as err:  # a token that is not the order's
        await pay(side, MobileOrder(**{**order.__dict__, "pay_token": "guessed"}))
    assert err.value.code == "OrderNotFound"
    with pytest.raises(GatewayError) as err:
        await refund(side, order, 0, 0, 1)
    assert err.value.code == "OrderNotPaid"


async def test_a_locked_card_pays_nothing_by_mobile(side: Side) -> None:
    psn = uid("p")
    order = await uploaded(side, psn, ("03", 1000))
    now = datetime.now(UTC)
    assert await side.client.set_card_lock(
        action="lock", msgid=msgid(side), psn_no=psn, reason="overdue", at=now, operator=WORKER, day=day(side)
    )
    for step in ("6202", "6201"):
        with pytest.raises(GatewayError) as err:
            if step == "6202":
                await pay(side, order)
            else:
                await uploaded(side, psn, ("03", 1000))
        assert err.value.code == "CardLocked"


async def test_a_refund_of_the_personal_account_and_cash_is_all(side: Side) -> None:
    """refdType: HI the insurance part (fund and/or personal account), CASH the cash part, ALL
    both; the bureau refuses another."""
    assert (refund_type(9000, 0), refund_type(0, 500), refund_type(6000, 500)) == ("HI", "CASH", "ALL")
    order = await pay(side, await uploaded(side, uid("p"), ("03", 12000), ("14", 500)))
    assert (order.fund_fen, order.personal_fen, order.cash_fen) == (7200, 4800, 500)
    await at_the_cashier(side, order, notify=False)
    data = {
        "payOrdId": order.pay_ord_id,
        "appRefdSn": uid("rf"),
        "appRefdTime": "20260308235959",
        "totlRefdAmt": Decimal("2.00"),
        "fundRefdAmt": Decimal("0.00"),
        "psnAcctRefdAmt": Decimal("1.00"),
        "cashRefdAmt": Decimal("1.00"),
        "refdType": "HI",
    }
    with pytest.raises(GatewayError) as err:
        await side.client.call("6203", {"data": data}, msgid=msgid(side), operator=WORKER, day=day(side))
    assert err.value.code == "InvalidParameter"
    assert await refund(side, order, 0, 100, 100) == PAID  # the client says ALL
    assert json.loads(side.wire.sent[-1].content)["input"]["data"]["refdType"] == "ALL"
