"""Personal information (PIPL): looked up by keyed hash, shown masked, kept encrypted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cryptography.fernet import Fernet


class Pii:
    def __init__(self, data_key: str) -> None:
        if not data_key:
            raise ValueError("a data key is required")
        root = hashlib.sha256(data_key.encode()).digest()
        self._hmac_key = hmac.new(root, b"yhf-lookup", hashlib.sha256).digest()
        enc_key = hmac.new(root, b"yhf-encrypt", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(enc_key))

    def lookup(self, kind: str, value: str) -> str:
        """A stable keyed hash: the same value always finds the same row."""
        return hmac.new(self._hmac_key, f"{kind}:{normalize(kind, value)}".encode(), hashlib.sha256).hexdigest()

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()


def normalize(kind: str, value: str) -> str:
    value = value.strip()
    if kind == "phone":
        return re.sub(r"[\s-]", "", value).removeprefix("+86")
    if kind == "id_number":
        return value.upper()
    return value


def mask_phone(phone: str) -> str:
    p = normalize("phone", phone)
    return p[:3] + "****" + p[-4:] if len(p) >= 7 else "****"


def mask_id_number(id_number: str) -> str:
    v = normalize("id_number", id_number)
    return v[:3] + "*" * (len(v) - 7) + v[-4:] if len(v) > 7 else "****"


def mask_name(name: str) -> str:
    name = name.strip()
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_card(card_no: str) -> str:
    """The last four characters behind at most 12 stars: fits the column whatever the length."""
    c = card_no.strip()
    return "*" * min(len(c) - 4, 12) + c[-4:] if len(c) > 4 else "****"
