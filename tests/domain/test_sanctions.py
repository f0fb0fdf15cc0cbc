"""domain/sanctions.py and domain/oversight.py: what is in force under each hold, the deadline
(and notice and lock) moved by the time a hold lasted, and which operator action fits a visit.
Times in Asia/Shanghai; discharged 1 March 10:00, deadline 8 March 10:00 by the default policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from domain.oversight import ActionRefusal, ActionRequest, PendingApproval, Standing, check
from domain.policy import Action, PaymentPolicy, PaymentState, PaymentStatus, ServiceStatus, service_status
from domain.sanctions import (
    DisputeOutcome,
    Hold,
    HoldKind,
    OperatorAction as A,
    Sanction,
    Sanctions,
    expire,
    extend,
    imposed,
    lock_released,
    put_on,
    released,
    take_off,
)

SH = ZoneInfo("Asia/Shanghai")
POLICY = PaymentPolicy()
DISCHARGED = datetime(2026, 3, 1, 10, 0, tzinfo=SH)
DEADLINE = DISCHARGED + timedelta(days=7)


def sh(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SH)


def hold(kind: HoldKind, since: datetime, until: datetime | None = None) -> Hold:
    return Hold(kind=kind, reason="review", since=since, until=until, by="op-1")


def state(s: Sanctions, **kw: object) -> PaymentState:
    fields: dict[str, object] = {"in_arrears": True, "last_dunning_at": sh(7, 9)}
    fields.update(kw)
    return PaymentState(discharged_at=DISCHARGED, balance_fen=5000, sanctions=s, **fields)  # type: ignore[arg-type]  # a table's fields


# --- what a hold suspends --------------------------------------------------------------


@pytest.mark.parametrize("kind", list(HoldKind))
@pytest.mark.parametrize("sanction", list(Sanction))
def test_nothing_goes_ahead_under_a_hold(kind: HoldKind, sanction: Sanction) -> None:
    s = put_on(Sanctions(), hold(kind, sh(3)))
    assert s.suspended and s.hold() is not None and s.hold().kind is kind  # type: ignore[union-attr]  # just asserted
    assert not s.may(sanction)


@pytest.mark.parametrize("kind", list(HoldKind))
@pytest.mark.parametrize(
    ("now", "defaulted", "notice_sent"),
    [
        (sh(5, 12), False, False),  # before the notice: no notice
        (sh(7, 12), False, True),  # notice out: no lock at the deadline
        (sh(8, 11), False, True),  # past the deadline: still no lock, no report
        (sh(9, 12), True, True),  # defaulted: no reminder
    ],
)
def test_under_a_hold_the_visit_only_waits(kind: HoldKind, now: datetime, defaulted: bool, notice_sent: bool) -> None:
    s = put_on(Sanctions(defaulted=defaulted), hold(kind, sh(4)))
    st = state(s, defaulted=defaulted, notice_sent_at=sh(7, 10) if notice_sent else None, lock_notified=defaulted)
    decision = POLICY.decide(st, now)
    assert decision.action is Action.wait and decision.until is None


def test_a_pause_with_an_end_wakes_then() -> None:
    s = put_on(Sanctions(), hold(HoldKind.operator, sh(4), until=sh(6)))
    assert POLICY.decide(state(s), sh(5)).until == sh(6)


def test_arrears_still_begins_under_a_hold() -> None:
    s = put_on(Sanctions(), hold(HoldKind.dispute, sh(1, 11)))
    st = state(s, in_arrears=False, last_dunning_at=None)
    assert POLICY.decide(st, sh(2, 1)).action is Action.enter_arrears


# --- the deadline moved by the time the hold lasted ----------------------------------------


@pytest.mark.parametrize("kind", list(HoldKind))
@pytest.mark.parametrize(
    ("since", "lifted", "moved"),
    [
        (sh(3), sh(5), timedelta(days=2)),  # before the notice
        (sh(7, 12), sh(10, 12), timedelta(days=3)),  # across the deadline
        (sh(8, 9), sh(8, 9, 30), timedelta(minutes=30)),
    ],
)
def test_a_hold_moves_the_deadline_by_its_length(
    kind: HoldKind, since: datetime, lifted: datetime, moved: timedelta
) -> None:
    s = take_off(put_on(Sanctions(), hold(kind, since)), kind, lifted, notice_sent=False)
    assert not s.suspended and s.moved == moved
    d = POLICY.deadlines(DISCHARGED, s.moved_seconds)
    assert d.default_at == DEADLINE + moved
    assert d.arrears_at == sh(2)  # the visit day ends when it ends
    assert d.notice_at == POLICY.deadlines(DISCHARGED).notice_at + moved or d.notice_at >= d.arrears_at


def test_a_hold_after_the_notice_moves_the_lock_too() -> None:
    """Told on 7 March 10:00 (a day's notice), disputed 7 March 12:00 until 10 March 12:00: the
    lock comes no sooner than a full day of notice outside the dispute, 11 March 10:00."""
    s = put_on(Sanctions(), hold(HoldKind.dispute, sh(7, 12)))
    s = take_off(s, HoldKind.dispute, sh(10, 12), notice_sent=True)
    assert s.notice_moved_seconds == timedelta(days=3).total_seconds()
    d = POLICY.deadlines(DISCHARGED, s.moved_seconds)
    assert POLICY.lock_at(d, sh(7, 10), sh(10, 12), s.notice_moved_seconds) == sh(11, 10)
    st = state(s, notice_sent_at=sh(7, 10))
    assert POLICY.decide(st, sh(10, 13)).action is not Action.default
    assert POLICY.decide(replace(st, last_dunning_at=sh(11, 9)), sh(11, 10)).action is Action.default


def test_two_holds_move_the_deadline_once_by_their_union() -> None:
    s = put_on(Sanctions(), hold(HoldKind.operator, sh(3)))
    s = put_on(s, hold(HoldKind.dispute, sh(4)))
    s = take_off(s, HoldKind.operator, sh(5), notice_sent=False)
    assert s.suspended and s.hold().kind is HoldKind.dispute and s.moved_seconds == 0  # type: ignore[union-attr]  # still held
    s = take_off(s, HoldKind.dispute, sh(6), notice_sent=False)
    assert s.moved == timedelta(days=3)


def test_a_pause_ends_at_its_end_not_when_noticed() -> None:
    s = put_on(Sanctions(), hold(HoldKind.operator, sh(3), until=sh(4)))
    assert expire(s, sh(3, 12), notice_sent=False) == s
    ended = expire(s, sh(6), notice_sent=False)
    assert not ended.suspended and ended.moved == timedelta(days=1)


def test_extend_moves_later_only() -> None:
    assert extend(Sanctions(), timedelta(days=2)).moved == timedelta(days=2)
    with pytest.raises(ValueError):
        extend(Sanctions(), timedelta(days=-1))


def test_a_rejected_dispute_defaults_at_the_moved_deadline() -> None:
    """Disputed 3-5 March: notice and lock come two days later than without it."""
    s = take_off(put_on(Sanctions(), hold(HoldKind.dispute, sh(3))), HoldKind.dispute, sh(5), notice_sent=False)
    st = state(s)
    early = POLICY.decide(replace(st, last_dunning_at=sh(9, 9)), sh(9, 9, 30))
    assert early.action is Action.wait and early.until == sh(9, 10)  # a day before the moved deadline
    assert POLICY.decide(replace(st, last_dunning_at=sh(9, 9)), sh(9, 10)).action is Action.send_notice
    told = replace(st, notice_sent_at=sh(9, 10), last_dunning_at=sh(10, 9))
    assert POLICY.decide(told, sh(10, 9, 59)).action is Action.wait
    assert POLICY.decide(told, sh(10, 10)).action is Action.default


# --- what is in force, undone ----------------------------------------------------------------


def test_in_force_and_undone() -> None:
    s = imposed(Sanctions(), card_locked=True, reported_fen=5000)
    assert s.in_force() == {Sanction.card_hold, Sanction.credit_report}
    s = lock_released(s, card_locked=False, by_operator=True)
    assert s.in_force() == {Sanction.credit_report} and not s.may(Sanction.card_hold)
    assert s.may(Sanction.dunning)
    gone = released(s)
    assert not gone.may(Sanction.pre_default_notice) and gone.may(Sanction.dunning)


def test_released_sanctions_never_come_back() -> None:
    s = released(Sanctions())
    for now in (sh(7, 12), sh(8, 12), sh(20, 12)):
        action = POLICY.decide(state(s, last_dunning_at=now - timedelta(hours=1)), now).action
        assert action not in (Action.send_notice, Action.default)


def test_reminders_stop_after_the_dunning_stop() -> None:
    policy = PaymentPolicy(dunning_stop_after_seconds=10 * 86400)
    s = imposed(Sanctions(), card_locked=True, reported_fen=5000)
    st = state(s, defaulted=True, lock_notified=True, notice_sent_at=sh(7, 10))
    assert policy.decide(replace(st, last_dunning_at=sh(17, 9)), sh(17, 12)).action is Action.wait
    assert policy.decide(replace(st, last_dunning_at=sh(16, 9)), sh(17, 9)).action is Action.send_dunning
    last = replace(st, last_dunning_at=sh(18, 9))
    decision = policy.decide(last, sh(25, 12))
    assert decision.action is Action.wait and decision.until is None


def test_written_off_is_no_service_status() -> None:
    assert service_status([PaymentStatus.written_off]) is ServiceStatus.normal
    assert service_status([PaymentStatus.written_off, PaymentStatus.arrears]) is ServiceStatus.arrears


# --- which action fits ------------------------------------------------------------------------

NOW = sh(5, 12)
UNPAID = Standing(status=PaymentStatus.arrears, balance_fen=5000, due_at=DEADLINE, sanctions=Sanctions())
LOCKED = replace(
    UNPAID, status=PaymentStatus.defaulted, sanctions=imposed(Sanctions(), card_locked=True, reported_fen=5000)
)
PAUSED = replace(UNPAID, sanctions=put_on(Sanctions(), hold(HoldKind.operator, sh(4))))
DISPUTED = replace(UNPAID, dispute_id="dsp_1", sanctions=put_on(Sanctions(), hold(HoldKind.dispute, sh(4))))
PENDING = replace(UNPAID, pending=PendingApproval(approval_id="ap1", requested_by="op-1", reason="r"))


def req(action: A, operator: str = "op-2", **kw: object) -> ActionRequest:
    return ActionRequest(action=action, operator=operator, reason="because", **kw)  # type: ignore[arg-type]  # a table's fields


@pytest.mark.parametrize(
    ("request_", "standing", "refusal"),
    [
        (req(A.pause_sanctions), UNPAID, None),
        (req(A.pause_sanctions, until=sh(6)), UNPAID, None),
        (req(A.pause_sanctions, until=sh(5)), UNPAID, ActionRefusal.invalid_action),
        (req(A.pause_sanctions), PAUSED, ActionRefusal.invalid_action),
        (req(A.resume_sanctions), PAUSED, None),
        (req(A.resume_sanctions), UNPAID, ActionRefusal.invalid_action),
        (req(A.extend_deadline, due_at=DEADLINE + timedelta(days=1)), UNPAID, None),
        (req(A.extend_deadline, due_at=DEADLINE - timedelta(days=1)), UNPAID, ActionRefusal.invalid_action),
        (req(A.extend_deadline, due_at=DEADLINE), UNPAID, ActionRefusal.invalid_action),
        (req(A.waive, amount_fen=5000), UNPAID, None),
        (req(A.waive, amount_fen=5001), UNPAID, ActionRefusal.invalid_action),
        (req(A.waive, amount_fen=0), UNPAID, ActionRefusal.invalid_action),
        (req(A.unlock_card), LOCKED, None),
        (req(A.unlock_card), UNPAID, ActionRefusal.invalid_action),
        (req(A.write_off), UNPAID, None),
        (req(A.write_off), PENDING, ActionRefusal.invalid_action),
        (req(A.approve, approval_id="ap1"), PENDING, None),
        (req(A.reject, approval_id="ap1"), PENDING, None),
        (req(A.approve, "op-1", approval_id="ap1"), PENDING, ActionRefusal.same_operator),
        (req(A.approve, " OP-1 ", approval_id="ap1"), PENDING, ActionRefusal.same_operator),
        (req(A.reject, "Op-1", approval_id="ap1"), PENDING, ActionRefusal.same_operator),
        (req(A.extend_deadline, due_at=DEADLINE + timedelta(days=1)), LOCKED, ActionRefusal.invalid_action),
        (req(A.approve, approval_id="ap2"), PENDING, ActionRefusal.approval_not_found),
        (req(A.approve, approval_id="ap1"), UNPAID, ActionRefusal.approval_not_found),
        (req(A.open_dispute, dispute_id="dsp_2"), UNPAID, None),
        (req(A.open_dispute, dispute_id="dsp_2"), DISPUTED, ActionRefusal.dispute_open),
        (req(A.resolve_dispute, dispute_id="dsp_1", outcome=DisputeOutcome.upheld), DISPUTED, None),
        (req(A.resolve_dispute, dispute_id="dsp_1", outcome=DisputeOutcome.rejected), DISPUTED, None),
        (
            req(A.resolve_dispute, dispute_id="dsp_9", outcome=DisputeOutcome.upheld),
            DISPUTED,
            ActionRefusal.dispute_not_found,
        ),
        (req(A.resolve_dispute, dispute_id="dsp_1"), DISPUTED, ActionRefusal.invalid_action),
        (
            req(A.resolve_dispute, dispute_id="dsp_1", outcome=DisputeOutcome.upheld, amount_fen=9999),
            DISPUTED,
            ActionRefusal.invalid_action,
        ),
    ],
)
def test_check(request_: ActionRequest, standing: Standing, refusal: ActionRefusal | None) -> None:
    refused = check(request_, standing, NOW)
    assert (refused.code if refused else None) is refusal


@pytest.mark.parametrize("action", list(A))
@pytest.mark.parametrize("status", [PaymentStatus.settled, PaymentStatus.written_off])
def test_nothing_is_done_to_a_closed_visit(action: A, status: PaymentStatus) -> None:
    standing = replace(PENDING, status=status, dispute_id="dsp_1")
    refused = check(req(action, approval_id="ap1", dispute_id="dsp_1", amount_fen=1), standing, NOW)
    assert refused is not None and refused.code is ActionRefusal.invalid_action


@pytest.mark.parametrize("action", list(A))
def test_an_action_has_an_operator_and_a_reason(action: A) -> None:
    assert check(replace(req(action), reason=" "), UNPAID, NOW) is not None
    assert check(replace(req(action), operator=""), UNPAID, NOW) is not None


@pytest.mark.parametrize("action", [A.extend_deadline, A.unlock_card, A.write_off])
def test_before_discharge(action: A) -> None:
    open_visit = replace(LOCKED, status=PaymentStatus.open, due_at=None)
    assert check(req(action, due_at=sh(20)), open_visit, NOW) is not None


@pytest.mark.parametrize("action", list(A))
@pytest.mark.parametrize(
    "bad",
    [
        {"operator": "o" * 61},
        {"reason": "r" * 301},
        {"reason": "a\x00b"},
        {"reason": "line\x1bbreak"},
        {"operator": "op\n1"},
        {"reason": "\ud800"},
        {"dispute_id": "dsp\x07", "approval_id": "ap1"},
    ],
)
def test_texts_from_temporal_ui_are_held_to_the_apis_rules(action: A, bad: dict[str, Any]) -> None:
    """An action sent from Temporal UI or the CLI skips the API's schemas: the validator
    refuses what the API would (length, control characters) before it enters history."""
    refused = check(replace(req(action, dispute_id="dsp_1", approval_id="ap1"), **bad), PENDING, NOW)
    assert refused is not None and refused.code is ActionRefusal.invalid_action


def test_the_longest_texts_the_api_takes_pass() -> None:
    assert check(replace(req(A.pause_sanctions), operator="o" * 60, reason="理" * 300), UNPAID, NOW) is None
