"""The client both government-side gateways (insurance bureau, credit platform) are spoken to
with: signed JSON over httpx, their answers turned into `GatewayError`s."""

from __future__ import annotations

import json
from typing import Any

import httpx

from integrations.signing import signed_headers


class GatewayError(Exception):
    """The other side said no. `retryable` tells a transient answer from a final one."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.retryable = retryable


class SignedJsonClient:
    def __init__(self, http: httpx.AsyncClient, *, app_id: str, secret: str) -> None:
        self._http = http
        self._app_id = app_id
        self._secret = secret

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        url_path = self._http.base_url.copy_with(path=self._http.base_url.path.rstrip("/") + path).path
        headers = signed_headers(self._app_id, self._secret, "POST", url_path, body)
        response = await self._http.post(path.lstrip("/"), content=body, headers=headers)
        data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code >= 500 or response.status_code == 429:
            raise GatewayError(
                str(data.get("code", response.status_code)), str(data.get("message", "")), retryable=True
            )
        if response.status_code >= 400:
            raise GatewayError(
                str(data.get("code", response.status_code)), str(data.get("message", "")), retryable=False
            )
        return data
