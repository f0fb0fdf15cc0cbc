"""The local credit platform (征信平台): default reports and their corrections, and the
credit-score sources (bank score, Sesame score) that enrolment asks.

`CreditPlatformClient` sends signed JSON (the sandbox's platform is simulators/credit.py,
reached over HTTP like the real one)."""

from __future__ import annotations

from datetime import datetime

import httpx

from integrations.gateway import SignedJsonClient

KINDS = ("report", "correction")


class CreditPlatformClient:
    def __init__(self, http: httpx.AsyncClient, *, app_id: str, secret: str) -> None:
        self.http = http
        self._client = SignedJsonClient(http, app_id=app_id, secret=secret)

    async def submit(
        self, *, kind: str, request_id: str, patient_id: str, visit_id: str, amount_fen: int, at: datetime
    ) -> str:
        if kind not in KINDS:
            raise ValueError(kind)
        data = await self._client.post(
            f"/records/{kind}",
            {
                "request_id": request_id,
                "patient_id": patient_id,
                "visit_id": visit_id,
                "amount_fen": amount_fen,
                "at": at.isoformat(),
            },
        )
        return str(data["record_id"])

    async def scores(self, *, id_number: str) -> tuple[int | None, int | None]:
        data = await self._client.post("/scores/query", {"id_number": id_number})
        return data.get("bank_score"), data.get("sesame_score")
