"""The codec endpoint Temporal UI calls (`/v1/ops/codec/encode` and `/decode`, Temporal's
codec-server protocol) over ASGI: round trip, the refusals, CORS for the UI's origin, and the
operator's key outside the sandbox."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload

from config import Settings
from integrations.temporal import EncryptionCodec
from tests.api.test_edges import client, outside_sandbox
from tests.flows import assert_problem
from tests.support import free_port, served

UI = "http://temporal-ui.hospital:8080"
KEY = bytes(range(32))
KEYS = "k2:" + base64.b64encode(bytes(reversed(range(32)))).decode() + ",k1:" + base64.b64encode(KEY).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain(value: Any) -> dict[str, Any]:
    """A payload as the UI sends one: proto-JSON of json/plain."""
    return {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(json.dumps(value).encode())}


@asynccontextmanager
async def codec_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    nowhere = f"127.0.0.1:{free_port()}"  # the codec needs no Temporal
    async with client(settings.model_copy(update={"temporal_address": nowhere})) as http:
        yield http


def sandbox(**overrides: Any) -> Settings:
    return Settings(sandbox=True, payload_key=KEYS, ui_origin=UI, **overrides)


async def test_encode_then_decode_gives_the_payloads_back() -> None:
    sent = {"payloads": [plain({"drug": "阿莫西林", "amount_fen": 31415}), plain("x")]}
    async with codec_api(sandbox()) as http:
        encoded = await http.post("/v1/ops/codec/encode", json=sent, headers={"X-Namespace": "default"})
        assert encoded.status_code == 200, encoded.text
        stored = encoded.json()["payloads"]
        assert [base64.b64decode(p["metadata"]["encoding"]) for p in stored] == [b"binary/encrypted"] * 2
        assert [base64.b64decode(p["metadata"]["encryption-key-id"]) for p in stored] == [b"k2"] * 2
        assert "阿莫西林".encode() not in base64.b64decode(stored[0]["data"])
        decoded = await http.post("/v1/ops/codec/decode", json={"payloads": stored})
        assert decoded.status_code == 200 and decoded.json() == sent
        # plain payloads (written before the codec was on) come back as they are
        assert (await http.post("/v1/ops/codec/decode", json=sent)).json() == sent


async def test_an_old_key_decodes_and_bad_payloads_are_problems() -> None:
    old = (await EncryptionCodec([("k1", KEY)]).encode([_payload(b'"old"')]))[0]
    unknown = (await EncryptionCodec([("k9", KEY)]).encode([_payload(b'"lost"')]))[0]
    wrong = (await EncryptionCodec([("k1", bytes(32))]).encode([_payload(b'"forged"')]))[0]
    async with codec_api(sandbox()) as http:
        r = await http.post("/v1/ops/codec/decode", json={"payloads": [_json(old)]})
        assert r.status_code == 200 and base64.b64decode(r.json()["payloads"][0]["data"]) == b'"old"'
        r = await http.post("/v1/ops/codec/decode", json={"payloads": [_json(unknown)]})
        assert_problem(r, 422, "unknown_key_id")
        assert "'k9'" in r.json()["detail"]
        r = await http.post("/v1/ops/codec/decode", json={"payloads": [_json(wrong)]})
        assert_problem(r, 422, "payload_undecryptable")
        r = await http.post("/v1/ops/codec/decode", json={"payloads": [{"metadata": {}, "data": "not base64!"}]})
        assert_problem(r, 422, "invalid_payload")
        assert_problem(await http.post("/v1/ops/codec/decode", json={"items": []}), 422, "invalid_request")


async def test_without_a_key_the_sandbox_codec_passes_payloads_through() -> None:
    sent = {"payloads": [plain({"a": 1})]}
    async with codec_api(Settings(sandbox=True)) as http:
        assert (await http.post("/v1/ops/codec/encode", json=sent)).json() == sent
        assert (await http.post("/v1/ops/codec/decode", json=sent)).json() == sent


async def test_cors_for_the_ui_s_origin_only() -> None:
    async with codec_api(sandbox()) as http:
        preflight = await http.options(
            "/v1/ops/codec/decode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == UI
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")} >= {
            "content-type",
            "x-namespace",
            "authorization",
        }
        assert "POST" in preflight.headers["access-control-allow-methods"]
        answer = await http.post("/v1/ops/codec/decode", json={"payloads": []}, headers={"Origin": UI})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == UI
        for call in (
            http.options("/v1/ops/codec/decode", headers={"Origin": "https://evil.example"}),
            http.post("/v1/ops/codec/decode", json={"payloads": []}, headers={"Origin": "https://evil.example"}),
        ):
            refused = await call
            assert_problem(refused, 403, "origin_not_allowed")
            assert "access-control-allow-origin" not in refused.headers
        # the rest of the API gives the UI's origin nothing
        other = await http.options("/v1/ops/visits", headers={"Origin": UI, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in other.headers


async def test_outside_the_sandbox_the_codec_wants_the_ops_key() -> None:
    settings = outside_sandbox(ui_origin=UI)
    ops = {"Authorization": f"Bearer {settings.ops_api_key}"}
    sent = {"payloads": [plain({"drug": "阿莫西林"})]}
    async with codec_api(settings) as http:
        for headers in (
            {},
            {"Authorization": "Bearer dev-ops-key"},
            {"Authorization": f"Bearer {settings.his_api_key}"},
        ):
            for path in ("/v1/ops/codec/decode", "/v1/ops/codec/encode"):
                refused = await http.post(path, json=sent, headers={"Origin": UI, **headers})
                assert_problem(refused, 401, "unauthorized")
                assert refused.headers["access-control-allow-origin"] == UI  # the UI may read why
        # a preflight carries no credentials: it is answered all the same
        preflight = await http.options(
            "/v1/ops/codec/decode", headers={"Origin": UI, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 204
        encoded = await http.post("/v1/ops/codec/encode", json=sent, headers=ops)
        assert encoded.status_code == 200
        decoded = await http.post("/v1/ops/codec/decode", json=encoded.json(), headers={"Origin": UI, **ops})
        assert decoded.status_code == 200 and decoded.json() == sent


async def test_the_codec_paths_are_in_the_openapi() -> None:
    async with codec_api(sandbox()) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    for path in ("/v1/ops/codec/decode", "/v1/ops/codec/encode"):
        answers = paths[path]["post"]["responses"]
        assert {"200", "401", "403", "422"} <= answers.keys()


def _payload(data: bytes) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


def _json(payload: Payload) -> dict[str, Any]:
    return {"metadata": {k: b64(v) for k, v in payload.metadata.items()}, "data": b64(payload.data)}


# --- Temporal UI signed in through OIDC: its users' access tokens ---------------------------

ISSUER, AUDIENCE = "https://sso.hospital.example/realms/ops", "temporal-ui"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey, *, kid: str = "sso-1", expires_in: int = 300, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "operator-7", "iat": now, "exp": now + expires_in, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


async def test_a_temporal_ui_user_s_access_token_opens_the_codec() -> None:
    idp = rsa_key()
    jwk = {**json.loads(RSAAlgorithm.to_jwk(idp.public_key())), "kid": "sso-1", "use": "sig", "alg": "RS256"}
    sso = FastAPI()
    sso.add_api_route("/certs", lambda: {"keys": [jwk]})
    sent = {"payloads": [plain({"drug": "阿莫西林"})]}
    with served(sso) as host:
        settings = outside_sandbox(
            ui_origin=UI, ui_oidc_jwks_url=f"http://{host}/certs", ui_oidc_issuer=ISSUER, ui_oidc_audience=AUDIENCE
        )
        async with codec_api(settings) as http:

            async def call(bearer: str) -> httpx.Response:
                headers = {"Origin": UI, "Authorization": f"Bearer {bearer}", "X-Namespace": "default"}
                return await http.post("/v1/ops/codec/encode", json=sent, headers=headers)

            assert (await call(token(idp))).status_code == 200
            for refused in (
                token(idp, expires_in=-60),  # expired
                token(idp, aud="another-app"),
                token(idp, iss="https://sso.elsewhere.example"),
                token(rsa_key()),  # the right kid, another key
                token(rsa_key(), kid="unknown"),
                jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, "", algorithm="none"),
                "not.a.token",
            ):
                assert_problem(await call(refused), 401, "unauthorized")


def test_oidc_needs_its_issuer_and_audience() -> None:
    with pytest.raises(ValidationError, match="YHF_UI_OIDC_ISSUER and YHF_UI_OIDC_AUDIENCE"):
        Settings(sandbox=True, ui_oidc_jwks_url="https://sso.example/certs")
