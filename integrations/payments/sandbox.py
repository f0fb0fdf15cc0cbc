"""The sandbox channel: ours, for the sandbox only. An order is paid by
`POST /v1/sandbox/payments/{id}/complete`, which sends the channel's notification: a JSON
body signed with HMAC-SHA256 under `YHF_SANDBOX_CHANNEL_SECRET` in `X-Sandbox-Signature`.
It is verified here, as every channel verifies its own, and lands through the same
notification path. Refunds go through at once; there is no statement."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from config import Settings
from domain.channels import CHANNELS, ChannelName
from integrations.payments.channels import Paid, RefundAnswer, StatementLine

SIGNATURE_HEADER = "X-Sandbox-Signature"


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SandboxChannel:
    name = ChannelName.sandbox
    keeps_statements = CHANNELS[name].keeps_statements
    ack = MappingProxyType({"code": "SUCCESS"})

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def notification(self, *, payment_id: str, amount_fen: int) -> tuple[bytes, dict[str, str]]:
        """What the sandbox channel sends when the patient pays: the body and its headers."""
        body = json.dumps(
            {
                "payment_id": payment_id,
                "trade_no": f"SBX{payment_id[-12:].upper()}",
                "amount_fen": amount_fen,
                "status": "success",
            },
            separators=(",", ":"),
        ).encode()
        return body, {SIGNATURE_HEADER: signature(self._secret, body)}

    def verify(self, headers: Mapping[str, str], body: bytes) -> Paid | RefundAnswer | None:
        """The notified payment, or None when the signature or the body does not hold."""
        given = {k.lower(): v for k, v in headers.items()}.get(SIGNATURE_HEADER.lower(), "")
        if not hmac.compare_digest(signature(self._secret, body), given):
            return None
        try:
            data: dict[str, Any] = json.loads(body)
            payment_id, trade_no, amount = str(data["payment_id"]), str(data["trade_no"]), data["amount_fen"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(amount, int) or isinstance(amount, bool):
            return None
        return Paid(
            out_trade_no=payment_id,
            transaction_id=trade_no,
            amount_fen=amount,
            trade_state="SUCCESS" if data.get("status") == "success" else str(data.get("status")),
        )

    async def open_order(self, *, out_trade_no: str, amount_fen: int, client_ip: str) -> str:
        return f"/v1/sandbox/payments/{out_trade_no}/complete"

    async def query(self, out_trade_no: str) -> Paid | None:
        return None  # our own ledger is the sandbox channel's record

    async def close(self, out_trade_no: str) -> None:
        return None

    async def refund(self, *, out_refund_no: str, out_trade_no: str, refund_fen: int, total_fen: int) -> RefundAnswer:
        return RefundAnswer(
            out_refund_no=out_refund_no,
            status="succeeded",
            amount_fen=refund_fen,
            channel_refund_no=f"SBXR{out_refund_no[-12:].upper()}",
        )

    async def query_refund(self, *, out_refund_no: str, out_trade_no: str) -> RefundAnswer | None:
        return None  # never pending: `refund` answers at once

    async def statement(self, day: str) -> list[StatementLine]:
        raise NotImplementedError("the sandbox channel keeps no statements")

    async def simulate_payment(self, out_trade_no: str, amount_fen: int) -> None:
        raise NotImplementedError("the sandbox endpoint completes sandbox payments itself (see `notification`)")


def build(settings: Settings) -> SandboxChannel | None:
    """The channel, in the sandbox only."""
    return SandboxChannel(settings.sandbox_channel_secret) if settings.sandbox else None
