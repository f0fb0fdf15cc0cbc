"""A hospital's day, compressed (issue 12): the visits of a 20,000-visit outpatient day, with its
morning peak and its mix of walks, played through the HTTP contract in a chosen number of minutes.

    python -m bench.hospital_day --minutes 10 --sample 0.02      (make bench-day; DAY_ARGS=...)

Clock: the day's 24 hours run in `--minutes` (10: one hospital hour in 25 s), and every wait in a
visit (the queue before the doctor, the lab, the pharmacy, the infusion) is shrunk by the same
factor. Load: `--sample` of the day's visits is played (0.02: 400 of 20,000), arriving at random
in their hour as the hourly profile says; each is a HIS that awaits every ack and retries with
the same request (bench/his_load.py `His`). The walks: a consultation with drugs, one with a lab
and an exam and their results, one whose exam is cancelled, one with a skin test and an infusion,
and one that ends with the registration fee. After discharge most patients pay at the window;
the others go home owing, and their visits stay open, parked on the payment timers.

It shows a live progress bar and prints what a hospital asks: ack latency by hour of the day,
visits settled and left owing, each process's memory (resident now and at peak), and the visit
workflows open and parked. Everything goes to bench/results/day-<stamp>.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import Client

from bench.his_load import HIS, OPS, His, new_stack
from bench.measure import Result, pct, rss_mb
from devstack import ROOT, Stack
from domain.policy import UNPAID
from tests.flows import Clinic, item
from tests.support import fresh_database, uid

RESULTS = ROOT / "bench" / "results"
DAY_VISITS = 20_000
# each hour's share of the day's arrivals: the queue before eight, the morning peak, lunch, the
# afternoon, the evening clinic and the emergency department at night
HOURLY = [2, 1, 1, 1, 1, 2, 10, 55, 125, 135, 115, 75, 25, 50, 95, 90, 70, 45, 25, 20, 15, 10, 5, 3]

Step = tuple[float, str, dict[str, Any]]  # (minutes of the hospital's clock before it, type, fields)


def _opening(channel: str) -> list[Step]:
    return [(0, "checked_in", {"channel": channel}), (20, "called", {}), (1, "consultation_started", {})]


def _closing() -> list[Step]:
    return [(1, "consultation_ended", {}), (15, "dispensed", {}), (2, "discharged", {})]


def drugs() -> list[Step]:
    return [*_opening("app"), (6, "prescribed", {"items": [item("d1", "drug", 3000, 2)]}), *_closing()]


def exams() -> list[Step]:
    return [
        *_opening("nurse_station"),
        (5, "orders_placed", {"items": [item("lab", "lab", 2500), item("ct", "exam", 20000)]}),
        (1, "consultation_ended", {}),
        (50, "results_ready", {"item_ids": ["lab", "ct"]}),
        (10, "consultation_started", {}),
        (5, "prescribed", {"items": [item("d1", "drug", 4200)]}),
        *_closing(),
    ]


def cancelled_exam() -> list[Step]:
    return [
        *_opening("app"),
        (5, "orders_placed", {"items": [item("lab", "lab", 2500), item("mri", "exam", 60000)]}),
        (3, "orders_cancelled", {"item_ids": ["mri"]}),
        (1, "consultation_ended", {}),
        (40, "results_ready", {"item_ids": ["lab"]}),
        (10, "consultation_started", {}),
        (5, "prescribed", {"items": [item("d1", "drug", 1800)]}),
        *_closing(),
    ]


def infusion() -> list[Step]:
    prescription = {"items": [item("abx", "drug", 4500), item("iv", "infusion", 3000)], "skin_test_required": True}
    return [
        *_opening("nurse_station"),
        (6, "prescribed", prescription),
        (20, "skin_test_result", {"result": "negative"}),
        (1, "consultation_ended", {}),
        (10, "dispensed", {}),
        (10, "infusion_started", {}),
        (90, "infusion_finished", {}),
        (2, "discharged", {}),
    ]


def registration_only() -> list[Step]:
    return [*_opening("app"), (8, "consultation_ended", {}), (1, "discharged", {})]


# the walks and their shares of a day's visits
MIX: list[tuple[str, int, Callable[[], list[Step]]]] = [
    ("drugs", 35, drugs),
    ("exams", 28, exams),
    ("cancelled exam", 7, cancelled_exam),
    ("infusion", 12, infusion),
    ("registration only", 18, registration_only),
]
WALKS = {name: steps for name, _, steps in MIX}
PAY_SHARE = 0.8  # the patients who pay at the window before they leave; the others go home owing


@dataclass(frozen=True)
class Planned:
    arrive_min: float  # minutes after midnight, on the hospital's clock
    walk: str
    pays: bool


def plan(visits: int, seed: int) -> list[Planned]:
    """The day's visits in arrival order: `visits` spread over the hours by HOURLY (largest
    remainders), each at a random minute of its hour, with its walk and whether it pays."""
    rng = random.Random(seed)
    total = sum(HOURLY)
    exact = [visits * w / total for w in HOURLY]
    counts = [int(x) for x in exact]
    for h in sorted(range(24), key=lambda h: exact[h] - counts[h], reverse=True)[: visits - sum(counts)]:
        counts[h] += 1
    names, weights = [m[0] for m in MIX], [m[1] for m in MIX]
    day = [
        Planned(
            arrive_min=h * 60 + rng.random() * 60, walk=rng.choices(names, weights)[0], pays=rng.random() < PAY_SHARE
        )
        for h, n in enumerate(counts)
        for _ in range(n)
    ]
    return sorted(day, key=lambda p: p.arrive_min)


def walk_minutes(walk: str) -> float:
    return sum(minutes for minutes, _, _ in WALKS[walk]())


def peak_open(day: list[Planned]) -> int:
    """The most visits under way at once if every ack were instant (a floor for the patients needed)."""
    edges = sorted([(p.arrive_min, 1) for p in day] + [(p.arrive_min + walk_minutes(p.walk), -1) for p in day])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@dataclass
class Day:
    """What the run saw, by hour of the hospital's clock."""

    factor: float  # hospital seconds per real second
    t0: float = field(default_factory=time.perf_counter)
    acks_by_hour: dict[int, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def hour(self) -> int:
        return min(23, int((time.perf_counter() - self.t0) * self.factor // 3600))

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


class HourlyHis(His):
    """The HIS of bench/his_load.py, its acks also filed by the hour of the hospital's clock."""

    def __init__(self, http: httpx.AsyncClient, result: Result, day: Day) -> None:
        super().__init__(http, result, day.t0)
        self.day = day

    async def send(self, request: Any, what: str, *, ack: bool = True) -> httpx.Response:
        hour, before = self.day.hour(), len(self.result.acks)
        response = await super().send(request, what, ack=ack)
        if len(self.result.acks) > before:
            self.day.acks_by_hour.setdefault(hour, []).append(self.result.acks[-1][1])
        return response

    async def walk(self, patient_id: str, planned: Planned) -> None:
        visit_id = uid("V")
        body = {
            "visit_id": visit_id,
            "patient_id": patient_id,
            "department": "呼吸内科",
            "channel": "kiosk",
            "registration_fee_fen": 500,
        }
        await self.send(lambda: self.http.post("/v1/his/visits", json=body, headers=HIS), "registration")
        answer: dict[str, Any] = {}
        for minutes, type_, fields in WALKS[planned.walk]():
            await asyncio.sleep(minutes * 60 / self.day.factor)
            event = {"event_id": uid("ev"), "type": type_, "occurred_at": datetime.now(UTC).isoformat(), **fields}
            post = partial(self.http.post, f"/v1/his/visits/{visit_id}/events", json=event, headers=HIS)
            answer = (await self.send(post, f"{type_} ({event['event_id']})")).json()
        self.day.count("discharged")
        if not planned.pays:
            self.day.count("left owing")
            return
        await asyncio.sleep(5 * 60 / self.day.factor)  # to the window
        pay = {"patient_id": patient_id, "visit_ids": [visit_id], "amount_fen": answer["bill"]["balance_fen"]}
        headers = {**OPS, "Idempotency-Key": f"day-{visit_id}"}
        window = partial(self.http.post, "/v1/ops/payments", json={**pay, "method": "cash"}, headers=headers)
        await self.send(window, "payment", ack=False)
        self.day.count("settled")


async def open_visits(client: Client) -> tuple[int, int]:
    """(visit workflows running, of which parked: discharged, owing, waiting on the payment timers;
    the others are under way, or settled and open for their refund window)."""
    running = "WorkflowType = 'VisitWorkflow' AND ExecutionStatus = 'Running'"
    total = await client.count_workflows(running)
    owing = ", ".join(f"'{status}'" for status in sorted(UNPAID))
    parked = await client.count_workflows(f"{running} AND PaymentStatus IN ({owing})")
    return total.count, parked.count


async def watch(stack: Stack, client: Client, day: Day, stop: asyncio.Event, every_s: float) -> None:
    pids = {name: stack.procs[name].pid for name in ("api", "worker", "temporal")}
    while not stop.is_set():
        running, parked = await open_visits(client)
        sample: dict[str, Any] = {"t_s": round(time.perf_counter() - day.t0, 1), "hour": day.hour(), "running": running}
        sample |= {"parked": parked, "rss_mb": {n: round(rss_mb(p), 1) for n, p in pids.items()}}
        day.samples.append(sample)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


async def enrol(http: httpx.AsyncClient, n: int) -> asyncio.Queue[str]:
    clinic, pool = Clinic.over(http, HIS), asyncio.Queue[str]()
    gate = asyncio.Semaphore(8)

    async def one() -> None:
        async with gate:
            pool.put_nowait((await clinic.enrolled_patient())[0])

    await asyncio.gather(*(one() for _ in range(n)))
    return pool


async def play(stack: Stack, day_plan: list[Planned], minutes: float, console: Console) -> dict[str, Any]:
    factor = 24 * 3600 / (minutes * 60)
    result = Result(side="hospital-day", db="", in_flight=0)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120, limits=limits) as http:
        patients = peak_open(day_plan) * 2 + sum(not p.pays for p in day_plan) + 8
        console.print(f"enrolling {patients} patients ...")
        pool = await enrol(http, patients)
        client = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
        day, stop = Day(factor=factor), asyncio.Event()
        his = HourlyHis(http, result, day)
        watcher = asyncio.create_task(watch(stack, client, day, stop, every_s=max(1.0, minutes * 60 / 240)))
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, TextColumn("{task.fields[status]}"), console=console) as bar:
            task = bar.add_task("visits", total=len(day_plan), status="")

            async def one(planned: Planned) -> None:
                await asyncio.sleep(max(0.0, planned.arrive_min * 60 / factor - (time.perf_counter() - day.t0)))
                patient = await pool.get()
                try:
                    await his.walk(patient, planned)
                except Exception as err:  # counted and shown: a benchmark keeps going
                    result.errors.append(f"{type(err).__name__}: {err}"[:400])
                finally:
                    if planned.pays:
                        pool.put_nowait(patient)
                    bar.advance(task)
                    recent = [lat for _, lat in result.acks[-200:]]
                    status = f"{day.hour():02d}:00  acks {len(result.acks)}  p95 {pct(recent, 0.95) * 1000:.0f} ms"
                    bar.update(task, status=f"{status}  errors {len(result.errors)}")

            await asyncio.gather(*(one(p) for p in day_plan))
        result.elapsed_s = time.perf_counter() - day.t0
        stop.set()
        await watcher
        running, parked = await open_visits(client)
    return report(day, result, running, parked)


def report(day: Day, result: Result, running: int, parked: int) -> dict[str, Any]:
    by_hour = {
        h: {"acks": len(xs), **{f"p{q}_ms": round(pct(xs, q / 100) * 1000, 1) for q in (50, 95, 99)}}
        for h, xs in sorted(day.acks_by_hour.items())
    }
    names = ("api", "worker", "temporal")
    memory = {
        n: {
            "end_mb": day.samples[-1]["rss_mb"][n] if day.samples else 0.0,
            "peak_mb": max((s["rss_mb"][n] for s in day.samples), default=0.0),
        }
        for n in names
    }
    return {
        "elapsed_s": round(result.elapsed_s, 1),
        "acks": len(result.acks),
        "ack_p50_ms": round(result.ack_ms(0.5), 1),
        "ack_p95_ms": round(result.ack_ms(0.95), 1),
        "ack_p99_ms": round(result.ack_ms(0.99), 1),
        "ack_ms_by_hour": by_hour,
        "visits": day.counts,
        "retries": result.retries,
        "errors": result.errors[:20],
        "memory_mb": memory,
        "open_visit_workflows_at_end": running,
        "parked_on_timers_at_end": parked,
        "samples": day.samples,
    }


def print_report(figures: dict[str, Any], console: Console) -> None:
    table = Table(title="ack latency by hour of the hospital's day")
    for column in ("hour", "acks", "p50 ms", "p95 ms", "p99 ms", "open visits", "parked"):
        table.add_column(column, justify="right")
    for hour, row in figures["ack_ms_by_hour"].items():
        at = [s for s in figures["samples"] if s["hour"] == hour]
        opened = max((s["running"] for s in at), default=0)
        parked = max((s["parked"] for s in at), default=0)
        cells = [f"{hour:02d}:00", str(row["acks"]), f"{row['p50_ms']:.0f}", f"{row['p95_ms']:.0f}"]
        table.add_row(*cells, f"{row['p99_ms']:.0f}", str(opened), str(parked))
    console.print(table)
    visits = figures["visits"]
    console.print(
        f"visits discharged {visits.get('discharged', 0)}, settled {visits.get('settled', 0)}, "
        f"left owing {visits.get('left owing', 0)}; errors {len(figures['errors'])}, retries {figures['retries']}"
    )
    console.print(
        f"acks {figures['acks']}: p50 {figures['ack_p50_ms']:.0f} ms, p95 {figures['ack_p95_ms']:.0f} ms, "
        f"p99 {figures['ack_p99_ms']:.0f} ms"
    )
    for name, mem in figures["memory_mb"].items():
        console.print(f"{name:>8}: resident {mem['end_mb']:.0f} MB at the end, {mem['peak_mb']:.0f} MB at most")
    console.print(
        f"visit workflows open at the end: {figures['open_visit_workflows_at_end']}, "
        f"of which parked on the payment timers: {figures['parked_on_timers_at_end']}"
    )


async def main(args: argparse.Namespace) -> None:
    console = Console()
    day_plan = plan(round(DAY_VISITS * args.sample), args.seed)
    console.print(
        f"a {DAY_VISITS:,}-visit day in {args.minutes:g} min: {len(day_plan)} visits played ({args.sample:.1%}), "
        f"peak hour {max(HOURLY) / sum(HOURLY):.1%} of them, walks {', '.join(m[0] for m in MIX)}"
    )
    with tempfile.TemporaryDirectory(prefix="yhf-day-") as tmp:
        async with fresh_database(Path(tmp)) as url:
            stack = new_stack(Path(tmp), url)
            try:
                await asyncio.to_thread(stack.start)
                figures = await play(stack, day_plan, args.minutes, console)
            finally:
                await asyncio.to_thread(stack.stop)
    figures |= {"minutes": args.minutes, "sample": args.sample, "visits_played": len(day_plan), "seed": args.seed}
    figures["db"] = "postgresql" if url.startswith("postgresql") else "sqlite"
    print_report(figures, console)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"day-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(figures, indent=1, ensure_ascii=False))
    console.print(f"written to {out.relative_to(ROOT)}")


def cli() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="real minutes the 24-hour day runs in")
    parser.add_argument("--sample", type=float, default=0.02, help="share of the 20,000 visits played")
    parser.add_argument("--seed", type=int, default=20261130, help="the random arrivals' and walks' seed")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(cli()))
