"""The request signature the insurance bureau and the credit platform gateways use:
HMAC-SHA256 over method, path, timestamp, nonce and the body's SHA-256, keyed by the
secret issued with the app id. Both the clients and the simulators use this module."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

MAX_SKEW_SECONDS = 300


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}".encode()


def sign(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), string_to_sign(method, path, timestamp, nonce, body), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def signed_headers(app_id: str, secret: str, method: str, path: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    return {
        "X-App-Id": app_id,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": sign(secret, method, path, timestamp, nonce, body),
        "Content-Type": "application/json",
    }


class SignatureError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
        expected = sign(secret, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, signature):
            raise SignatureError("SignatureDoesNotMatch", "the signature does not match the request")
        if nonce in self._nonces:
            raise SignatureError("NonceReused", "this nonce was already used")
        self._nonces[nonce] = None
        if len(self._nonces) > self._memory:
            self._nonces.popitem(last=False)
        return app_id
