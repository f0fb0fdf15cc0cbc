"""WeChat Pay API v3: H5 orders, queries, refunds, the trade bill and result notifications
through the wechatpayv3 SDK, and `WeChatChannel`, its adapter to the `Channel` interface.

The client signs every request with the merchant's RSA key (WECHATPAY2-SHA256-RSA2048) and
verifies every answer with WeChat's platform public key ("微信支付公钥" mode, so no
certificate download). `verify_notification` adds what the SDK leaves to us: the timestamp
within 5 minutes, and the decrypted transaction's appid, mchid and amount matching our order.
The other side, for dev and tests, is `simulators.wechat`."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import requests
from wechatpayv3 import WeChatPay, WeChatPayType

from config import Settings
from domain.channels import CHANNELS, ChannelName
from domain.money import fen_from_yuan
from integrations.payments.channels import (
    DESCRIPTION,
    REFUND_REASON,
    ChannelBusy,
    ChannelRefused,
    ChannelTimeout,
    Paid,
    RefundAnswer,
    StatementError,
    StatementLine,
)

MAX_SKEW_SECONDS = 300
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"


@dataclass(frozen=True, kw_only=True)
class WeChatConfig:
    mchid: str
    appid: str
    merchant_private_key: str  # PEM
    merchant_serial: str
    apiv3_key: str  # 32 bytes
    platform_public_key: str  # PEM
    platform_public_key_id: str
    notify_url: str
    gateway: str = "https://api.mch.weixin.qq.com"


class WeChatPayError(ChannelRefused):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, f"{status} {code}: {message}")
        self.status = status


# the columns of WeChat's trade bill (交易账单, bill_type=ALL); every value starts with a backtick
BILL_COLUMNS = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
).split(",")
BILL_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def parse_trade_bill(text: str) -> list[StatementLine]:
    """WeChat's trade bill -> lines. Amounts are yuan strings, converted exactly."""
    rows = text.splitlines()
    if not rows or rows[0].split(",") != BILL_COLUMNS:
        raise StatementError("not a WeChat trade bill: unexpected header")
    out = []
    for row in rows[1:]:
        if row.startswith(BILL_SUMMARY.split(",")[0]):
            break
        values = dict(zip(BILL_COLUMNS, (v.removeprefix("`") for v in row.split(",")), strict=True))
        if values["交易状态"] == "REFUND":
            fen = fen_from_yuan(values["退款金额"])
            kind, no = "refund", values["微信退款单号"]
        else:
            fen = fen_from_yuan(values["应结订单金额"])
            kind, no = "payment", values["微信订单号"]
        if fen is None:
            raise StatementError(f"bad amount in {row!r}")
        out.append(
            StatementLine(
                kind=kind,
                out_trade_no=values["商户订单号"],
                out_refund_no=values["商户退款单号"],
                amount_fen=fen,
                channel_no=no,
            )
        )
    return out


REFUND_STATES = {"SUCCESS": "succeeded", "PROCESSING": "processing", "CLOSED": "failed", "ABNORMAL": "failed"}


def _refund_answer(data: dict[str, Any]) -> RefundAnswer:
    status = str(data.get("status") or data.get("refund_status") or "")
    refund = data.get("amount", {}).get("refund") if isinstance(data.get("amount"), dict) else None
    detail = {"ABNORMAL": "退款异常：用户银行卡不可用，需线下处理", "CLOSED": "退款关闭"}.get(status, "")
    return RefundAnswer(
        out_refund_no=str(data.get("out_refund_no", "")),
        status=REFUND_STATES.get(status, "processing"),
        channel_refund_no=str(data.get("refund_id", "")),
        amount_fen=refund if isinstance(refund, int) and not isinstance(refund, bool) else -1,
        detail=detail,
    )


