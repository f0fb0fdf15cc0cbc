"""3201 医药机构费用结算对总账 at the simulated bureau (simulators/bureau.py serves it, its HANDLERS
merged into the dispatch table): the hospital's totals of its settlements over stmt_begndate ..
stmt_enddate (Beijing days, both included) against the bureau's own, answered `stmtinfo` with
stmt_rslt "0" 平 or "1" 不平 and a description naming both sides' figures. The envelope is checked
as for every transaction (signature, sign-in, msgid reuse: simulators/bureau.py `handle`).

The reading of the totals (refd_setl_flag "1", the reversals included), written apart from the
hospital's: each settlement made in the span counts +1 with its medfee_sumamt, fund_pay_sumamt and
acct_pay; each settlement reversed in the span (2208, or its 2207 taken back by 2601) counts -1 with
the same amounts, on the day it was reversed. A settlement settled and reversed the same day nets
to nothing. The day a settlement was made is the bureau's day in its setl_id (`new_id`: prefix +
yyyyMMdd, Beijing); the day it was reversed is its `updated_at` (the reversal is its last change).
医保移动支付 orders paid (ordStas 6, or 7 once refunded whole) count on their setlId's day as
settlements do, their fund and personal-account parts as fund_pay_sumamt and acct_pay; a 6203
refund is not a reversal here (the simulator keeps no time of it; the hospital's side reads the
same). Every settlement here is 职工基本医疗保险 (insutype 310) 门诊 (clr_type 11): other pairs
have nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from simulators.bureau import ZONE, Handler, MobileOrder, Refused, Settlement, data_of, text, yuan

SETTLED_HERE = ("310", "11")  # (insutype, clr_type) of every settlement this bureau makes


@dataclass
class Totals:
    medfee_fen: int = 0
    fund_fen: int = 0
    acct_fen: int = 0
    count: int = 0

    def add(self, sign: int, medfee_fen: int, fund_fen: int, acct_fen: int) -> None:
        self.medfee_fen += sign * medfee_fen
        self.fund_fen += sign * fund_fen
        self.acct_fen += sign * acct_fen
        self.count += sign


def signed_fen(value: Any, name: str) -> int:
    """A net amount in yuan (2 decimals; may be negative) to fen; anything else refused."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise Refused("InvalidParameter", f"{name} is not an amount")
    cents = Decimal(value) * 100
    if cents != cents.to_integral_value():
        raise Refused("InvalidParameter", f"{name} is not in yuan with 2 decimals")
    return int(cents)


def day_of(data: Mapping[str, Any], name: str) -> date:
    try:
        return date.fromisoformat(text(data, name))
    except ValueError:
        raise Refused("InvalidParameter", f"{name} is yyyy-MM-dd") from None


def id_day(ident: str | None) -> date | None:
    """The bureau's day written in one of its ids (prefix of 2 + yyyyMMdd)."""
    try:
        return date.fromisoformat(f"{ident[2:6]}-{ident[6:8]}-{ident[8:10]}") if ident else None
    except ValueError:
        return None


def bureau_totals(session: Session, first: date, last: date) -> Totals:
    """The bureau's totals of the days first..last, by the reading above."""
    totals = Totals()
    for row in session.scalars(select(Settlement).where(Settlement.status.in_(("settled", "reversed")))):
        settled_on = id_day(row.setl_id)
        if settled_on is not None and first <= settled_on <= last:
            totals.add(1, row.total_fen, row.pooled_fen, row.personal_fen)
        if row.status == "reversed" and first <= row.updated_at.astimezone(ZONE).date() <= last:
            totals.add(-1, row.total_fen, row.pooled_fen, row.personal_fen)
    for order in session.scalars(select(MobileOrder).where(MobileOrder.status.in_(("6", "7")))):
        paid_on = id_day(order.setl_id)
        if paid_on is not None and first <= paid_on <= last:
            totals.add(1, order.total_fen, order.fund_fen, order.personal_fen)
    return totals


def daily_totals(session: Session, env: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    data = data_of(inp)
    insutype, clr_type, optins = text(data, "insutype"), text(data, "clr_type"), text(data, "setl_optins")
    if optins != env.get("mdtrtarea_admvs"):
        raise Refused("InvalidParameter", "setl_optins 不是本统筹区的结算经办机构")
    first, last = day_of(data, "stmt_begndate"), day_of(data, "stmt_enddate")
    if last < first:
        raise Refused("InvalidParameter", "stmt_enddate is before stmt_begndate")
    count = data.get("fixmedins_setl_cnt")
    if isinstance(count, bool) or not isinstance(count, int):
        raise Refused("InvalidParameter", "fixmedins_setl_cnt is a whole number")
    theirs = Totals(
        medfee_fen=signed_fen(data.get("medfee_sumamt"), "medfee_sumamt"),
        fund_fen=signed_fen(data.get("fund_pay_sumamt"), "fund_pay_sumamt"),
        acct_fen=signed_fen(data.get("acct_pay"), "acct_pay"),
        count=count,
    )
    ours = bureau_totals(session, first, last) if (insutype, clr_type) == SETTLED_HERE else Totals()
    if theirs == ours:
        result, description = "0", "平"
    else:
        description = "不平: " + "; ".join(
            f"{name} 中心 {mine} / 机构 {sent}"
            for name, mine, sent in (
                ("medfee_sumamt", yuan(ours.medfee_fen), yuan(theirs.medfee_fen)),
                ("fund_pay_sumamt", yuan(ours.fund_fen), yuan(theirs.fund_fen)),
                ("acct_pay", yuan(ours.acct_fen), yuan(theirs.acct_fen)),
                ("fixmedins_setl_cnt", ours.count, theirs.count),
            )
            if mine != sent
        )
        result = "1"
    return {"stmtinfo": {"setl_optins": optins, "stmt_rslt": result, "stmt_rslt_dscr": description}}


HANDLERS: dict[str, Handler] = {"3201": daily_totals}
