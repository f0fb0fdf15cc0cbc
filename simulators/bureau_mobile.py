"""医保移动支付 at the simulated bureau (simulators/bureau.py serves it): the patient's authorisation
(`/mobile/authorize`, the 医保电子凭证 app modeled), 6201 upload, 6202 pay, the platform's cashier,
the signed notification to the hospital's `notifyUrl`, 6203 refund, 6301 query, 6401 revoke.

What it checks as the platform would: a payAuthNo is the one issued for this psnNo, unexpired
(AUTH_SECONDS) and used for one order only (`PayAuthInvalid`), and 6202 carries the order's own;
an order is paid once, refunded no part beyond what it paid, revoked only unpaid ("1" or "2");
a locked card pays nothing. An order without a cash part is paid at 6202 ("6", a setlId); one
with a cash part is paying ("2", a `cashierUrl`) until `POST {cashierUrl}` `{"payToken"}` pays it.
The notification (integrations/nhsa_mobile.py documents its body and SM2 signature, computed
here apart from the client) is POSTed once, in line with the request that paid the order, after
its transaction, and whether it was answered 200 is recorded; `?notify=0` on the cashier loses
it, `POST /inspect/mobile/{payOrdId}/notify` sends it again, `.../fail` fails a paying order
("15", the insurance parts given back) and notifies that, `GET /inspect/mobile/{payOrdId}` shows
the order. The notifications go over `app.state.notify_transport` when a test sets one."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from gmssl import sm3
from sqlalchemy.orm import Session

from simulators.bureau import (
    _G,
    _N,
    CURVE,
    ZONE,
    FeeDetail,
    Handler,
    MobileOrder,
    PayAuth,
    Refused,
    _clock,
    _ec_mul,
    card_events,
    data_of,
    encode,
    fen,
    is_locked,
    new_id,
    now,
    personal_balance,
    split_bill,
    text,
    wire,
    yuan,
)
from simulators.store import Store

AUTH_SECONDS = 300  # a payAuthNo holds this long
PLATFORM_PAASID = "nhsa-mobile-platform"  # the platform's x-tif-paasid on its notifications

# this request's base URL (the cashier's URLs are under it) and the orders it paid or failed,
# notified once its transaction is over
_base_url: ContextVar[str] = ContextVar("bureau_base_url", default="http://bureau/")
_settled: ContextVar[list[str] | None] = ContextVar("bureau_settled", default=None)


def _finished(row: MobileOrder) -> None:
    """The order was paid or failed in this request: notify once its transaction is over."""
    pending = _settled.get()
    if pending is not None:
        pending.append(row.pay_ord_id)


def refused(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


async def json_of(request: Request) -> dict[str, Any]:
    """The request's JSON object, or {} (what is required is then missing)."""
    try:
        data = json.loads(await request.body())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- SM2 signing of the notifications, on the simulator's own integers ------------------------


def sm2_signed(private_key: str, message: bytes) -> str:
    """r||s (128 hex) of SM2 with SM3, the signer's id the default 1234567812345678."""
    d = int(private_key, 16)
    point = _ec_mul(d, _G)
    assert point is not None
    public = f"{point[0]:064x}{point[1]:064x}"
    za = sm3.sm3_hash(
        list(bytes.fromhex("0080" + b"1234567812345678".hex() + CURVE["a"] + CURVE["b"] + CURVE["g"] + public))
    )
    e = int(sm3.sm3_hash(list(bytes.fromhex(za) + message)), 16)
    while True:
        k = secrets.randbelow(_N - 1) + 1
        kg = _ec_mul(k, _G)
        assert kg is not None
        r = (e + kg[0]) % _N
        s = pow(1 + d, -1, _N) * (k - r * d) % _N
        if r and r + k != _N and s:
            return f"{r:064x}{s:064x}"


def signed_notice(private_key: str, row: MobileOrder) -> tuple[dict[str, str], bytes]:
    body = encode(
        {
            **{k: v for k, v in figures(row).items() if k not in ("payToken", "cashierUrl")},
            "notifyTime": now().astimezone(ZONE).strftime("%Y%m%d%H%M%S"),
        }
    ).encode()
    ts, nonce = str(int(now().timestamp())), secrets.token_hex(16)
    text_signed = (ts + nonce + PLATFORM_PAASID + sm3.sm3_hash(list(body))).encode()
    headers = {
        "x-tif-paasid": PLATFORM_PAASID,
        "x-tif-timestamp": ts,
        "x-tif-nonce": nonce,
        "x-tif-signature": sm2_signed(private_key, text_signed),
        "content-type": "application/json;charset=utf-8",
    }
    return headers, body


