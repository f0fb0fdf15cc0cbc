"""The other side of the signed JSON gateways (the insurance bureau, the credit platform):
what they check of every request. The signature is computed here independently of the
client (integrations/signing.py): HMAC-SHA256 over method, path, timestamp, nonce and the
body's SHA-256, keyed by the secret issued with the app id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

MAX_SKEW_SECONDS = 300


class SignatureError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def expected_signature(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    text = f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}".encode()
    return base64.b64encode(hmac.new(secret.encode(), text, hashlib.sha256).digest()).decode()


class Verifier:
    """What the other side checks: a known app, a fresh timestamp, an unused nonce and the MAC."""

    def __init__(self, secrets_by_app: Mapping[str, str], *, nonce_memory: int = 10_000) -> None:
        self._secrets = dict(secrets_by_app)
        self._nonces: OrderedDict[str, None] = OrderedDict()
        self._memory = nonce_memory

    def verify(self, headers: Mapping[str, str], method: str, path: str, body: bytes) -> str:
        app_id = headers.get("x-app-id", "")
        timestamp = headers.get("x-timestamp", "")
        nonce = headers.get("x-nonce", "")
        signature = headers.get("x-signature", "")
        if not (app_id and timestamp and nonce and signature):
            raise SignatureError("MissingSignature", "X-App-Id, X-Timestamp, X-Nonce and X-Signature are required")
        secret = self._secrets.get(app_id)
        if secret is None:
            raise SignatureError("InvalidAppId", f"unknown app id {app_id}")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_SECONDS:
            raise SignatureError("StaleRequest", "timestamp is more than 5 minutes off")
        expected = expected_signature(secret, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, signature):
            raise SignatureError("SignatureDoesNotMatch", "the signature does not match the request")
        if nonce in self._nonces:
            raise SignatureError("NonceReused", "this nonce was already used")
        self._nonces[nonce] = None
        if len(self._nonces) > self._memory:
            self._nonces.popitem(last=False)
        return app_id


def refused(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


async def verified_json(
    request: Request, verifier: Verifier, required: Mapping[str, type]
) -> dict[str, Any] | JSONResponse:
    """The gateways' gate: a good signature and every required field of the right type."""
    body = await request.body()
    try:
        verifier.verify(request.headers, request.method, request.url.path, body)
    except SignatureError as err:
        return refused(401, err.code, str(err))
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError:
        return refused(400, "MalformedBody", "body is not JSON")
    for name, kind in required.items():
        value = data.get(name) if isinstance(data, dict) else None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int) or value in ("", None):
            return refused(400, "MissingParameter", f"{name} is required")
    return data


def parse_time(text: str) -> datetime | None:
    """An ISO time with its offset (a naive one is taken as UTC), or None."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
