"""医保移动支付's authorisation, cashier and notification: a payAuthNo is the person's, fresh and
for one order; an order with a cash part is paying until the cashier, then paid and notified to
the hospital's notifyUrl, signed by the platform's key, which the receiver verifies
(`verify_notification`); a notification tampered with, signed by another key or stale is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from config import DEV_BUREAU_PAAS_TOKEN, DEV_BUREAU_PLATFORM_KEY, DEV_BUREAU_PLATFORM_PUBLIC_KEY, Settings
from integrations import nhsa
from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER, InsuranceBureauClient
from integrations.nhsa_mobile import (
    FAILED,
    PAID,
    PAYING,
    REVOKED,
    MobileNotice,
    MobileOrder,
    MobilePayment,
    NotificationRefused,
    verify_notification,
)
from simulators import bureau
from tests.api.test_edges import outside_sandbox
from tests.integrations.test_nhsa import CODE, NOW, PAASID, details
from tests.support import uid

NOTIFY_URL = "http://hospital/v1/payments/notify/nhsa-mobile"


@dataclass
class Clock:
    at: datetime = NOW

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Mobile:
    """The simulated platform, a client of it, and the hospital's notification receiver."""

    bureau: FastAPI
    http: httpx.AsyncClient
    client: InsuranceBureauClient
    pay: MobilePayment
    clock: Clock
    platform_public: str
    received: list[MobileNotice] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    seq: int = 0

    def msgid(self) -> str:
        self.seq += 1
        return self.client.msgid(NOW, self.seq)


def receiver(mobile: Mobile) -> FastAPI:
    """The hospital's side of the notification: verified with the platform's public key."""
    app = FastAPI()

    @app.post("/v1/payments/notify/nhsa-mobile")
    async def notify(request: Request) -> Any:
        try:
            notice = mobile.pay.verify_notification(request.headers, await request.body(), now=mobile.clock())
        except NotificationRefused as err:
            mobile.refused.append(err.code)
            return JSONResponse({"code": err.code}, status_code=401)
        mobile.received.append(notice)
        return {"code": "SUCCESS"}

    return app


@asynccontextmanager
async def platform() -> AsyncIterator[Mobile]:
    hospital_key, platform_key = nhsa.new_sm2_private_key(), nhsa.new_sm2_private_key()
    clock = Clock()
    app = bureau.simulator_app({PAASID: nhsa.sm2_public_key(hospital_key)}, clock=clock, platform_key=platform_key)
    async with httpx.AsyncClient(base_url="http://bureau", transport=httpx.ASGITransport(app=app)) as http:
        client = InsuranceBureauClient(
            http,
            paasid=PAASID,
            private_key=hospital_key,
            fixmedins_code=CODE,
            fixmedins_name="示范医院",
            admvs="110105",
            clock=clock,
            bureau_public_key=nhsa.sm2_public_key(platform_key),
            paas_token=DEV_BUREAU_PAAS_TOKEN,  # the simulator's, given none
        )
        mobile = Mobile(app, http, client, MobilePayment(client), clock, nhsa.sm2_public_key(platform_key))
        app.state.notify_transport = httpx.ASGITransport(app=receiver(mobile))
        yield mobile
    app.state.store.close()


@pytest.fixture
async def mobile() -> AsyncIterator[Mobile]:
    async with platform() as it:
        yield it


async def upload(mobile: Mobile, psn: str, auth: str, *lines: tuple[str, int]) -> MobileOrder:
    return await mobile.pay.upload(
        msgid=mobile.msgid(),
        psn_no=psn,
        pay_auth_no=auth,
        med_org_ord=uid("ord"),
        details=details(*lines),
        at=NOW,
        operator=WORKER,
        day=mobile.client.local_day(NOW),
        notify_url=NOTIFY_URL,
    )


async def pay(mobile: Mobile, order: MobileOrder, auth: str) -> MobileOrder:
    day = mobile.client.local_day(NOW)
    return await mobile.pay.pay(msgid=mobile.msgid(), order=order, pay_auth_no=auth, operator=WORKER, day=day)


