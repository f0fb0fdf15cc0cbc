"""What every body shares: amounts in fen, ids, phone and ID numbers, free text that refuses control
characters, and `Request`, the base of request bodies, which forbids unknown fields."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from domain.money import MAX_AMOUNT_FEN

Fen = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_FEN, description="an amount in fen (分), a whole number")]
FenOrZero = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT_FEN)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
Phone = Annotated[str, Field(pattern=r"^1[3-9]\d{9}$", description="a mainland mobile number, 11 digits")]
IdNumber = Annotated[str, Field(pattern=r"^\d{17}[\dXx]$", description="an 18-character resident ID number")]
SmsCode = Annotated[str, Field(pattern=r"^\d{6}$")]

# C0 and C1 controls (NUL included) and the bidirectional overrides and isolates: never in free text,
# a path or a query (the edge refuses them there)
UNSAFE = r"\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
UNSAFE_CHAR = re.compile(f"[{UNSAFE}]")


def _clean_text(value: str) -> str:
    if UNSAFE_CHAR.search(value):
        raise ValueError("control characters and bidirectional overrides are not allowed")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Free text (a name, a department, a reason): 1..N characters, not blank, no control characters (a NUL breaks
# PostgreSQL) and no bidi overrides (they disguise text). One alias per length, since a type is not a call;
# the length is checked before the characters, in that order.
_TEXT = {"pattern": f"^[^{UNSAFE}]*[^\\s{UNSAFE}][^{UNSAFE}]*$"}
_clean = AfterValidator(_clean_text)
Text20 = Annotated[str, Field(min_length=1, max_length=20, json_schema_extra=_TEXT), _clean]
Text40 = Annotated[str, Field(min_length=1, max_length=40, json_schema_extra=_TEXT), _clean]
Text50 = Annotated[str, Field(min_length=1, max_length=50, json_schema_extra=_TEXT), _clean]
Text64 = Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=_TEXT), _clean]
Text100 = Annotated[str, Field(min_length=1, max_length=100, json_schema_extra=_TEXT), _clean]
Text200 = Annotated[str, Field(min_length=1, max_length=200, json_schema_extra=_TEXT), _clean]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
