"""The medical-insurance bureau: the card service (lock and unlock a patient's card) and
card-less settlement (医保脱卡支付: pre-settle a bill into pooled fund, personal account and
self-pay; settle the insurance part; reverse it, 冲正).

`InsuranceBureauClient` calls the bureau's gateway with signed JSON requests;
`simulator_app` is the bureau's side for the sandbox: it checks the signature and the
parameters, deduplicates by request id, and records every lock, unlock and settlement."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import SimInsuranceCardEvent, SimInsuranceSettlement
from integrations.gateway import SignedJsonClient, verified_json
from integrations.signing import Verifier

ACTIONS = ("lock", "unlock")

# The simulated bureau's rules: these categories are covered; the pooled fund pays 60% of
# them, the personal account what it can of the rest, the patient everything else.
COVERED = frozenset({"exam", "lab", "drug", "infusion", "treatment", "material"})
POOLED_PERCENT = 60
PERSONAL_ACCOUNT_FEN = 20_000  # every simulated insured person starts with 200 yuan


@dataclass(frozen=True, kw_only=True)
class Split:
    presettle_id: str
    total_fen: int
    pooled_fen: int  # 统筹基金
    personal_fen: int  # 个人账户
    self_pay_fen: int  # 自付


def split_bill(items: list[tuple[str, int]], personal_balance_fen: int) -> tuple[int, int, int]:
    """(pooled, personal, self-pay) of (category, fen) items, by the simulated rules."""
    total = sum(fen for _, fen in items)
    covered = sum(fen for category, fen in items if category in COVERED)
    pooled = covered * POOLED_PERCENT // 100
    personal = max(0, min(covered - pooled, personal_balance_fen))
    return pooled, personal, total - pooled - personal


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


    async def presettle(self, *, request_id: str, patient_id: str, items: list[tuple[str, int]]) -> Split:
        data = await self._client.post("/settlements/presettle", {
            "request_id": request_id, "patient_id": patient_id,
            "items": [{"category": c, "amount_fen": fen} for c, fen in items]})
        return Split(presettle_id=str(data["presettle_id"]), total_fen=int(data["total_fen"]),
                     pooled_fen=int(data["pooled_fen"]), personal_fen=int(data["personal_fen"]),
                     self_pay_fen=int(data["self_pay_fen"]))

    async def settle(self, *, request_id: str, presettle_id: str) -> str:
        """Settle the insurance part; answers the bureau's settlement number."""
        data = await self._client.post("/settlements/settle", {"request_id": request_id, "presettle_id": presettle_id})
        return str(data["settlement_no"])

    async def reverse(self, *, request_id: str, presettle_id: str) -> None:
        """冲正: undo a settlement (or a pre-settlement that may or may not have been settled)."""
        await self._client.post("/settlements/reverse", {"request_id": request_id, "presettle_id": presettle_id})


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

    async def personal_balance(session: AsyncSession, patient_id: str) -> int:
        spent = (await session.scalars(select(SimInsuranceSettlement.personal_fen).where(
            SimInsuranceSettlement.patient_id == patient_id, SimInsuranceSettlement.status == "settled"))).all()
        return PERSONAL_ACCOUNT_FEN - sum(spent)

    def refused(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"code": code, "message": message}, status_code=status)

    @app.post("/settlements/presettle")
    async def presettle(request: Request) -> Any:
        data = await verified_json(request, verifier, {"request_id": str, "patient_id": str, "items": list})
        if isinstance(data, JSONResponse):
            return data
        items = []
        for it in data["items"]:
            fen = it.get("amount_fen") if isinstance(it, dict) else None
            if not isinstance(fen, int) or isinstance(fen, bool) or fen < 0 or not isinstance(it.get("category"), str):
                return refused(400, "InvalidParameter", "items need a category and a non-negative amount_fen")
            items.append((it["category"], fen))
        if not items or sum(f for _, f in items) <= 0:
            return refused(400, "InvalidParameter", "nothing to settle")
        now = datetime.now(timezone.utc)
        async with factory() as session, session.begin():
            if (await card_state(session, data["patient_id"]))[0]:
                return refused(403, "CardLocked", "参保人医保卡已锁定，不能结算")
            row = await session.scalar(select(SimInsuranceSettlement).where(
                SimInsuranceSettlement.request_id == data["request_id"]))
            if row is None:
                pooled, personal, self_pay = split_bill(items, await personal_balance(session, data["patient_id"]))
                row = SimInsuranceSettlement(id="PS" + secrets.token_hex(10).upper(), request_id=data["request_id"],
                                             patient_id=data["patient_id"], total_fen=sum(f for _, f in items),
                                             pooled_fen=pooled, personal_fen=personal, self_pay_fen=self_pay,
                                             status="presettled", settlement_no=None, created_at=now, updated_at=now)
                session.add(row)
            return {"code": "OK", "presettle_id": row.id, "total_fen": row.total_fen, "pooled_fen": row.pooled_fen,
                    "personal_fen": row.personal_fen, "self_pay_fen": row.self_pay_fen}

    @app.post("/settlements/{action}")
    async def settle_or_reverse(action: str, request: Request) -> Any:
        if action not in ("settle", "reverse"):
            return refused(404, "UnknownAction", action)
        data = await verified_json(request, verifier, {"request_id": str, "presettle_id": str})
        if isinstance(data, JSONResponse):
            return data
        async with factory() as session, session.begin():
            row = await session.get(SimInsuranceSettlement, data["presettle_id"], with_for_update=True)
            if row is None:
                return refused(404, "PresettleNotFound", "预结算不存在")
            if action == "settle":
                if row.status == "reversed":
                    return refused(409, "AlreadyReversed", "该结算已冲正")
                if row.status == "presettled":
                    if row.personal_fen > await personal_balance(session, row.patient_id):
                        return refused(409, "BalanceChanged", "个人账户余额不足，请重新预结算")
                    row.status, row.settlement_no = "settled", "JS" + secrets.token_hex(10).upper()
            else:
                row.status = "reversed"  # 冲正 is final and may be asked again
            row.updated_at = datetime.now(timezone.utc)
            return {"code": "OK", "presettle_id": row.id, "status": row.status, "settlement_no": row.settlement_no}

    return app
