"""Benchmark: receivables by age and by department (db/receivables.py) on 100,000 visits.

`make bench-receivables` (`python -m bench.receivables [--visits 100000] [--runs 30]`) creates a
throwaway PostgreSQL database beside YHF_TEST_DATABASE_URL (as the tests do), migrates it and
COPYs in a year of visits with their ledger entries: most settled, a few written off, the rest
owing (due, in arrears, defaulted) in twelve departments, each visit with a registration fee, item
charges, sometimes a reversal, and payments. It then runs both queries `--runs` times through the
product's code and prints p50/p95 and the top of EXPLAIN ANALYZE's plan, beside two forms the
product does not use (the JIT left on; a join and GROUP BY over the whole ledger); then the same
with a covering index on the entries (not migrated: what it would add), after dropping migration
0007's indexes, and after dropping the last index on the visit's payment status too, to show
what they buy. The goal is under 200 ms. Nothing is asserted. The machine's other load shows in
p95: run it on a quiet one."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db import receivables as r
from db.models import LedgerEntry, Visit
from db.session import create_engine, session_factory
from tests.support import fresh_database

AS_OF = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
DEPARTMENTS = [
    "内科",
    "外科",
    "儿科",
    "妇产科",
    "眼科",
    "耳鼻喉科",
    "口腔科",
    "皮肤科",
    "急诊科",
    "骨科",
    "神经内科",
    "中医科",
]
PATIENTS = 20_000
GOAL_MS = 200
COVERING = "ix_ledger_entry_balance"  # a suggestion the bench tries: index-only reads of the balances

VISIT_COLUMNS = [
    "id",
    "patient_id",
    "department",
    "channel",
    "registration_fee_fen",
    "request_hash",
    "stage",
    "payment_status",
    "discharged_at",
    "card_locked",
    "credit_reported",
    "created_at",
    "updated_at",
]
ENTRY_COLUMNS = ["idempotency_key", "visit_id", "patient_id", "kind", "amount_fen", "created_at"]


def status_at(rng: random.Random, age: timedelta) -> str:
    """What the workflow would have left a visit discharged `age` ago in."""
    roll = rng.random()
    if roll < 0.85:
        return "settled"
    if roll < 0.87:
        return "written_off"
    return "due" if age < timedelta(days=1) else "arrears" if age < timedelta(days=7) else "defaulted"


def one_visit(rng: random.Random, i: int) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    visit_id, patient_id = f"v{i:07d}", f"pat_{i % PATIENTS:06d}"
    created = AS_OF - timedelta(seconds=rng.randrange(365 * 86400))
    at = created + timedelta(hours=rng.uniform(0.5, 6))
    status = status_at(rng, AS_OF - at) if at < AS_OF and rng.random() > 0.01 else "open"
    discharged = None if status == "open" else at
    fee = rng.choice([500, 1000, 2000])
    lines = [("charge", fee)] + [("charge", rng.randrange(100, 30_000)) for _ in range(rng.randrange(1, 5))]
    if rng.random() < 0.1:
        lines.append(("reversal", lines[-1][1]))
    owed = sum(fen if kind == "charge" else -fen for kind, fen in lines)
    if status in ("settled",):
        lines.append(("payment", owed))
    elif status != "open" and rng.random() < 0.3:
        lines.append(("payment", owed // 2))
    stage = "registered" if discharged is None else "discharged"
    defaulted = status == "defaulted"
    at = discharged or created
    visit: tuple[Any, ...] = (visit_id, patient_id, rng.choice(DEPARTMENTS), "kiosk", fee, "x", stage, status)
    visit = (*visit, discharged, defaulted, defaulted, created, at)
    entries = [(f"{visit_id}:{n}", visit_id, patient_id, kind, fen, at) for n, (kind, fen) in enumerate(lines)]
    return visit, entries


async def load(engine: AsyncEngine, visits: int) -> int:
    """COPY the patients, visits and entries in; answers the number of entries."""
    rng = random.Random(10)
    rows = [one_visit(rng, i) for i in range(visits)]
    entries = [e for _, es in rows for e in es]
    patients = [(f"pat_{p:06d}", "张*", "x", False, AS_OF - timedelta(days=400)) for p in range(min(PATIENTS, visits))]
    async with engine.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.copy_records_to_table(
            "patient", records=patients, columns=["id", "name_masked", "name_cipher", "insured_locally", "created_at"]
        )
        await raw.copy_records_to_table("visit", records=[v for v, _ in rows], columns=VISIT_COLUMNS)
        await raw.copy_records_to_table("ledger_entry", records=entries, columns=ENTRY_COLUMNS)
    await vacuum(engine)
    return len(entries)


async def vacuum(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("VACUUM ANALYZE"))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def timed(factory: async_sessionmaker[AsyncSession], runs: int, query: Callable[..., Coroutine[Any, Any, Any]]):
    """p50 and p95 in ms of the product's function, one session a run (as a request has), after a warm-up."""
    latencies = []
    for n in range(runs + 3):
        async with factory() as session:
            start = time.perf_counter()
            await query(session, as_of=AS_OF)
            if n >= 3:
                latencies.append((time.perf_counter() - start) * 1000)
    return statistics.median(latencies), pct(latencies, 0.95)


