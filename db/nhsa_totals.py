"""Our side of the bureau's daily totals (3201 对总账, integrations/nhsa_totals.py): the settlements
the bureau booked for us in a window of time, net of the reversals made in it, read from our
`insurance_settlement` rows and the msgids we kept for them (db/nhsa.py).

The reading (the bureau's, simulators/bureau_totals.py, written apart): a settlement counts +1 with
its total, pooled-fund and personal-account parts when it was settled in the window, and -1 with
the same when it was reversed in it (2208: the saga's 冲正, a split the bureau changed, or a refund
that took it back whole). When: the time its request's msgid was allocated (nhsa_message.created_at,
just before the request first went out): 2207 for a card-less settlement (医保脱卡支付), 6202 for a
医保移动支付 order, 2208 for a reversal. Only what the bureau answered counts: a 2207 with a setl_id
kept (`bureau_settlement_no`), a mobile order paid (its setlId kept), a 2208 after which the
settlement is reversed, failed or refunded. A settlement whose 2207 answer was lost and was taken
back by 2601 is not ours to count (settled and taken back, it nets to nothing at the bureau on
one day). A 6203 refund of a mobile order is not a reversal here, as at the simulated bureau."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import InsuranceSettlement
from db.nhsa import NhsaMessage

TAKEN_BACK = ("reversed", "failed", "refunded")  # statuses a settlement has after a 2208 went through


@dataclass(frozen=True, kw_only=True)
class NhsaDayTotals:
    """Net of the window, in fen: `settled` and `reversed` count the records behind it."""

    settled: int = 0
    reversed: int = 0
    medfee_fen: int = 0  # medfee_sumamt
    fund_fen: int = 0  # fund_pay_sumamt (the pooled fund)
    acct_fen: int = 0  # acct_pay (the personal account)

    @property
    def count(self) -> int:  # fixmedins_setl_cnt
        return self.settled - self.reversed


def _settlement_of(key: str) -> tuple[str, str] | None:
    """(what the request did, settlement id) of a kept msgid's key, or None for another request."""
    infno, _, rest = key.partition(":")
    if infno in ("2207", "6202"):
        return "settled", rest
    if infno == "2208":
        return "reversed", rest.removeprefix("refund:")
    return None


async def nhsa_day_totals(session: AsyncSession, start: datetime, end: datetime) -> NhsaDayTotals:
    """Our totals of the settlements at the bureau in [start, end), by the reading above."""
    kept = (
        await session.execute(
            select(NhsaMessage.request_key).where(
                NhsaMessage.infno.in_(("2207", "6202", "2208")),
                NhsaMessage.created_at >= start,
                NhsaMessage.created_at < end,
            )
        )
    ).scalars()
    events = [e for e in (_settlement_of(k) for k in kept) if e is not None]
    rows = {
        r.id: r
        for r in (
            await session.scalars(
                select(InsuranceSettlement).where(InsuranceSettlement.id.in_({sid for _, sid in events}))
            )
        ).all()
    }
    settled = reversed_ = medfee = fund = acct = 0
    for what, sid in events:
        row = rows.get(sid)
        if row is None or not row.bureau_settlement_no:
            continue  # the bureau answered no setl_id we hold: nothing of ours to count
        if what == "reversed" and row.status not in TAKEN_BACK:
            continue  # a 2208 refused (the settlement stands) or not yet answered
        sign = 1 if what == "settled" else -1
        settled, reversed_ = settled + (sign > 0), reversed_ + (sign < 0)
        medfee, fund, acct = medfee + sign * row.total_fen, fund + sign * row.pooled_fen, acct + sign * row.personal_fen
    return NhsaDayTotals(settled=settled, reversed=reversed_, medfee_fen=medfee, fund_fen=fund, acct_fen=acct)
