"""What parked visits cost (issue 12): the ratio benchmark's product load on an empty stack, then
on a stack holding `--parked` visits that are discharged and unpaid, each one an open workflow
waiting on its payment timers, as after a busy week.

    python -m bench.parked --parked 5000 --in-flight 8 --rounds 3      (make bench-parked)

For each side a fresh embedded stack (bench/his_load.py `new_stack`, SQLite or PostgreSQL with
YHF_TEST_DATABASE_URL). The parked side first registers and discharges the visits (a 5-yuan
registration fee each, so each is `due`), through the HTTP contract, 32 at a time, then runs the
same load as the empty side. It prints visits/s, ack p50/p99, and the resident memory of the
worker and the Temporal server (after parking and after the load) on either side, and writes
bench/results/parked-<stamp>.json. The worker keeps at most YHF_WORKER_MAX_CACHED_WORKFLOWS
workflows in memory: its memory follows that cache, not the visits parked."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from bench.his_load import HIS, His, load, new_stack
from bench.hospital_day import enrol, open_visits
from bench.measure import Result, rss_mb
from devstack import ROOT, Stack
from tests.support import fresh_database, uid

RESULTS = ROOT / "bench" / "results"


async def park(stack: Stack, visits: int, in_flight: int = 32) -> dict[str, Any]:
    """`visits` visits registered and discharged at once, left unpaid."""
    limits = httpx.Limits(max_connections=in_flight + 4, max_keepalive_connections=in_flight + 4)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=120, limits=limits) as http:
        pool = await enrol(http, 20)
        patients = [pool.get_nowait() for _ in range(20)]
        his = His(http, Result(side="parking", db="", in_flight=in_flight), time.perf_counter())
        gate = asyncio.Semaphore(in_flight)

        async def one(n: int) -> None:
            visit_id = uid("P")
            body: dict[str, Any] = {
                "visit_id": visit_id,
                "patient_id": patients[n % len(patients)],
                "department": "呼吸内科",
            }
            body |= {"channel": "kiosk", "registration_fee_fen": 500}
            event = {"event_id": uid("ev"), "type": "discharged", "occurred_at": datetime.now(UTC).isoformat()}
            async with gate:
                await his.send(lambda: http.post("/v1/his/visits", json=body, headers=HIS), "registration")
                url = f"/v1/his/visits/{visit_id}/events"
                await his.send(lambda: http.post(url, json=event, headers=HIS), "discharged")

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(visits)))
        return {"parked": visits, "parking_s": round(time.perf_counter() - started, 1), "retries": his.result.retries}


def memory(stack: Stack) -> dict[str, float]:
    return {name: round(rss_mb(stack.procs[name].pid), 1) for name in ("api", "worker", "temporal")}


async def side(parked: int, in_flight: int, visits: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="yhf-parked-") as tmp:
        async with fresh_database(Path(tmp)) as url:
            stack = new_stack(Path(tmp), url)
            try:
                await asyncio.to_thread(stack.start)
                figures: dict[str, Any] = {"parked": 0, "rss_mb_before_load": memory(stack)}
                if parked:
                    figures |= await park(stack, parked)
                    await asyncio.sleep(5)  # the last tasks settle
                    figures["rss_mb_before_load"] = memory(stack)
                result = await load(stack, url, in_flight, visits, None)
                figures["rss_mb_after_load"] = memory(stack)
                client = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
                figures["open_visit_workflows"], figures["parked_on_timers"] = await open_visits(client)
            finally:
                await asyncio.to_thread(stack.stop)
    figures["db"] = "postgresql" if url.startswith("postgresql") else "sqlite"
    return figures | {"load": result.summary(), "resources": result.extra.get("resources", {})}


def print_sides(empty: dict[str, Any], full: dict[str, Any]) -> None:
    print(f"{'':>26} {'empty':>12} {'parked ' + str(full['parked']):>14}")
    rows = [
        ("visits/s", "visits_per_s", "{:.2f}"),
        ("ack p50 ms", "ack_p50_ms", "{:.0f}"),
        ("ack p99 ms", "ack_p99_ms", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:>26} {fmt.format(empty['load'][key]):>12} {fmt.format(full['load'][key]):>14}")
    for when in ("rss_mb_before_load", "rss_mb_after_load"):
        for name in ("worker", "temporal", "api"):
            label = f"{name} MB {when.removeprefix('rss_mb_').replace('_', ' ')}"
            print(f"{label:>26} {empty[when][name]:>12.0f} {full[when][name]:>14.0f}")
    cost = 1 - full["load"]["visits_per_s"] / empty["load"]["visits_per_s"] if empty["load"]["visits_per_s"] else 0
    print(f"{'throughput cost':>26} {cost:>27.1%}")
    print(
        f"parking {full['parked']} visits took {full.get('parking_s', 0)} s; open visit workflows at the end: "
        f"{full['open_visit_workflows']} ({full['parked_on_timers']} parked on the payment timers)"
    )


async def main(args: argparse.Namespace) -> None:
    visits = args.in_flight * args.rounds
    print(f"the product, {args.in_flight} in flight, {visits} visits: on an empty stack ...")
    empty = await side(0, args.in_flight, visits)
    print(f"  {empty['load']['visits_per_s']} visits/s; now with {args.parked} visits parked ...")
    full = await side(args.parked, args.in_flight, visits)
    print_sides(empty, full)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"parked-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({"empty": empty, "parked": full}, indent=1, ensure_ascii=False))
    print(f"written to {out.relative_to(ROOT)}")


def cli() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parked", type=int, default=5000, help="visits parked on the payment timers")
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="visits per slot in flight in the load")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(cli()))