class WeChatPayClient:
    def __init__(self, config: WeChatConfig) -> None:
        self.config = config
        self._wx = WeChatPay(
            wechatpay_type=WeChatPayType.H5,
            mchid=config.mchid,
            private_key=config.merchant_private_key,
            cert_serial_no=config.merchant_serial,
            appid=config.appid,
            apiv3_key=config.apiv3_key,
            notify_url=config.notify_url,
            public_key=config.platform_public_key,
            public_key_id=config.platform_public_key_id,
            timeout=(5, 15),
        )
        self._wx._core._gate_way = config.gateway.rstrip("/")  # the SDK has no setting for it

    async def create_h5(self, *, out_trade_no: str, description: str, amount_fen: int, client_ip: str) -> str:
        """An H5 order; answers the URL the patient's browser opens to pay."""
        code, message = await asyncio.to_thread(
            self._wx.pay,
            description=description,
            out_trade_no=out_trade_no,
            amount={"total": amount_fen, "currency": "CNY"},
            scene_info={"payer_client_ip": client_ip, "h5_info": {"type": "Wap"}},
        )
        data = _json(message)
        if code != 200:
            raise WeChatPayError(code, str(data.get("code")), str(data.get("message")))
        return str(data["h5_url"])

    async def query(self, out_trade_no: str) -> Paid:
        code, message = await asyncio.to_thread(self._wx.query, out_trade_no=out_trade_no)
        data = _json(message)
        if code != 200:
            raise WeChatPayError(code, str(data.get("code")), str(data.get("message")))
        return Paid(
            out_trade_no=data["out_trade_no"],
            transaction_id=str(data.get("transaction_id") or ""),
            amount_fen=int(data["amount"]["total"]),
            trade_state=str(data["trade_state"]),
        )

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid order so it can no longer be paid. WeChat answers 204 whatever the
        order's state: only a query after the close tells paid from closed."""
        code, message = await asyncio.to_thread(self._wx.close, out_trade_no=out_trade_no)
        data = _json(message)
        if code not in (200, 204) and data.get("code") not in ("ORDER_CLOSED",):
            raise WeChatPayError(code, str(data.get("code")), str(data.get("message")))

    async def refund(
        self, *, out_refund_no: str, out_trade_no: str, refund_fen: int, total_fen: int, reason: str
    ) -> RefundAnswer:
        """Ask WeChat to return money to the payer (same out_refund_no: the same refund)."""
        code, message = await asyncio.to_thread(
            self._wx.refund,
            out_refund_no=out_refund_no,
            out_trade_no=out_trade_no,
            reason=reason,
            amount={"refund": refund_fen, "total": total_fen, "currency": "CNY"},
        )
        data = _json(message)
        if code != 200:
            raise WeChatPayError(code, str(data.get("code")), str(data.get("message")))
        return _refund_answer(data)

    async def query_refund(self, out_refund_no: str) -> RefundAnswer:
        code, message = await asyncio.to_thread(self._wx.query_refund, out_refund_no=out_refund_no)
        data = _json(message)
        if code != 200:
            raise WeChatPayError(code, str(data.get("code")), str(data.get("message")))
        return _refund_answer(data)

    async def statement(self, day: str) -> list[StatementLine]:
        """The trade bill of a day (YYYY-MM-DD, Beijing time): ask for it, download it (gzip),
        check its SHA1 against the signed answer, parse it."""
        code, message = await asyncio.to_thread(self._wx.trade_bill, bill_date=day, bill_type="ALL")
        data = _json(message)
        if code != 200:
            raise WeChatPayError(code, str(data.get("code")), str(data.get("message")))
        code, content = await asyncio.to_thread(self._wx.download_bill, data["download_url"])
        if code != 200 or not isinstance(content, bytes):
            raise WeChatPayError(code, "DOWNLOAD_FAILED", "the bill could not be downloaded")
        raw = gzip.decompress(content)
        if hashlib.sha1(raw).hexdigest() != data.get("hash_value"):
            raise StatementError("the bill's SHA1 does not match the signed answer")
        return parse_trade_bill(raw.decode("utf-8"))

    async def simulate_payment(self, out_trade_no: str) -> None:
        """Sandbox only: the patient pays at the simulated WeChat, which then notifies us."""
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(f"{self.config.gateway}/_sim/pay/{self.config.mchid}/{out_trade_no}")
        if r.status_code != 200:
            raise WeChatPayError(r.status_code, "SIMULATOR", r.text)

    def verify_notification(
        self, headers: dict[str, str], body: bytes, *, now: float | None = None
    ) -> Paid | RefundAnswer | None:
        """A notification's transaction (or refund), or None when it is forged, stale, or not
        for this merchant."""
        h = {k.lower(): v for k, v in headers.items()}
        stamp = h.get("wechatpay-timestamp", "")
        if not stamp.isdigit() or abs((now or time.time()) - int(stamp)) > MAX_SKEW_SECONDS:
            return None
        if h.get("wechatpay-serial") != self.config.platform_public_key_id:
            return None
        try:
            result = self._wx.callback(h, body)
        except Exception:
            return None
        if not result or not isinstance(result.get("resource"), dict):
            return None
        tx = result["resource"]
        if str(result.get("event_type", "")).startswith("REFUND."):
            if tx.get("mchid") != self.config.mchid or not tx.get("out_refund_no"):
                return None
            return _refund_answer(tx)
        if tx.get("appid") != self.config.appid or tx.get("mchid") != self.config.mchid:
            return None
        total = tx.get("amount", {}).get("total")
        if not isinstance(total, int) or isinstance(total, bool):
            return None
        return Paid(
            out_trade_no=str(tx.get("out_trade_no")),
            transaction_id=str(tx.get("transaction_id")),
            amount_fen=total,
            trade_state=str(tx.get("trade_state")),
        )


