"""The hospital-day benchmark's day (bench/hospital_day.py): its arrivals follow the hourly
profile, and every walk it plays is one the contract and the visit's rules accept, from
registration to discharge."""

from __future__ import annotations

from collections import Counter

import pytest

from api.schemas import VisitEventIn
from bench.hospital_day import HOURLY, MIX, WALKS, peak_open, plan
from domain.visit import Category, Event, EventType, Item, Refusal, Stage, VisitState, apply


def test_the_day_follows_the_hourly_profile() -> None:
    day = plan(1000, seed=7)
    assert len(day) == 1000
    assert [p.arrive_min for p in day] == sorted(p.arrive_min for p in day)
    per_hour = Counter(int(p.arrive_min // 60) for p in day)
    busiest = max(per_hour, key=lambda h: per_hour[h])
    assert busiest == HOURLY.index(max(HOURLY)) == 9  # the morning peak
    assert sum(per_hour[h] for h in range(6)) < 10  # the night is quiet
    for h, w in enumerate(HOURLY):  # largest remainders: each hour within one visit of its share
        assert abs(per_hour[h] - 1000 * w / sum(HOURLY)) < 1
    walks = Counter(p.walk for p in day)
    assert set(walks) == set(WALKS)
    assert 0.6 < sum(p.pays for p in day) / len(day) < 0.95
    assert plan(1000, seed=7) == day  # a seed replays the same day
    assert peak_open(day) > 1000 * max(HOURLY) / sum(HOURLY) / 2  # a visit lasts more than half an hour


def event_of(type_: str, fields: dict) -> Event:
    items = tuple(
        Item(
            item_id=i["item_id"],
            code=i["code"],
            name=i["name"],
            category=Category(i["category"]),
            unit_price_fen=i["unit_price_fen"],
            quantity=i["quantity"],
        )
        for i in fields.get("items", [])
    )
    result = fields.get("result")
    return Event(
        type=EventType(type_),
        items=items,
        item_ids=tuple(fields.get("item_ids", ())),
        skin_test_required=bool(fields.get("skin_test_required")),
        skin_test_positive=None if result is None else result == "positive",
    )


@pytest.mark.parametrize("walk", [m[0] for m in MIX])
def test_every_walk_is_accepted_to_discharge(walk: str) -> None:
    state = VisitState()
    for _, type_, fields in WALKS[walk]():
        body = {"event_id": "ev1", "type": type_, "occurred_at": "2026-11-30T08:00:00+08:00", **fields}
        VisitEventIn.model_validate(body)  # the contract's body for the type
        step = apply(state, event_of(type_, fields))
        assert not isinstance(step, Refusal), (walk, type_, step)
        state = step.state
    assert state.stage is Stage.discharged
