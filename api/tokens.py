"""Patient sign-in tokens: a JWT (PyJWT, HS256) that names a server-side session, so that
logout and unenrolment can revoke it before it expires. The token carries no personal data."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import jwt

ISSUER = "yihoufu"
AUDIENCE = "patient"


def _key(data_key: str) -> bytes:
    return hmac.new(hashlib.sha256(data_key.encode()).digest(), b"yhf-patient-token", hashlib.sha256).digest()


def new_session_id() -> str:
    return "ses_" + secrets.token_urlsafe(18)


def issue(data_key: str, session_id: str, *, issued_at: datetime, expires_at: datetime) -> str:
    claims = {"sid": session_id, "iss": ISSUER, "aud": AUDIENCE, "iat": issued_at, "exp": expires_at}
    return jwt.encode(claims, _key(data_key), algorithm="HS256")


def session_of(data_key: str, token: str) -> str | None:
    """The session a valid, unexpired token names, or None."""
    try:
        claims = jwt.decode(
            token,
            _key(data_key),
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sid"]},
        )
    except jwt.PyJWTError:
        return None
    sid = claims.get("sid")
    return sid if isinstance(sid, str) else None
