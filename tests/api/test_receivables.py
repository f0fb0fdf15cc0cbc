"""Receivables by age and by department (v1.1), and the v1 answer without `by`, unchanged.

The visits are rows written straight into a database of this module's own (the workflow is not
what is tested here), emptied before each test, so every figure is exact. The bucket edges are
checked against the query with a pinned `as_of`; over HTTP (where `as_of` is now) the ages are
days away from any edge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import receivables as r
from db.models import LedgerEntry, Patient, Visit
from db.session import create_engine, session_factory
from domain.bill import SIGN, Entry, EntryKind, totals
from tests.flows import assert_problem
from tests.support import add_patient, fresh_database, uid

AS_OF = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
DAY = timedelta(days=1)
BUCKETS = ["0-1d", "1-7d", "7-30d", "30-90d", "90d+"]


# This module's own database (overriding the session's in tests/conftest.py): the aggregates see
# only the visits these tests write.
@pytest.fixture(scope="module")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with fresh_database(tmp_path_factory.mktemp("receivables")) as url:
        yield url


@pytest.fixture(scope="module")
async def factory(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(autouse=True)
async def empty(factory: async_sessionmaker[AsyncSession]) -> None:
    async with factory() as session, session.begin():
        for model in (LedgerEntry, Visit, Patient):
            await session.execute(delete(model))


async def visit(
    factory: async_sessionmaker[AsyncSession],
    *,
    discharged_at: datetime | None,
    status: str = "due",
    department: str = "内科",
    entries: Sequence[tuple[EntryKind, int]] = (),
) -> str:
    """A visit as the workflow leaves it, with its ledger entries (amounts as the kinds give them)."""
    patient_id = await add_patient(factory, enrolled=False)
    visit_id = uid("v")
    at = discharged_at or AS_OF
    async with factory() as session, session.begin():
        session.add(
            Visit(
                id=visit_id,
                patient_id=patient_id,
                department=department,
                doctor=None,
                channel="kiosk",
                registration_fee_fen=0,
                request_hash="x",
                stage="discharged" if discharged_at else "registered",
                payment_status=status,
                discharged_at=discharged_at,
                arrears_at=None,
                due_at=None,
                created_at=at,
                updated_at=at,
            )
        )
        await session.flush()
        for i, (kind, fen) in enumerate(entries):
            session.add(
                LedgerEntry(
                    idempotency_key=f"{visit_id}:{i}",
                    visit_id=visit_id,
                    patient_id=patient_id,
                    kind=str(kind),
                    amount_fen=fen,
                    created_at=at,
                )
            )
    return visit_id


async def owing(factory: async_sessionmaker[AsyncSession], fen: int, age: timedelta, **kw: str) -> str:
    return await visit(factory, discharged_at=AS_OF - age, entries=[(EntryKind.charge, fen)], **kw)


async def by_age(factory: async_sessionmaker[AsyncSession], as_of: datetime = AS_OF) -> dict[str, tuple[int, int]]:
    async with factory() as session:
        found = await r.by_age(session, as_of=as_of)
    assert [b.bucket for b in found.buckets] == BUCKETS and found.as_of == as_of
    assert found.total_fen == sum(b.balance_fen for b in found.buckets)
    return {b.bucket: (b.visits, b.balance_fen) for b in found.buckets}


# --- the query, with as_of pinned --------------------------------------------------------------

EDGES = [  # (age at as_of, bucket): a bucket holds its lower bound, not its upper one
    (timedelta(0), "0-1d"),
    (DAY - timedelta(seconds=1), "0-1d"),
    (DAY, "1-7d"),
    (7 * DAY - timedelta(microseconds=1), "1-7d"),
    (7 * DAY, "7-30d"),
    (30 * DAY - timedelta(seconds=1), "7-30d"),
    (30 * DAY, "30-90d"),
    (90 * DAY - timedelta(seconds=1), "30-90d"),
    (90 * DAY, "90d+"),
    (400 * DAY, "90d+"),
]


async def test_buckets_at_their_edges(factory) -> None:
    expected = dict.fromkeys(BUCKETS, (0, 0))
    for i, (age, bucket) in enumerate(EDGES):
        fen = 1 << i  # one bit a visit: a visit in the wrong bucket shows in the sums
        await owing(factory, fen, age)
        visits, balance = expected[bucket]
        expected[bucket] = (visits + 1, balance + fen)
    assert await by_age(factory) == expected
    # an hour later the visit discharged exactly at as_of is still young, the one a second short
    # of a day is not, and the one a second short of 30 days is 30-90d
    later = await by_age(factory, AS_OF + timedelta(hours=1))
    assert later["0-1d"] == (1, 1) and later["1-7d"] == (2, 2 + 4) and later["7-30d"] == (2, 8 + 16)


async def test_only_discharged_visits_that_still_owe_count(factory) -> None:
    charge = EntryKind.charge
    await visit(factory, discharged_at=AS_OF - 2 * DAY, status="due", entries=[(charge, 700)])
    await visit(
        factory, discharged_at=AS_OF - 2 * DAY, status="arrears", entries=[(charge, 500), (EntryKind.payment, 200)]
    )
    await visit(factory, discharged_at=AS_OF - 2 * DAY, status="defaulted", entries=[(charge, 1000)])
    # excluded: settled, written off (the bill stays in the books), not yet discharged, nothing
    # owed any more (paid, status not yet moved), overpaid, no entry at all
    await visit(factory, discharged_at=AS_OF - 2 * DAY, status="settled", entries=[(charge, 900)])
    await visit(factory, discharged_at=AS_OF - 2 * DAY, status="written_off", entries=[(charge, 800)])
    await visit(factory, discharged_at=None, status="open", entries=[(charge, 600)])
    await visit(factory, discharged_at=AS_OF - 2 * DAY, entries=[(charge, 400), (EntryKind.payment, 400)])
    await visit(factory, discharged_at=AS_OF - 2 * DAY, entries=[(charge, 100), (EntryKind.payment, 300)])
    await visit(factory, discharged_at=AS_OF - 2 * DAY)
    assert await by_age(factory) == {**dict.fromkeys(BUCKETS, (0, 0)), "1-7d": (3, 700 + 300 + 1000)}


async def test_a_balance_is_the_signed_sum_of_every_kind_of_entry(factory) -> None:
    assert set(SIGN) == set(EntryKind)  # a new kind of entry needs its sign, or balances go wrong
    entries = [(kind, 10**9 if kind == EntryKind.charge else 10 ** (i + 1)) for i, kind in enumerate(EntryKind)]
    await visit(factory, discharged_at=AS_OF - 40 * DAY, entries=entries)
    balance = totals(Entry(kind=k, amount_fen=fen) for k, fen in entries).balance_fen
    assert balance > 0 and (await by_age(factory))["30-90d"] == (1, balance)


async def test_by_department(factory) -> None:
    await owing(factory, 100, 2 * DAY, department="外科")
    await owing(factory, 200, 10 * DAY, department="外科")
    await owing(factory, 5000, 100 * DAY, department="儿科")
    await owing(factory, 300, timedelta(hours=1), department="内科")
    await visit(
        factory, discharged_at=AS_OF - DAY, status="settled", department="眼科", entries=[(EntryKind.charge, 1)]
    )
    async with factory() as session:
        found = await r.by_department(session, as_of=AS_OF)
    assert found.as_of == AS_OF and found.total_fen == 5600
    # the largest balance first; a department owed nothing is not listed
    assert [(d.department, d.visits, d.balance_fen) for d in found.departments] == [
        ("儿科", 1, 5000),
        ("内科", 1, 300),
        ("外科", 2, 300),
    ]
    surgery = found.departments[2]
    assert [(b.bucket, b.visits, b.balance_fen) for b in surgery.buckets] == [
        ("0-1d", 0, 0),
        ("1-7d", 1, 100),
        ("7-30d", 1, 200),
        ("30-90d", 0, 0),
        ("90d+", 0, 0),
    ]


# --- over HTTP --------------------------------------------------------------------------------


async def test_by_age_and_by_department_over_http(api, factory) -> None:
    now = datetime.now(UTC)
    for fen, days, department in [(100, 3, "外科"), (200, 3, "内科"), (400, 45, "外科")]:
        await visit(factory, discharged_at=now - days * DAY, department=department, entries=[(EntryKind.charge, fen)])
    res = await api.http.get("/v1/ops/receivables?by=age", headers=api.ops)
    assert res.status_code == 200, res.text
    body = res.json()
    assert set(body) == {"as_of", "buckets", "total_fen"} and body["total_fen"] == 700
    assert datetime.fromisoformat(body["as_of"]) >= now
    assert body["buckets"] == [
        {"bucket": "0-1d", "visits": 0, "balance_fen": 0},
        {"bucket": "1-7d", "visits": 2, "balance_fen": 300},
        {"bucket": "7-30d", "visits": 0, "balance_fen": 0},
        {"bucket": "30-90d", "visits": 1, "balance_fen": 400},
        {"bucket": "90d+", "visits": 0, "balance_fen": 0},
    ]
    res = await api.http.get("/v1/ops/receivables", params={"by": "department"}, headers=api.ops)
    body = res.json()
    assert set(body) == {"as_of", "departments", "total_fen"} and body["total_fen"] == 700
    surgery, medicine = body["departments"]
    assert (surgery["department"], surgery["visits"], surgery["balance_fen"]) == ("外科", 2, 500)
    assert [b["balance_fen"] for b in surgery["buckets"]] == [0, 100, 0, 400, 0]
    assert medicine == {
        "department": "内科",
        "visits": 1,
        "balance_fen": 200,
        "buckets": [{"bucket": b, "visits": int(b == "1-7d"), "balance_fen": 200 * (b == "1-7d")} for b in BUCKETS],
    }


async def test_without_by_the_v1_answer_is_unchanged(api, factory) -> None:
    """By payment status, every visit that still owes (an open one too), as v1 answered."""
    now = datetime.now(UTC)
    charge = EntryKind.charge
    await visit(factory, discharged_at=None, status="open", entries=[(charge, 50)])
    await visit(factory, discharged_at=now - DAY, status="due", entries=[(charge, 700), (EntryKind.payment, 100)])
    await visit(factory, discharged_at=now - 3 * DAY, status="arrears", entries=[(charge, 300)])
    await visit(factory, discharged_at=now - 30 * DAY, status="defaulted", entries=[(charge, 900)])
    await visit(factory, discharged_at=now - 30 * DAY, status="defaulted", entries=[(charge, 1)])
    await visit(factory, discharged_at=now - DAY, status="settled", entries=[(charge, 400)])
    await visit(factory, discharged_at=now - DAY, status="due", entries=[(charge, 80), (EntryKind.payment, 80)])
    res = await api.http.get("/v1/ops/receivables", headers=api.ops)
    assert res.status_code == 200 and res.json() == {
        "due": {"visits": 1, "balance_fen": 600},
        "arrears": {"visits": 1, "balance_fen": 300},
        "defaulted": {"visits": 2, "balance_fen": 901},
        "open": {"visits": 1, "balance_fen": 50},
        "total_fen": 1851,
    }


@pytest.mark.parametrize("query", ["?by=bogus", "?by=AGE", "?by="])
async def test_an_unknown_grouping_is_refused(api, query: str) -> None:
    assert_problem(await api.http.get(f"/v1/ops/receivables{query}", headers=api.ops), 422, "invalid_request")


async def test_the_operators_key_is_required(api) -> None:
    assert_problem(await api.http.get("/v1/ops/receivables?by=age", headers=api.his), 401, "unauthorized")
    assert_problem(await api.http.get("/v1/ops/receivables?by=department"), 401, "unauthorized")
