"""A payment's life at a channel, as a state machine with only legal moves.

A channel that times out leaves the payment `unknown`, never `failed`: the money may have
moved, and only a query or a notification can tell. Late and repeated notifications are
no-ops; a channel's final "finished" notice months later changes nothing. Refunds move a
succeeded payment to partially or fully refunded by amount. Pure: no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PaymentProgress(StrEnum):
    """Where one payment stands at its channel (a visit's `payment_status` is another thing: a
    PaymentStatus)."""

    created = "created"  # recorded here, not yet at the channel
    pending = "pending"  # the channel has the order; the patient has not paid
    unknown = "unknown"  # we asked and got no answer: query before anything else
    succeeded = "succeeded"
    failed = "failed"  # the channel said no, or the order was closed unpaid
    partially_refunded = "partially_refunded"
    refunded = "refunded"


class PaymentEvent(StrEnum):
    submitted = "submitted"  # the channel accepted the order
    timed_out = "timed_out"  # no answer from the channel
    succeeded = "succeeded"  # a verified notification or query says paid
    failed = "failed"  # a verified notification or query says not paid, for good
    closed = "closed"  # the channel's final notice ("finished", "TRADE_FINISHED")
    refunded = "refunded"  # a refund went through (with its amount)


S, E = PaymentProgress, PaymentEvent

FINAL = frozenset({S.failed, S.refunded})
PAID = frozenset({S.succeeded, S.partially_refunded, S.refunded})  # the money moved: the one "paid" set
WAITING = frozenset({S.created, S.pending, S.unknown})  # the channel has not said yet
UNRESOLVED = frozenset({S.pending, S.unknown})  # at the channel with no known outcome: reconciliation asks


@dataclass(frozen=True, kw_only=True)
class PaymentState:
    status: PaymentProgress
    amount_fen: int
    refunded_fen: int = 0


@dataclass(frozen=True, kw_only=True)
class Moved:
    state: PaymentState
    changed: bool  # False: a repeat or a late notice, nothing to do


@dataclass(frozen=True, kw_only=True)
class Illegal:
    status: PaymentProgress
    event: PaymentEvent
    detail: str


def apply(state: PaymentState, event: PaymentEvent, *, amount_fen: int = 0) -> Moved | Illegal:
    """The payment after `event`. `amount_fen` is the refund's amount for `refunded`."""
    st = state.status

    def stay() -> Moved:
        return Moved(state=state, changed=False)

    def to(status: PaymentProgress, **kw: int) -> Moved:
        return Moved(
            state=PaymentState(
                status=status, amount_fen=state.amount_fen, refunded_fen=kw.get("refunded_fen", state.refunded_fen)
            ),
            changed=True,
        )

    def illegal(detail: str) -> Illegal:
        return Illegal(status=st, event=event, detail=detail)

    if event is E.submitted:
        if st is S.created:
            return to(S.pending)
        return stay() if st in UNRESOLVED else illegal("the order was settled already")
    if event is E.timed_out:
        if st in (S.created, S.pending):
            return to(S.unknown)
        return stay()  # a known outcome is not forgotten because a later call timed out
    if event is E.succeeded:
        if st in WAITING:
            return to(S.succeeded)
        if st in PAID:
            return stay()  # the same money, told again
        return illegal("the channel reports money for an order it had failed: reconcile by hand")
    if event is E.failed:
        if st in WAITING:
            return to(S.failed)
        if st is S.failed:
            return stay()
        return illegal("the channel reports a failure for a paid order: reconcile by hand")
    if event is E.closed:
        return stay()  # the final notice confirms what we know; it changes nothing
    if event is E.refunded:
        if st not in (S.succeeded, S.partially_refunded):
            return illegal(f"nothing to refund on a {st} payment")
        if amount_fen <= 0:
            return illegal("a refund has a positive amount")
        total = state.refunded_fen + amount_fen
        if total > state.amount_fen:
            return illegal(f"refunds would exceed the payment ({total} > {state.amount_fen} fen)")
        return to(S.refunded if total == state.amount_fen else S.partially_refunded, refunded_fen=total)
    raise AssertionError(f"unhandled payment event {event}")  # pragma: no cover


class RefundStatus(StrEnum):
    created = "created"  # booked in the ledger, not yet at the channel
    processing = "processing"  # the channel took it; money on its way
    manual = "manual"  # paid at the window: an operator hands the money back and confirms
    succeeded = "succeeded"
    failed = "failed"  # the channel refused for good: the credit is back, an operator decides


REFUND_FINAL = frozenset({RefundStatus.succeeded, RefundStatus.failed})
# nothing to ask a channel about: decided, or in an operator's hands
REFUND_NOT_AT_CHANNEL = REFUND_FINAL | {RefundStatus.manual}
_REFUND_MOVES = {
    RefundStatus.created: {RefundStatus.processing, RefundStatus.manual, RefundStatus.succeeded, RefundStatus.failed},
    RefundStatus.processing: {RefundStatus.succeeded, RefundStatus.failed},
    RefundStatus.manual: {RefundStatus.succeeded},
}


def refund_move(status: RefundStatus, to: RefundStatus) -> bool | None:
    """True: move; False: nothing to do (told again, or a later answer no newer than ours);
    None: illegal (a final refund never changes its outcome)."""
    if to is status:
        return False
    if status in REFUND_FINAL:
        return None
    return to in _REFUND_MOVES.get(status, set())  # False, e.g. "processing" after "manual": no news
