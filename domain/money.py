"""Money is an integer number of fen (分). Never a float."""

from __future__ import annotations

import re

# One charge line or payment may not exceed 10 million yuan: anything larger is a typo
# or an attack, and keeps sums far inside a signed 64-bit column.
MAX_AMOUNT_FEN = 1_000_000_000


def is_valid_amount(fen: object, *, allow_zero: bool = False) -> bool:
    """A positive whole number of fen (bool is not a number here), within MAX_AMOUNT_FEN."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        return False
    return (0 if allow_zero else 1) <= fen <= MAX_AMOUNT_FEN


def format_fen(fen: int) -> str:
    """People read yuan: 12345 -> '¥123.45', -50 -> '-¥0.50'."""
    sign = "-" if fen < 0 else ""
    yuan, rest = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{rest:02d}"


def yuan(fen: int) -> str:
    """The amount as an SMS template parameter: 12345 -> '123.45'."""
    sign = "-" if fen < 0 else ""
    whole, rest = divmod(abs(fen), 100)
    return f"{sign}{whole}.{rest:02d}"


def fen_from_yuan(text: str) -> int | None:
    """A channel's yuan string, exactly: '12.30' -> 1230, '12.3' -> 1230, '12' -> 1200;
    None for anything else (a third decimal, a sign, an exponent, spaces, NaN)."""
    if not isinstance(text, str) or not re.fullmatch(r"(0|[1-9]\d{0,11})(\.\d{1,2})?", text):
        return None
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int(frac.ljust(2, "0") or 0)


# the bands a balance shows in as a search attribute (Temporal indexes it in clear: no amount)
BALANCE_BANDS = ((0, "0"), (100_00, "<100"), (500_00, "100-500"))


def balance_band(fen: int) -> str:
    """How much a visit owes, coarsely, in yuan: "0" (nothing, or a credit), "<100",
    "100-500" or "500+"."""
    if fen <= 0:
        return "0"
    for below, band in BALANCE_BANDS[1:]:
        if fen < below:
            return band
    return "500+"
