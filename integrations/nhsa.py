"""The NHSA (国家医保信息平台) wire, apart from any transaction: money in yuan on the wire and
fen here, the JSON written and read exactly, the gateway's SM2/SM3 signature and the msgid.

Money: the wire carries yuan as JSON numbers with two decimals; here they are integer fen,
converted exactly with Decimal at this boundary (`fen_to_yuan`, `yuan_to_fen`), never float.

The gateway signature (headers `x-tif-paasid`, `x-tif-timestamp` unix seconds, `x-tif-nonce`,
`x-tif-signature`):
    body_digest = lowercase hex SM3 of the exact request body bytes (UTF-8 JSON)
    signed_text = x-tif-timestamp + x-tif-nonce + x-tif-paasid + body_digest  (no separators)
    x-tif-signature = lowercase hex r||s (128 characters) of SM2 with SM3 (Z_A over the default
        user id "1234567812345678" and the signer's public key) of signed_text, UTF-8,
        by the hospital's private key; the bureau verifies with the hospital's public key.
Keys are SM2 (curve sm2p256v1) in hex: private 64 characters, public 128 (x||y; a leading
"04" is accepted). gmssl (pure Python) computes them; its own signing nonce comes from
`random`, so this module draws it from `secrets`."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from gmssl import sm2, sm3

CURVE = sm2.default_ecc_table
ORDER = int(CURVE["n"], 16)
MSGID_LENGTH = 30


# --- money -----------------------------------------------------------------------------------


def fen_to_yuan(fen: int) -> Decimal:
    """Integer fen as yuan with exactly two decimals."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError(f"fen must be an int, not {type(fen).__name__}")
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def yuan_to_fen(yuan: Decimal | int | str) -> int:
    """Yuan (a Decimal from the JSON, at most two decimals) as integer fen; more precision refused."""
    if isinstance(yuan, float | bool):
        raise TypeError("yuan is read as Decimal, never float")
    try:
        fen = Decimal(yuan) * 100
    except InvalidOperation as err:
        raise ValueError(f"not an amount: {yuan!r}") from err
    if fen != fen.to_integral_value():
        raise ValueError(f"{yuan} yuan is not a whole number of fen")
    return int(fen)


_YUAN = re.compile(r'"\\u0000yuan:(-?\d+\.\d\d)"')


def dumps(payload: Mapping[str, Any]) -> bytes:
    """The wire JSON: compact, UTF-8, Decimals written as bare numbers with their two decimals."""

    def mark(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"\u0000yuan:{value.quantize(Decimal('0.01'))}"
        if isinstance(value, float):
            raise TypeError("amounts go on the wire as Decimal, never float")
        if isinstance(value, Mapping):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mark(v) for v in value]
        return value

    return _YUAN.sub(r"\1", json.dumps(mark(payload), ensure_ascii=False, separators=(",", ":"))).encode()


def loads(body: bytes) -> Any:
    """The wire JSON back, numbers with a fraction as Decimal (exact)."""
    return json.loads(body, parse_float=Decimal)


# --- SM2 / SM3 -------------------------------------------------------------------------------


def sm3_hex(data: bytes) -> str:
    return str(sm3.sm3_hash(list(data)))


def _normal_public(public_key: str) -> str:
    key = public_key.lower()
    if len(key) == 130 and key.startswith("04"):
        key = key[2:]
    if len(key) != 128 or not re.fullmatch(r"[0-9a-f]+", key):
        raise ValueError("an SM2 public key is 128 hex characters (x||y)")
    return key


def sm2_public_key(private_key: str) -> str:
    """The public half (128 hex, x||y) of a private key (64 hex, 0 < d < n - 1)."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", private_key):
        raise ValueError("an SM2 private key is 64 hex characters")
    d = int(private_key, 16)
    if not 0 < d < ORDER - 1:
        raise ValueError("an SM2 private key lies in [1, n - 2]")
    point = sm2.CryptSM2(private_key=private_key, public_key="")._kg(d, CURVE["g"])
    return str(point)


def new_sm2_private_key() -> str:
    """A fresh private key: a random integer in [1, n - 2], as 64 hex characters."""
    return f"{secrets.randbelow(ORDER - 2) + 1:064x}"


def signed_text(timestamp: str, nonce: str, paasid: str, body: bytes) -> bytes:
    return (timestamp + nonce + paasid + sm3_hex(body)).encode()


def sm2_sign(private_key: str, message: bytes) -> str:
    crypt = sm2.CryptSM2(private_key=private_key, public_key=sm2_public_key(private_key))
    k = f"{secrets.randbelow(ORDER - 1) + 1:064x}"  # gmssl's own nonce comes from `random`: not used
    return str(crypt.sign_with_sm3(message, k))


def sm2_verify(public_key: str, message: bytes, signature: str) -> bool:
    if not re.fullmatch(r"[0-9a-fA-F]{128}", signature):
        return False
    try:
        crypt = sm2.CryptSM2(private_key="", public_key=_normal_public(public_key))
        return bool(crypt.verify_with_sm3(signature.lower(), message))
    except (ValueError, TypeError):
        return False


def tif_headers(paasid: str, private_key: str, body: bytes, *, timestamp: int, nonce: str) -> dict[str, str]:
    ts = str(timestamp)
    return {
        "x-tif-paasid": paasid,
        "x-tif-timestamp": ts,
        "x-tif-nonce": nonce,
        "x-tif-signature": sm2_sign(private_key, signed_text(ts, nonce, paasid, body)),
        "content-type": "application/json;charset=utf-8",
    }


# --- msgid -----------------------------------------------------------------------------------


def make_msgid(fixmedins_code: str, local_time: datetime, sequence: int) -> str:
    """fixmedins_code (12) + yyyyMMddHHmmss (14, the bureau's local time) + 4 digits = 30."""
    if len(fixmedins_code) != 12:
        raise ValueError("a fixmedins_code is 12 characters")
    if not 0 <= sequence <= 9999:
        raise ValueError("the sequence is 4 digits")
    return f"{fixmedins_code}{local_time:%Y%m%d%H%M%S}{sequence:04d}"
