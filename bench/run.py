"""Benchmark: the payment policy in isolation, and clinical events and payments through the
real stack.

`make bench` starts its own stack (dev server, worker, API) on free ports in a temporary
folder, registers visits and posts their events concurrently, then pays every patient's
merged bill at the window at the same moment and waits until every visit is settled; it
prints throughput and latency. Nothing is asserted: these are figures to compare between
changes."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from devstack import Stack
from domain.policy import PaymentPolicy, PaymentState
from tests.flows import STEPS, Clinic
from tests.support import free_port, fresh_database

VISITS = int(sys.argv[1]) if len(sys.argv) > 1 else 40
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 8


def bench_policy() -> None:
    policy = PaymentPolicy()
    t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    state = PaymentState(discharged_at=t0, balance_fen=5000, in_arrears=True, last_dunning_at=t0 + timedelta(days=1))
    n = 20_000
    seconds = timeit.timeit(lambda: policy.decide(state, t0 + timedelta(days=2)), number=n)
    print(f"policy.decide: {seconds / n * 1e6:.1f} µs per call ({n} calls)")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def one_visit(clinic: Clinic, patient_id: str, latencies: list[float]) -> None:
    visit_id = (await clinic.register(patient_id))["visit_id"]
    for type_, fields in STEPS:
        start = time.perf_counter()
        await clinic.event(visit_id, type_, **fields)
        latencies.append(time.perf_counter() - start)


async def bench_stack() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(Path(tmp)) as url:  # PostgreSQL with YHF_TEST_DATABASE_URL, else SQLite
            await run_stack(Path(tmp), url)


async def run_stack(tmp: Path, url: str) -> None:
    database = url.split(":", 1)[0].split("+", 1)[0]
    stack = Stack(
        data_dir=tmp / "data",
        api_port=free_port(),
        temporal_port=free_port(),
        headless=True,
        wechat_port=free_port(),
        alipay_port=free_port(),
        env={"YHF_DATABASE_URL": url},
        log_dir=tmp / "logs",
    )
    await asyncio.to_thread(stack.start)
    try:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http:
            clinic = Clinic.over(http, {"Authorization": "Bearer dev-his-key"})
            patients = [(await clinic.enrolled_patient())[0] for _ in range(CONCURRENCY)]
            latencies: list[float] = []
            sem = asyncio.Semaphore(CONCURRENCY)

            async def run(i: int) -> None:
                async with sem:
                    await one_visit(clinic, patients[i % CONCURRENCY], latencies)

            start = time.perf_counter()
            await asyncio.gather(*(run(i) for i in range(VISITS)))
            elapsed = time.perf_counter() - start
            paid = await bench_payments(http, patients)
    finally:
        await asyncio.to_thread(stack.stop)
    events = len(latencies)
    print(f"stack: {VISITS} visits, {events} events, {CONCURRENCY} at a time, {database}, 1 worker, 1 API process")
    print(f"  throughput {events / elapsed:.1f} events/s ({elapsed:.1f} s)")
    print(
        f"  event latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {pct(latencies, 0.95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    pay_latencies, settled_after = paid
    print(f"payments: {len(pay_latencies)} merged bills ({VISITS} visits) paid at the window at once")
    print(
        f"  payment latency p50 {statistics.median(pay_latencies) * 1000:.0f} ms, "
        f"max {max(pay_latencies) * 1000:.0f} ms; every visit settled {settled_after:.1f} s after the first payment"
    )


async def bench_payments(http: httpx.AsyncClient, patients: list[str]) -> tuple[list[float], float]:
    ops = {"Authorization": "Bearer dev-ops-key"}

    async def owed(patient_id: str) -> int:
        visits = (await http.get("/v1/ops/visits", params={"patient_id": patient_id, "limit": 500}, headers=ops)).json()
        return sum(v["balance_fen"] for v in visits)

    amounts = {p: await owed(p) for p in patients}
    latencies: list[float] = []

    async def pay(patient_id: str) -> None:
        t = time.perf_counter()
        r = await http.post(
            "/v1/ops/payments",
            json={"patient_id": patient_id, "amount_fen": amounts[patient_id], "method": "card"},
            headers={**ops, "Idempotency-Key": f"bench-{patient_id}"},
        )
        r.raise_for_status()
        latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(pay(p) for p in patients))
    while True:
        settled = (
            await http.get("/v1/ops/visits", params={"payment_status": "settled", "limit": 500}, headers=ops)
        ).json()
        if len(settled) >= VISITS:
            return latencies, time.perf_counter() - start
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    bench_policy()
    asyncio.run(bench_stack())