# --- the transactions ------------------------------------------------------------------------


def _order(session: Session, data: Mapping[str, Any]) -> MobileOrder:
    row = session.get(MobileOrder, text(data, "payOrdId"))
    if row is None or row.pay_token != text(data, "payToken"):
        raise Refused("OrderNotFound", "支付订单不存在或 payToken 不符")
    return row


def figures(row: MobileOrder) -> dict[str, Any]:
    out = {
        "payOrdId": row.pay_ord_id,
        "payToken": row.pay_token,
        "medOrgOrd": row.med_org_ord,
        "ordStas": row.status,
        "setlId": row.setl_id,
        "feeSumamt": yuan(row.total_fen),
        "fundPay": yuan(row.fund_fen),
        "psnAcctPay": yuan(row.personal_fen),
        "ownPayAmt": yuan(row.cash_fen),
    }
    if row.status == "2":
        out["cashierUrl"] = row.cashier_url
    return out


def _pay_auth(session: Session, pay_auth_no: str, psn_no: str) -> PayAuth:
    auth = session.get(PayAuth, pay_auth_no)
    if auth is None or auth.patient_id != psn_no:
        raise Refused("PayAuthInvalid", "payAuthNo 不是该参保人的授权")
    if auth.expires_at <= now():
        raise Refused("PayAuthInvalid", "payAuthNo 已过期，请重新授权")
    if auth.pay_ord_id:
        raise Refused("PayAuthInvalid", "payAuthNo 已用于另一笔订单")
    return auth


def _lines(data: Mapping[str, Any]) -> list[FeeDetail]:
    details = data.get("feedetail")
    if not isinstance(details, list) or not details:
        raise Refused("MissingParameter", "data.feedetail is required")
    lines = []
    for d in details:
        if not isinstance(d, Mapping):
            raise Refused("InvalidParameter", "a feedetail is an object")
        amount, price, count = fen(d.get("detItemFeeSumamt")), fen(d.get("pric")), d.get("cnt")
        if not isinstance(count, int | Decimal) or isinstance(count, bool) or Decimal(count) * price != amount:
            raise Refused("InvalidParameter", f"{d.get('feedetlSn')}: detItemFeeSumamt is not cnt x pric")
        text(d, "feedetlSn")
        lines.append(FeeDetail(fen=amount, med_chrgitm_type=str(d.get("medChrgitmType") or "14")))
    return lines


