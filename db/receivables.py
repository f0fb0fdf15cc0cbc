"""Receivables by age and by department: what discharged patients still owe, counted from
discharge, in one aggregate query each (no visit is loaded).

A receivable is a discharged visit whose payment status is neither `settled` nor `written_off`
and whose balance (the signed sum of its ledger entries, domain.bill.SIGN) is above zero. Its
age is `as_of - discharged_at`; a bucket holds the ages from its lower bound (inclusive) to the
next one's (exclusive): a visit discharged exactly one day before `as_of` is `1-7d`.

The query finds those visits on an index of the payment status (`ix_visit_receivable
(payment_status, discharged_at)` of migration 0007, or the older `ix_visit_payment_status`: the
planner picks either), sums each one's entries through `ix_ledger_entry_visit_id`, keeps the
positive balances, then counts and sums by bucket (and department). The bucket bounds are bound
parameters computed here from `as_of`, so the SQL is the same on SQLite and PostgreSQL (no date
arithmetic in SQL); `bench/receivables.py` measures it on 100,000 visits. (A read of the
ledger, beside db/repositories.py's balances; ledger/ stays the only writer of money rows.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Any

from sqlalchemy import Select, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerEntry, Visit
from domain.bill import SIGN
from domain.policy import PaymentStatus


class AgeBucket(StrEnum):
    day = "0-1d"
    week = "1-7d"
    month = "7-30d"
    quarter = "30-90d"
    older = "90d+"


# the youngest age each bucket holds, youngest bucket first
AGE_FROM = {
    AgeBucket.day: timedelta(0),
    AgeBucket.week: timedelta(days=1),
    AgeBucket.month: timedelta(days=7),
    AgeBucket.quarter: timedelta(days=30),
    AgeBucket.older: timedelta(days=90),
}

# what is owed no more: paid, or given up by the hospital (the bill stays in the books)
NOT_RECEIVABLE = frozenset({"settled", "written_off"})
# the statuses a receivable may have, as an IN list (the index's first column)
RECEIVABLE = tuple(str(p) for p in PaymentStatus if p not in NOT_RECEIVABLE)


@dataclass(frozen=True, kw_only=True)
class AgedBalance:
    bucket: AgeBucket
    visits: int
    balance_fen: int


@dataclass(frozen=True, kw_only=True)
class AgedReceivables:
    as_of: datetime
    buckets: list[AgedBalance]  # every bucket, youngest first, empty ones too
    total_fen: int


@dataclass(frozen=True, kw_only=True)
class DepartmentBalance:
    department: str
    visits: int
    balance_fen: int
    buckets: list[AgedBalance]


@dataclass(frozen=True, kw_only=True)
class DepartmentReceivables:
    as_of: datetime
    departments: list[DepartmentBalance]  # the largest balance first (then by name)
    total_fen: int


def signed_amount() -> Any:
    """An entry's amount with the sign its kind gives (domain.bill.SIGN): summed, a balance."""
    return (
        case({str(kind): sign for kind, sign in SIGN.items()}, value=LedgerEntry.kind, else_=0) * LedgerEntry.amount_fen
    )


def age_bucket(as_of: datetime) -> Any:
    """The visit's bucket: younger than the next bucket's lower bound is discharged after
    `as_of` minus that bound (bound parameters: no date arithmetic in SQL)."""
    return case(
        *((Visit.discharged_at > as_of - upper, str(b)) for (b, _), (_, upper) in pairwise(AGE_FROM.items())),
        else_=str(AgeBucket.older),
    )


def owed(as_of: datetime) -> Any:
    """One row a discharged visit not settled nor written off: its department, bucket and
    balance, a common table expression the aggregates filter on `balance_fen > 0`.

    The balance is a subquery correlated to the visit, so each visit's entries are read through
    `ix_ledger_entry_visit_id` and the work grows with the receivables, not with the ledger (a
    join and GROUP BY reads every entry of every settled visit too). MATERIALIZED (PostgreSQL
    12+, SQLite 3.35+) keeps the subquery to one evaluation a visit where it is filtered on."""
    balance = (
        select(func.sum(signed_amount())).where(LedgerEntry.visit_id == Visit.id).correlate(Visit).scalar_subquery()
    )
    return (
        select(
            Visit.department.label("department"),
            age_bucket(as_of).label("bucket"),
            balance.label("balance_fen"),
        )
        .where(Visit.payment_status.in_(RECEIVABLE), Visit.discharged_at.is_not(None))
        .cte("owed")
        .prefix_with("MATERIALIZED")
    )


def by_age_query(as_of: datetime) -> Select[Any]:
    o = owed(as_of)
    return select(o.c.bucket, func.count(), func.sum(o.c.balance_fen)).where(o.c.balance_fen > 0).group_by(o.c.bucket)


def by_department_query(as_of: datetime) -> Select[Any]:
    o = owed(as_of)
    return (
        select(o.c.department, o.c.bucket, func.count(), func.sum(o.c.balance_fen))
        .where(o.c.balance_fen > 0)
        .group_by(o.c.department, o.c.bucket)
    )


def aged(counts: dict[AgeBucket, tuple[int, int]]) -> list[AgedBalance]:
    """Every bucket in order, from (visits, balance) by bucket."""
    return [
        AgedBalance(bucket=b, visits=counts.get(b, (0, 0))[0], balance_fen=counts.get(b, (0, 0))[1]) for b in AGE_FROM
    ]


# PostgreSQL's JIT compiles a plan whose estimated cost is high (jit_above_cost), and this one's
# is: a small index probe a receivable, ~13,000 of them in the bench. The compilation costs
# 25-75 ms there and saves nothing, so it is off for the rest of the caller's transaction (a
# request's read-only one in the API).
NO_JIT = "SET LOCAL jit = off"


async def execute(session: AsyncSession, stmt: Select[Any]) -> Sequence[Any]:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text(NO_JIT))
    rows: Sequence[Any] = (await session.execute(stmt)).all()
    return rows


async def by_age(session: AsyncSession, *, as_of: datetime) -> AgedReceivables:
    rows = await execute(session, by_age_query(as_of))
    buckets = aged({AgeBucket(b): (int(n), int(fen)) for b, n, fen in rows})
    return AgedReceivables(as_of=as_of, buckets=buckets, total_fen=sum(b.balance_fen for b in buckets))


async def by_department(session: AsyncSession, *, as_of: datetime) -> DepartmentReceivables:
    rows = await execute(session, by_department_query(as_of))
    counts: dict[str, dict[AgeBucket, tuple[int, int]]] = {}
    for department, b, n, fen in rows:
        counts.setdefault(department, {})[AgeBucket(b)] = (int(n), int(fen))
    departments = [
        DepartmentBalance(
            department=department,
            visits=sum(n for n, _ in of.values()),
            balance_fen=sum(fen for _, fen in of.values()),
            buckets=aged(of),
        )
        for department, of in counts.items()
    ]
    departments.sort(key=lambda d: (-d.balance_fen, d.department))
    return DepartmentReceivables(
        as_of=as_of, departments=departments, total_fen=sum(d.balance_fen for d in departments)
    )
