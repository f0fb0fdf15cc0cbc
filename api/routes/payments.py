"""Payment channels' asynchronous result notifications."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from api import insurance_mobile, payments, refunds
from api.deps import SessionDep, StateDep
from api.errors import ApiError, responses
from integrations.payments.channels import PAID_STATES, Channel, RefundAnswer

router = APIRouter(prefix="/v1/payments", tags=["payment channels"])


@router.post("/notify/nhsa-mobile", responses=responses(400, 401, 404))
async def notify_nhsa_mobile(request: Request, state: StateDep, session: SessionDep) -> Any:
    """医保移动支付: the platform's notification about an order, verified by its SM2 signature
    (x-tif-*); it only wakes the order's workflow, which asks the bureau (6301) and books what
    that says. Duplicates are harmless."""
    await insurance_mobile.notified(state, session, request.headers, await request.body())
    return {"code": "SUCCESS"}


@router.post("/notify/{channel}", responses=responses(400, 401, 404, 409))
async def notify(channel: str, request: Request, state: StateDep, session: SessionDep) -> Any:
    """Verified by the channel's own signature; unverified notifications change nothing,
    duplicates are harmless. WeChat's refund results arrive here too."""
    body = await request.body()
    at = state.channels.get(channel)
    if at is None:
        raise ApiError(404, "unknown_channel", f"no payment channel {channel}")
    told = at.verify(dict(request.headers), body)
    if told is None:
        raise ApiError(401, "invalid_signature", "the notification does not verify")
    if isinstance(told, RefundAnswer):
        await refunds.channel_refund_told(state, session, channel, told)
    elif told.trade_state in PAID_STATES:  # else nothing landed; the order stays as it is
        await payments.channel_notified(state, session, channel, told)
    return ack(at)


def ack(channel: Channel) -> Any:
    """What stops the channel from notifying again (Alipay wants exactly `success`)."""
    return PlainTextResponse(channel.ack) if isinstance(channel.ack, str) else dict(channel.ack)