async def query(mobile: Mobile, order: MobileOrder) -> MobileOrder:
    return await mobile.pay.query(msgid=mobile.msgid(), order=order, operator=WORKER, day=mobile.client.local_day(NOW))


async def refused_code(call: Any) -> str:
    with pytest.raises(GatewayError) as err:
        await call
    return err.value.code


# --- the authorisation -----------------------------------------------------------------------


async def test_a_pay_auth_is_the_persons_fresh_and_for_one_order(mobile: Mobile) -> None:
    psn, other = uid("p"), uid("p")
    auth = await mobile.pay.sandbox_authorize(psn)
    assert await refused_code(upload(mobile, other, auth, ("03", 1000))) == "PayAuthInvalid"  # another's
    assert await refused_code(upload(mobile, psn, "AUTH-made-up", ("03", 1000))) == "PayAuthInvalid"
    order = await upload(mobile, psn, auth, ("03", 1000))
    assert await refused_code(upload(mobile, psn, auth, ("03", 1000))) == "PayAuthInvalid"  # used once
    other_auth = await mobile.pay.sandbox_authorize(psn)
    assert await refused_code(pay(mobile, order, other_auth)) == "PayAuthInvalid"  # not this order's
    mobile.clock.at = NOW + timedelta(seconds=301)  # expired
    assert await refused_code(upload(mobile, psn, other_auth, ("03", 1000))) == "PayAuthInvalid"
    mobile.clock.at = NOW
    assert (await pay(mobile, order, auth)).status == PAID


# --- the cashier and the notification --------------------------------------------------------


async def test_a_cash_part_is_paid_at_the_cashier_and_notified(mobile: Mobile) -> None:
    psn = uid("p")
    auth = await mobile.pay.sandbox_authorize(psn)
    order = await upload(mobile, psn, auth, ("03", 12000), ("14", 500))
    paying = await pay(mobile, order, auth)
    assert (paying.status, paying.cash_fen, paying.setl_id) == (PAYING, 500, "")
    assert paying.cashier_url == f"http://bureau/mobile/cashier/{order.pay_ord_id}" and not mobile.received
    assert (await query(mobile, order)).cashier_url == paying.cashier_url
    wrong = await mobile.http.post(paying.cashier_url, json={"payToken": "guessed"})
    assert wrong.status_code == 404 and wrong.json()["code"] == "OrderNotFound"
    cashier = await mobile.http.post(paying.cashier_url, json={"payToken": order.pay_token})
    assert cashier.status_code == 200 and cashier.json()["ordStas"] == PAID
    paid = await query(mobile, order)
    assert paid.status == PAID and paid.setl_id == cashier.json()["setlId"] and not paid.cashier_url
    # the notification reached the hospital once, verified, with the order's figures
    assert mobile.received == [
        MobileNotice(
            pay_ord_id=order.pay_ord_id,
            med_org_ord=order_med_org_ord(mobile, order),
            status=PAID,
            setl_id=paid.setl_id,
            total_fen=12500,
            fund_fen=7200,
            personal_fen=4800,
            cash_fen=500,
        )
    ]
    seen = (await mobile.http.get(f"/inspect/mobile/{order.pay_ord_id}")).json()
    assert (seen["notified"], seen["notifyUrl"]) == ("200", NOTIFY_URL)
    # paid: the cashier answers the same, no second notification; 6401 refused
    again = await mobile.http.post(paying.cashier_url, json={"payToken": order.pay_token})
    assert again.json()["setlId"] == paid.setl_id and len(mobile.received) == 1
    day = mobile.client.local_day(NOW)
    revoke = mobile.pay.revoke(msgid=mobile.msgid(), order=order, operator=WORKER, day=day)
    assert await refused_code(revoke) == "OrderPaid"


def order_med_org_ord(mobile: Mobile, order: MobileOrder) -> str:
    """The medOrgOrd the order was uploaded with (the client's MobileOrder does not carry it)."""
    with mobile.bureau.state.store.transaction() as session:
        row = session.get(bureau.MobileOrder, order.pay_ord_id)
        assert row is not None
        return row.med_org_ord


