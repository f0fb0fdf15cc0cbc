"""The payment channels behind one interface.

Every channel opens an order and answers where the patient pays, tells what it knows of an
order (None: it has none), closes an unpaid order, refunds, tells what it knows of a refund,
hands over a day's statement, and verifies its own notifications. Each adapter turns its
SDK's answers into ours (`Paid`, `RefundAnswer`, `StatementLine`): a refusal that asking
again cannot change becomes a failed `RefundAnswer`; anything worth retrying raises
`ChannelBusy`. The sandbox channel is ours: its money moves when
`POST /v1/sandbox/payments/{id}/complete` says so, and its refunds go through at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl

import requests

from integrations.payments.alipay import FINAL_REFUND_ERRORS, PAID_STATES as ALIPAY_PAID, AlipayClient, AlipayError
from integrations.payments.wechat import Paid, RefundAnswer, StatementLine, WeChatPayClient, WeChatPayError

PAID_STATES = ("SUCCESS", *ALIPAY_PAID)  # a channel's words for "the money moved"
DESCRIPTION = "医后付-就诊费用"
REFUND_REASON = "医后付退费"


class ChannelBusy(Exception):
    """The channel did not answer, or answered 'later': ask again."""


class ChannelTimeout(ChannelBusy):
    """We asked and heard nothing back: the channel may have acted. The payment is `unknown`
    until a query says what happened."""


@runtime_checkable
class Channel(Protocol):
    name: str
    keeps_statements: bool

    async def open_order(self, *, out_trade_no: str, amount_fen: int, client_ip: str) -> str: ...

    async def query(self, out_trade_no: str) -> Paid | None: ...

    async def close(self, out_trade_no: str) -> None: ...

    async def refund(self, *, out_refund_no: str, out_trade_no: str, refund_fen: int,
                     total_fen: int) -> RefundAnswer: ...

    async def query_refund(self, *, out_refund_no: str, out_trade_no: str) -> RefundAnswer | None: ...

    async def statement(self, day: str) -> list[StatementLine]: ...

    def verify(self, headers: Mapping[str, str], body: bytes) -> Paid | RefundAnswer | None: ...

    async def simulate_payment(self, out_trade_no: str, amount_fen: int) -> None: ...


class WeChatChannel:
    name, keeps_statements = "wechat", True

    def __init__(self, client: WeChatPayClient) -> None:
        self.client = client

    async def open_order(self, *, out_trade_no: str, amount_fen: int, client_ip: str) -> str:
        try:
            return await self.client.create_h5(out_trade_no=out_trade_no, description=DESCRIPTION,
                                               amount_fen=amount_fen, client_ip=client_ip)
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

    async def refund(self, *, out_refund_no: str, out_trade_no: str, refund_fen: int,
                     total_fen: int) -> RefundAnswer:
        try:
            return await self.client.refund(out_refund_no=out_refund_no, out_trade_no=out_trade_no,
                                            refund_fen=refund_fen, total_fen=total_fen, reason=REFUND_REASON)
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


class AlipayChannel:
    name, keeps_statements = "alipay", True

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

    async def refund(self, *, out_refund_no: str, out_trade_no: str, refund_fen: int,
                     total_fen: int) -> RefundAnswer:
        try:
            return await self.client.refund(out_request_no=out_refund_no, out_trade_no=out_trade_no,
                                            refund_fen=refund_fen, reason=REFUND_REASON)
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


class SandboxChannel:
    """Our own channel for the sandbox: orders are paid by the sandbox endpoint, which posts
    the HMAC-signed notification (verified in `api.payments`); refunds go through at once."""

    name, keeps_statements = "sandbox", False

    async def open_order(self, *, out_trade_no: str, amount_fen: int, client_ip: str) -> str:
        return f"/v1/sandbox/payments/{out_trade_no}/complete"

    async def query(self, out_trade_no: str) -> Paid | None:
        return None  # our own ledger is the sandbox channel's record

    async def close(self, out_trade_no: str) -> None:
        return None

    async def refund(self, *, out_refund_no: str, out_trade_no: str, refund_fen: int,
                     total_fen: int) -> RefundAnswer:
        return RefundAnswer(out_refund_no=out_refund_no, status="succeeded", amount_fen=refund_fen,
                            channel_refund_no=f"SBXR{out_refund_no[-12:].upper()}")

    async def query_refund(self, *, out_refund_no: str, out_trade_no: str) -> RefundAnswer | None:
        return None  # never pending: `refund` answers at once

    async def statement(self, day: str) -> list[StatementLine]:
        raise NotImplementedError("the sandbox channel keeps no statements")

    def verify(self, headers: Mapping[str, str], body: bytes) -> Paid | RefundAnswer | None:
        raise NotImplementedError("sandbox notifications are verified by api.payments.sandbox_notified")

    async def simulate_payment(self, out_trade_no: str, amount_fen: int) -> None:
        raise NotImplementedError("the sandbox endpoint completes sandbox payments itself")


def build_channels(settings) -> dict[str, Channel]:  # type: ignore[no-untyped-def]
    """The channels this hospital offers: WeChat and Alipay when configured, and the sandbox
    channel in the sandbox."""
    from config import alipay_config, wechat_config

    channels: dict[str, Channel] = {}
    if (wx := wechat_config(settings)) is not None:
        channels["wechat"] = WeChatChannel(WeChatPayClient(wx))
    if (ali := alipay_config(settings)) is not None:
        channels["alipay"] = AlipayChannel(AlipayClient(ali))
    if settings.sandbox:
        channels["sandbox"] = SandboxChannel()
    return channels
