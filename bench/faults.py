"""Fault run: kill -9 of the worker, the API and Temporal under load, then count what was lost.

`python -m bench.faults [--visits 30] [--clients 4] [--postgres]` starts a supervised stack on
free ports in a temporary folder (SQLite; PostgreSQL with --postgres or YHF_TEST_DATABASE_URL,
in a throwaway database), enrols one patient per visit, and has a few concurrent clients walk
every visit to discharge, each request retried on failure with the same event_id (the same
visit_id for registration). Meanwhile the worker, then the API, then Temporal are killed with
SIGKILL; the supervisor restarts the worker and the API, Temporal is kept down for 10 s. Then
every bill is paid at the window with an Idempotency-Key, retried likewise, half while the
visits are due and half once they are in arrears, while Temporal is killed and kept down for
20 s, and then the API is killed again. Afterwards it reads every visit, card and text back and
prints what was acknowledged, lost, doubled and settled, and any sanction of a patient who had
paid. Loopback only; bounded in count and time; it stops everything it started."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from db.models import Visit
from db.session import create_engine
from devstack import Stack
from tests.flows import STEPS, Clinic
from tests.support import free_port, fresh_database, uid

HIS = {"Authorization": "Bearer dev-his-key"}
OPS = {"Authorization": "Bearer dev-ops-key"}
# short policy durations, so arrears, reminders and default happen during the run; no quiet hours,
# so the run does not depend on the hour it starts at
POLICY = {
    "YHF_ARREARS_AFTER": "PT15S",
    "YHF_DUNNING_EVERY": "PT10S",
    "YHF_PRE_DEFAULT_NOTICE": "PT20S",
    "YHF_DEFAULT_AFTER": "PT60S",
    "YHF_SMS_QUIET_HOURS": "",
}
TOTAL_FEN = 500 + 2500 + 20000 + 3000
SANCTIONS = {"arrears", "dunning", "dunning_defaulted", "pre_default", "card_locked"}
GIVE_UP_AFTER = 180.0  # seconds of retrying one request


@dataclass
class Run:
    stack: Stack
    http: httpx.AsyncClient
    gate: asyncio.Semaphore  # at most `clients` requests' walks at once
    events_acked: dict[str, set[str]] = field(default_factory=dict)  # visit -> acknowledged event_ids
    payments_acked: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # patient -> (fen, acked at)
    failures: Counter[str] = field(default_factory=Counter)  # what a failed attempt got
    slowest_failure: float = 0.0  # the longest a 5xx answer took
    slowest_ack: float = 0.0  # the longest from a request's first attempt to its acknowledgement
    refused: list[str] = field(default_factory=list)  # 4xx answers to a retry: findings
    abandoned: int = 0
    payments_sent: int = 0
    kills: list[str] = field(default_factory=list)
    held: list[asyncio.Task[None]] = field(default_factory=list)

    async def retrying(
        self, send: Callable[[], Awaitable[httpx.Response]], ok: tuple[int, ...]
    ) -> httpx.Response | None:
        """Send until one of `ok` comes back; 5xx and broken connections are retried, other answers are kept."""
        first = time.monotonic()
        deadline, delay = first + GIVE_UP_AFTER, 0.2
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                r = await send()
            except httpx.TransportError as err:
                self.failures[type(err).__name__] += 1
            else:
                if r.status_code in ok:
                    self.slowest_ack = max(self.slowest_ack, time.monotonic() - first)
                    return r
                if r.status_code < 500:
                    self.refused.append(f"{r.status_code} {r.text[:200]}")
                    return None
                kind = r.json().get("code", "") if r.headers.get("content-type", "").endswith("json") else "text"
                self.failures[f"{r.status_code} {kind}"] += 1
                self.slowest_failure = max(self.slowest_failure, time.monotonic() - started)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self.abandoned += 1
        return None

    def kill(self, name: str, hold: float = 0.0) -> None:
        """kill -9 from outside; the supervisor brings it back, or, held, we do after `hold` seconds."""
        proc = self.stack.procs.get(name)
        if proc is None:
            return
        self.kills.append(
            f"{name}@{sum(map(len, self.events_acked.values()))}ev/{len(self.payments_acked)}pay"
            + (f" (down {hold:g} s)" if hold else "")
        )
        if hold:
            self.stack.kill(name)  # out of supervision while it is held down
            self.held.append(asyncio.create_task(self.bring_back(name, hold)))
        else:
            os.kill(proc.pid, signal.SIGKILL)

    async def bring_back(self, name: str, after: float) -> None:
        await asyncio.sleep(after)
        await asyncio.to_thread(getattr(self.stack, f"start_{name}"))

    async def chaos(self, planned_events: int, planned_payments: int, *, faults: bool = True) -> None:
        # (share of the events acknowledged or of the payments sent, child, seconds held down: 0 = the
        # supervisor restarts it)
        events = [(0.25, "worker", 0), (0.5, "api", 0), (0.75, "temporal", 10)] if faults else []
        payments = [(0.2, "temporal", 20), (0.7, "api", 0)] if faults else []
        while events or payments:
            acked = sum(map(len, self.events_acked.values()))
            if events and acked >= events[0][0] * planned_events:
                self.kill(*events.pop(0)[1:])
            if payments and self.payments_sent > payments[0][0] * planned_payments:
                self.kill(*payments.pop(0)[1:])
            await asyncio.sleep(0.05)

    async def visit(self, patient_id: str) -> str:
        visit_id = uid("V")
        body = {
            "visit_id": visit_id,
            "patient_id": patient_id,
            "department": "内科",
            "channel": "kiosk",
            "registration_fee_fen": 500,
        }
        if await self.retrying(lambda: self.http.post("/v1/his/visits", json=body, headers=HIS), (200, 201)) is None:
            return visit_id
        acked = self.events_acked.setdefault(visit_id, set())
        for type_, fields in STEPS:
            event = {
                "event_id": uid("ev"),
                "type": type_,
                "occurred_at": datetime.now(UTC).isoformat(),
                **fields,
            }
            r = await self.retrying(
                partial(self.http.post, f"/v1/his/visits/{visit_id}/events", json=event, headers=HIS), (200,)
            )
            if r is None:
                return visit_id
            acked.add(event["event_id"])
        return visit_id

    async def pay(self, patient_id: str, visit_id: str) -> None:
        r = await self.retrying(lambda: self.http.get(f"/v1/his/visits/{visit_id}", headers=HIS), (200,))
        owed = r.json()["bill"]["balance_fen"] if r is not None else 0
        if owed <= 0:
            return
        body = {"patient_id": patient_id, "amount_fen": owed, "method": "cash"}
        headers = {**OPS, "Idempotency-Key": f"fault-{patient_id}"}
        self.payments_sent += 1
        if (
            await self.retrying(lambda: self.http.post("/v1/ops/payments", json=body, headers=headers), (200, 201))
            is not None
        ):
            self.payments_acked[patient_id] = (owed, datetime.now(UTC))


async def main(visits: int, clients: int, settle_timeout: float, faults: bool, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = str(keep) if keep else tmp
        async with fresh_database(Path(tmp)) as url:
            stack = Stack(
                data_dir=Path(tmp) / "data",
                api_port=free_port(),
                temporal_port=free_port(),
                headless=True,
                wechat_port=free_port(),
                alipay_port=free_port(),
                env={**POLICY, "YHF_DATABASE_URL": url},
                log_dir=Path(tmp) / "logs",
            )
            try:
                await asyncio.to_thread(stack.start)
                stack.supervise()
                await fault_run(stack, url, visits, clients, settle_timeout, faults)
            finally:
                await asyncio.to_thread(stack.stop)


@dataclass(frozen=True)
class ReadBack:
    """What the API shows at the end, and what each visit's workflow last recorded."""

    patients: list[tuple[str, str]]  # (patient_id, phone)
    views: list[Any]  # the visits
    texts: list[Any]  # each patient's texts
    cards: list[Any]  # each patient's insurance card
    recorded: dict[str, str]  # visit_id -> the payment status in the database


