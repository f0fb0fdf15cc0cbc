"""The medical-insurance bureau: the card service (lock and unlock a patient's card) and
card-less settlement (医保脱卡支付: pre-settle a bill into pooled fund, personal account and
self-pay; settle the insurance part; reverse it, 冲正).

`InsuranceBureauClient` calls the bureau's gateway with signed JSON requests (the sandbox's
bureau is simulators/bureau.py, reached over HTTP like the real one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import httpx

from integrations.gateway import SignedJsonClient

ACTIONS = ("lock", "unlock")


@dataclass(frozen=True, kw_only=True)
class Split:
    presettle_id: str
    total_fen: int
    pooled_fen: int  # 统筹基金
    personal_fen: int  # 个人账户
    self_pay_fen: int  # 自付


class InsuranceBureauClient:
    def __init__(self, http: httpx.AsyncClient, *, app_id: str, secret: str) -> None:
        self.http = http
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
        data = await self._client.post(
            "/settlements/presettle",
            {
                "request_id": request_id,
                "patient_id": patient_id,
                "items": [{"category": c, "amount_fen": fen} for c, fen in items],
            },
        )
        return Split(
            presettle_id=str(data["presettle_id"]),
            total_fen=int(data["total_fen"]),
            pooled_fen=int(data["pooled_fen"]),
            personal_fen=int(data["personal_fen"]),
            self_pay_fen=int(data["self_pay_fen"]),
        )

    async def settle(self, *, request_id: str, presettle_id: str) -> str:
        """Settle the insurance part; answers the bureau's settlement number."""
        data = await self._client.post("/settlements/settle", {"request_id": request_id, "presettle_id": presettle_id})
        return str(data["settlement_no"])

    async def reverse(self, *, request_id: str, presettle_id: str) -> None:
        """冲正: undo a settlement (or a pre-settlement that may or may not have been settled)."""
        await self._client.post("/settlements/reverse", {"request_id": request_id, "presettle_id": presettle_id})
