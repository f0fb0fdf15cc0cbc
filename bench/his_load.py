"""The product side of the ratio benchmark: a HIS-like load generator over the HTTP contract.

Each visit: registration, the 11 events of tests/flows.py STEPS each awaited, then the bill paid
at the window (`POST /v1/ops/payments` with an Idempotency-Key; its 201 comes once the visit is
settled). A request is retried as a HIS would, with the same body (the same `visit_id`, the same
`event_id`, the same key) on a 5xx or a broken connection; an ack's latency runs from its first
attempt to its 2xx. The stack is the embedded one (devstack.Stack: dev server, worker, API,
simulators) on free ports in a temporary folder, on SQLite or on a throwaway PostgreSQL database.
Afterwards the rows each table holds are counted, in Yihoufu's database and in Temporal's."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.measure import Meter, Result
from db.models import Base
from db.session import create_engine
from devstack import Stack
from tests.flows import STEPS, Clinic
from tests.support import free_port, fresh_database, uid
from workflows.contracts import workflow_id

HIS = {"Authorization": "Bearer dev-his-key"}
OPS = {"Authorization": "Bearer dev-ops-key"}


class His:
    """One hospital's HIS: awaits every answer, retries what failed with the same request."""

    def __init__(self, http: httpx.AsyncClient, result: Result, t0: float) -> None:
        self.http, self.result, self.t0 = http, result, t0
        self.due_after_discharge = 0  # read-your-writes: the `discharged` ack shows the visit due

    async def send(
        self, request: Callable[[], Awaitable[httpx.Response]], what: str, *, ack: bool = True
    ) -> httpx.Response:
        first, delay = time.perf_counter(), 0.1
        while True:
            try:
                r = await request()
            except httpx.TransportError as err:
                problem = type(err).__name__
            else:
                if r.status_code < 300:
                    if ack:
                        latency = time.perf_counter() - first
                        self.result.acks.append((first - self.t0, latency))
                        self.result.by_kind.setdefault(what.split(" ")[0], []).append(latency)
                    return r
                if r.status_code < 500:
                    raise RuntimeError(f"{what}: {r.status_code} {r.text[:300]}")
                problem = f"{r.status_code}"
            self.result.retries += 1
            if time.perf_counter() - first > 120:
                raise RuntimeError(f"{what}: gave up after 120 s: {problem}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def visit(self, patient_id: str, *, counted: bool = True) -> str:
        visit_id = uid("V")
        body: dict[str, Any] = {"visit_id": visit_id, "patient_id": patient_id, "department": "呼吸内科"}
        body.update(channel="kiosk", registration_fee_fen=500)
        await self.send(lambda: self.http.post("/v1/his/visits", json=body, headers=HIS), "registration")
        answer: dict[str, Any] = {}
        for type_, fields in STEPS:
            event = {"event_id": uid("ev"), "type": type_, "occurred_at": datetime.now(UTC).isoformat(), **fields}
            post = partial(self.http.post, f"/v1/his/visits/{visit_id}/events", json=event, headers=HIS)
            answer = (await self.send(post, f"{type_} ({event['event_id']})")).json()
        self.due_after_discharge += answer["payment_status"] == "due"
        pay = {
            "patient_id": patient_id,
            "visit_ids": [visit_id],
            "amount_fen": answer["bill"]["balance_fen"],
            "method": "cash",
        }
        headers = {**OPS, "Idempotency-Key": f"bench-{visit_id}"}
        started = time.perf_counter()
        await self.send(lambda: self.http.post("/v1/ops/payments", json=pay, headers=headers), "payment", ack=False)
        if counted:
            self.result.pay.append(time.perf_counter() - started)
            self.result.visits += 1
        return visit_id


def new_stack(tmp: Path, url: str) -> Stack:
    return Stack(
        data_dir=tmp / "data",
        api_port=free_port(),
        temporal_port=free_port(),
        headless=True,
        wechat_port=free_port(),
        alipay_port=free_port(),
        env={"YHF_DATABASE_URL": url},
        log_dir=tmp / "logs",
    )


def profilers(stack: Stack, into: Path | None, label: str) -> list[subprocess.Popen[bytes]]:
    """py-spy on the API and the worker (collapsed stacks, on-CPU samples) when `into` is given."""
    if into is None:
        return []
    into.mkdir(parents=True, exist_ok=True)
    spies = []
    for name in ("api", "worker"):
        out = into / f"{label}-{name}.txt"
        args = ["py-spy", "record", "--pid", str(stack.procs[name].pid), "--format", "raw", "--output", str(out)]
        spies.append(
            subprocess.Popen([*args, "--rate", "97", "--nonblocking", "--full-filenames"], stdout=subprocess.DEVNULL)
        )
    return spies


async def load(stack: Stack, url: str, in_flight: int, visits: int, profile: Path | None) -> Result:
    db = "postgresql" if url.startswith("postgresql") else "sqlite"
    result = Result(side="product", db=db, in_flight=in_flight)
    limits = httpx.Limits(max_connections=in_flight + 4, max_keepalive_connections=in_flight + 4)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, limits=limits) as http:
        clinic = Clinic.over(http, HIS)
        patients = [(await clinic.enrolled_patient())[0] for _ in range(in_flight)]
        his = His(http, Result(side="warm-up", db=db, in_flight=1), time.perf_counter())
        try:  # warm-up: the first workflow, the first queries
            warm_up: str | None = await his.visit(patients[0], counted=False)
        except RuntimeError as err:
            result.errors.append(f"warm-up {err}"[:400])
            warm_up = None
        mine = ("api", "worker", "temporal")
        processes = {name: [stack.procs[name].pid] for name in mine}
        processes["simulators"] = [proc.pid for name, proc in stack.procs.items() if name not in mine]
        processes["driver"] = [os.getpid()]
        if db == "postgresql":  # the server processes serving this database's connections
            processes["postgres"] = await backends(url)
        spies = profilers(stack, profile, f"{db}-{in_flight}")
        meter = Meter(processes)
        his = His(http, result, time.perf_counter())
        queue: asyncio.Queue[str] = asyncio.Queue()
        for p in patients:  # a patient walks one visit at a time, so each payment settles its own visit
            queue.put_nowait(p)

        async def one() -> None:
            patient = await queue.get()
            try:
                await his.visit(patient)
            except Exception as err:  # counted and shown: a benchmark keeps going
                result.errors.append(f"{type(err).__name__}: {err}"[:400])
            finally:
                queue.put_nowait(patient)

        await asyncio.gather(*(one() for _ in range(visits)))
        result.elapsed_s = time.perf_counter() - his.t0
        if db == "postgresql":
            meter.include("postgres", await backends(url))
        result.extra["resources"] = meter.read()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.wait, 60)
        settled = await http.get("/v1/ops/visits", params={"payment_status": "settled", "limit": 500}, headers=OPS)
        result.extra["settled_visits"] = len(settled.json())
        result.extra["due_after_discharged_ack"] = his.due_after_discharge
        result.extra["patients"] = len(patients)
        result.extra["warm_up_visits"] = 1
        if warm_up:
            result.extra["visit_history"] = await history_of(f"127.0.0.1:{stack.temporal_port}", warm_up)
    return result