async def fault_run(stack: Stack, url: str, visits: int, clients: int, settle_timeout: float, faults: bool) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        run = Run(stack, http, asyncio.Semaphore(clients))
        clinic = Clinic.over(http, HIS)

        async def enrolled() -> tuple[str, str]:
            async with run.gate:
                return await clinic.enrolled_patient()

        patients = await asyncio.gather(*(enrolled() for _ in range(visits)))  # before any fault

        async def walk(patient_id: str) -> str:
            async with run.gate:
                return await run.visit(patient_id)

        started = time.monotonic()
        chaos = asyncio.create_task(run.chaos(visits * len(STEPS), visits, faults=faults))
        visit_ids = await asyncio.gather(*(walk(p) for p, _ in patients))
        await pay_due_then_late(run, [(p, v) for (p, _), v in zip(patients, visit_ids, strict=True)])
        chaos.cancel()
        await asyncio.gather(*run.held)
        load_seconds = time.monotonic() - started
        seen = await read_back(run, url, patients, visit_ids, settle_timeout)
        database = url.split(":", 1)[0].split("+", 1)[0]
        report(run, database, visits, clients, load_seconds, seen)


async def read(run: Run, path: str) -> Any:
    r = await run.retrying(lambda: run.http.get(path, headers=HIS), (200,))
    return r.json() if r is not None else None


