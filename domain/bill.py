"""Ledger arithmetic. Entries are never changed: a cancelled charge gets a reversal,
a refund is its own entry. A bill's figures are always derived from its entries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class EntryKind(StrEnum):
    charge = "charge"
    reversal = "reversal"
    payment = "payment"
    refund = "refund"  # money on its way back to the patient (booked when the refund is asked for)
    refund_reversal = "refund_reversal"  # the channel refused the refund: the credit is back
    waiver = "waiver"  # 减免: an operator (or an upheld dispute) gave up part of the bill


# How each kind moves what the patient owes.
SIGN = {
    EntryKind.charge: 1,
    EntryKind.reversal: -1,
    EntryKind.payment: -1,
    EntryKind.refund: 1,
    EntryKind.refund_reversal: -1,
    EntryKind.waiver: -1,
}


@dataclass(frozen=True, kw_only=True)
class Entry:
    kind: EntryKind
    amount_fen: int  # always positive; the kind carries the direction


@dataclass(frozen=True, kw_only=True)
class Totals:
    total_fen: int  # charges less reversals
    paid_fen: int  # payments less refunds
    balance_fen: int  # what is still owed (negative: overpaid)
    waived_fen: int = 0  # what operators waived (减免): owed no more, never paid


def totals(entries: Iterable[Entry]) -> Totals:
    sums = dict.fromkeys(EntryKind, 0)
    for entry in entries:
        if entry.amount_fen <= 0:
            raise ValueError("ledger amounts are positive; the kind gives the direction")
        sums[entry.kind] += entry.amount_fen
    total = sums[EntryKind.charge] - sums[EntryKind.reversal]
    paid = sums[EntryKind.payment] - sums[EntryKind.refund] + sums[EntryKind.refund_reversal]
    waived = sums[EntryKind.waiver]
    return Totals(total_fen=total, paid_fen=paid, balance_fen=total - paid - waived, waived_fen=waived)


@dataclass(frozen=True, kw_only=True)
class OpenBill:
    visit_id: str
    balance_fen: int


def allocate(amount_fen: int, bills: Iterable[OpenBill]) -> list[tuple[str, int]]:
    """Split a payment over bills, oldest first (the caller orders them).
    Returns (visit_id, fen) pairs; what is left over is not allocated."""
    out: list[tuple[str, int]] = []
    left = amount_fen
    for bill in bills:
        if left <= 0:
            break
        if bill.balance_fen <= 0:
            continue
        part = min(left, bill.balance_fen)
        out.append((bill.visit_id, part))
        left -= part
    return out


@dataclass(frozen=True, kw_only=True)
class Refundable:
    payment_id: str
    fen: int  # what this payment put on the visit and has not yet had back


def plan_refunds(credit_fen: int, sources: Iterable[Refundable]) -> list[tuple[str, int]]:
    """Return a visit's credit to the payments that made it, newest first (the caller orders
    them), never more than a payment put on the visit. Returns (payment_id, fen) pairs; a
    credit no payment can carry (misuse) raises."""
    out: list[tuple[str, int]] = []
    left = credit_fen
    for source in sources:
        if left <= 0:
            break
        part = min(left, source.fen)
        if part > 0:
            out.append((source.payment_id, part))
            left -= part
    if left > 0:
        raise ValueError(f"a credit of {credit_fen} fen is more than its payments can return")
    return out
