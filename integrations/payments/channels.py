"""The payment channels behind one interface, with its own types and errors.

Every channel opens an order and answers where the patient pays, tells what it knows of an
order (None: it has none), closes an unpaid order, refunds, tells what it knows of a refund,
hands over a day's statement, and verifies its own notifications. Each adapter (beside its
client: `wechat.WeChatChannel`, `alipay.AlipayChannel`, `sandbox.SandboxChannel`) turns its
SDK's answers into ours (`Paid`, `RefundAnswer`, `StatementLine`): a refusal that asking
again cannot change becomes a failed `RefundAnswer`; anything worth retrying raises
`ChannelBusy`. Every error a channel raises is a `ChannelError`.

`registry.build_channels` builds the ones this hospital offers from the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

PAID_STATES = ("SUCCESS", "TRADE_SUCCESS", "TRADE_FINISHED")  # WeChat's and Alipay's "the money moved"
DESCRIPTION = "医后付-就诊费用"
REFUND_REASON = "医后付退费"


@dataclass(frozen=True, kw_only=True)
class Paid:
    """What a channel says of an order (`trade_state` in its words: see PAID_STATES)."""

    out_trade_no: str
    transaction_id: str
    amount_fen: int
    trade_state: str


@dataclass(frozen=True, kw_only=True)
class RefundAnswer:
    """What a channel says about a refund, in our words (domain.payment.RefundStatus)."""

    out_refund_no: str
    status: str  # processing | succeeded | failed
    channel_refund_no: str = ""
    amount_fen: int = 0
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class StatementLine:
    """One line of a channel's daily statement, in our words."""

    kind: str  # payment | refund
    out_trade_no: str
    amount_fen: int
    out_refund_no: str = ""
    channel_no: str = ""  # the channel's transaction or refund number


class ChannelError(Exception):
    """Anything a channel raises."""


class ChannelBusy(ChannelError):
    """The channel did not answer, or answered 'later': ask again."""


class ChannelTimeout(ChannelBusy):
    """We asked and heard nothing back: the channel may have acted. The payment is `unknown`
    until a query says what happened."""


class ChannelRefused(ChannelError):
    """The channel answered with an error, `code` in its words (its client's own subclass says
    which channel: `WeChatPayError`, `AlipayError`); the adapters decide what it means for each
    call."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StatementError(ChannelError):
    """A statement that is not what the channel promised (header, amounts, checksum)."""


# what the notification route answers a channel once it has the notification: a text body
# (Alipay wants exactly `success`) or a JSON object
Ack = str | Mapping[str, str]


@runtime_checkable
class Channel(Protocol):
    @property
    def name(self) -> str: ...  # a domain.channels.ChannelName

    @property
    def keeps_statements(self) -> bool: ...  # as domain.channels.CHANNELS says

    @property
    def ack(self) -> Ack: ...

    async def open_order(self, *, out_trade_no: str, amount_fen: int, client_ip: str) -> str: ...

    async def query(self, out_trade_no: str) -> Paid | None: ...

    async def close(self, out_trade_no: str) -> None: ...

    async def refund(
        self, *, out_refund_no: str, out_trade_no: str, refund_fen: int, total_fen: int
    ) -> RefundAnswer: ...

    async def query_refund(self, *, out_refund_no: str, out_trade_no: str) -> RefundAnswer | None: ...

    async def statement(self, day: str) -> list[StatementLine]: ...

    def verify(self, headers: Mapping[str, str], body: bytes) -> Paid | RefundAnswer | None: ...

    async def simulate_payment(self, out_trade_no: str, amount_fen: int) -> None: ...