async def history_of(address: str, visit_id: str) -> dict[str, Any]:
    """The events and bytes of one settled visit's workflow history (the warm-up visit's)."""
    client = await Client.connect(address)
    history = await client.get_workflow_handle(workflow_id(visit_id)).fetch_history()
    kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)
    return {"events": len(history.events), "bytes": sum(e.ByteSize() for e in history.events), "kinds": dict(kinds)}


async def backends(url: str) -> list[int]:
    """The PostgreSQL server processes of the other connections to this database."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            return [pid for (pid,) in await conn.execute(text(query))]
    finally:
        await engine.dispose()


async def table_rows(url: str) -> dict[str, Any]:
    """Rows in each of Yihoufu's tables, and the database's size in bytes."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = {
                t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one()
                for t in Base.metadata.sorted_tables
            }
            tables: dict[str, int] = {}
            if engine.dialect.name == "postgresql":
                size = (await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar_one()
                for t in rows:  # each table with its indexes and TOAST
                    query = text("SELECT pg_total_relation_size(CAST(:t AS regclass))")
                    tables[t] = (await conn.execute(query, {"t": t})).scalar_one()
            else:
                size = sum(p.stat().st_size for p in Path(str(engine.url.database)).parent.glob("test.db*"))
    finally:
        await engine.dispose()
    return {"rows": {k: v for k, v in rows.items() if v}, "bytes": size, "table_bytes": tables}


def temporal_rows(db_file: Path) -> dict[str, Any]:
    """Rows in each table of the dev server's SQLite persistence, and its size."""
    with sqlite3.connect(db_file) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    size = sum(p.stat().st_size for p in db_file.parent.glob(db_file.name + "*"))
    return {"rows": {k: v for k, v in rows.items() if v}, "bytes": size}


async def run_product(in_flight: int, visits: int, profile: Path | None = None) -> Result:
    """A fresh stack and database (PostgreSQL with YHF_TEST_DATABASE_URL, else SQLite), the load,
    the rows counted, everything stopped."""
    with tempfile.TemporaryDirectory(prefix="yhf-bench-") as tmp:
        async with fresh_database(Path(tmp)) as url:
            empty = await table_rows(url)
            stack = new_stack(Path(tmp), url)
            try:
                await asyncio.to_thread(stack.start)
                result = await load(stack, url, in_flight, visits, profile)
            finally:
                await asyncio.to_thread(stack.stop)
            if result.errors:  # the stack's logs kept for a look at what failed
                kept = Path(tempfile.mkdtemp(prefix="yhf-bench-failed-"))
                shutil.copytree(Path(tmp) / "logs", kept / "logs")
                result.extra["logs_kept_in"] = str(kept)
            after = await table_rows(url)
            after["bytes_grown"] = after["bytes"] - empty["bytes"]
            result.extra["yihoufu_db"] = after
            result.extra["temporal_db"] = temporal_rows(Path(tmp) / "data" / "temporal.db")
            return result
