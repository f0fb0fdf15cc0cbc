"""The Temporal cluster, reached one way by the worker and the API alike: its address and
namespace, TLS (mTLS with a client certificate, or Temporal Cloud's API key), and the data
converter whose payload codec encrypts every payload before it leaves the process.

The connection is described with the SDK's own environment configuration
(`temporalio.envconfig.ClientConfigProfile`), filled from the YHF_TEMPORAL_* settings: an API
key turns TLS on, TLS files are read when the client connects, and the profile becomes
`Client.connect`'s arguments as the SDK maps them.

The codec: AES-256-GCM (`cryptography`) over each payload serialized whole (its metadata and its
data), under the first key of YHF_PAYLOAD_KEY. The stored payload says `binary/encrypted` and
names the key's id in its metadata (also bound to the ciphertext as associated data), so payloads
written under an older key decode while that key is still listed: rotation is putting a new key
first. A payload that is not encrypted (written before the codec was on) decodes as it is."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    PayloadConverter,
)
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, ClientConnectConfig

from config import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16


class PayloadError(ValueError):
    """A payload the codec cannot decode; `code` is the problem code the codec endpoint answers."""

    code = "invalid_payload"


class UnknownPayloadKey(PayloadError):
    code = "unknown_key_id"


class UndecryptablePayload(PayloadError):
    code = "payload_undecryptable"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM with key ids: `keys` is [(id, 32-byte key)], the first one encrypts."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("the payload codec needs at least one key")
        self.key_id = keys[0][0]
        self._keys = {kid: AESGCM(key) for kid, key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.key_id].encrypt(nonce, payload.SerializeToString(), self.key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # plain: written before the codec was on
        kid = payload.metadata.get(KEY_ID, b"").decode("utf-8", "replace")
        aes = self._keys.get(kid)
        if aes is None:
            raise UnknownPayloadKey(
                f"payload encrypted under key id {kid!r}, which YHF_PAYLOAD_KEY does not list "
                f"(known: {', '.join(sorted(self._keys))})"
            )
        data = payload.data
        try:
            if len(data) < NONCE_BYTES + TAG_BYTES:
                raise InvalidTag
            plain = aes.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], kid.encode())
        except InvalidTag:
            raise UndecryptablePayload(
                f"payload under key id {kid!r} does not decrypt: another key of that id, or altered"
            ) from None
        out = Payload()
        out.ParseFromString(plain)
        return out


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The codec of YHF_PAYLOAD_KEY; None without a key (the sandbox: payloads go plain)."""
    keys = settings.payload_keys()
    return EncryptionCodec(keys) if keys else None


class CodedFailureConverter(DefaultFailureConverterWithEncodedAttributes):
    """Failure messages and stack traces travel encoded (they may quote an amount), but an
    application failure's message names its type: Temporal UI shows a refused action as
    `invalid_action (...)`, not a bare "Encoded failure"; the words are read through the codec."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        super().to_failure(exception, payload_converter, failure)
        if failure.HasField("application_failure_info") and failure.application_failure_info.type:
            kind = failure.application_failure_info.type
            failure.message = f"{kind} (the reason is encrypted: read it through the codec endpoint)"


def data_converter(settings: Settings) -> DataConverter:
    """The SDK's default converter, with the codec when there is a key; failure messages and
    stack traces then travel encoded too (they may quote what a payload held)."""
    codec = payload_codec(settings)
    if codec is None:
        return DataConverter.default
    return dataclasses.replace(
        DataConverter.default,
        payload_codec=codec,
        failure_converter_class=CodedFailureConverter,
    )


def client_profile(settings: Settings) -> ClientConfigProfile:
    """The connection as the SDK's environment configuration describes one."""
    tls: ClientConfigTLS | None = None
    if settings.temporal_tls_cert or settings.temporal_tls_ca or settings.temporal_tls_server_name:

        def source(path: str) -> Path | None:
            return Path(path) if path else None

        tls = ClientConfigTLS(
            server_name=settings.temporal_tls_server_name or None,
            server_root_ca_cert=source(settings.temporal_tls_ca),
            client_cert=source(settings.temporal_tls_cert),
            client_private_key=source(settings.temporal_tls_key),
        )
    return ClientConfigProfile(
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key or None,
        tls=tls,
    )


def connect_config(settings: Settings) -> ClientConnectConfig:
    """`Client.connect`'s target, namespace, TLS and API key (TLS files read here)."""
    return client_profile(settings).to_client_connect_config()


async def connect(settings: Settings, **options: Any) -> Client:
    """A client of the cluster the settings name, with the codec's data converter; `options`
    are more of `Client.connect`'s (lazy, retry_config, interceptors, ...)."""
    return await Client.connect(**connect_config(settings), data_converter=data_converter(settings), **options)
