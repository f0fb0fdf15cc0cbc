"""The local credit platform (征信平台): default reports and their corrections, and the
credit-score sources (bank score, Sesame score) that enrolment asks.

`CreditPlatformClient` sends signed JSON; `simulator_app` is the platform's side for the
sandbox: it checks signature and parameters, deduplicates by request id, records."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SimCreditRecord, SimCreditScore
from integrations.gateway import SignedJsonClient, verified_json
from integrations.signing import Verifier

KINDS = ("report", "correction")


def score_key(id_number: str) -> str:
    """How the simulated score sources file a person (they keep no plain ID numbers)."""
    return hashlib.sha256(id_number.strip().upper().encode()).hexdigest()


class CreditPlatformClient:
    def __init__(self, http: httpx.AsyncClient, *, app_id: str, secret: str) -> None:
        self._client = SignedJsonClient(http, app_id=app_id, secret=secret)

    async def submit(self, *, kind: str, request_id: str, patient_id: str, visit_id: str, amount_fen: int,
                     at: datetime) -> str:
        if kind not in KINDS:
            raise ValueError(kind)
        data = await self._client.post(
            f"/records/{kind}",
            {"request_id": request_id, "patient_id": patient_id, "visit_id": visit_id,
             "amount_fen": amount_fen, "at": at.isoformat()},
        )
        return str(data["record_id"])

    async def scores(self, *, id_number: str) -> tuple[int | None, int | None]:
        data = await self._client.post("/scores/query", {"id_number": id_number})
        return data.get("bank_score"), data.get("sesame_score")


def simulator_app(factory: async_sessionmaker[AsyncSession], secrets_by_app: dict[str, str]) -> FastAPI:
    app = FastAPI(title="Credit platform (simulated)", docs_url=None, redoc_url=None, openapi_url=None)
    verifier = Verifier(secrets_by_app)
    required = {"request_id": str, "patient_id": str, "visit_id": str, "amount_fen": int, "at": str}

    @app.post("/records/{kind}")
    async def record(kind: str, request: Request) -> Any:
        if kind not in KINDS:
            return JSONResponse({"code": "UnknownKind", "message": kind}, status_code=404)
        data = await verified_json(request, verifier, required)
        if isinstance(data, JSONResponse):
            return data
        if data["amount_fen"] <= 0:
            return JSONResponse({"code": "InvalidParameter", "message": "amount_fen must be positive"}, status_code=400)
        try:
            at = datetime.fromisoformat(data["at"])
        except ValueError:
            return JSONResponse({"code": "InvalidParameter", "message": "at is not a time"}, status_code=400)
        async with factory() as session, session.begin():
            row = await session.scalar(select(SimCreditRecord).where(SimCreditRecord.request_id == data["request_id"]))
            if row is None:
                if kind == "correction":
                    reported = await session.scalar(
                        select(SimCreditRecord).where(SimCreditRecord.visit_id == data["visit_id"],
                                                      SimCreditRecord.kind == "report"))
                    if reported is None:
                        return JSONResponse({"code": "NoSuchReport", "message": "nothing reported for this visit"},
                                            status_code=409)
                row = SimCreditRecord(request_id=data["request_id"], patient_id=data["patient_id"],
                                      visit_id=data["visit_id"], kind=kind, amount_fen=data["amount_fen"], at=at)
                session.add(row)
                await session.flush()
            return {"code": "OK", "record_id": f"CR{row.id:08d}"}

    @app.post("/scores/query")
    async def scores(request: Request) -> Any:
        data = await verified_json(request, verifier, {"id_number": str})
        if isinstance(data, JSONResponse):
            return data
        async with factory() as session:
            row = await session.get(SimCreditScore, score_key(data["id_number"]))
        return {"code": "OK", "bank_score": row.bank_score if row else None,
                "sesame_score": row.sesame_score if row else None}

    return app
