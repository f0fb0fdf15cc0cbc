"""The fiscal e-bill platform's wire format (integrations/ebill.py describes it): the signed
envelope, base64 JSON data with amounts of yuan to two decimals (fen inside, converted exactly),
and its times (Beijing time, yyyyMMddHHmmssSSS)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

VERSION = "1.0"
SUCCESS = "S0000"
PLATFORM_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")  # the platform's clock: Beijing time
TIME_FORMAT = "%Y%m%d%H%M%S%f"  # yyyyMMddHHmmssSSS once the microseconds are cut to three digits
SIGNED = ("appid", "data", "noise", "version")


# --- money ---------------------------------------------------------------------------------


def fen_to_yuan(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def yuan_to_fen(yuan: Decimal | int) -> int:
    """Exact: a third decimal (or a non-number) is a ValueError, never rounded away."""
    value = Decimal(yuan) * 100
    if value != value.to_integral_value():
        raise ValueError(f"{yuan} has more than two decimals")
    return int(value)


def dumps(value: Any) -> str:
    """JSON whose Decimals are written as numbers with exactly two decimals."""
    if isinstance(value, Decimal):
        return f"{value.quantize(Decimal('0.01'))}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def encode_data(params: dict[str, Any]) -> str:
    return base64.b64encode(dumps(params).encode()).decode()


def decode_data(data: str) -> Any:
    """The parameters of a `data` (or `message`): numbers with decimals as Decimal. ValueError
    when it is not base64 of UTF-8 JSON."""
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
        return json.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (binascii.Error, UnicodeError, ValueError, InvalidOperation) as e:
        raise ValueError(f"not base64 of UTF-8 JSON: {e}") from e


def signature(params: dict[str, str], key: str) -> str:
    text = "&".join(f"{name}={params[name]}" for name in sorted(SIGNED)) + f"&key={key}"
    return hashlib.md5(text.encode()).hexdigest().upper()


def envelope(appid: str, key: str, params: dict[str, Any], *, noise: str | None = None) -> dict[str, str]:
    body = {"appid": appid, "data": encode_data(params), "noise": noise or secrets.token_hex(16), "version": VERSION}
    return {**body, "sign": signature(body, key)}


def wire_time(at: datetime) -> str:
    return at.astimezone(PLATFORM_TZ).strftime(TIME_FORMAT)[:17]


def parse_wire_time(text: str) -> datetime:
    return datetime.strptime(text + "000", TIME_FORMAT).replace(tzinfo=PLATFORM_TZ).astimezone(UTC)


def wire_day(day: date) -> str:
    return day.strftime("%Y%m%d")
