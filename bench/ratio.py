"""The ratio benchmark (issue 12): the product against raw Temporal, on this machine.

`python -m bench.ratio` (what `make bench` runs; `RATIO_ARGS=...`) runs, for each number of
visits in flight (8 and 32), raw Temporal in the shape of a visit (bench/raw.py), then the product
through its HTTP contract (bench/his_load.py) on SQLite, and on PostgreSQL when
YHF_TEST_DATABASE_URL is set (or with --postgres), each on its own fresh stack, one after the
other. It prints a table (visits/s, ack p50/p95/p99, the ratio of the product's visits/s to raw
Temporal's at the same concurrency) and what each process spent, and writes
bench/results/<stamp>.json and bench/results/<stamp>.png (ack latency over the run; throughput
against concurrency). Visit counts are arguments: --rounds N gives each in-flight slot N visits
on the product's side, --raw-rounds on the raw side.

--against REV (repeatable) runs the product at that git revision too, in the same run: its tree
exported to a temporary folder and run by its own bench.ratio (bench/baseline.py), interleaved
with the current tree (raw, product@REV, product at each number in flight), and the table shows
the current product against each baseline."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.baseline import Baseline, NoBaseline, compare, export, print_comparison, run_baseline
from bench.his_load import run_product
from bench.measure import Result
from bench.plots import plot
from bench.raw import run_raw
from devstack import ROOT, temporal_cli
from domain.policy import PaymentPolicy, PaymentState

RESULTS = ROOT / "bench" / "results"
DEFAULT_POSTGRES = "postgresql+asyncpg://root@127.0.0.1/test"


def policy_micro_bench() -> float:
    """The payment policy alone: µs per decide() call."""
    policy = PaymentPolicy()
    t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    state = PaymentState(discharged_at=t0, balance_fen=5000, in_arrears=True, last_dunning_at=t0 + timedelta(days=1))
    n = 20_000
    return timeit.timeit(lambda: policy.decide(state, t0 + timedelta(days=2)), number=n) / n * 1e6


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    cli = subprocess.run([temporal_cli(), "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    status = ["git", "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": cli,
        "commit": commit.stdout.strip(),
        "dirty": bool(dirty),  # "product" is the worktree: uncommitted changes included
    }


def per_visit(run: Result) -> dict[str, float]:
    """CPU milliseconds each process spent per visit, and the machine's other load in cores."""
    resources = run.extra.get("resources", {})
    visits = run.visits or 1
    out = {f"{name}_cpu_ms_per_visit": round(s * 1000 / visits, 1) for name, s in resources.get("cpu_s", {}).items()}
    wall = resources.get("wall_s") or 1
    out["outside_cores"] = round(resources.get("outside_s", 0) / wall, 2)  # other work on the machine meanwhile
    return out


def table(runs: list[Result]) -> list[dict[str, Any]]:
    raw = {r.in_flight: r.visits_per_s for r in runs if r.side == "raw"}
    rows = []
    for r in runs:
        row = r.summary()
        row["ratio"] = round(r.visits_per_s / raw[r.in_flight], 2) if raw.get(r.in_flight) else None
        if "rev" in r.extra:
            row["rev"] = r.extra["rev"]
        row.update(per_visit(r))
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'side':<17}{'db':<11}{'in flight':>9}{'visits':>7}{'visits/s':>9}"
    head += f"{'ack p50':>9}{'p95':>8}{'p99':>8}{'pay p50':>9}{'ratio':>7}{'errors':>7}{'others':>8}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        line = f"{r['side']:<17}{r['db']:<11}{r['in_flight']:>9}{r['visits']:>7}{r['visits_per_s']:>9.2f}"
        line += f"{r['ack_p50_ms']:>7.0f}ms{r['ack_p95_ms']:>6.0f}ms{r['ack_p99_ms']:>6.0f}ms{r['pay_p50_ms']:>7.0f}ms"
        line += f"{ratio:>7}{len(r['errors']):>7}{r['outside_cores']:>7.2f}c"
        print(line)
    print("(ack: registration and each event for the product, each update for raw Temporal; pay: the window")
    print(" payment's 201 (settled) / the pay signal and the workflow's end; others: cores busy outside the run)")
    print("\nCPU ms per visit, by process:")
    for r in rows:
        cpu = {k.removesuffix("_cpu_ms_per_visit"): v for k, v in r.items() if k.endswith("_cpu_ms_per_visit")}
        print(
            f"  {r['side']:<17}{r['db']:<11}{r['in_flight']:>3}  " + "  ".join(f"{k} {v:.0f}" for k, v in cpu.items())
        )
    if any(r.get("ack_ms_by_kind") for r in rows):
        print("\nAck p50/p95 ms by request (the product's registration and each event type):")
        for r in rows:
            if kinds := r.get("ack_ms_by_kind"):
                print(f"  {r['side']:<17}{r['db']:<11}{r['in_flight']:>3}")
                print("    " + "  ".join(f"{k} {v['p50']:.0f}/{v['p95']:.0f}" for k, v in kinds.items()))


async def product_on(db: str, postgres_url: str, in_flight: int, visits: int, profile: Path | None) -> Result:
    """The product's run on SQLite or on a throwaway PostgreSQL database beside `postgres_url`."""
    saved = os.environ.pop("YHF_TEST_DATABASE_URL", None)
    if db == "postgresql":
        os.environ["YHF_TEST_DATABASE_URL"] = postgres_url
    try:
        return await run_product(in_flight, visits, profile)
    finally:
        os.environ.pop("YHF_TEST_DATABASE_URL", None)
        if saved is not None:
            os.environ["YHF_TEST_DATABASE_URL"] = saved


