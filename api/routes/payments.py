"""Payment channels' asynchronous result notifications."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from api import payments
from api.deps import SessionDep, StateDep
from api.errors import ApiError, responses
from db.models import Refund
from db.refunds import settle_refund
from domain.payment import RefundStatus
from integrations.payments.channels import PAID_STATES
from integrations.payments.wechat import RefundAnswer

router = APIRouter(prefix="/v1/payments", tags=["payment channels"])


@router.post("/notify/{channel}", responses=responses(400, 401, 404))
async def notify(channel: str, request: Request, state: StateDep, session: SessionDep) -> Any:
    """Verified by the channel's own signature; unverified notifications change nothing,
    duplicates are harmless. WeChat's refund results arrive here too."""
    body = await request.body()
    if channel == "sandbox" and state.settings.sandbox:
        money = await payments.sandbox_notified(state, session, body, dict(request.headers))
    elif channel != "sandbox" and (at := state.channels.get(channel)) is not None:
        told = at.verify(dict(request.headers), body)
        if told is None:
            raise ApiError(401, "invalid_signature", "the notification does not verify")
        if isinstance(told, RefundAnswer):
            await refund_told(state, session, channel, told)
            return ack(channel)
        if told.trade_state not in PAID_STATES:
            return ack(channel)  # nothing landed; the order stays as it is
        money = await payments.channel_paid(session, channel=channel, payment_id=told.out_trade_no,
                                            amount_fen=told.amount_fen, trade_no=told.transaction_id)
    else:
        raise ApiError(404, "unknown_channel", f"no payment channel {channel}")
    await session.commit()
    await payments.landed(state, money)
    return ack(channel)


def ack(channel: str) -> Any:
    """What stops the channel from notifying again: Alipay wants exactly `success`."""
    return PlainTextResponse("success") if channel == "alipay" else {"code": "SUCCESS"}


async def refund_told(state: Any, session: Any, channel: str, told: RefundAnswer) -> None:
    """A channel's refund result (WeChat sends them): record it, and wake the refund's
    workflow (which would otherwise find it by querying)."""
    refund = await session.get(Refund, told.out_refund_no)
    if refund is None or refund.method != channel:
        raise ApiError(404, "refund_not_found", f"no {channel} refund {told.out_refund_no}")
    if told.amount_fen != refund.amount_fen:
        raise ApiError(400, "amount_mismatch", "the notified refund amount does not match ours")
    await settle_refund(session, refund.id, RefundStatus(told.status), actor=f"channel:{channel}",
                        channel_refund_no=told.channel_refund_no or None, detail=told.detail or None)
    await session.commit()
    await payments.wake_refund(state, refund.id)
