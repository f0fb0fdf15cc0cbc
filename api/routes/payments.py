"""Payment channels' asynchronous result notifications."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api import payments
from api.deps import SessionDep, StateDep
from api.errors import ApiError, responses

router = APIRouter(prefix="/v1/payments", tags=["payment channels"])


@router.post("/notify/{channel}", responses=responses(400, 401, 404))
async def notify(channel: str, request: Request, state: StateDep, session: SessionDep) -> Any:
    """Verified by the channel's own signature; unverified notifications change nothing,
    duplicates are harmless."""
    if channel != "sandbox" or not state.settings.sandbox:
        raise ApiError(404, "unknown_channel", f"no payment channel {channel}")
    payment, parts = await payments.sandbox_notified(state, session, await request.body(), dict(request.headers))
    await session.commit()
    await payments.tell_workflows(state, payment.id, parts)
    return {"code": "SUCCESS", "payment_id": payment.id}
