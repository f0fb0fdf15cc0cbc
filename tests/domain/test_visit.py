"""The visit state machine: every stage x event pair, and the patent's paths."""

from dataclasses import replace

import pytest

from domain.visit import (
    ALLOWED,
    Category,
    Event,
    EventType as E,
    Item,
    Refusal,
    RefusalCode,
    Stage as S,
    Transition,
    VisitState,
    allowed_events,
    apply,
)


def item(item_id: str, category: Category = Category.exam, price: int = 1000, qty: int = 1) -> Item:
    return Item(
        item_id=item_id,
        code=f"C-{item_id}",
        name=f"item {item_id}",
        category=category,
        unit_price_fen=price,
        quantity=qty,
    )


def walk(*events: Event, state: VisitState | None = None) -> VisitState:
    state = state or VisitState()
    for event in events:
        result = apply(state, event)
        assert isinstance(result, Transition), result
        state = result.state
    return state


# A typical visit state at each stage, as the clinic reaches it.
STATE_AT = {
    S.registered: VisitState(),
    S.checked_in: walk(Event(type=E.checked_in)),
    S.called: walk(Event(type=E.checked_in), Event(type=E.called)),
    S.in_consultation: walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.orders_placed, items=(item("x1"),)),
    ),
    S.awaiting_results: walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.orders_placed, items=(item("x1"),)),
        Event(type=E.consultation_ended),
    ),
    S.prescribed: walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.prescribed, items=(item("d1", Category.drug), item("i1", Category.infusion))),
    ),
    S.skin_test: walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.prescribed, items=(item("d1", Category.drug),), skin_test_required=True),
    ),
    S.dispensed: walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.prescribed, items=(item("i1", Category.infusion),)),
        Event(type=E.dispensed),
    ),
    S.in_infusion: walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.prescribed, items=(item("i1", Category.infusion),)),
        Event(type=E.dispensed),
        Event(type=E.infusion_started),
    ),
    S.discharged: walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.orders_placed, items=(item("x1"),)),
        Event(type=E.consultation_ended),
        Event(type=E.discharged),
    ),
}

# A representative event of each type, valid where the type is allowed in STATE_AT.
SAMPLE = {
    E.checked_in: Event(type=E.checked_in),
    E.called: Event(type=E.called),
    E.consultation_started: Event(type=E.consultation_started),
    E.consultation_ended: Event(type=E.consultation_ended),
    E.orders_placed: Event(type=E.orders_placed, items=(item("new1", Category.lab),)),
    E.orders_cancelled: Event(type=E.orders_cancelled, item_ids=("x1",)),
    E.results_ready: Event(type=E.results_ready, item_ids=("x1",)),
    E.prescribed: Event(type=E.prescribed, items=(item("new2", Category.drug),)),
    E.skin_test_result: Event(type=E.skin_test_result, skin_test_positive=False),
    E.dispensed: Event(type=E.dispensed),
    E.infusion_started: Event(type=E.infusion_started),
    E.infusion_finished: Event(type=E.infusion_finished),
    E.discharged: Event(type=E.discharged),
}

# (stage, event) -> stage after, for every accepted pair; every other pair is refused.
ACCEPTED = {
    (S.registered, E.checked_in): S.checked_in,
    (S.registered, E.discharged): S.discharged,
    (S.checked_in, E.called): S.called,
    (S.checked_in, E.discharged): S.discharged,
    (S.called, E.called): S.called,
    (S.called, E.consultation_started): S.in_consultation,
    (S.called, E.discharged): S.discharged,
    (S.in_consultation, E.orders_placed): S.in_consultation,
    (S.in_consultation, E.orders_cancelled): S.in_consultation,
    (S.in_consultation, E.prescribed): S.prescribed,
    (S.in_consultation, E.consultation_ended): S.awaiting_results,
    (S.awaiting_results, E.results_ready): S.awaiting_results,
    (S.awaiting_results, E.orders_placed): S.awaiting_results,
    (S.awaiting_results, E.orders_cancelled): S.in_consultation,
    (S.awaiting_results, E.consultation_started): S.in_consultation,
    (S.awaiting_results, E.discharged): S.discharged,
    (S.prescribed, E.dispensed): S.dispensed,
    (S.prescribed, E.orders_cancelled): S.prescribed,
    (S.skin_test, E.orders_cancelled): S.skin_test,
    (S.dispensed, E.orders_cancelled): S.dispensed,
    (S.in_infusion, E.orders_cancelled): S.in_infusion,
    (S.prescribed, E.consultation_ended): S.prescribed,
    (S.prescribed, E.consultation_started): S.in_consultation,
    (S.prescribed, E.discharged): S.discharged,
    (S.skin_test, E.skin_test_result): S.prescribed,
    (S.skin_test, E.consultation_ended): S.skin_test,
    (S.dispensed, E.infusion_started): S.in_infusion,
    (S.dispensed, E.consultation_started): S.in_consultation,
    (S.dispensed, E.discharged): S.discharged,
    (S.in_infusion, E.infusion_finished): S.in_infusion,
    (S.discharged, E.orders_cancelled): S.discharged,
}


# Before the doctor there is nothing to cancel (the registration fee is not an order).
NOTHING_TO_CANCEL = {
    (S.registered, E.orders_cancelled),
    (S.checked_in, E.orders_cancelled),
    (S.called, E.orders_cancelled),
}