async def pay_due_then_late(run: Run, pairs: list[tuple[str, str]]) -> None:
    """Half the bills are paid while the visits are due, the other half once they are in arrears."""

    async def pay(patient_id: str, visit_id: str) -> None:
        async with run.gate:
            await run.pay(patient_id, visit_id)

    await asyncio.gather(*(pay(p, v) for p, v in pairs[::2]))
    late = pairs[1::2]
    deadline = time.monotonic() + 60
    while late and time.monotonic() < deadline:
        views = [await read(run, f"/v1/his/visits/{v}") for _, v in late]
        if all(v and v["payment_status"] != "due" for v in views):
            break
        await asyncio.sleep(1)
    await asyncio.gather(*(pay(p, v) for p, v in late))


async def read_back(
    run: Run, url: str, patients: list[tuple[str, str]], visit_ids: list[str], settle_timeout: float
) -> ReadBack:
    """Once every visit is settled (or `settle_timeout` has passed), and a while longer."""
    deadline = time.monotonic() + settle_timeout
    while time.monotonic() < deadline:
        views = [await read(run, f"/v1/his/visits/{v}") for v in visit_ids]
        if all(v and v["payment_status"] == "settled" for v in views):
            break
        await asyncio.sleep(1)
    await asyncio.sleep(25)  # two reminder intervals: a stale workflow would text the paid patient by now
    views = [await read(run, f"/v1/his/visits/{v}") for v in visit_ids]
    texts = [await read(run, f"/v1/sandbox/sms?phone={phone}") for _, phone in patients]
    cards = [await read(run, f"/v1/sandbox/insurance-cards/{p}") for p, _ in patients]
    engine = create_engine(url)  # the status each visit's workflow last recorded, beside what the API shows
    async with engine.connect() as conn:
        recorded = dict((await conn.execute(select(Visit.id, Visit.payment_status))).all())
    await engine.dispose()
    return ReadBack(patients=patients, views=views, texts=texts, cards=cards, recorded=recorded)


def bill_findings(run: Run, views: list[Any]) -> tuple[int, int, int, int, int]:
    """Events lost and duplicated, charges and payments booked twice, discharged visits with a wrong total."""
    lost = duplicated_events = double_charges = double_payments = wrong_total = 0
    for view in views:
        ids = [e["event_id"] for e in view["events"]]
        lost += len(run.events_acked.get(view["visit_id"], set()) - set(ids))
        duplicated_events += len(ids) - len(set(ids))
        charges = Counter(line["item_id"] or line["code"] for line in view["bill"]["lines"] if line["kind"] == "charge")
        double_charges += sum(n - 1 for n in charges.values())
        paid = Counter(p["payment_id"] for p in view["bill"]["payments"] if p["kind"] == "payment")
        double_payments += sum(n - 1 for n in paid.values())
        wrong_total += view["stage"] == "discharged" and view["bill"]["total_fen"] != TOTAL_FEN
    return lost, duplicated_events, double_charges, double_payments, wrong_total


