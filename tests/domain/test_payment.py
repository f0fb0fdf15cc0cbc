"""The payment state machine: every status x event, and invariants under any sequence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.payment import FINAL, PAID, Illegal, Moved, PaymentEvent as E, PaymentState, PaymentStatus as S, apply

# (status, event) -> status after; None: refused. `refunded` is tried with 30 of 100 fen.
TABLE = {
    (S.created, E.submitted): S.pending, (S.created, E.timed_out): S.unknown,
    (S.created, E.succeeded): S.succeeded, (S.created, E.failed): S.failed, (S.created, E.closed): S.created,
    (S.created, E.refunded): None,
    (S.pending, E.submitted): S.pending, (S.pending, E.timed_out): S.unknown,
    (S.pending, E.succeeded): S.succeeded, (S.pending, E.failed): S.failed, (S.pending, E.closed): S.pending,
    (S.pending, E.refunded): None,
    (S.unknown, E.submitted): S.unknown, (S.unknown, E.timed_out): S.unknown,
    (S.unknown, E.succeeded): S.succeeded, (S.unknown, E.failed): S.failed, (S.unknown, E.closed): S.unknown,
    (S.unknown, E.refunded): None,
    (S.succeeded, E.submitted): None, (S.succeeded, E.timed_out): S.succeeded,
    (S.succeeded, E.succeeded): S.succeeded, (S.succeeded, E.failed): None, (S.succeeded, E.closed): S.succeeded,
    (S.succeeded, E.refunded): S.partially_refunded,
    (S.failed, E.submitted): None, (S.failed, E.timed_out): S.failed, (S.failed, E.succeeded): None,
    (S.failed, E.failed): S.failed, (S.failed, E.closed): S.failed, (S.failed, E.refunded): None,
    (S.partially_refunded, E.submitted): None, (S.partially_refunded, E.timed_out): S.partially_refunded,
    (S.partially_refunded, E.succeeded): S.partially_refunded, (S.partially_refunded, E.failed): None,
    (S.partially_refunded, E.closed): S.partially_refunded, (S.partially_refunded, E.refunded): S.partially_refunded,
    (S.refunded, E.submitted): None, (S.refunded, E.timed_out): S.refunded, (S.refunded, E.succeeded): S.refunded,
    (S.refunded, E.failed): None, (S.refunded, E.closed): S.refunded, (S.refunded, E.refunded): None,
}


def test_table_is_complete() -> None:
    assert set(TABLE) == {(s, e) for s in S for e in E}


@pytest.mark.parametrize(("status", "event"), sorted(TABLE))
def test_every_status_and_event(status: S, event: E) -> None:
    refunded = 100 if status is S.refunded else 30 if status is S.partially_refunded else 0
    result = apply(PaymentState(status=status, amount_fen=100, refunded_fen=refunded), event, amount_fen=30)
    expected = TABLE[(status, event)]
    if expected is None:
        assert isinstance(result, Illegal) and result.detail
    else:
        assert isinstance(result, Moved) and result.state.status is expected
        assert result.changed is (expected is not status or event is E.refunded)


def test_a_timeout_is_unknown_never_failed() -> None:
    result = apply(PaymentState(status=S.pending, amount_fen=100), E.timed_out)
    assert isinstance(result, Moved) and result.state.status is S.unknown


def test_refunds_add_up_to_the_payment_and_no_further() -> None:
    state = PaymentState(status=S.succeeded, amount_fen=100)
    for amount, status in ((40, S.partially_refunded), (60, S.refunded)):
        moved = apply(state, E.refunded, amount_fen=amount)
        assert isinstance(moved, Moved) and moved.state.status is status
        state = moved.state
    assert isinstance(apply(state, E.refunded, amount_fen=1), Illegal)
    over = apply(PaymentState(status=S.succeeded, amount_fen=100), E.refunded, amount_fen=101)
    assert isinstance(over, Illegal) and "exceed" in over.detail
    assert isinstance(apply(PaymentState(status=S.succeeded, amount_fen=100), E.refunded, amount_fen=0), Illegal)


events = st.lists(st.tuples(st.sampled_from(list(E)), st.integers(min_value=-5, max_value=120)), max_size=30)


@given(amount=st.integers(min_value=1, max_value=100), steps=events)
def test_invariants_under_any_sequence(amount: int, steps: list[tuple[E, int]]) -> None:
    state = PaymentState(status=S.created, amount_fen=amount)
    ever_paid = False
    for event, fen in steps:
        result = apply(state, event, amount_fen=fen)
        if isinstance(result, Illegal):
            continue
        before, state = state, result.state
        assert 0 <= state.refunded_fen <= state.amount_fen == amount
        ever_paid = ever_paid or state.status in PAID
        if ever_paid:  # money that landed never un-lands
            assert state.status in PAID
        if before.status in FINAL:
            assert state == before
        if state.status is S.refunded:
            assert state.refunded_fen == amount
        if not result.changed:
            assert state == before
