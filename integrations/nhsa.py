"""The NHSA (国家医保信息平台) wire, apart from any transaction: money in yuan on the wire and
fen here, the JSON written and read exactly, the gateway's SM2/SM3 signature, the msgid, and an
answer read into its output or its error (`answer_output`; the bureau's err_msg never kept).

Money: the wire carries yuan as JSON numbers with two decimals; here they are integer fen,
converted exactly with Decimal at this boundary (`fen_to_yuan`, `yuan_to_fen`), never float.

The gateway signature, as the platform's public clients compute it (headers `x-tif-paasid`,
`x-tif-timestamp` unix seconds, `x-tif-nonce`, `x-tif-signature`):
    x-tif-signature = lowercase hex SHA-256 of (x-tif-timestamp + paasToken + x-tif-nonce +
        x-tif-timestamp), UTF-8, no separators; paasToken the secret the gateway issued with the
        paasid (YHF_INSURANCE_BUREAU_PAAS_TOKEN). It proves the caller, not the body.
The message's own signature is the envelope's `cainfo` (`signtype` "SM2"):
    cainfo = lowercase hex r||s (128 characters) of SM2 with SM3 (Z_A over the default user id
        "1234567812345678" and the signer's public key) of the exact body bytes as sent, with
        cainfo's value empty (`"cainfo":""`), by the hospital's private key; the bureau puts the
        value back to empty and verifies with the hospital's public key.
What the SM2 signature covers is the province's to agree at onboarding (the national spec names
`cainfo` and `signtype` without the signed bytes): this is the form modeled here.
Keys are SM2 (curve sm2p256v1) in hex: private 64 characters, public 128 (x||y; a leading
"04" is accepted). SM3 is gmssl's (pure Python); the SM2 arithmetic is this module's, on
Python integers, its nonce from `secrets`."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from gmssl import sm2, sm3

from integrations.gateway import GatewayError

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
# SM3 is gmssl's. SM2 is computed here on Python integers (GB/T 32918.2): gmssl's own point
# arithmetic now and then loses a point (a None deep in `_kg`, about one scalar in a few hundred),
# which would refuse a good signature; its signatures are the same r||s and are checked against
# these in the tests.

P = int(CURVE["p"], 16)
A = int(CURVE["a"], 16)
B = int(CURVE["b"], 16)
G = (int(CURVE["g"][:64], 16), int(CURVE["g"][64:], 16))
USER_ID = b"1234567812345678"  # the default signer id of GM/T 0009

Point = tuple[int, int] | None  # None: the point at infinity


def _add(p1: Point, p2: Point) -> Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None
        slope = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def _mul(k: int, point: Point) -> Point:
    result: Point = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def sm3_hex(data: bytes) -> str:
    return str(sm3.sm3_hash(list(data)))


def _public_point(public_key: str) -> tuple[int, int]:
    key = public_key.lower()
    if len(key) == 130 and key.startswith("04"):
        key = key[2:]
    if not re.fullmatch(r"[0-9a-f]{128}", key):
        raise ValueError("an SM2 public key is 128 hex characters (x||y)")
    x, y = int(key[:64], 16), int(key[64:], 16)
    if (y * y - (x * x * x + A * x + B)) % P:
        raise ValueError("the SM2 public key is not on the curve")
    return x, y


def sm2_public_key_checked(public_key: str) -> str:
    """A public key (128 hex x||y, or 130 with "04") on the curve, as 128 lowercase hex; else ValueError."""
    x, y = _public_point(public_key)
    return f"{x:064x}{y:064x}"


def _private_int(private_key: str) -> int:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", private_key):
        raise ValueError("an SM2 private key is 64 hex characters")
    d = int(private_key, 16)
    if not 0 < d < ORDER - 1:
        raise ValueError("an SM2 private key lies in [1, n - 2]")
    return d


def sm2_public_key(private_key: str) -> str:
    """The public half (128 hex, x||y) of a private key (64 hex, 0 < d < n - 1)."""
    point = _mul(_private_int(private_key), G)
    assert point is not None
    return f"{point[0]:064x}{point[1]:064x}"


def new_sm2_private_key() -> str:
    """A fresh private key: a random integer in [1, n - 2], as 64 hex characters."""
    return f"{secrets.randbelow(ORDER - 2) + 1:064x}"


def _digest(public: tuple[int, int], message: bytes) -> int:
    """e = SM3(Z_A || M), Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA)."""
    parts = (A, B, G[0], G[1], public[0], public[1])
    z = sm3_hex((len(USER_ID) * 8).to_bytes(2, "big") + USER_ID + b"".join(v.to_bytes(32, "big") for v in parts))
    return int(sm3_hex(bytes.fromhex(z) + message), 16)


def signed_text(timestamp: str, nonce: str, paasid: str, body: bytes) -> bytes:
    return (timestamp + nonce + paasid + sm3_hex(body)).encode()


def sm2_sign(private_key: str, message: bytes) -> str:
    """r||s (128 hex) of SM2 with SM3; the nonce k from `secrets`."""
    d = _private_int(private_key)
    public = _mul(d, G)
    assert public is not None
    e = _digest(public, message)
    while True:
        k = secrets.randbelow(ORDER - 1) + 1
        kg = _mul(k, G)
        assert kg is not None
        r = (e + kg[0]) % ORDER
        if r == 0 or r + k == ORDER:
            continue
        s = pow(1 + d, -1, ORDER) * (k - r * d) % ORDER
        if s:
            return f"{r:064x}{s:064x}"


def sm2_verify(public_key: str, message: bytes, signature: str) -> bool:
    if not re.fullmatch(r"[0-9a-fA-F]{128}", signature):
        return False
    try:
        public = _public_point(public_key)
    except ValueError:
        return False
    r, s = int(signature[:64], 16), int(signature[64:], 16)
    t = (r + s) % ORDER
    if not (0 < r < ORDER and 0 < s < ORDER) or t == 0:
        return False
    point = _add(_mul(s, G), _mul(t, public))
    return point is not None and (_digest(public, message) + point[0]) % ORDER == r


def tif_sm2_refusal(
    public_key: str, headers: Mapping[str, str], body: bytes, *, now: datetime, max_age: timedelta
) -> str | None:
    """Why SM2-signed x-tif headers over `body` are refused (a code), or None when they verify:
    all four present, the timestamp within `max_age` of `now` either way, and x-tif-signature the
    SM2 signature of `signed_text` by the holder of `public_key`."""
    paasid, ts, nonce, signature = (
        headers.get(name, "") for name in ("x-tif-paasid", "x-tif-timestamp", "x-tif-nonce", "x-tif-signature")
    )
    if not (paasid and ts and nonce and signature):
        return "MissingSignature"
    if not ts.isdigit() or abs(now.timestamp() - int(ts)) > max_age.total_seconds():
        return "StaleTimestamp"
    if not sm2_verify(public_key, signed_text(ts, nonce, paasid, body), signature):
        return "SignatureDoesNotMatch"
    return None


def gateway_signature(timestamp: str, paas_token: str, nonce: str) -> str:
    """x-tif-signature: lowercase hex SHA-256 of timestamp + paasToken + nonce + timestamp."""
    return hashlib.sha256((timestamp + paas_token + nonce + timestamp).encode()).hexdigest()


def tif_headers(paasid: str, paas_token: str, *, timestamp: int, nonce: str) -> dict[str, str]:
    ts = str(timestamp)
    return {
        "x-tif-paasid": paasid,
        "x-tif-timestamp": ts,
        "x-tif-nonce": nonce,
        "x-tif-signature": gateway_signature(ts, paas_token, nonce),
        "content-type": "application/json;charset=utf-8",
    }


CAINFO_EMPTY = b'"cainfo":""'


def with_cainfo(private_key: str, body: bytes) -> bytes:
    """The envelope `body` (written by `dumps`, its cainfo empty) with cainfo its SM2 signature."""
    if body.count(CAINFO_EMPTY) != 1:
        raise ValueError('the envelope carries one empty cainfo ("cainfo":"")')
    return body.replace(CAINFO_EMPTY, b'"cainfo":"' + sm2_sign(private_key, body).encode() + b'"')


# --- msgid -----------------------------------------------------------------------------------


def make_msgid(fixmedins_code: str, local_time: datetime, sequence: int) -> str:
    """fixmedins_code (12) + yyyyMMddHHmmss (14, the bureau's local time) + 4 digits = 30."""
    if len(fixmedins_code) != 12:
        raise ValueError("a fixmedins_code is 12 characters")
    if not 0 <= sequence <= 9999:
        raise ValueError("the sequence is 4 digits")
    return f"{fixmedins_code}{local_time:%Y%m%d%H%M%S}{sequence:04d}"


# --- the answer ------------------------------------------------------------------------------


class SignInInvalid(GatewayError):
    pass


class NhsaRefused(GatewayError):
    """The bureau answered, and said no (infcode -1, or a 4xx it will answer again): final for
    this request, unless an earlier try of it may have gone through (the caller knows)."""


def refusal_text(infno: str, code: str) -> str:
    """Our own words for a refusal. The bureau's `err_msg` is never kept, shown or logged: a real
    one may carry a name or an ID number; its code (`[Code]` in our simulator) is."""
    return f"the bureau refused {infno} ({code})"


def answer_output(infno: str, status: int, content: bytes) -> dict[str, Any]:
    """The `output` of the bureau's answer to `infno`, or the error it is."""
    try:
        data = loads(content)
    except ValueError:
        data = None
    if status >= 500 or status == 429:
        raise GatewayError(str(status), f"the bureau answered {infno} with HTTP {status}", retryable=True)
    if not isinstance(data, dict) or (status < 400 and not isinstance(data.get("infcode"), int)):
        # not the bureau's answer (a proxy's page, a cut body): what happened is unknown
        raise GatewayError("UnreadableAnswer", f"the answer to {infno} is not the bureau's JSON", retryable=True)
    code = _code(str(data.get("err_msg") or data.get("message") or ""), str(status) if status >= 400 else "")
    if status >= 400:
        # StaleRequest: our clock or a slow send; signed again on the next try
        raise NhsaRefused(code, refusal_text(infno, code), retryable=code == "StaleRequest")
    if data["infcode"] != 0:
        code = code or "NhsaRefused"
        kind = SignInInvalid if code == "SignInInvalid" else NhsaRefused
        raise kind(code, refusal_text(infno, code), retryable=False)
    output = data.get("output")
    return output if isinstance(output, dict) else {}


def _code(message: str, default: str) -> str:
    """Our simulator (and this client's mapping) lead an error text with `[Code]`; the real
    bureau's texts map to none and stay `default`."""
    match = re.match(r"\[([A-Za-z]+)\]", message)
    return match.group(1) if match else default