def upload(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    psn_no = text(data, "psnNo")
    lines = _lines(data)
    total = fen(data.get("medfeeSumamt"))
    if total != sum(line.fen for line in lines):
        raise Refused("TotalMismatch", "medfeeSumamt 与费用明细合计不符")
    auth = _pay_auth(session, text(data, "payAuthNo"), psn_no)
    if is_locked(card_events(session, psn_no)):
        raise Refused("CardLocked", "参保人医保结算已暂停（卡锁定），不能结算")
    fund, personal, cash = split_bill(lines, personal_balance(session, psn_no))
    row = MobileOrder(
        pay_ord_id=new_id("ORD"),
        pay_token=secrets.token_hex(16),
        patient_id=psn_no,
        med_org_ord=text(data, "medOrgOrd"),
        total_fen=total,
        fund_fen=fund,
        personal_fen=personal,
        cash_fen=cash,
        refunded_fund_fen=0,
        refunded_personal_fen=0,
        refunded_cash_fen=0,
        refund_sns="",
        status="1",
        pay_auth_no=auth.pay_auth_no,
        notify_url=str(data.get("notifyUrl") or ""),
        setl_id="",
        cashier_url="",
        notified="",
    )
    session.add(row)
    auth.pay_ord_id = row.pay_ord_id
    return figures(row)


def pay(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    row = _order(session, data)
    if text(data, "payAuthNo") != row.pay_auth_no:
        raise Refused("PayAuthInvalid", "payAuthNo 不是该订单的授权")
    if row.status != "1":
        raise Refused("OrderNotPayable", f"订单状态 {row.status}，不能支付")
    if is_locked(card_events(session, row.patient_id)):
        raise Refused("CardLocked", "参保人医保结算已暂停（卡锁定），不能结算")
    if row.personal_fen > personal_balance(session, row.patient_id):
        raise Refused("BalanceChanged", "个人账户余额不足，请重新上传")
    if row.cash_fen:  # the fund and the account hold their parts; the cash part at the cashier
        row.status, row.cashier_url = "2", f"{_base_url.get().rstrip('/')}/mobile/cashier/{row.pay_ord_id}"
    else:
        row.status, row.setl_id = "6", new_id("SE")
        _finished(row)
    return figures(row)


def refund(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    row = session.get(MobileOrder, text(data, "payOrdId"))
    if row is None:
        raise Refused("OrderNotFound", "支付订单不存在")
    sn = text(data, "appRefdSn")
    if sn in row.refund_sns.split("\n"):
        raise Refused("RefundSnReused", "退款流水号已使用")
    if row.status not in ("6", "7"):
        raise Refused("OrderNotPaid", f"订单状态 {row.status}，不能退款")
    total, fund, personal, cash = (
        fen(data.get(name)) for name in ("totlRefdAmt", "fundRefdAmt", "psnAcctRefdAmt", "cashRefdAmt")
    )
    if total != fund + personal + cash:
        raise Refused("TotalMismatch", "totlRefdAmt 不等于基金、个人账户与现金退款之和")
    kind = "ALL" if (fund or personal) and cash else ("HI" if fund or personal else "CASH")
    if data.get("refdType") != kind:  # HI: the fund and/or the personal account; CASH: cash; ALL: both
        raise Refused("InvalidParameter", f"refdType is {kind} for this refund")
    if (
        row.refunded_fund_fen + fund > row.fund_fen
        or row.refunded_personal_fen + personal > row.personal_fen
        or row.refunded_cash_fen + cash > row.cash_fen
    ):
        raise Refused("RefundTooLarge", "退款金额超过可退金额")
    row.refunded_fund_fen += fund
    row.refunded_personal_fen += personal
    row.refunded_cash_fen += cash
    row.refund_sns = (row.refund_sns + "\n" + sn).strip()
    if row.refunded_fund_fen + row.refunded_personal_fen + row.refunded_cash_fen == row.total_fen:
        row.status = "7"
    return {
        "payOrdId": row.pay_ord_id,
        "appRefdSn": sn,
        "refStatus": "SUCC",
        "ordStas": row.status,
        "totlRefdAmt": yuan(total),
        "fundRefdAmt": yuan(fund),
        "psnAcctRefdAmt": yuan(personal),
        "cashRefdAmt": yuan(cash),
    }


def query(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    return figures(_order(session, data_of(inp)))


def revoke(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    row = _order(session, data_of(inp))
    if row.status not in ("1", "2", "12"):
        raise Refused("OrderPaid", f"订单状态 {row.status}，已支付的订单只能退款 (6203)")
    row.status = "12"  # a paying order's insurance parts are given back with it
    return {"payOrdId": row.pay_ord_id, "ordStas": row.status}


HANDLERS: dict[str, Handler] = {"6201": upload, "6202": pay, "6203": refund, "6301": query, "6401": revoke}


# --- the HTTP side: the app's authorisation, the cashier, the notification -------------------


@contextmanager
def request_scope(base_url: str) -> Iterator[list[str]]:
    """Around one request: its base URL, and the orders it paid or failed (to notify after it)."""
    settled: list[str] = []
    tokens = _base_url.set(base_url), _settled.set(settled)
    try:
        yield settled
    finally:
        _base_url.reset(tokens[0])
        _settled.reset(tokens[1])


class Mobile:
    """The mobile routes of one simulator app: its store, clock and signing key."""

    def __init__(self, app: FastAPI, db: Store, clock: Callable[[], datetime] | None, private_key: str) -> None:
        self.app, self.db, self.clock, self.private_key = app, db, clock, private_key
        app.state.notify_transport = None  # a test routes the notifications to its receiver

    @contextmanager
    def clocked(self) -> Iterator[None]:
        token = _clock.set(self.clock) if self.clock is not None else None
        try:
            yield
        finally:
            if token is not None:
                _clock.reset(token)

    async def notify(self, pay_ord_ids: list[str]) -> None:
        for pay_ord_id in pay_ord_ids:
            await self.send(pay_ord_id)

    async def send(self, pay_ord_id: str) -> str:
        """POST the order's notification to its notifyUrl once; record how it was answered."""
        with self.db.transaction() as session:
            row = session.get(MobileOrder, pay_ord_id)
            assert row is not None
            url = row.notify_url
            headers, body = signed_notice(self.private_key, row)
        if not url:
            outcome = "no notifyUrl"
        else:
            transport = self.app.state.notify_transport
            try:
                async with httpx.AsyncClient(transport=transport, timeout=10) as http:
                    answer = await http.post(url, content=body, headers=headers)
                outcome = str(answer.status_code)
            except httpx.HTTPError as err:
                outcome = type(err).__name__
        with self.db.transaction() as session:
            row = session.get(MobileOrder, pay_ord_id)
            assert row is not None
            row.notified = outcome
        return outcome

    def mount(self) -> None:
        app = self.app

        @app.post("/mobile/authorize")
        async def authorize(request: Request) -> Any:
            """The 医保电子凭证 app's authorisation of a payment by the person (modeled)."""
            data = await json_of(request)
            psn_no = data.get("psnNo")
            if not isinstance(psn_no, str) or not psn_no:
                return refused(400, "MissingParameter", "psnNo is required")
            with self.clocked(), self.db.transaction() as session:
                auth = PayAuth(
                    pay_auth_no="AUTH" + secrets.token_hex(12),
                    patient_id=psn_no,
                    expires_at=now() + timedelta(seconds=AUTH_SECONDS),
                    pay_ord_id=None,
                )
                session.add(auth)
                return {"payAuthNo": auth.pay_auth_no, "expiresIn": AUTH_SECONDS}

        @app.post("/mobile/cashier/{pay_ord_id}")
        async def cashier(pay_ord_id: str, request: Request, notify: int = 1) -> Any:
            """The patient pays the cash part: the order is paid, then notified (notify=0: lost)."""
            token = (await json_of(request)).get("payToken")
            with self.clocked():
                with self.db.transaction() as session:
                    row = session.get(MobileOrder, pay_ord_id)
                    if row is None or row.pay_token != token:
                        return refused(404, "OrderNotFound", "支付订单不存在或 payToken 不符")
                    if row.status == "6":
                        return wire(figures(row))  # paid already: the same answer, no new notice
                    if row.status != "2":
                        return refused(409, "OrderNotPayable", f"订单状态 {row.status}，不能支付")
                    row.status, row.setl_id = "6", new_id("SE")
                    out = figures(row)
                if notify:
                    await self.send(pay_ord_id)
            return wire(out)

        self.mount_inspection()

    def mount_inspection(self) -> None:
        app = self.app

        @app.get("/inspect/mobile/{pay_ord_id}")
        async def order(pay_ord_id: str) -> Any:
            with self.db.transaction() as session:
                row = session.get(MobileOrder, pay_ord_id)
                if row is None:
                    return refused(404, "OrderNotFound", "支付订单不存在")
                refunded = {
                    "fundRefunded": yuan(row.refunded_fund_fen),
                    "psnAcctRefunded": yuan(row.refunded_personal_fen),
                    "cashRefunded": yuan(row.refunded_cash_fen),
                }
                return wire({**figures(row), **refunded, "notifyUrl": row.notify_url, "notified": row.notified})

        @app.post("/inspect/mobile/{pay_ord_id}/notify")
        async def notify_again(pay_ord_id: str) -> Any:
            """The order's notification sent again (a paid, refunded or failed order)."""
            with self.db.transaction() as session:
                row = session.get(MobileOrder, pay_ord_id)
                if row is None or row.status not in ("6", "7", "15"):
                    return refused(409, "NothingToNotify", "the order is not paid or failed")
            with self.clocked():
                return {"payOrdId": pay_ord_id, "notified": await self.send(pay_ord_id)}

        @app.post("/inspect/mobile/{pay_ord_id}/fail")
        async def fail(pay_ord_id: str, notify: int = 1) -> Any:
            """The cashier's payment failed: a paying order ends "15", its insurance parts given back."""
            with self.db.transaction() as session:
                row = session.get(MobileOrder, pay_ord_id)
                if row is None or row.status != "2":
                    return refused(409, "OrderNotPaying", "the order is not paying")
                row.status = "15"
            with self.clocked():
                outcome = await self.send(pay_ord_id) if notify else ""
            return {"payOrdId": pay_ord_id, "ordStas": "15", "notified": outcome}
