"""Matching a channel's daily statement against our ledger. Pure: the caller fetches both.

Every line the channel reports must be one of ours with the same amount, and every payment
or refund we completed well inside the day must be on the channel's statement. Money that
completed within `edge` of midnight may sit on either day's statement, so it is only matched
when the channel reports it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Mismatch(StrEnum):
    missing_in_ledger = "missing_in_ledger"  # the channel moved money we have no record of
    missing_at_channel = "missing_at_channel"  # we recorded money the channel does not report
    amount_mismatch = "amount_mismatch"


@dataclass(frozen=True, kw_only=True)
class Line:
    kind: str  # payment | refund
    ref: str  # our id: the payment id (out_trade_no) or the refund id (out_refund_no)
    amount_fen: int
    inside_day: bool = True  # for our records: completed well inside the day (not near midnight)


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: str
    ref: str
    problem: Mismatch
    channel_fen: int | None
    ledger_fen: int | None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    matched: int
    findings: list[Finding]
    channel_total_fen: int  # payments less refunds, as the channel reports them
    ledger_total_fen: int


def match(channel: list[Line], ours: list[Line], *, known: dict[tuple[str, str], int] | None = None) -> Outcome:
    """`ours`: what we completed that day; `known`: every record of ours by (kind, ref) with its
    amount, whatever day it completed (a line near midnight may be on the other day's list)."""
    mine = {(o.kind, o.ref): o for o in ours}
    known = {**(known or {}), **{k: o.amount_fen for k, o in mine.items()}}
    findings: list[Finding] = []
    matched = 0
    seen: set[tuple[str, str]] = set()
    for line in channel:
        key = (line.kind, line.ref)
        seen.add(key)
        if key not in known:
            findings.append(
                Finding(
                    kind=line.kind,
                    ref=line.ref,
                    problem=Mismatch.missing_in_ledger,
                    channel_fen=line.amount_fen,
                    ledger_fen=None,
                )
            )
        elif known[key] != line.amount_fen:
            findings.append(
                Finding(
                    kind=line.kind,
                    ref=line.ref,
                    problem=Mismatch.amount_mismatch,
                    channel_fen=line.amount_fen,
                    ledger_fen=known[key],
                )
            )
        else:
            matched += 1
    for key, o in mine.items():
        if key not in seen and o.inside_day:
            findings.append(
                Finding(
                    kind=o.kind,
                    ref=o.ref,
                    problem=Mismatch.missing_at_channel,
                    channel_fen=None,
                    ledger_fen=o.amount_fen,
                )
            )

    def net(lines: list[Line]) -> int:
        return sum(x.amount_fen if x.kind == "payment" else -x.amount_fen for x in lines)

    return Outcome(matched=matched, findings=findings, channel_total_fen=net(channel), ledger_total_fen=net(ours))


def previous_local_day(now: datetime, tz: str) -> str:
    """Yesterday, where the hospital is: the statement a morning run asks for."""
    return (now.astimezone(ZoneInfo(tz)).date() - timedelta(days=1)).isoformat()


def day_window(day: str, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of a local day, as aware datetimes."""
    d = date.fromisoformat(day)
    start = datetime.combine(d, time(0), tzinfo=ZoneInfo(tz))
    return start, datetime.combine(d + timedelta(days=1), time(0), tzinfo=ZoneInfo(tz))
