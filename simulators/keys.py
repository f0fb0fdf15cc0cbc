"""Keys for the payment channels' simulators and the tests: RSA pairs as WeChat and Alipay
issue them, RSA-SHA256 signatures as both sign, and the sandbox's keys of a channel, made
once per data folder. Our private key and the channel's public key are files, as a hospital
deploys them; the simulator reads the other halves from the JSON beside them."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def new_rsa_pair() -> tuple[str, str]:
    """(private PEM, public PEM), 2048-bit, as WeChat issues them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def rsa_sign(private_pem: str, message: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(public_pem: str, message: str, signature: str) -> bool:
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(base64.b64decode(signature), message.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, kw_only=True)
class SandboxKeys:
    our_private_key_path: str  # the merchant's / app's private key
    their_public_key_path: str  # the channel's public key
    our_public_key: str  # what the simulator verifies our requests with
    their_private_key: str  # what the simulator signs with
    secret: str  # a shared symmetric key (WeChat's APIv3 key)


def sandbox_keys(folder: Path, channel: str) -> SandboxKeys:
    folder.mkdir(parents=True, exist_ok=True)
    ours, theirs, spec = (
        folder / f"{channel}-our-key.pem",
        folder / f"{channel}-their-public.pem",
        folder / f"{channel}-sandbox.json",
    )
    if not spec.exists():
        our_private, our_public = new_rsa_pair()
        their_private, their_public = new_rsa_pair()
        ours.write_text(our_private)
        theirs.write_text(their_public)
        spec.write_text(
            json.dumps(
                {"our_public_key": our_public, "their_private_key": their_private, "secret": secrets.token_hex(16)}
            )
        )
        spec.chmod(0o600)
    return SandboxKeys(
        our_private_key_path=str(ours), their_public_key_path=str(theirs), **json.loads(spec.read_text())
    )
