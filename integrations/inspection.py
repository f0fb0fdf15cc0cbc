"""Sandbox only: what the simulated insurance bureau and credit platform recorded, asked over
HTTP at their `/_sandbox/...` endpoints (simulators/bureau.py, simulators/credit.py), and the
knob of the simulated credit-score sources. A real gateway has none of these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx


@dataclass(frozen=True, kw_only=True)
class CardEvent:
    action: str
    at: datetime
    reason: str


@dataclass(frozen=True, kw_only=True)
class Card:
    locked: bool
    events: list[CardEvent]


@dataclass(frozen=True, kw_only=True)
class SettlementSeen:
    presettle_id: str
    status: str
    total_fen: int
    pooled_fen: int
    personal_fen: int
    self_pay_fen: int
    settlement_no: str | None


@dataclass(frozen=True, kw_only=True)
class CreditRecordSeen:
    kind: str
    visit_id: str
    amount_fen: int
    at: datetime


async def _json(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


class SimulatorInspection:
    def __init__(self, *, bureau: httpx.AsyncClient | None, credit: httpx.AsyncClient) -> None:
        self._bureau_http = bureau
        self._credit = credit

    @property
    def _bureau(self) -> httpx.AsyncClient:
        if self._bureau_http is None:
            raise RuntimeError("no insurance bureau is connected")
        return self._bureau_http

    async def card(self, patient_id: str) -> Card:
        data = await _json(await self._bureau.get(f"_sandbox/cards/{quote(patient_id, safe='')}"))
        return Card(
            locked=bool(data["locked"]),
            events=[
                CardEvent(action=e["action"], at=datetime.fromisoformat(e["at"]), reason=e["reason"])
                for e in data["events"]
            ],
        )

    async def settlements(self, patient_id: str) -> list[SettlementSeen]:
        data = await _json(await self._bureau.get(f"_sandbox/settlements/{quote(patient_id, safe='')}"))
        return [SettlementSeen(**row) for row in data]

    async def credit_records(
        self, *, patient_id: str | None = None, visit_id: str | None = None
    ) -> list[CreditRecordSeen]:
        query = {k: v for k, v in (("patient_id", patient_id), ("visit_id", visit_id)) if v is not None}
        data = await _json(await self._credit.get("_sandbox/records", params=query))
        return [
            CreditRecordSeen(
                kind=r["kind"], visit_id=r["visit_id"], amount_fen=r["amount_fen"], at=datetime.fromisoformat(r["at"])
            )
            for r in data
        ]

    async def set_scores(self, id_number: str, *, bank_score: int | None, sesame_score: int | None) -> None:
        body = {"id_number": id_number, "bank_score": bank_score, "sesame_score": sesame_score}
        await _json(await self._credit.put("_sandbox/scores", json=body))
