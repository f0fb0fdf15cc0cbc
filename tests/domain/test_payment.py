"""The payment state machine: every status x event, and invariants under any sequence."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from domain.bill import Entry, EntryKind, Refundable, plan_refunds, totals
from domain.payment import (
    FINAL,
    PAID,
    REFUND_FINAL,
    Illegal,
    Moved,
    PaymentEvent as E,
    PaymentProgress as S,
    PaymentState,
    RefundStatus as R,
    apply,
    refund_move,
)
from domain.statement import Line, Mismatch, match

# (status, event) -> status after; None: refused. `refunded` is tried with 30 of 100 fen.
TABLE = {
    (S.created, E.submitted): S.pending,
    (S.created, E.timed_out): S.unknown,
    (S.created, E.succeeded): S.succeeded,
    (S.created, E.failed): S.failed,
    (S.created, E.closed): S.created,
    (S.created, E.refunded): None,
    (S.pending, E.submitted): S.pending,
    (S.pending, E.timed_out): S.unknown,
    (S.pending, E.succeeded): S.succeeded,
    (S.pending, E.failed): S.failed,
    (S.pending, E.closed): S.pending,
    (S.pending, E.refunded): None,
    (S.unknown, E.submitted): S.unknown,
    (S.unknown, E.timed_out): S.unknown,
    (S.unknown, E.succeeded): S.succeeded,
    (S.unknown, E.failed): S.failed,
    (S.unknown, E.closed): S.unknown,
    (S.unknown, E.refunded): None,
    (S.succeeded, E.submitted): None,
    (S.succeeded, E.timed_out): S.succeeded,
    (S.succeeded, E.succeeded): S.succeeded,
    (S.succeeded, E.failed): None,
    (S.succeeded, E.closed): S.succeeded,
    (S.succeeded, E.refunded): S.partially_refunded,
    (S.failed, E.submitted): None,
    (S.failed, E.timed_out): S.failed,
    (S.failed, E.succeeded): None,
    (S.failed, E.failed): S.failed,
    (S.failed, E.closed): S.failed,
    (S.failed, E.refunded): None,
    (S.partially_refunded, E.submitted): None,
    (S.partially_refunded, E.timed_out): S.partially_refunded,
    (S.partially_refunded, E.succeeded): S.partially_refunded,
    (S.partially_refunded, E.failed): None,
    (S.partially_refunded, E.closed): S.partially_refunded,
    (S.partially_refunded, E.refunded): S.partially_refunded,
    (S.refunded, E.submitted): None,
    (S.refunded, E.timed_out): S.refunded,
    (S.refunded, E.succeeded): S.refunded,
    (S.refunded, E.failed): None,
    (S.refunded, E.closed): S.refunded,
    (S.refunded, E.refunded): None,
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


# --- refunds ---------------------------------------------------------------------------


# (from, to) -> True move / False nothing to do / None illegal
REFUND_TABLE = {
    (R.created, R.processing): True,
    (R.created, R.manual): True,
    (R.created, R.succeeded): True,
    (R.created, R.failed): True,
    (R.created, R.created): False,
    (R.processing, R.succeeded): True,
    (R.processing, R.failed): True,
    (R.processing, R.processing): False,
    (R.processing, R.created): False,
    (R.processing, R.manual): False,
    (R.manual, R.succeeded): True,
    (R.manual, R.manual): False,
    (R.manual, R.failed): False,
    (R.manual, R.created): False,
    (R.manual, R.processing): False,
    (R.succeeded, R.succeeded): False,
    (R.failed, R.failed): False,
}


@pytest.mark.parametrize("status", list(R))
@pytest.mark.parametrize("to", list(R))
def test_refund_moves(status: R, to: R) -> None:
    expected = REFUND_TABLE.get((status, to))
    if (status, to) not in REFUND_TABLE:
        assert status in REFUND_FINAL  # every other pair leaves a final refund: refused
    assert refund_move(status, to) is expected


@pytest.mark.parametrize(
    ("credit", "sources", "plan"),
    [
        (300, [("p2", 500), ("p1", 1000)], [("p2", 300)]),
        (700, [("p2", 500), ("p1", 1000)], [("p2", 500), ("p1", 200)]),
        (500, [("p2", 0), ("p1", 500)], [("p1", 500)]),
        (0, [("p1", 500)], []),
    ],
)
def test_a_credit_goes_back_to_the_newest_payments_first(
    credit: int, sources: list[tuple[str, int]], plan: list[tuple[str, int]]
) -> None:
    assert plan_refunds(credit, [Refundable(payment_id=p, fen=f) for p, f in sources]) == plan


def test_a_credit_beyond_its_payments_is_misuse() -> None:
    with pytest.raises(ValueError):
        plan_refunds(600, [Refundable(payment_id="p1", fen=500)])


def test_a_refused_refund_puts_the_credit_back() -> None:
    kinds = [(EntryKind.charge, 500), (EntryKind.payment, 800), (EntryKind.refund, 300)]
    assert totals(Entry(kind=k, amount_fen=a) for k, a in kinds).balance_fen == 0
    back = totals(Entry(kind=k, amount_fen=a) for k, a in [*kinds, (EntryKind.refund_reversal, 300)])
    assert (back.paid_fen, back.balance_fen) == (800, -300)


# --- daily statements -------------------------------------------------------------------


def test_a_statement_that_agrees_has_no_findings() -> None:
    lines = [Line(kind="payment", ref="p1", amount_fen=500), Line(kind="refund", ref="r1", amount_fen=200)]
    out = match(lines, lines)
    assert (out.matched, out.findings, out.channel_total_fen, out.ledger_total_fen) == (2, [], 300, 300)


def test_every_kind_of_disagreement_is_reported() -> None:
    channel = [
        Line(kind="payment", ref="p1", amount_fen=500),
        Line(kind="payment", ref="ghost", amount_fen=900),
        Line(kind="refund", ref="r1", amount_fen=250),
    ]
    ours = [
        Line(kind="payment", ref="p1", amount_fen=500),
        Line(kind="refund", ref="r1", amount_fen=200),
        Line(kind="payment", ref="p2", amount_fen=700),
        Line(kind="payment", ref="p3", amount_fen=100, inside_day=False),
    ]  # near midnight: on another day
    out = match(channel, ours)
    assert out.matched == 1
    assert {(f.ref, f.problem, f.channel_fen, f.ledger_fen) for f in out.findings} == {
        ("ghost", Mismatch.missing_in_ledger, 900, None),
        ("r1", Mismatch.amount_mismatch, 250, 200),
        ("p2", Mismatch.missing_at_channel, None, 700),
    }


def test_a_line_from_across_midnight_matches_a_record_of_the_other_day() -> None:
    out = match([Line(kind="payment", ref="p0", amount_fen=100)], [], known={("payment", "p0"): 100})
    assert (out.matched, out.findings) == (1, [])
