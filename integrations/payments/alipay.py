"""Alipay: mobile-site payment (alipay.trade.wap.pay), query, close, refunds, the trade bill
and the asynchronous notify, through python-alipay-sdk (RSA2), and `AlipayChannel`, its
adapter to the `Channel` interface.

`verify_notification` adds what the SDK leaves to us: app_id and seller_id are ours, the
trade status is a paid one, and total_amount (a yuan string) converts to fen exactly.
The other side, for dev and tests, is `simulators.alipay`."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
from alipay import AliPay

from config import Settings
from domain.channels import CHANNELS, ChannelName
from domain.money import fen_from_yuan, yuan
from integrations.payments.channels import (
    DESCRIPTION,
    REFUND_REASON,
    ChannelBusy,
    ChannelRefused,
    Paid,
    RefundAnswer,
    StatementError,
    StatementLine,
)

# Alipay's refusals of a refund that a retry will not change (others, e.g. ACQ.SYSTEM_ERROR
# or ACQ.SELLER_BALANCE_NOT_ENOUGH, are worth asking again)
FINAL_REFUND_ERRORS = frozenset(
    {
        "ACQ.TRADE_NOT_EXIST",
        "ACQ.TRADE_STATUS_ERROR",
        "ACQ.TRADE_HAS_CLOSE",
        "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
        "ACQ.BUYER_ERROR",
        "ACQ.INVALID_PARAMETER",
    }
)


# the detail file of Alipay's trade bill (业务明细), GBK, comment lines start with '#'
BILL_COLUMNS = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
).split(",")


def parse_bill_zip(data: bytes) -> list[StatementLine]:
    """Alipay's bill archive -> lines: the 业务明细 file, GBK, amounts in yuan (refunds negative)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            name = next(n for n in archive.namelist() if n.endswith("业务明细.csv"))
            text = archive.read(name).decode("gbk")
    except (zipfile.BadZipFile, StopIteration, UnicodeDecodeError) as err:
        raise StatementError(f"not an Alipay bill archive: {err}") from None
    rows = [r for r in text.splitlines() if r and not r.startswith("#")]
    if not rows or rows[0].split(",") != BILL_COLUMNS:
        raise StatementError("not an Alipay bill: unexpected header")
    out = []
    for row in rows[1:]:
        values = dict(zip(BILL_COLUMNS, (v.strip() for v in row.split(",")), strict=True))
        refund = values["业务类型"] == "退款"
        fen = fen_from_yuan(values["订单金额（元）"].removeprefix("-"))
        if fen is None:
            raise StatementError(f"bad amount in {row!r}")
        out.append(
            StatementLine(
                kind="refund" if refund else "payment",
                out_trade_no=values["商户订单号"],
                out_refund_no=values["退款批次号/请求号"] if refund else "",
                amount_fen=fen,
                channel_no=values["支付宝交易号"],
            )
        )
    return out


@dataclass(frozen=True, kw_only=True)
class AlipayConfig:
    app_id: str
    seller_id: str
    app_private_key: str  # PEM
    alipay_public_key: str  # PEM
    notify_url: str
    gateway: str = "https://openapi.alipay.com/gateway.do"


class AlipayError(ChannelRefused):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, f"{code}: {message}")