async def attempt(runs: list[Result], what: str, run: Awaitable[Result]) -> None:
    """One run, its figures printed; one that fails outright is told and the others go on."""
    print(f"{what} ...", flush=True)
    try:
        result = await run
    except Exception as err:
        print(f"  failed: {type(err).__name__}: {err}", flush=True)
        return
    runs.append(result)
    print(f"  {result.visits_per_s:.2f} visits/s, ack p50 {result.ack_ms(0.5):.0f} ms, {len(result.errors)} errors")
    for error in result.errors[:3]:
        print(f"    {error}")


async def run_all(args: argparse.Namespace) -> list[Result]:
    runs: list[Result] = []
    for n in args.in_flight:
        if "raw" in args.sides:
            await attempt(
                runs, f"raw Temporal, {n} in flight, {n * args.raw_rounds} visits", run_raw(n, n * args.raw_rounds)
            )
        if "raw" in args.sides and args.raw_regular:
            what = f"raw Temporal (regular activities), {n} in flight, {n * args.raw_rounds} visits"
            await attempt(runs, what, run_raw(n, n * args.raw_rounds, "regular"))
        for db in args.db if "product" in args.sides else []:
            if db == "postgresql" and n not in args.postgres_in_flight:
                continue
            for base in args.baselines:
                what = f"{base.side} ({base.subject[:50]}) on {db}, {n} in flight, {n * args.rounds} visits"
                run = run_baseline(base, db, args.postgres_url, n, args.rounds, args.profile)
                await attempt(runs, what, run)
            what = f"product on {db}, {n} in flight, {n * args.rounds} visits"
            await attempt(runs, what, product_on(db, args.postgres_url, n, n * args.rounds, args.profile))
    return runs


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sides", nargs="+", choices=["raw", "product"], default=["raw", "product"])
    parser.add_argument("--rounds", type=int, default=3, help="product visits per in-flight slot (default 3)")
    parser.add_argument("--raw-rounds", type=int, default=6, help="raw visits per in-flight slot (default 6)")
    pg = parser.add_mutually_exclusive_group()
    pg.add_argument("--postgres", action="store_true", help="PostgreSQL too (YHF_TEST_DATABASE_URL or local)")
    pg.add_argument("--no-postgres", action="store_true", help="SQLite only, even with YHF_TEST_DATABASE_URL")
    pg.add_argument("--db", nargs="+", choices=["sqlite", "postgresql"], help="the product on these databases")
    parser.add_argument("--postgres-in-flight", type=int, nargs="+", help="PostgreSQL only at these (default all)")
    parser.add_argument("--raw-regular", action="store_true", help="raw Temporal with regular activities too")
    parser.add_argument("--profile", type=Path, help="py-spy the API and the worker into this folder")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and the PNG go")
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="REV",
        help="the product at this git revision too, interleaved, as product@REV (repeatable)",
    )
    args = parser.parse_args()
    if args.against and "product" not in args.sides:
        parser.error("--against compares the product: keep the product side")
    args.postgres_url = os.environ.get("YHF_TEST_DATABASE_URL") or DEFAULT_POSTGRES
    with_postgres = not args.no_postgres and (args.postgres or "YHF_TEST_DATABASE_URL" in os.environ)
    args.db = args.db or (["sqlite", "postgresql"] if with_postgres else ["sqlite"])
    args.postgres_in_flight = args.postgres_in_flight or args.in_flight
    return args


def main() -> None:
    args = arguments()
    started = datetime.now(UTC)
    policy_us = policy_micro_bench()
    print(f"policy.decide: {policy_us:.1f} µs per call", flush=True)
    exported = Path(tempfile.mkdtemp(prefix="yhf-against-"))
    args.baselines, skipped = [], []
    try:
        for rev in args.against:
            try:
                base: Baseline = export(rev, exported)
            except NoBaseline as err:
                print(f"--against {rev}: skipped: {err}", flush=True)
                skipped.append({"rev": rev, "why": str(err)})
                continue
            print(f"--against {rev}: {base.commit[:12]} {base.subject[:70]} (exported to {base.tree})", flush=True)
            args.baselines.append(base)
        runs = asyncio.run(run_all(args))
    finally:
        shutil.rmtree(exported, ignore_errors=True)
    rows = table(runs)
    comparisons = compare(rows)
    print()
    print_table(rows)
    print_comparison(comparisons)
    for skip in skipped:
        print(f"(--against {skip['rev']} skipped: {skip['why']})")
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    host = machine()
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": "python -m bench.ratio " + shlex.join(sys.argv[1:]),
        "machine": host,
        "policy_decide_us": round(policy_us, 2),
        "table": rows,
        **({"baselines": [b.describe() for b in args.baselines], "against": comparisons} if args.against else {}),
        **({"baselines_skipped": skipped} if skipped else {}),
        "runs": [{**row, **r.to_json()} for row, r in zip(rows, runs, strict=True)],
    }
    (args.out / f"{stamp}.json").write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    commit = host["commit"] + ("+" if host["dirty"] else "")  # +: with uncommitted changes
    title = f"{stamp} · {host['cores']} cores, {host['cpu']} · commit {commit} · {report['command']}"
    plot(report["runs"], title, args.out / f"{stamp}.png")
    print(f"\nwrote {args.out / f'{stamp}.json'} and {args.out / f'{stamp}.png'}")


if __name__ == "__main__":
    main()