async def test_a_lost_notification_is_sent_again_on_request(mobile: Mobile) -> None:
    psn = uid("p")
    auth = await mobile.pay.sandbox_authorize(psn)
    order = await pay(mobile, await upload(mobile, psn, auth, ("14", 800)), auth)
    assert order.status == PAYING
    cashier = await mobile.http.post(order.cashier_url + "?notify=0", json={"payToken": order.pay_token})
    assert cashier.json()["ordStas"] == PAID and not mobile.received
    assert (await mobile.http.get(f"/inspect/mobile/{order.pay_ord_id}")).json()["notified"] == ""
    again = await mobile.http.post(f"/inspect/mobile/{order.pay_ord_id}/notify")
    assert again.json()["notified"] == "200"
    assert [(n.pay_ord_id, n.status, n.cash_fen) for n in mobile.received] == [(order.pay_ord_id, PAID, 800)]


async def test_an_order_without_cash_is_paid_and_notified_at_6202(mobile: Mobile) -> None:
    psn = uid("p")
    auth = await mobile.pay.sandbox_authorize(psn)
    order = await upload(mobile, psn, auth, ("03", 1000))
    assert order.cash_fen == 0
    paid = await pay(mobile, order, auth)
    assert paid.status == PAID and paid.setl_id and not paid.cashier_url
    assert [(n.status, n.setl_id, n.fund_fen, n.personal_fen) for n in mobile.received] == [
        (PAID, paid.setl_id, 600, 400)
    ]


async def test_a_paying_order_is_revoked_or_failed_and_then_not_paid(mobile: Mobile) -> None:
    day = mobile.client.local_day(NOW)
    psn = uid("p")
    for end in ("revoke", "fail"):
        auth = await mobile.pay.sandbox_authorize(psn)
        order = await pay(mobile, await upload(mobile, psn, auth, ("03", 10000), ("14", 100)), auth)
        assert order.status == PAYING
        if end == "revoke":
            status = await mobile.pay.revoke(msgid=mobile.msgid(), order=order, operator=WORKER, day=day)
            assert status == REVOKED
        else:
            failed = await mobile.http.post(f"/inspect/mobile/{order.pay_ord_id}/fail")
            assert failed.json()["notified"] == "200" and mobile.received[-1].status == FAILED
            assert (await query(mobile, order)).status == FAILED
        cashier = await mobile.http.post(order.cashier_url, json={"payToken": order.pay_token})
        assert cashier.status_code == 409 and cashier.json()["code"] == "OrderNotPayable"
    # the insurance parts held while paying were given back: the account has its 200 yuan again
    auth = await mobile.pay.sandbox_authorize(psn)
    assert (await upload(mobile, psn, auth, ("03", 100000))).personal_fen == 20000


# --- verify_notification ---------------------------------------------------------------------


def signed(private_key: str, body: bytes, *, at: datetime = NOW, paasid: str = "platform") -> dict[str, str]:
    ts, nonce = str(int(at.timestamp())), "n-" + uid("")
    signature = nhsa.sm2_sign(private_key, nhsa.signed_text(ts, nonce, paasid, body))
    return {"x-tif-paasid": paasid, "x-tif-timestamp": ts, "x-tif-nonce": nonce, "x-tif-signature": signature}


BODY = json.dumps(
    {
        "payOrdId": "ORD1",
        "medOrgOrd": "v1",
        "ordStas": "6",
        "setlId": "SE1",
        "feeSumamt": 125.00,
        "fundPay": 72.00,
        "psnAcctPay": 48.00,
        "ownPayAmt": 5.00,
        "notifyTime": "20260308235959",
    }
).encode()


def test_a_good_notification_verifies_and_reads_in_fen() -> None:
    key = nhsa.new_sm2_private_key()
    notice = verify_notification(nhsa.sm2_public_key(key), signed(key, BODY), BODY, now=NOW)
    assert notice == MobileNotice(
        pay_ord_id="ORD1",
        med_org_ord="v1",
        status="6",
        setl_id="SE1",
        total_fen=12500,
        fund_fen=7200,
        personal_fen=4800,
        cash_fen=500,
    )
    # headers as a server gives them (any case), and a timestamp within five minutes either way
    upper = {k.upper(): v for k, v in signed(key, BODY, at=NOW - timedelta(minutes=4)).items()}
    assert verify_notification(nhsa.sm2_public_key(key), upper, BODY, now=NOW).pay_ord_id == "ORD1"


