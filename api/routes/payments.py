"""Payment channels' asynchronous result notifications."""

from __future__ import annotations

from typing import Any

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from api import payments
from api.deps import SessionDep, StateDep
from api.errors import ApiError, responses
from integrations.payments.alipay import PAID_STATES

router = APIRouter(prefix="/v1/payments", tags=["payment channels"])


@router.post("/notify/{channel}", responses=responses(400, 401, 404))
async def notify(channel: str, request: Request, state: StateDep, session: SessionDep) -> Any:
    """Verified by the channel's own signature; unverified notifications change nothing,
    duplicates are harmless."""
    body = await request.body()
    if channel == "wechat" and state.wechat is not None:
        paid = state.wechat.verify_notification(dict(request.headers), body)
        if paid is None:
            raise ApiError(401, "invalid_signature", "the notification does not verify")
        if paid.trade_state != "SUCCESS":
            return {"code": "SUCCESS"}  # nothing landed; the order stays as it is
        payment, parts = await payments.channel_paid(session, channel="wechat", payment_id=paid.out_trade_no,
                                                     amount_fen=paid.amount_fen, trade_no=paid.transaction_id)
    elif channel == "alipay" and state.alipay is not None:
        paid = state.alipay.verify_notification(dict(parse_qsl(body.decode(errors="replace"),
                                                                keep_blank_values=True)))
        if paid is None:
            raise ApiError(401, "invalid_signature", "the notification does not verify")
        if paid.trade_state in PAID_STATES:
            payment, parts = await payments.channel_paid(session, channel="alipay", payment_id=paid.out_trade_no,
                                                         amount_fen=paid.amount_fen, trade_no=paid.transaction_id)
            await session.commit()
            await payments.tell_workflows(state, payment.id, parts)
        return PlainTextResponse("success")  # Alipay stops retrying on exactly this body
    elif channel == "sandbox" and state.settings.sandbox:
        payment, parts = await payments.sandbox_notified(state, session, body, dict(request.headers))
    else:
        raise ApiError(404, "unknown_channel", f"no payment channel {channel}")
    await session.commit()
    await payments.tell_workflows(state, payment.id, parts)
    return {"code": "SUCCESS"}
