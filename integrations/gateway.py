"""Shared pieces of the two government-side gateways (insurance bureau, credit platform):
the signed JSON client and the simulator's request checking."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse

from integrations.signing import SignatureError, Verifier, signed_headers


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
            raise GatewayError(str(data.get("code", response.status_code)), str(data.get("message", "")), retryable=True)
        if response.status_code >= 400:
            raise GatewayError(str(data.get("code", response.status_code)), str(data.get("message", "")), retryable=False)
        return data


async def verified_json(request: Request, verifier: Verifier, required: dict[str, type]) -> dict[str, Any] | JSONResponse:
    """The simulator's gate: a good signature and every required field of the right type."""
    body = await request.body()
    try:
        verifier.verify(request.headers, request.method, request.url.path, body)
    except SignatureError as err:
        return JSONResponse({"code": err.code, "message": str(err)}, status_code=401)
    try:
        data = json.loads(body)
    except ValueError:
        return JSONResponse({"code": "MalformedBody", "message": "body is not JSON"}, status_code=400)
    for name, kind in required.items():
        value = data.get(name) if isinstance(data, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int or value in ("", None):
            return JSONResponse({"code": "MissingParameter", "message": f"{name} is required"}, status_code=400)
    return data