class AlipayClient:
    def __init__(self, config: AlipayConfig) -> None:
        self.config = config
        self._ali = AliPay(
            appid=config.app_id,
            app_notify_url=config.notify_url,
            app_private_key_string=config.app_private_key,
            alipay_public_key_string=config.alipay_public_key,
            sign_type="RSA2",
        )
        self._ali._gateway = config.gateway  # the SDK has no setting for it

    def wap_pay_url(self, *, out_trade_no: str, subject: str, amount_fen: int) -> str:
        """The URL the patient's phone browser opens to pay."""
        order = self._ali.api_alipay_trade_wap_pay(
            subject=subject, out_trade_no=out_trade_no, total_amount=yuan(amount_fen), notify_url=self.config.notify_url
        )
        return f"{self.config.gateway}?{order}"

    async def query(self, out_trade_no: str) -> Paid:
        answer = await asyncio.to_thread(self._ali.api_alipay_trade_query, out_trade_no=out_trade_no)
        if answer.get("code") != "10000":
            raise AlipayError(str(answer.get("sub_code") or answer.get("code")), str(answer.get("sub_msg", "")))
        fen = fen_from_yuan(str(answer.get("total_amount")))
        return Paid(
            out_trade_no=str(answer["out_trade_no"]),
            transaction_id=str(answer.get("trade_no", "")),
            amount_fen=fen if fen is not None else -1,
            trade_state=str(answer.get("trade_status")),
        )

    async def close(self, out_trade_no: str) -> None:
        """alipay.trade.close: an unpaid order can no longer be paid. A trade Alipay never saw
        (the phone never opened the cashier) or one already paid is left to the query."""
        answer = await asyncio.to_thread(self._ali.api_alipay_trade_close, out_trade_no=out_trade_no)
        code = str(answer.get("sub_code") or answer.get("code"))
        if answer.get("code") != "10000" and code not in ("ACQ.TRADE_NOT_EXIST", "ACQ.TRADE_STATUS_ERROR"):
            raise AlipayError(code, str(answer.get("sub_msg", "")))

    async def refund(self, *, out_request_no: str, out_trade_no: str, refund_fen: int, reason: str) -> RefundAnswer:
        """alipay.trade.refund; the same out_request_no is the same refund. A repeat answers
        fund_change=N although the money went back, so anything but Y is confirmed by a query."""
        answer = await asyncio.to_thread(
            self._ali.api_alipay_trade_refund,
            refund_amount=yuan(refund_fen),
            out_trade_no=out_trade_no,
            out_request_no=out_request_no,
            refund_reason=reason,
        )
        code = str(answer.get("sub_code") or answer.get("code"))
        if answer.get("code") != "10000":
            if code in FINAL_REFUND_ERRORS:
                return RefundAnswer(
                    out_refund_no=out_request_no, status="failed", detail=f"{code}: {answer.get('sub_msg', '')}"
                )
            raise AlipayError(code, str(answer.get("sub_msg", "")))
        if answer.get("fund_change") == "Y":
            return RefundAnswer(
                out_refund_no=out_request_no,
                status="succeeded",
                amount_fen=refund_fen,
                channel_refund_no=str(answer.get("trade_no", "")),
            )
        return await self.query_refund(out_request_no, out_trade_no=out_trade_no)

    async def query_refund(self, out_request_no: str, *, out_trade_no: str) -> RefundAnswer:
        answer = await asyncio.to_thread(
            self._ali.api_alipay_trade_fastpay_refund_query, out_request_no=out_request_no, out_trade_no=out_trade_no
        )
        if answer.get("code") != "10000":
            raise AlipayError(str(answer.get("sub_code") or answer.get("code")), str(answer.get("sub_msg", "")))
        if answer.get("refund_status") == "REFUND_SUCCESS":
            fen = fen_from_yuan(str(answer.get("refund_amount")))
            return RefundAnswer(
                out_refund_no=out_request_no,
                status="succeeded",
                amount_fen=-1 if fen is None else fen,
                channel_refund_no=str(answer.get("trade_no", "")),
            )
        return RefundAnswer(out_refund_no=out_request_no, status="processing")

    async def statement(self, day: str) -> list[StatementLine]:
        """alipay.data.dataservice.bill.downloadurl.query for a day's trade bill, then the archive."""
        data = self._ali.build_body(
            "alipay.data.dataservice.bill.downloadurl.query", {"bill_type": "trade", "bill_date": day}
        )
        answer = await asyncio.to_thread(
            self._ali.verified_sync_response, data, "alipay_data_dataservice_bill_downloadurl_query_response"
        )
        if answer.get("code") != "10000":
            raise AlipayError(str(answer.get("sub_code") or answer.get("code")), str(answer.get("sub_msg", "")))
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.get(str(answer["bill_download_url"]))
        if r.status_code != 200:
            raise AlipayError("DOWNLOAD_FAILED", f"HTTP {r.status_code}")
        return parse_bill_zip(r.content)

    async def simulate_payment(self, out_trade_no: str, amount_fen: int) -> None:
        """Sandbox only: the phone opens the cashier (the simulated Alipay learns the order),
        the patient pays, and Alipay notifies us."""
        async with httpx.AsyncClient(timeout=30) as http:
            await http.get(self.wap_pay_url(out_trade_no=out_trade_no, subject=DESCRIPTION, amount_fen=amount_fen))
            r = await http.post(f"{self.config.gateway.rsplit('/', 1)[0]}/_sim/pay/{out_trade_no}")
        if r.status_code != 200:
            raise AlipayError("SIMULATOR", r.text)

    def verify_notification(self, form: dict[str, str]) -> Paid | None:
        data = dict(form)
        signature = data.pop("sign", "")
        if not signature or data.get("sign_type", "RSA2") != "RSA2":
            return None
        try:
            if not self._ali.verify(dict(data), signature):
                return None
        except Exception:
            return None
        if data.get("app_id") != self.config.app_id or data.get("seller_id") != self.config.seller_id:
            return None
        fen = fen_from_yuan(data.get("total_amount", ""))
        if fen is None or not data.get("out_trade_no"):
            return None
        return Paid(
            out_trade_no=data["out_trade_no"],
            transaction_id=data.get("trade_no", ""),
            amount_fen=fen,
            trade_state=data.get("trade_status", ""),
        )


