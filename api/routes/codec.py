"""Temporal's codec-server protocol, for Temporal UI and the CLI (`--codec-endpoint`): the UI
posts the payloads of a history to `/v1/ops/codec/decode` and shows them decrypted; it posts
what an operator types (a signal's or an update's input) to `/encode`, so that goes to
Temporal encrypted too. Both take and answer `{"payloads": [...]}`, each payload in proto-JSON
(`metadata` values and `data` base64), with an `X-Namespace` header.

`CodecGate` stands just inside the edge, for these paths only, and decides before the body is
read. CORS: the browser's calls come from the UI's own origin (YHF_UI_ORIGIN): their preflight
is answered here and their answers marked; a call from another origin is refused (403
`origin_not_allowed`). Who may call: in the sandbox anyone; elsewhere the ops key, or the access
token of a user signed in to Temporal UI through OIDC (YHF_UI_OIDC_*: signed by the IdP's JWKS,
its issuer and audience), both as `Authorization: Bearer` (else 401)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payload

from api.deps import StateDep
from api.errors import ApiError, problem, responses
from config import Settings, parse_payload_keys
from integrations.temporal import EncryptionCodec, PayloadError

PREFIX = "/v1/ops/codec"
ALLOWED_HEADERS = "content-type, x-namespace, authorization"

router = APIRouter(prefix=PREFIX, tags=["operators"])


class CodecPayload(BaseModel):
    """One Temporal payload in proto-JSON: each metadata value and the data base64."""

    metadata: dict[str, str] = Field(default_factory=dict, examples=[{"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}])
    data: str = ""


class CodecPayloads(BaseModel):
    payloads: list[CodecPayload]


def codec_caller(request: Request) -> str:
    """Who the gate let in ("sandbox", "ops" or "ui"); no gate, no call."""
    caller: str | None = request.scope.get("state", {}).get("codec_caller")
    if caller is None:
        raise ApiError(401, "unauthorized", "the codec wants the ops key", headers={"WWW-Authenticate": "Bearer"})
    return caller


CodecCallerDep = Annotated[str, Depends(codec_caller)]
Namespace = Annotated[str | None, Header(alias="X-Namespace", max_length=255)]


@lru_cache(maxsize=4)
def _codec(payload_key: str) -> EncryptionCodec | None:
    keys = parse_payload_keys(payload_key)
    return EncryptionCodec(keys) if keys else None


def codec_of(settings: Settings) -> EncryptionCodec | None:
    """The API's codec (None without YHF_PAYLOAD_KEY: payloads pass as they are)."""
    return _codec(settings.payload_key)


def _payloads(body: CodecPayloads) -> list[Payload]:
    try:
        return [
            Payload(
                metadata={k: base64.b64decode(v, validate=True) for k, v in p.metadata.items()},
                data=base64.b64decode(p.data, validate=True),
            )
            for p in body.payloads
        ]
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_payload", "metadata values and data are base64 (proto-JSON)") from None


def _json(payloads: Sequence[Payload]) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


@router.post("/decode", response_model=CodecPayloads, responses=responses(401, 403, 422))
async def decode(body: CodecPayloads, state: StateDep, _: CodecCallerDep, namespace: Namespace = None) -> Any:
    """Decrypt payloads (Temporal UI: a history's inputs and results); plain ones come back as
    they are. 422 `unknown_key_id` for a key YHF_PAYLOAD_KEY no longer lists,
    `payload_undecryptable` for one that does not open, `invalid_payload` for bad base64."""
    codec = codec_of(state.settings)
    payloads = _payloads(body)
    try:
        return _json(await codec.decode(payloads) if codec else payloads)
    except PayloadError as err:
        raise ApiError(422, err.code, str(err)) from None


@router.post("/encode", response_model=CodecPayloads, responses=responses(401, 403, 422))
async def encode(body: CodecPayloads, state: StateDep, _: CodecCallerDep, namespace: Namespace = None) -> Any:
    """Encrypt payloads under the current key (what an operator sends from Temporal UI)."""
    codec = codec_of(state.settings)
    payloads = _payloads(body)
    return _json(await codec.encode(payloads) if codec else payloads)


class UiTokens:
    """Access tokens of Temporal UI's users (OIDC), checked against the IdP's signing keys (JWKS,
    fetched and cached by PyJWT's client): signature, expiry, issuer and audience."""

    ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.ui_oidc_jwks_url
        self.jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5) if url else None

    async def valid(self, token: str) -> bool:
        if self.jwks is None or token.count(".") != 2:
            return False
        try:
            key = await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)  # urllib: off the loop
            jwt.decode(
                token,
                key.key,
                algorithms=list(self.ALGORITHMS),
                audience=self.settings.ui_oidc_audience,
                issuer=self.settings.ui_oidc_issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return False
        return True


class CodecGate:
    """CORS and who may call, for the codec paths only (pure ASGI, inside the edge: its answers
    carry the edge's headers), decided before the body is read. Calls without an Origin (the
    CLI, scripts) get no CORS headers."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.origins = set(settings.ui_origins())
        self.tokens = UiTokens(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        cors: dict[str, str] = {}
        if origin is not None:
            if origin.rstrip("/") not in self.origins:
                refusal = problem(403, "origin_not_allowed", "this origin may not call the codec (YHF_UI_ORIGIN)")
                await refusal(scope, receive, send)
                return
            cors = {"access-control-allow-origin": origin, "access-control-allow-credentials": "true", "vary": "Origin"}
            if scope["method"] == "OPTIONS":  # a preflight carries no credentials
                await self._preflight(cors, send)
                return
        caller = await self._caller(headers)
        if caller is None:
            refusal = problem(
                401,
                "unauthorized",
                "the codec wants the ops key or a Temporal UI access token (Authorization: Bearer)",
                headers={"WWW-Authenticate": "Bearer", **cors},
            )
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["codec_caller"] = caller

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in cors.items():
                    out[name] = value
            await send(message)

        await self.app(scope, receive, marked)

    async def _caller(self, headers: Headers) -> str | None:
        if self.settings.sandbox:
            return "sandbox"
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        ops = self.settings.ops_api_key
        if token and ops and hmac.compare_digest(token.encode(), ops.encode()):
            return "ops"
        return "ui" if token and await self.tokens.valid(token) else None

    @staticmethod
    async def _preflight(cors: dict[str, str], send: Send) -> None:
        answer = {
            **cors,
            "access-control-allow-methods": "POST, OPTIONS",
            "access-control-allow-headers": ALLOWED_HEADERS,
            "access-control-max-age": "600",
        }
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.items()]
        await send({"type": "http.response.start", "status": 204, "headers": raw})
        await send({"type": "http.response.body", "body": b""})


def install(app: Any, settings: Settings) -> None:
    """The gate, added before the edge (so inside it: the edge's headers and limits apply)."""
    app.add_middleware(CodecGate, settings=settings)
