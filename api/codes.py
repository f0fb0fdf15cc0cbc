"""SMS verification codes: sent within limits (per phone and per client), checked, used up
once. The answer is the same whether the phone belongs to a patient or not."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api import schemas as s
from api.deps import AppState, commit_before_call
from api.errors import ApiError
from db.models import SmsCode
from db.pii import mask_phone
from db.repositories import utcnow
from integrations.aliyun_sms import SmsRejected, SmsThrottled
from integrations.sms import OutgoingSms


def _code_hash(state: AppState, phone_hash: str, code: str) -> str:
    return hmac.new(state.settings.data_key.encode(), f"{phone_hash}:{code}".encode(), hashlib.sha256).hexdigest()


async def _throttle(
    session: AsyncSession, column: Any, value: str, now: datetime, limits: list[tuple[timedelta, int]]
) -> None:
    """429 with Retry-After when `value` already had `permits` codes within any window."""
    for window, permits in limits:
        sent = (
            await session.scalars(
                select(SmsCode.created_at)
                .where(column == value, SmsCode.created_at > now - window)
                .order_by(SmsCode.created_at)
            )
        ).all()
        if len(sent) >= permits:
            wait = int((sent[-permits] + window - now).total_seconds()) + 1
            raise ApiError(
                429, "rate_limited", f"too many codes; try again in {wait} s", headers={"Retry-After": str(wait)}
            )


async def _within_limits(state: AppState, session: AsyncSession, phone_hash: str, ip_hash: str | None) -> None:
    settings, now = state.settings, utcnow()
    await _throttle(
        session,
        SmsCode.phone_hash,
        phone_hash,
        now,
        [
            (settings.sms_code_min_interval, 1),
            (timedelta(hours=1), settings.sms_codes_per_hour),
            (timedelta(days=1), settings.sms_codes_per_day),
        ],
    )
    if ip_hash:
        await _throttle(
            session, SmsCode.client_ip_hash, ip_hash, now, [(timedelta(hours=1), settings.sms_codes_per_ip_hour)]
        )


async def _new_code(
    state: AppState, session: AsyncSession, phone_hash: str, ip_hash: str | None, purpose: str
) -> tuple[SmsCode, str]:
    """A new code, which replaces every earlier one for this phone."""
    now = utcnow()
    for old in (
        await session.scalars(select(SmsCode).where(SmsCode.phone_hash == phone_hash, SmsCode.consumed_at.is_(None)))
    ).all():
        old.consumed_at = now
    code = f"{secrets.randbelow(10**6):06d}"
    row = SmsCode(
        phone_hash=phone_hash,
        purpose=purpose,
        code_hash=_code_hash(state, phone_hash, code),
        created_at=now,
        expires_at=now + state.settings.sms_code_ttl,
        attempts=0,
        consumed_at=None,
        client_ip_hash=ip_hash,
    )
    session.add(row)
    return row, code


async def issue_code(
    state: AppState,
    session: AsyncSession,
    phone: str,
    *,
    purpose: str,
    patient_id: str | None,
    client_ip: str | None = None,
) -> s.SmsCodeSent:
    """Send a 6-digit code. Limits are checked before anything is sent."""
    phone_hash = state.pii.lookup("phone", phone)
    ip_hash = state.pii.lookup("ip", client_ip) if client_ip else None
    await _within_limits(state, session, phone_hash, ip_hash)
    row, code = await _new_code(state, session, phone_hash, ip_hash, purpose)
    await commit_before_call(session)  # the code exists before the text that carries it goes out
    try:
        await state.sms.send(
            OutgoingSms(
                idempotency_key=f"sms-code:{row.id}",
                phone=phone,
                template="verification_code",
                params={"code": code},
                patient_id=patient_id,
            )
        )
    except SmsThrottled:
        raise ApiError(
            429,
            "rate_limited",
            "the SMS gateway limits codes to this phone; try again later",
            headers={"Retry-After": "60"},
        ) from None
    except SmsRejected as err:
        raise ApiError(422, "invalid_phone", f"the SMS gateway refused this number ({err.code})") from None
    return s.SmsCodeSent(phone=mask_phone(phone), expires_in=int(state.settings.sms_code_ttl.total_seconds()))


async def use_code(state: AppState, session: AsyncSession, phone: str, code: str, *, purpose: str) -> None:
    """Check a code of this purpose ("login" or "enrol") and use it up in `session`'s
    transaction, so that it stays usable if what it unlocks is never committed (a crash, a
    failed write: the same request may be retried). A wrong attempt is counted in a
    transaction of its own, since the request that made it fails. Called while `session`
    has no transaction open (SQLite takes its write lock at BEGIN)."""
    phone_hash = state.pii.lookup("phone", phone)
    now = utcnow()
    right = wrong = None
    async with state.factory() as own, own.begin():
        row = await own.scalar(
            select(SmsCode)
            .where(SmsCode.phone_hash == phone_hash, SmsCode.purpose == purpose, SmsCode.consumed_at.is_(None))
            .order_by(SmsCode.id.desc())
        )
        if row is not None and row.expires_at > now and row.attempts < state.settings.sms_code_max_attempts:
            if hmac.compare_digest(row.code_hash, _code_hash(state, phone_hash, code)):
                right = row.id
            else:
                row.attempts += 1
                wrong = state.settings.sms_code_max_attempts - row.attempts
    if right is not None:
        consumed = await session.execute(
            update(SmsCode).where(SmsCode.id == right, SmsCode.consumed_at.is_(None)).values(consumed_at=now)
        )
        if cast(CursorResult[Any], consumed).rowcount == 1:  # an UPDATE's result is a cursor's
            return
    if wrong is None:
        raise ApiError(422, "invalid_code", "the code is wrong, used or expired: ask for a new one")
    raise ApiError(422, "invalid_code", f"the code is wrong ({wrong} attempt(s) left)")
