"""Replicas (issue 11 item 6): two worker processes and two API processes against one Temporal
dev server and one PostgreSQL database, started as `make dev` starts its children.

A load is shared between the APIs by a round-robin here, each request retried on a 5xx or a
broken connection with the same event_id / Idempotency-Key, as a HIS behind a load balancer
would. Under it one worker and one API are killed with SIGKILL; afterwards nothing acknowledged
is lost and nothing is booked twice. Meanwhile several visits of one patient default at the same
moment and their card locks are taken by both workers: the per-patient mutex (a PostgreSQL
advisory lock) lets exactly one `lock` reach the bureau. The test holds that advisory lock
itself for a while, so both workers have lock activities in hand, and sends one worker SIGTERM:
it finishes them and exits 0 within its grace period.

PostgreSQL only: on SQLite a deployment runs one worker (the mutex is a lock in its process)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client

from db.session import create_engine
from devstack import Stack
from tests.e2e.conftest import SHORT
from tests.flows import STEPS, Clinic
from tests.support import free_port, fresh_database, uid
from workflows import contracts as c

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("YHF_TEST_DATABASE_URL"),
        reason="replicas run on PostgreSQL (set YHF_TEST_DATABASE_URL); on SQLite a deployment runs one worker",
    ),
]

HIS = {"Authorization": "Bearer dev-his-key"}
OPS = {"Authorization": "Bearer dev-ops-key"}
LOAD_VISITS = 10  # walked registration -> discharge, then paid at the window
CLIENTS = 6  # requests in flight at once
MUTEX_PATIENTS, MUTEX_VISITS = 2, 5  # each patient's visits default at the same moment
GRACE = 10.0  # YHF_WORKER_SHUTDOWN_GRACE
# activities per worker: fewer than all the card locks (MUTEX_PATIENTS x MUTEX_VISITS), so both
# workers hold some; room for the rest of the load beside them
MAX_ACTIVITIES = 7
WALK_TOTAL = 500 + 2500 + 20000 + 3000  # registration, lab, CT, drug (tests.flows.STEPS)
MUTEX_FEE = 500
FAILED = {EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED, EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT}


def advisory_key(patient_id: str) -> int:
    """The key of the patient's advisory lock, as db.repositories.patient_mutex derives it."""
    return int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:8], "big", signed=True)