async def explain(engine: AsyncEngine, stmt: Select[Any], lines: int, *, jit_off: bool = True) -> list[str]:
    compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    async with engine.begin() as conn:
        if jit_off:
            await conn.execute(text(r.NO_JIT))
        plan = (await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + compiled.string, params)).scalars().all()
    # the plan's nodes (what is scanned and joined, how, with their actual times), and its time
    nodes = [p for p in plan if "->" in p or p is plan[0] or "Index Cond" in p or "Hash Cond" in p]
    return [*nodes[:lines], *(p for p in plan if p.lstrip().startswith(("Timing:", "Execution")))]


def join_form(as_of: datetime) -> Select[Any]:
    """For comparison: the same figures by a join of the receivable visits to their entries and a
    GROUP BY visit, which reads the whole ledger (a hash join over a scan of `ledger_entry`)."""
    balance = func.sum(r.signed_amount())
    owed = (
        select(r.age_bucket(as_of).label("bucket"), balance.label("balance_fen"))
        .join(LedgerEntry, LedgerEntry.visit_id == Visit.id)
        .where(Visit.payment_status.in_(r.RECEIVABLE), Visit.discharged_at.is_not(None))
        .group_by(Visit.id, Visit.discharged_at)
        .having(balance > 0)
        .subquery()
    )
    return select(owed.c.bucket, func.count(), func.sum(owed.c.balance_fen)).group_by(owed.c.bucket)


async def join_by_age(session: AsyncSession, *, as_of: datetime) -> Any:
    return (await session.execute(join_form(as_of))).all()


async def by_age_with_jit(session: AsyncSession, *, as_of: datetime) -> Any:
    return (await session.execute(r.by_age_query(as_of))).all()


async def measure(
    engine: AsyncEngine, factory: async_sessionmaker[AsyncSession], label: str, runs: int, *, compare: bool = False
) -> None:
    print(f"\n== {label}")
    cases: list[tuple[str, Callable[..., Coroutine[Any, Any, Any]], Select[Any]]] = [
        ("by=age", r.by_age, r.by_age_query(AS_OF)),
        ("by=department", r.by_department, r.by_department_query(AS_OF)),
    ]
    if compare:
        cases.append(
            ("by=age with the JIT left on (not what the product does)", by_age_with_jit, r.by_age_query(AS_OF))
        )
        cases.append(("by=age as a join and GROUP BY (not the product's form)", join_by_age, join_form(AS_OF)))
    for by, query, stmt in cases:
        p50, p95 = await timed(factory, runs, query)
        mark = "under" if p95 < GOAL_MS else "OVER"
        print(f"{by}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({runs} runs; {mark} the {GOAL_MS} ms goal)")
        for line in await explain(engine, stmt, 14, jit_off=query is not by_age_with_jit):
            print("   ", line)


async def main(visits: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(Path(tmp)) as url:
            if not url.startswith("postgresql"):
                raise SystemExit("set YHF_TEST_DATABASE_URL=postgresql+asyncpg://... (make bench-receivables does)")
            engine = create_engine(url)
            try:
                await run(engine, visits, runs)
            finally:
                await engine.dispose()


async def run(engine: AsyncEngine, visits: int, runs: int) -> None:
    factory = session_factory(engine)
    start = time.perf_counter()
    entries = await load(engine, visits)
    print(f"{visits} visits, {entries} ledger entries loaded in {time.perf_counter() - start:.1f} s (as of {AS_OF})")
    async with factory() as session:
        aged = await r.by_age(session, as_of=AS_OF)
    print(
        "receivables:", ", ".join(f"{b.bucket} {b.visits} visits {b.balance_fen / 100:.0f} yuan" for b in aged.buckets)
    )
    await measure(engine, factory, "with the indexes (migration 0007)", runs, compare=True)
    async with engine.begin() as conn:  # what a covering index would add (not in the migrations)
        await conn.execute(text(f"CREATE INDEX {COVERING} ON ledger_entry (visit_id) INCLUDE (kind, amount_fen)"))
    await vacuum(engine)
    await measure(engine, factory, f"with a covering index on the entries too ({COVERING}: not migrated)", runs)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP INDEX {COVERING}"))
    async with engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_visit_receivable"))
        await conn.execute(text("DROP INDEX ix_visit_department"))
    await vacuum(engine)
    await measure(engine, factory, "without ix_visit_receivable, ix_visit_department", runs)
    async with engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_visit_payment_status"))
    await vacuum(engine)
    await measure(engine, factory, "without any index on visit.payment_status", runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.visits, args.runs))