def after_payment(run: Run, seen: ReadBack) -> tuple[int, int, int, int, int]:
    """Of the patients who paid: booked beyond what they paid, not settled, sanctioned with nothing
    owed, card still locked, sanction texts sent after they paid."""
    by_patient = {view["patient_id"]: view for view in seen.views}
    paid_patients = [p for p, _ in seen.patients if p in run.payments_acked]
    booked_beyond = sum(by_patient[p]["bill"]["paid_fen"] > run.payments_acked[p][0] for p in paid_patients)
    unsettled_paid = sum(by_patient[p]["payment_status"] != "settled" for p in paid_patients)
    sanctioned_at_zero = sum(
        v["bill"]["balance_fen"] == 0
        and bool({v["payment_status"], seen.recorded.get(v["visit_id"])} & {"arrears", "defaulted"})
        for v in seen.views
    )
    locked_after = sum(
        bool(card and card["locked"])
        for (p, _), card in zip(seen.patients, seen.cards, strict=True)
        if p in run.payments_acked
    )
    texts_after = sum(
        1
        for (p, _), msgs in zip(seen.patients, seen.texts, strict=True)
        if p in run.payments_acked
        for m in msgs or []
        if m["template"] in SANCTIONS and datetime.fromisoformat(m["sent_at"]) > run.payments_acked[p][1]
    )
    return booked_beyond, unsettled_paid, sanctioned_at_zero, locked_after, texts_after


def report(run: Run, database: str, visits: int, clients: int, load_seconds: float, seen: ReadBack) -> None:
    lost, duplicated_events, double_charges, double_payments, wrong_total = bill_findings(run, seen.views)
    booked_beyond, unsettled_paid, sanctioned_at_zero, locked_after, texts_after = after_payment(run, seen)
    views = seen.views
    reached = Counter(t for msgs in seen.texts for m in msgs or [] for t in [m["template"]] if t in SANCTIONS)
    statuses = Counter(v["payment_status"] for v in views).most_common()
    rows = [
        ("visits / clients", f"{visits} / {clients}"),
        ("kill -9 (at acked events/payments)", ", ".join(run.kills)),
        ("restarts by the supervisor", ", ".join(f"{n} ({rc})" for n, rc in run.stack.restarts)),
        ("time under load (events, payments)", f"{load_seconds:.0f} s"),
        ("events acknowledged (200)", sum(map(len, run.events_acked.values()))),
        ("events lost (acked, not in the visit)", lost),
        ("events duplicated (event_id twice)", duplicated_events),
        ("charges booked twice", double_charges),
        ("discharged visits with a wrong total", wrong_total),
        ("payments acknowledged (201/200)", len(run.payments_acked)),
        ("payments booked twice / beyond the amount", f"{double_payments} / {booked_beyond}"),
        ("visits settled", f"{sum(v['payment_status'] == 'settled' for v in views)} of {len(views)}"),
        ("payment status at the end", ", ".join(f"{k} {n}" for k, n in statuses)),
        ("paid patients not settled", unsettled_paid),
        ("arrears/defaulted with balance 0 (API or workflow)", sanctioned_at_zero),
        ("card still locked after payment", locked_after),
        ("欠费/dunning/lock texts after payment", texts_after),
        ("sanction texts sent in the run (all)", ", ".join(f"{k} {n}" for k, n in sorted(reached.items())) or "none"),
        ("failed attempts, retried", ", ".join(f"{k}: {n}" for k, n in run.failures.most_common()) or "none"),
        ("slowest 5xx answer", f"{run.slowest_failure:.1f} s"),
        ("longest until acknowledged (with retries)", f"{run.slowest_ack:.1f} s"),
        ("requests refused on retry (4xx)", len(run.refused)),
        ("requests abandoned after 180 s", run.abandoned),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"fault run on {database}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for answer in run.refused[:5]:
        print(f"  refused: {answer}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="on a throwaway database beside postgresql+asyncpg://root@127.0.0.1/test",
    )
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--no-faults", action="store_true", help="the same load with nothing killed: a baseline")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (logs, databases) for a look")
    args = parser.parse_args()
    if args.postgres:
        os.environ.setdefault("YHF_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1/test")
    asyncio.run(main(args.visits, args.clients, args.settle_timeout, not args.no_faults, args.keep))
