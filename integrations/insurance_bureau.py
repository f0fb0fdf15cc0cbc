"""The medical-insurance bureau's card service: lock and unlock a patient's insurance card.

`InsuranceBureauClient` calls the bureau's gateway with signed JSON requests;
`simulator_app` is the bureau's side for the sandbox: it checks the signature and the
parameters, deduplicates by request id and records every lock and unlock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SimInsuranceCardEvent
from integrations.gateway import SignedJsonClient, verified_json
from integrations.signing import Verifier

ACTIONS = ("lock", "unlock")


class InsuranceBureauClient:
    def __init__(self, http: httpx.AsyncClient, *, app_id: str, secret: str) -> None:
        self._client = SignedJsonClient(http, app_id=app_id, secret=secret)

    async def set_card_lock(self, *, action: str, request_id: str, patient_id: str, reason: str, at: datetime) -> bool:
        """Lock or unlock; answers whether the card is locked afterwards."""
        if action not in ACTIONS:
            raise ValueError(action)
        data = await self._client.post(
            f"/cards/{action}",
            {"request_id": request_id, "patient_id": patient_id, "reason": reason, "at": at.isoformat()},
        )
        return bool(data["locked"])


async def card_state(session: AsyncSession, patient_id: str) -> tuple[bool, list[SimInsuranceCardEvent]]:
    rows = (
        await session.scalars(
            select(SimInsuranceCardEvent)
            .where(SimInsuranceCardEvent.patient_id == patient_id)
            .order_by(SimInsuranceCardEvent.id)
        )
    ).all()
    return (bool(rows) and rows[-1].action == "lock"), list(rows)


def simulator_app(factory: async_sessionmaker[AsyncSession], secrets_by_app: dict[str, str]) -> FastAPI:
    app = FastAPI(title="Insurance bureau (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    verifier = Verifier(secrets_by_app)
    required = {"request_id": str, "patient_id": str, "reason": str, "at": str}

    @app.post("/cards/{action}")
    async def card(action: str, request: Request) -> Any:
        if action not in ACTIONS:
            return JSONResponse({"code": "UnknownAction", "message": action}, status_code=404)
        data = await verified_json(request, verifier, required)
        if isinstance(data, JSONResponse):
            return data
        try:
            at = datetime.fromisoformat(data["at"])
        except ValueError:
            return JSONResponse({"code": "InvalidParameter", "message": "at is not a time"}, status_code=400)
        async with factory() as session, session.begin():
            existing = await session.scalar(
                select(SimInsuranceCardEvent).where(SimInsuranceCardEvent.request_id == data["request_id"])
            )
            if existing is None:
                session.add(SimInsuranceCardEvent(request_id=data["request_id"], patient_id=data["patient_id"],
                                                  action=action, reason=data["reason"][:200], at=at))
                await session.flush()
            locked, _ = await card_state(session, data["patient_id"])
        return {"code": "OK", "request_id": data["request_id"], "locked": locked}

    return app