def _json(message: Any) -> dict[str, Any]:
    try:
        data = json.loads(message)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class WeChatChannel:
    name = ChannelName.wechat
    keeps_statements = CHANNELS[name].keeps_statements
    ack = MappingProxyType({"code": "SUCCESS"})

    def __init__(self, client: WeChatPayClient) -> None:
        self.client = client

    async def open_order(self, *, out_trade_no: str, amount_fen: int, client_ip: str) -> str:
        try:
            return await self.client.create_h5(
                out_trade_no=out_trade_no, description=DESCRIPTION, amount_fen=amount_fen, client_ip=client_ip
            )
        except requests.RequestException as err:  # the SDK's transport: no answer, or a cut one
            raise ChannelTimeout(f"WeChat did not answer: {type(err).__name__}") from err

    async def query(self, out_trade_no: str) -> Paid | None:
        try:
            return await self.client.query(out_trade_no)
        except WeChatPayError as err:
            if err.status == 404:  # the order never reached WeChat: nothing was paid
                return None
            raise ChannelBusy(str(err)) from err

    async def close(self, out_trade_no: str) -> None:
        try:
            await self.client.close(out_trade_no)
        except WeChatPayError as err:
            if err.status != 404:  # an order WeChat never had needs no closing
                raise ChannelBusy(str(err)) from err

    async def refund(self, *, out_refund_no: str, out_trade_no: str, refund_fen: int, total_fen: int) -> RefundAnswer:
        try:
            return await self.client.refund(
                out_refund_no=out_refund_no,
                out_trade_no=out_trade_no,
                refund_fen=refund_fen,
                total_fen=total_fen,
                reason=REFUND_REASON,
            )
        except WeChatPayError as err:
            if err.status in (400, 403, 404) and err.code not in ("NOT_ENOUGH", "FREQUENCY_LIMITED"):
                return RefundAnswer(out_refund_no=out_refund_no, status="failed", detail=f"{err.code}: {err}"[:300])
            raise ChannelBusy(str(err)) from err  # WeChat busy, or our merchant balance short

    async def query_refund(self, *, out_refund_no: str, out_trade_no: str) -> RefundAnswer | None:
        try:
            return await self.client.query_refund(out_refund_no)
        except WeChatPayError as err:
            if err.status == 404:  # our request never reached WeChat
                return None
            raise ChannelBusy(str(err)) from err

    async def statement(self, day: str) -> list[StatementLine]:
        try:
            return await self.client.statement(day)
        except WeChatPayError as err:
            raise ChannelBusy(str(err)) from err

    def verify(self, headers: Mapping[str, str], body: bytes) -> Paid | RefundAnswer | None:
        return self.client.verify_notification(dict(headers), body)

    async def simulate_payment(self, out_trade_no: str, amount_fen: int) -> None:
        await self.client.simulate_payment(out_trade_no)


def wechat_config(settings: Settings) -> WeChatConfig | None:
    """The WeChat Pay merchant configuration, or None when the channel is not set up."""
    if not settings.wechat_mchid:
        return None
    return WeChatConfig(
        mchid=settings.wechat_mchid,
        appid=settings.wechat_appid,
        merchant_private_key=Path(settings.wechat_merchant_key_path).read_text(),
        merchant_serial=settings.wechat_merchant_serial,
        apiv3_key=settings.wechat_apiv3_key,
        platform_public_key=Path(settings.wechat_platform_public_key_path).read_text(),
        platform_public_key_id=settings.wechat_platform_public_key_id,
        notify_url=f"{settings.public_base_url.rstrip('/')}/v1/payments/notify/{ChannelName.wechat}",
        gateway=settings.wechat_gateway,
    )


def build(settings: Settings) -> WeChatChannel | None:
    """The channel, when this hospital has a WeChat Pay merchant."""
    config = wechat_config(settings)
    return None if config is None else WeChatChannel(WeChatPayClient(config))
