"""The raw side of the ratio benchmark: Temporal alone, in the shape of a visit.

`python -m bench.raw [--in-flight 8] [--visits 64] [--activity local|regular]` starts its own
dev server (the `temporal` CLI the stack uses, SQLite persistence in a temporary folder, on a free
port) and a worker process (bench/raw_workflow.py, the SDK's default sandboxed runner as the
product's worker has), then walks the visits with that many in flight: the workflow started, 12
updates each awaited (a no-op activity in each), the pay signal, the workflow's completion. It
prints visits/s and update latency p50/p95/p99, and stops what it started. `bench.ratio` calls
`run_raw` for the comparison with the product."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from bench.measure import Meter, Result
from bench.raw_workflow import EVENTS, RawVisit, noop
from devstack import ROOT, temporal_cli, wait_for_port
from tests.support import free_port


def start_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    args = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless"]
    args += ["--db-filename", str(data / "temporal.db"), "--log-level", "warn"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_port(port)
    return server


def start_worker(address: str, task_queue: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "bench.raw", "--worker", address, task_queue]
    return subprocess.Popen(args, cwd=ROOT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def serve(address: str, task_queue: str) -> None:
    """The worker process: runs until SIGTERM, then shuts down gracefully."""
    client = await Client.connect(address)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    async with Worker(client, task_queue=task_queue, workflows=[RawVisit], activities=[noop]):
        await stopping.wait()


async def walk(client: Client, task_queue: str, mode: str, result: Result | None, t0: float) -> None:
    """One visit; its update latencies and payment go to `result` (None: a warm-up, not counted)."""
    handle = await client.start_workflow(RawVisit.run, id=f"raw-{uuid.uuid4().hex}", task_queue=task_queue)
    for _ in range(EVENTS):
        sent = time.perf_counter()
        await handle.execute_update(RawVisit.record_event, mode)
        if result is not None:
            result.acks.append((sent - t0, time.perf_counter() - sent))
    sent = time.perf_counter()
    await handle.signal(RawVisit.payment_received)
    await handle.result()
    if result is not None:
        result.pay.append(time.perf_counter() - sent)
        result.visits += 1


async def drive(address: str, task_queue: str, in_flight: int, visits: int, mode: str, meter_of: dict) -> Result:
    client = await Client.connect(address)
    result = Result(side="raw" if mode == "local" else "raw-regular", db="sqlite", in_flight=in_flight)
    await walk(client, task_queue, mode, None, 0.0)  # warm-up: the worker's first workflow
    gate = asyncio.Semaphore(in_flight)
    meter = Meter({**meter_of, "driver": [os.getpid()]})
    t0 = time.perf_counter()

    async def one() -> None:
        async with gate:
            try:
                await walk(client, task_queue, mode, result, t0)
            except Exception as err:  # counted, shown in the table's errors: a benchmark keeps going
                result.errors.append(f"{type(err).__name__}: {err}"[:200])

    await asyncio.gather(*(one() for _ in range(visits)))
    result.elapsed_s = time.perf_counter() - t0
    result.extra["resources"] = meter.read()
    return result


async def run_raw(in_flight: int, visits: int, mode: str = "local") -> Result:
    """Its own dev server and worker, the visits walked, everything stopped."""
    with tempfile.TemporaryDirectory(prefix="yhf-raw-") as tmp:
        port = free_port()
        server = await asyncio.to_thread(start_server, Path(tmp), port)
        worker = None
        try:
            address, task_queue = f"127.0.0.1:{port}", f"raw-{uuid.uuid4().hex[:8]}"
            worker = start_worker(address, task_queue)
            processes = {"temporal": [server.pid], "worker": [worker.pid]}
            return await drive(address, task_queue, in_flight, visits, mode, processes)
        finally:
            for proc in (worker, server):
                if proc is not None:
                    await asyncio.to_thread(stop, proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("ADDRESS", "TASK_QUEUE"), help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--visits", type=int, default=64)
    parser.add_argument("--activity", choices=["local", "regular"], default="local")
    args = parser.parse_args()
    if args.worker:
        asyncio.run(serve(*args.worker))
        return
    result = asyncio.run(run_raw(args.in_flight, args.visits, args.activity))
    print(json.dumps({**result.summary(), "resources": result.extra["resources"]}, indent=2))


if __name__ == "__main__":
    main()
