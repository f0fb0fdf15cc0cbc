"""The payload codec (AES-256-GCM with key ids) and the settings of the connection to Temporal:
round trip, rotation, a wrong or missing key, and what refuses to start."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from config import DEV_PAYLOAD_KEY, Settings, parse_payload_keys
from integrations.temporal import (
    ENCODING,
    KEY_ID,
    EncryptionCodec,
    UndecryptablePayload,
    UnknownPayloadKey,
    connect_config,
    data_converter,
)


def key(seed: int) -> bytes:
    return bytes([seed]) * 32


def spec(*keys: tuple[str, bytes]) -> str:
    return ",".join(f"{kid}:{base64.b64encode(k).decode()}" for kid, k in keys)


@dataclass(frozen=True, kw_only=True)
class Charge:
    item: str
    amount_fen: int


SECRET = Charge(item="阿莫西林胶囊 Amoxicillin", amount_fen=31415)


async def test_a_payload_round_trips_and_is_stored_encrypted() -> None:
    converter = data_converter(Settings(sandbox=True, payload_key=spec(("k1", key(1)))))
    stored = await converter.encode([SECRET])
    assert stored[0].metadata["encoding"] == ENCODING and stored[0].metadata[KEY_ID] == b"k1"
    raw = stored[0].SerializeToString()
    assert b"Amoxicillin" not in raw and "阿莫西林".encode() not in raw and b"31415" not in raw
    assert await converter.decode(stored, [Charge]) == [SECRET]
    again = await converter.encode([SECRET])
    assert again[0].data != stored[0].data  # a fresh nonce each time


async def test_an_old_key_still_decodes_after_rotation() -> None:
    old = EncryptionCodec([("2025", key(1))])
    written = await old.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'{"x": 1}')])
    rotated = EncryptionCodec([("2026", key(2)), ("2025", key(1))])
    assert (await rotated.decode(written))[0].data == b'{"x": 1}'
    rewritten = await rotated.encode(await rotated.decode(written))
    assert rewritten[0].metadata[KEY_ID] == b"2026"  # the first key encrypts
    with pytest.raises(UnknownPayloadKey, match="'2026'"):
        await old.decode(rewritten)


async def test_a_wrong_key_or_an_altered_payload_is_a_clear_error() -> None:
    written = await EncryptionCodec([("k1", key(1))]).encode([Payload(data=b"secret")])
    with pytest.raises(UndecryptablePayload, match="'k1' does not decrypt"):
        await EncryptionCodec([("k1", key(9))]).decode(written)
    tampered = Payload()
    tampered.CopyFrom(written[0])
    tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
    with pytest.raises(UndecryptablePayload):
        await EncryptionCodec([("k1", key(1))]).decode([tampered])
    relabelled = Payload()  # the key id is bound to the ciphertext: another label does not open it
    relabelled.CopyFrom(written[0])
    relabelled.metadata[KEY_ID] = b"k2"
    with pytest.raises(UndecryptablePayload):
        await EncryptionCodec([("k1", key(1)), ("k2", key(1))]).decode([relabelled])
    for cut in (b"", b"short", written[0].data[:20]):  # less than a nonce and a tag
        with pytest.raises(UndecryptablePayload):
            await EncryptionCodec([("k1", key(1))]).decode([Payload(metadata=written[0].metadata, data=cut)])
    with pytest.raises(UnknownPayloadKey, match="known: other"):
        await EncryptionCodec([("other", key(1))]).decode(written)


async def test_plain_payloads_decode_as_they_are_and_no_key_means_no_codec() -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
    assert await EncryptionCodec([("k1", key(1))]).decode([plain]) == [plain]
    assert data_converter(Settings(sandbox=True)) is DataConverter.default


async def test_failure_messages_travel_encrypted() -> None:
    converter = data_converter(Settings(sandbox=True, payload_key=spec(("k1", key(1)))))
    failure = Failure()
    await converter.encode_failure(RuntimeError("drug 阿莫西林 refused"), failure)
    assert "阿莫西林" not in failure.message and "阿莫西林".encode() not in failure.SerializeToString()
    assert "阿莫西林" in str(await converter.decode_failure(failure))


def test_the_key_format() -> None:
    assert parse_payload_keys(spec(("new", key(2)), ("old", key(1)))) == [("new", key(2)), ("old", key(1))]
    assert parse_payload_keys("") == []
    for bad, why in (
        ("k1", "id:base64key"),
        ("k1:not base64!", "not base64"),
        (spec(("k1", b"short")), "32 bytes"),
        (spec(("k1", key(1)), ("k1", key(2))), "given twice"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_payload_keys(bad)


def test_a_bad_key_stops_the_start_and_is_never_quoted() -> None:
    secret = base64.b64encode(b"x" * 31).decode()
    with pytest.raises(ValidationError) as refused:
        Settings(sandbox=True, payload_key=f"k1:{secret}")
    assert "32 bytes" in str(refused.value) and secret not in str(refused.value)


def real_secrets(**overrides: str) -> dict[str, Any]:
    return {
        "his_api_key": "his-real",
        "ops_api_key": "ops-real",
        "data_key": "data-real",
        "insurance_bureau_url": "https://bureau.invalid",
        "insurance_bureau_secret": "bureau-real",
        "insurance_bureau_paas_token": "paas-token-real",
        "insurance_bureau_public_key": "ab" * 64,
        "credit_platform_url": "https://credit.invalid",
        "credit_platform_secret": "credit-real",
        **overrides,
    }


def test_outside_the_sandbox_a_real_payload_key_is_required() -> None:
    with pytest.raises(ValidationError, match="YHF_PAYLOAD_KEY must be set"):
        Settings(sandbox=False, **real_secrets())
    with pytest.raises(ValidationError, match="YHF_PAYLOAD_KEY must be set"):
        Settings(sandbox=False, **real_secrets(payload_key=DEV_PAYLOAD_KEY))
    with pytest.raises(ValidationError, match="YHF_PAYLOAD_KEY must be set"):  # the dev key under another id
        Settings(sandbox=False, **real_secrets(payload_key="x:" + DEV_PAYLOAD_KEY.split(":", 1)[1]))
    assert Settings(sandbox=False, **real_secrets(payload_key=spec(("k1", key(1))))).payload_keys()[0][0] == "k1"
    assert Settings(sandbox=True).payload_keys() == []


def test_tls_files_are_set_together_and_readable(tmp_path: Path) -> None:
    cert, private = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert")
    private.write_text("key")
    with pytest.raises(ValidationError, match="set together"):
        Settings(sandbox=True, temporal_tls_cert=str(cert))
    with pytest.raises(ValidationError, match="not a readable file"):
        Settings(sandbox=True, temporal_tls_cert=str(cert), temporal_tls_key=str(tmp_path / "missing.key"))
    with pytest.raises(ValidationError, match="YHF_TEMPORAL_TLS_CA"):
        Settings(sandbox=True, temporal_tls_ca=str(tmp_path))  # a folder is no file
    if os.geteuid() != 0:  # root reads whatever the mode says
        private.chmod(0)
        with pytest.raises(ValidationError, match="YHF_TEMPORAL_TLS_KEY"):
            Settings(sandbox=True, temporal_tls_cert=str(cert), temporal_tls_key=str(private))


def test_the_connection_settings_become_the_sdk_s_connect_arguments(tmp_path: Path) -> None:
    plain = connect_config(Settings(sandbox=True, temporal_address="t:7233", temporal_namespace="yhf"))
    assert plain == {"target_host": "t:7233", "namespace": "yhf"}  # no TLS: the dev server

    cloud = connect_config(Settings(sandbox=True, temporal_api_key="cloud-key", temporal_address="x.tmprl.cloud:7233"))
    assert cloud["api_key"] == "cloud-key" and cloud["tls"] is True

    for name, text in (("c.pem", "CERT"), ("c.key", "KEY"), ("ca.pem", "CA")):
        (tmp_path / name).write_text(text)
    mtls = connect_config(
        Settings(
            sandbox=True,
            temporal_tls_cert=str(tmp_path / "c.pem"),
            temporal_tls_key=str(tmp_path / "c.key"),
            temporal_tls_ca=str(tmp_path / "ca.pem"),
            temporal_tls_server_name="temporal.hospital",
        )
    )
    tls = mtls["tls"]
    assert isinstance(tls, TLSConfig) and "api_key" not in mtls
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert) == (b"CERT", b"KEY", b"CA")
    assert tls.domain == "temporal.hospital"

    ca_only = connect_config(Settings(sandbox=True, temporal_tls_ca=str(tmp_path / "ca.pem")))["tls"]
    assert isinstance(ca_only, TLSConfig) and ca_only.client_cert is None and ca_only.server_root_ca_cert == b"CA"