class AlipayChannel:
    name = ChannelName.alipay
    keeps_statements = CHANNELS[name].keeps_statements
    ack = "success"  # Alipay notifies again until it reads exactly this

    def __init__(self, client: AlipayClient) -> None:
        self.client = client

    async def open_order(self, *, out_trade_no: str, amount_fen: int, client_ip: str) -> str:
        # a signed URL: Alipay learns of the order when the phone opens it
        return self.client.wap_pay_url(out_trade_no=out_trade_no, subject=DESCRIPTION, amount_fen=amount_fen)

    async def query(self, out_trade_no: str) -> Paid | None:
        try:
            return await self.client.query(out_trade_no)
        except AlipayError as err:
            if err.code == "ACQ.TRADE_NOT_EXIST":  # the patient never opened the cashier
                return None
            raise ChannelBusy(str(err)) from err

    async def close(self, out_trade_no: str) -> None:
        try:
            await self.client.close(out_trade_no)
        except AlipayError as err:
            raise ChannelBusy(str(err)) from err

    async def refund(self, *, out_refund_no: str, out_trade_no: str, refund_fen: int, total_fen: int) -> RefundAnswer:
        try:
            return await self.client.refund(
                out_request_no=out_refund_no, out_trade_no=out_trade_no, refund_fen=refund_fen, reason=REFUND_REASON
            )
        except AlipayError as err:
            raise ChannelBusy(str(err)) from err

    async def query_refund(self, *, out_refund_no: str, out_trade_no: str) -> RefundAnswer | None:
        try:
            answer = await self.client.query_refund(out_refund_no, out_trade_no=out_trade_no)
        except AlipayError as err:
            if err.code in FINAL_REFUND_ERRORS:
                return None
            raise ChannelBusy(str(err)) from err
        # Alipay refunds synchronously: "no such refund" means the request never arrived
        return None if answer.status == "processing" else answer

    async def statement(self, day: str) -> list[StatementLine]:
        try:
            return await self.client.statement(day)
        except AlipayError as err:
            raise ChannelBusy(str(err)) from err

    def verify(self, headers: Mapping[str, str], body: bytes) -> Paid | RefundAnswer | None:
        return self.client.verify_notification(dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True)))

    async def simulate_payment(self, out_trade_no: str, amount_fen: int) -> None:
        await self.client.simulate_payment(out_trade_no, amount_fen)


def alipay_config(settings: Settings) -> AlipayConfig | None:
    """The Alipay app configuration, or None when the channel is not set up."""
    if not settings.alipay_app_id:
        return None
    return AlipayConfig(
        app_id=settings.alipay_app_id,
        seller_id=settings.alipay_seller_id,
        app_private_key=Path(settings.alipay_app_private_key_path).read_text(),
        alipay_public_key=Path(settings.alipay_public_key_path).read_text(),
        notify_url=f"{settings.public_base_url.rstrip('/')}/v1/payments/notify/{ChannelName.alipay}",
        gateway=settings.alipay_gateway,
    )


def build(settings: Settings) -> AlipayChannel | None:
    """The channel, when this hospital has an Alipay app."""
    config = alipay_config(settings)
    return None if config is None else AlipayChannel(AlipayClient(config))