@dataclass
class RoundRobin:
    """The HIS's side of a load balancer: each attempt goes to the next API process; a 5xx or a
    broken connection is tried again (on the next one) with the same body and headers."""

    urls: list[str]
    http: httpx.AsyncClient
    turn: count[int] = field(default_factory=count)
    failures: Counter[str] = field(default_factory=Counter)
    by_api: Counter[str] = field(default_factory=Counter)  # acknowledged answers per API
    give_up_after: float = 60.0

    async def send(self, method: str, path: str, ok: tuple[int, ...], **kw: Any) -> httpx.Response:
        deadline, delay = time.monotonic() + self.give_up_after, 0.1
        while True:
            base = self.urls[next(self.turn) % len(self.urls)]
            try:
                r = await self.http.request(method, base + path, **kw)
            except httpx.TransportError as err:
                self.failures[type(err).__name__] += 1
            else:
                if r.status_code in ok:
                    self.by_api[base] += 1
                    return r
                assert r.status_code >= 500, f"{method} {path}: {r.status_code} {r.text}"
                problem = r.json() if "json" in r.headers.get("content-type", "") else {}
                self.failures[f"{r.status_code} {problem.get('code', '')}".strip()] += 1
            assert time.monotonic() < deadline, f"{method} {path} not acknowledged in {self.give_up_after:.0f}s"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def clinic(self) -> Clinic:
        async def post(path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
            return await self.send("POST", path, (200, 201, 202), json=body, headers=headers)

        async def get(path: str, headers: dict[str, str]) -> httpx.Response:
            return await self.send("GET", path, (200,), headers=headers)

        return Clinic(post, get, HIS)

    async def visit(self, visit_id: str) -> dict[str, Any]:
        r = await self.send("GET", f"/v1/his/visits/{visit_id}", (200,), headers=HIS)
        view: dict[str, Any] = r.json()
        return view


@dataclass
class Load:
    rr: RoundRobin
    gate: asyncio.Semaphore
    acked: dict[str, list[str]] = field(default_factory=dict)  # visit -> acknowledged event_ids
    paid: dict[str, int] = field(default_factory=dict)  # patient -> fen acknowledged at the window
    walked: int = 0  # events of the walks acknowledged

    def events(self) -> int:
        return sum(map(len, self.acked.values()))

    async def register(self, patient_id: str, fee: int) -> str:
        visit_id = uid("V")
        body = {
            "visit_id": visit_id,
            "patient_id": patient_id,
            "department": "内科",
            "channel": "kiosk",
            "registration_fee_fen": fee,
        }
        await self.rr.send("POST", "/v1/his/visits", (200, 201), json=body, headers=HIS)
        self.acked[visit_id] = []
        return visit_id

    async def event(self, visit_id: str, type_: str, **fields: Any) -> None:
        body = {"event_id": uid("ev"), "type": type_, "occurred_at": datetime.now(UTC).isoformat(), **fields}
        await self.rr.send("POST", f"/v1/his/visits/{visit_id}/events", (200,), json=body, headers=HIS)
        self.acked[visit_id].append(body["event_id"])

    async def pay(self, patient_id: str, amount_fen: int) -> None:
        body = {"patient_id": patient_id, "amount_fen": amount_fen, "method": "cash"}
        headers = {**OPS, "Idempotency-Key": f"replicas-{patient_id}"}
        await self.rr.send("POST", "/v1/ops/payments", (200, 201), json=body, headers=headers)
        self.paid[patient_id] = amount_fen

    async def walk_and_pay(self, patient_id: str) -> str:
        """Registration -> discharge (tests.flows.STEPS), then the balance paid at the window."""
        async with self.gate:
            visit_id = await self.register(patient_id, 500)
            for type_, fields in STEPS:
                await self.event(visit_id, type_, **fields)
                self.walked += 1
            owed = (await self.rr.visit(visit_id))["bill"]["balance_fen"]
            await self.pay(patient_id, owed)
            return visit_id


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Stack, list[str]]]:
    """The stack as `make dev` starts it, and a second worker and API: the stack and both APIs' URLs."""
    async with fresh_database(tmp_path) as url:
        s = Stack(
            data_dir=tmp_path / "data",
            api_port=free_port(),
            temporal_port=free_port(),
            headless=True,
            wechat_port=free_port(),
            alipay_port=free_port(),
            env={
                **SHORT,
                "YHF_DATABASE_URL": url,
                "YHF_WORKER_SHUTDOWN_GRACE": f"PT{GRACE:g}S",
                # no worker can take every card lock in hand: both hold some, whatever the matching
                "YHF_WORKER_MAX_CONCURRENT_ACTIVITIES": str(MAX_ACTIVITIES),
            },
            log_dir=tmp_path / "logs",
        )
        try:
            await asyncio.to_thread(s.start)  # "worker" and "api", as `make dev` starts them
            await asyncio.to_thread(s.start_worker, "worker2")
            api2_port = free_port()
            await asyncio.to_thread(s.start_api, "api2", api2_port)
            yield s, [s.api_url, f"http://127.0.0.1:{api2_port}"]
        finally:
            await asyncio.to_thread(s.stop)


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection of the test's own to the stack's database (its advisory locks are the test's)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


def identities(stack: Stack) -> dict[str, str]:
    """Each live worker's Temporal identity (the SDK's default, pid@host) -> its child name."""
    host = socket.gethostname()
    return {f"{proc.pid}@{host}": name for name, proc in stack.procs.items() if name.startswith("worker")}


async def lock_activities_in_hand(client: Client, visit_ids: list[str], timeout: float = 60.0) -> dict[str, str]:
    """Wait until every visit's lock_card activity is started (held in a worker); visit -> worker identity."""
    deadline = time.monotonic() + timeout
    while True:
        held: dict[str, str] = {}
        for visit_id in visit_ids:
            desc = await client.get_workflow_handle(c.workflow_id(visit_id)).describe()
            for pending in desc.raw_description.pending_activities:
                if (
                    pending.activity_type.name == c.LOCK_CARD
                    and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                ):
                    held[visit_id] = pending.last_worker_identity
        if len(held) == len(visit_ids):
            return held
        assert time.monotonic() < deadline, f"lock_card in hand for {len(held)} of {len(visit_ids)} visits"
        await asyncio.sleep(0.3)


async def activity_outcomes(client: Client, visit_id: str) -> list[tuple[str, int, str, int, str]]:
    """(activity, attempt, started by, outcome event type, closed by) of each activity in the history."""
    scheduled: dict[int, str] = {}
    started: dict[int, tuple[int, str]] = {}
    out: list[tuple[str, int, str, int, str]] = []
    async for event in client.get_workflow_handle(c.workflow_id(visit_id)).fetch_history_events():
        t = event.event_type
        if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            st = event.activity_task_started_event_attributes
            started[st.scheduled_event_id] = (st.attempt, st.identity)
        elif t in FAILED or t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            a = (
                event.activity_task_completed_event_attributes
                if t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                else event.activity_task_failed_event_attributes
                if t == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                else event.activity_task_timed_out_event_attributes
            )
            attempt, by = started.get(a.scheduled_event_id, (0, ""))
            closer = str(getattr(a, "identity", ""))
            out.append((scheduled[a.scheduled_event_id], attempt, by, int(t), closer))
    return out


async def until(fetch: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f}s; last: {value}"
        await asyncio.sleep(0.5)


async def test_two_workers_two_apis_killed_and_stopped_under_load(replicas: tuple[Stack, list[str]]) -> None:
    stack, urls = replicas
    url = stack.child_env()["YHF_DATABASE_URL"]
    assert url.startswith("postgresql"), url
    started = time.monotonic()
    client = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
    async with httpx.AsyncClient(timeout=20) as http, connection(url) as holder:
        rr = RoundRobin(urls, http)
        load = Load(rr, asyncio.Semaphore(CLIENTS))
        clinic = rr.clinic()
        enrol_gate = asyncio.Semaphore(CLIENTS)

        async def enrolled() -> str:
            async with enrol_gate:
                return (await clinic.enrolled_patient())[0]

        patients = await asyncio.gather(*(enrolled() for _ in range(LOAD_VISITS + MUTEX_PATIENTS)))
        load_patients, mutex_patients = patients[:LOAD_VISITS], patients[LOAD_VISITS:]

        # the mutex patients: the test holds each one's advisory lock, so that the card locks of
        # their visits, all defaulting at once, wait in the workers' hands
        for p in mutex_patients:
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(p)})
        mutex_visits = {p: [await load.register(p, MUTEX_FEE) for _ in range(MUTEX_VISITS)] for p in mutex_patients}
        all_mutex = [v for vs in mutex_visits.values() for v in vs]

        # the load, and kill -9 of worker2 (a quarter of the walks' events in) and of api2 (half of them in)
        planned = LOAD_VISITS * len(STEPS)
        walks = asyncio.gather(*(load.walk_and_pay(p) for p in load_patients))
        kills: list[str] = []
        for share, name in ((0.25, "worker2"), (0.5, "api2")):
            while load.walked < share * planned and not walks.done():
                await asyncio.sleep(0.02)
            kills.append(f"{name} at {load.walked} events")
            await asyncio.to_thread(stack.kill, name)
            if name == "worker2":
                # its replacement (as compose's restart policy brings it back); then the mutex
                # patients' visits are discharged together: they default while both workers run
                await asyncio.to_thread(stack.start_worker, "worker2")
                await asyncio.gather(*(load.event(v, "discharged") for v in all_mutex))
        workers = identities(stack)
        assert set(workers.values()) == {"worker", "worker2"}

        # the card locks in hand: both workers hold some; one worker is sent SIGTERM
        held = await lock_activities_in_hand(client, all_mutex)
        holders = Counter(workers.get(identity, identity) for identity in held.values())
        print(f"\ncard locks in hand when the lock was let go: {dict(holders)}")
        assert set(holders) == {"worker", "worker2"}, holders
        split = [p for p, vs in mutex_visits.items() if len({held[v] for v in vs}) == 2]
        assert split, "no patient's card locks were in both workers' hands"
        stopping = stack.procs["worker"]
        stopping_identity = next(i for i, n in workers.items() if n == "worker")
        sigterm_at = time.monotonic()
        os.kill(stopping.pid, signal.SIGTERM)
        await asyncio.sleep(1.5)  # it stops polling; its activities still wait for the mutex
        assert stopping.poll() is None, "the worker left before the activities in its hands were done"
        for p in mutex_patients:
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(p)})
        await holder.commit()
        exit_code = await asyncio.to_thread(stopping.wait, GRACE + 10)
        stopped_in = time.monotonic() - sigterm_at
        print(f"worker sent SIGTERM exited {exit_code} after {stopped_in:.1f}s (grace {GRACE:g}s)")
        assert exit_code == 0
        assert stopped_in < GRACE

        load_visits = await walks

        # the mutex patients pay everything once their visits are defaulted
        async def defaulted(visit_id: str) -> bool:
            return (await rr.visit(visit_id))["payment_status"] == "defaulted"

        for p, vs in mutex_visits.items():
            for v in vs:
                await until(partial(defaulted, v), bool, timeout=30)
            await load.pay(p, MUTEX_FEE * MUTEX_VISITS)

        async def views() -> list[dict[str, Any]]:
            return [await rr.visit(v) for v in [*load_visits, *all_mutex]]

        seen = await until(views, lambda vs: all(v["payment_status"] == "settled" for v in vs), timeout=60)
        load_seconds = time.monotonic() - started

        # nothing lost or doubled
        for view in seen:
            ids = [e["event_id"] for e in view["events"]]
            assert len(ids) == len(set(ids)), f"an event twice in {view['visit_id']}"
            assert set(load.acked[view["visit_id"]]) <= set(ids), f"an acknowledged event lost in {view['visit_id']}"
            bill = view["bill"]
            charges = Counter(line["item_id"] or line["code"] for line in bill["lines"] if line["kind"] == "charge")
            assert max(charges.values()) == 1, f"a charge booked twice: {charges}"
            assert bill["total_fen"] == (WALK_TOTAL if view["visit_id"] in load_visits else MUTEX_FEE)
            payments = Counter(p["payment_id"] for p in bill["payments"] if p["kind"] == "payment")
            assert max(payments.values()) == 1 and bill["balance_fen"] == 0, bill
        paid_by: Counter[str] = Counter()
        for view in seen:
            paid_by[view["patient_id"]] += view["bill"]["paid_fen"]
        assert dict(paid_by) == load.paid  # every payment booked once, in full

        # the mutex held across the workers: one lock at the bureau per patient, one unlock after paying
        for p in mutex_patients:
            card = (await rr.send("GET", f"/v1/sandbox/insurance-cards/{p}", (200,))).json()
            assert [e["action"] for e in card["events"]] == ["lock", "unlock"] and not card["locked"], card

        # no activity failed or timed out in any visit; those the stopped worker held it finished
        outcomes = {v: await activity_outcomes(client, v) for v in [*load_visits, *all_mutex]}
        failed = [(v, o) for v, os_ in outcomes.items() for o in os_ if o[3] in FAILED]
        assert not failed, failed
        its_locks = [v for v, identity in held.items() if identity == stopping_identity]
        for v in its_locks:
            [lock] = [o for o in outcomes[v] if o[0] == c.LOCK_CARD]
            assert lock[1:4] == (1, stopping_identity, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED), lock

    events = load.events()
    print(
        f"replicas on PostgreSQL: {len(seen)} visits ({LOAD_VISITS} walked, {MUTEX_PATIENTS}x{MUTEX_VISITS} defaulted "
        f"together), {events} events and {len(load.paid)} window payments acknowledged in {load_seconds:.0f}s; "
        f"kill -9: {', '.join(kills)}; answers by API: {dict(rr.by_api)}; "
        f"failed attempts retried: {dict(rr.failures) or 'none'}; "
        f"lock activities finished by the stopped worker: {len(its_locks)}"
    )