@pytest.mark.parametrize("stage", list(S))
@pytest.mark.parametrize("event_type", list(E))
def test_every_stage_and_event(stage: S, event_type: E) -> None:
    state = STATE_AT[stage]
    assert state.stage is stage
    event = SAMPLE[event_type]
    if event_type is E.orders_cancelled and state.active_items:
        event = Event(type=E.orders_cancelled, item_ids=(sorted(state.active_items)[0],))
    result = apply(state, event)
    if (stage, event_type) in ACCEPTED:
        assert isinstance(result, Transition), result
        assert result.state.stage is ACCEPTED[(stage, event_type)]
        assert event_type in allowed_events(state)
    else:
        assert isinstance(result, Refusal)
        assert result.stage is stage
        if result.code is RefusalCode.invalid_transition:
            assert event_type not in allowed_events(state)
        else:  # the stage takes the event type, but not for these items
            assert (stage, event_type) in NOTHING_TO_CANCEL
        assert set(result.allowed) == set(allowed_events(state))


def test_tables_cover_every_stage_and_event() -> None:
    assert set(STATE_AT) == set(S) == set(ALLOWED)
    assert set(SAMPLE) == set(E)


def test_patent_figure_1_with_positive_skin_test_and_infusion() -> None:
    s = walk(
        Event(type=E.checked_in),
        Event(type=E.called),
        Event(type=E.consultation_started),
        Event(type=E.orders_placed, items=(item("ct", Category.exam), item("cbc", Category.lab))),
        Event(type=E.consultation_ended),
    )
    assert s.stage is S.awaiting_results and s.pending_results == {"ct", "cbc"}
    s = walk(
        Event(type=E.results_ready, item_ids=("ct", "cbc")),
        Event(type=E.consultation_started),
        Event(type=E.prescribed, items=(item("pen", Category.drug),), skin_test_required=True),
        state=s,
    )
    assert s.stage is S.skin_test
    s = walk(Event(type=E.skin_test_result, skin_test_positive=True), state=s)
    assert s.stage is S.in_consultation and s.consultation_open
    s = walk(
        Event(type=E.orders_cancelled, item_ids=("pen",)),
        Event(type=E.prescribed, items=(item("azi", Category.drug), item("drip", Category.infusion))),
        Event(type=E.consultation_ended),
        Event(type=E.dispensed),
        Event(type=E.infusion_started),
        state=s,
    )
    assert s.stage is S.in_infusion
    refused = apply(s, Event(type=E.discharged))
    assert isinstance(refused, Refusal) and "infusion" in refused.detail
    s = walk(Event(type=E.infusion_finished), Event(type=E.discharged), state=s)
    assert s.stage is S.discharged
    assert set(s.active_items) == {"ct", "cbc", "azi", "drip"}
    assert s.cancelled_items == {"pen"}


def test_charges_and_reversals() -> None:
    s = STATE_AT[S.in_consultation]
    t = apply(s, Event(type=E.orders_placed, items=(item("a", price=250, qty=4),)))
    assert isinstance(t, Transition) and [i.amount_fen for i in t.charge] == [1000]
    t2 = apply(t.state, Event(type=E.orders_cancelled, item_ids=("a",)))
    assert isinstance(t2, Transition) and t2.reverse == ("a",)
    again = apply(t2.state, Event(type=E.orders_cancelled, item_ids=("a",)))
    assert isinstance(again, Refusal) and again.code is RefusalCode.unknown_item


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (Event(type=E.orders_placed, items=(item("x1"),)), RefusalCode.duplicate_item),
        (Event(type=E.orders_placed, items=(item("z"), item("z"))), RefusalCode.duplicate_item),
        (Event(type=E.orders_placed, items=()), RefusalCode.invalid_item),
        (Event(type=E.orders_placed, items=(item("z", price=-1),)), RefusalCode.invalid_item),
        (Event(type=E.orders_placed, items=(item("z", qty=0),)), RefusalCode.invalid_item),
        (Event(type=E.orders_placed, items=(item("z", price=10**9, qty=2),)), RefusalCode.invalid_item),
        (Event(type=E.orders_cancelled, item_ids=("nope",)), RefusalCode.unknown_item),
    ],
)
def test_bad_items_are_refused(event: Event, code: RefusalCode) -> None:
    result = apply(STATE_AT[S.in_consultation], event)
    assert isinstance(result, Refusal) and result.code is code


def test_results_for_unknown_or_finished_items_are_refused() -> None:
    s = STATE_AT[S.awaiting_results]
    assert isinstance(apply(s, Event(type=E.results_ready, item_ids=("other",))), Refusal)
    s2 = walk(Event(type=E.results_ready, item_ids=("x1",)), state=s)
    assert isinstance(apply(s2, Event(type=E.results_ready, item_ids=("x1",))), Refusal)


def test_infusion_needs_an_infusion_prescription() -> None:
    s = walk(
        Event(type=E.prescribed, items=(item("d", Category.drug),)),
        Event(type=E.dispensed),
        state=replace(STATE_AT[S.called], stage=S.in_consultation, consultation_open=True),
    )
    refused = apply(s, Event(type=E.infusion_started))
    assert isinstance(refused, Refusal) and "infusion" in refused.detail
    assert E.infusion_started not in allowed_events(s)