@pytest.mark.parametrize("case", ["tampered", "wrong key", "stale", "future", "missing", "unreadable", "no key"])
def test_a_bad_notification_is_refused(case: str) -> None:
    key = nhsa.new_sm2_private_key()
    public = nhsa.sm2_public_key(key)
    headers, body, expected = signed(key, BODY), BODY, "SignatureDoesNotMatch"
    if case == "tampered":
        body = BODY.replace(b"5.0", b"0.5")
    elif case == "wrong key":
        headers = signed(nhsa.new_sm2_private_key(), BODY)
    elif case in ("stale", "future"):
        shift = timedelta(minutes=6) if case == "stale" else -timedelta(minutes=6)
        headers, expected = signed(key, BODY, at=NOW - shift), "StaleTimestamp"
    elif case == "missing":
        headers, expected = {k: v for k, v in headers.items() if k != "x-tif-nonce"}, "MissingSignature"
    elif case == "unreadable":
        body = b'{"payOrdId": "ORD1"}'
        headers, expected = signed(key, body), "UnreadableNotification"
    else:
        public, expected = "", "NoPublicKey"
    with pytest.raises(NotificationRefused) as err:
        verify_notification(public, headers, body, now=NOW)
    assert err.value.code == expected


async def test_the_receiver_refuses_a_notification_the_platform_did_not_sign(mobile: Mobile) -> None:
    """The simulator's signature is the one the client verifies: another key's is refused."""
    other = nhsa.new_sm2_private_key()
    transport = mobile.bureau.state.notify_transport
    async with httpx.AsyncClient(transport=transport, base_url="http://hospital") as http:
        forged = await http.post(NOTIFY_URL, content=BODY, headers=signed(other, BODY, at=mobile.clock()))
    assert forged.status_code == 401 and mobile.refused == ["SignatureDoesNotMatch"] and not mobile.received


# --- the setting -----------------------------------------------------------------------------


def test_the_sandbox_verifies_with_the_dev_pair_and_production_refuses_it() -> None:
    assert nhsa.sm2_public_key(DEV_BUREAU_PLATFORM_KEY) == DEV_BUREAU_PLATFORM_PUBLIC_KEY  # the simulator's default
    assert Settings(_env_file=None, sandbox=True).insurance_bureau_public_key == DEV_BUREAU_PLATFORM_PUBLIC_KEY
    for dev in (DEV_BUREAU_PLATFORM_PUBLIC_KEY, "04" + DEV_BUREAU_PLATFORM_PUBLIC_KEY.upper()):
        with pytest.raises(ValidationError, match="YHF_INSURANCE_BUREAU_PUBLIC_KEY"):
            outside_sandbox(insurance_bureau_public_key=dev)
    real = nhsa.sm2_public_key(nhsa.new_sm2_private_key())
    assert outside_sandbox(insurance_bureau_public_key=real).insurance_bureau_public_key == real
    with pytest.raises(ValueError, match="SM2 public key"):  # a key that is none stops the start
        InsuranceBureauClient(
            httpx.AsyncClient(),
            paasid=PAASID,
            private_key=nhsa.new_sm2_private_key(),
            fixmedins_code=CODE,
            fixmedins_name="示范医院",
            admvs="110105",
            bureau_public_key="ab" * 20,
            paas_token="t",
        )


async def test_the_app_and_the_cashier_refuse_what_they_cannot_read(mobile: Mobile) -> None:
    for path in ("/mobile/authorize", "/mobile/cashier/ORD-none"):
        answer = await mobile.http.post(path, content=b"not json")
        assert answer.status_code in (400, 404) and answer.json()["code"] in ("MissingParameter", "OrderNotFound")
