"""The msgids of our requests to the insurance bureau (NHSA): one per logical request, kept, so
every retry of that request sends the same one (the bureau deduplicates by msgid)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, InsuranceSettlement, Patient
from integrations.nhsa_mobile import MobileOrder

# The 4-digit sequences drawn here: 0000-8999. From 9000 up they are the sign-ins' (9001, never
# stored: integrations/insurance_bureau.py SIGN_IN_SEQUENCES), so a sign-in and a stored request
# never share a msgid.
STORED_SEQUENCES = 9000


class NhsaMessage(Base):
    """The msgid of each logical request to the insurance bureau: allocated once, so a retry (of
    an activity or an API call) sends the same msgid, the bureau's idempotency key. Beside
    db/models.py (same Base and naming convention)."""

    __tablename__ = "nhsa_message"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_key: Mapped[str] = mapped_column(String(200), unique=True)
    infno: Mapped[str] = mapped_column(String(16))
    msgid: Mapped[str] = mapped_column(String(30), unique=True)
    created_at: Mapped[datetime]


async def message_id(
    session: AsyncSession, *, key: str, infno: str, now: datetime, make: Callable[[datetime, int], str]
) -> str:
    """The msgid of the request `key`: the one allocated before, or a new one made by `make(now,
    sequence)` (fixmedins_code + time + 4 digits). A sequence another request took in the same
    second is drawn again; the same key allocated at once by another process is read back."""
    return (await message(session, key=key, infno=infno, now=now, make=make))[0]


async def message(
    session: AsyncSession, *, key: str, infno: str, now: datetime, make: Callable[[datetime, int], str]
) -> tuple[str, bool]:
    """(msgid, new) of the request `key`: `new` False when it was allocated before, so an earlier
    try may have sent it and the bureau may have acted on it (what it answered then is unknown
    to this try)."""
    for _ in range(20):
        found = await session.scalar(select(NhsaMessage.msgid).where(NhsaMessage.request_key == key))
        if found is not None:
            return found, False
        msgid = make(now, secrets.randbelow(STORED_SEQUENCES))
        try:
            async with session.begin_nested():
                session.add(NhsaMessage(request_key=key, infno=infno, msgid=msgid, created_at=now))
        except IntegrityError:
            continue  # the key (then read back) or the msgid (then drawn again) is taken
        return msgid, True
    raise RuntimeError(f"no msgid could be allocated for {key}")


def order_of(row: InsuranceSettlement) -> MobileOrder:
    """The bureau's 医保移动支付 order as we keep it: its payOrdId and payToken, the split it was
    made with (its status and cashier unknown here: 6301 says)."""
    return MobileOrder(
        pay_ord_id=str(row.pay_ord_id),
        pay_token=str(row.pay_token),
        status="",
        total_fen=row.total_fen,
        fund_fen=row.pooled_fen,
        personal_fen=row.personal_fen,
        cash_fen=row.self_pay_fen,
        cashier_url="",
        setl_id="",
    )


def bureau_person(patient: Patient) -> str:
    """The patient's psn_no at the bureau: the number the HIS read (1101 at the card read), else
    our patient id (the sandbox's bureau knows patients by it)."""
    return patient.insurance_psn_no or patient.id
