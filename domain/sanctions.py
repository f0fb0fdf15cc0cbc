"""Sanctions of the patent's figure 4 (steps 407-410) as a concept: what is in force for a
visit (dunning, the pre-default notice, the card hold, the credit report), the holds that
suspend them (a dispute, an operator's pause) and how far they moved the deadline. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class CreditReportKind(StrEnum):
    report = "report"  # the bill is unpaid past the deadline: a default
    correction = "correction"  # the defaulted bill was paid: the default is withdrawn


class HoldKind(StrEnum):
    """What suspends a visit's sanctions (no reminder, no lock, no report while it is on)."""

    dispute = "dispute"  # the patient contests the bill or a sanction (申诉)
    operator = "operator"  # an operator paused the sanctions


class OperatorAction(StrEnum):
    """What an operator may do to a visit (`POST /v1/ops/visits/{id}/actions`, or the visit
    workflow's `operator_action` update from Temporal UI), and the dispute steps that reach the
    workflow the same way."""

    pause_sanctions = "pause_sanctions"
    resume_sanctions = "resume_sanctions"
    extend_deadline = "extend_deadline"
    waive = "waive"
    unlock_card = "unlock_card"
    write_off = "write_off"  # needs a second operator's approval
    approve = "approve"  # the second operator decides a pending write-off
    reject = "reject"
    open_dispute = "open_dispute"
    resolve_dispute = "resolve_dispute"


class DisputeStatus(StrEnum):
    open = "open"
    resolved = "resolved"


class DisputeOutcome(StrEnum):
    upheld = "upheld"  # waives (part or all) and undoes this visit's lock and report
    rejected = "rejected"  # lifts the hold; the wait resumes with the deadline moved


class ApprovalStatus(StrEnum):
    pending_approval = "pending_approval"
    approved = "approved"
    rejected = "rejected"


class Sanction(StrEnum):
    """What may be in force for an unpaid visit (figure 4, steps 407-410)."""

    dunning = "dunning"  # the daily reminder
    pre_default_notice = "pre_default_notice"  # pay before the lock, or be reported
    card_hold = "card_hold"  # this visit holds the patient's insurance card locked
    credit_report = "credit_report"  # the default is on record at the credit platform


@dataclass(frozen=True, kw_only=True)
class Hold:
    """A suspension of a visit's sanctions: while it is on, no reminder, notice, lock or report."""

    kind: HoldKind
    reason: str
    since: datetime
    until: datetime | None = None  # an operator's pause may end by itself; None: until lifted
    by: str = ""  # the operator, or the dispute's opener


@dataclass(frozen=True, kw_only=True)
class Sanctions:
    """One visit's sanctions: what was imposed, what suspends them, how far the deadline moved.

    A hold moves the deadline (and the notice and lock times) later by the time it lasted, so a
    patient never loses notice time to a review; `extend` moves it by an operator's decision."""

    defaulted: bool = False  # the deadline passed unpaid: the sanctions were imposed
    card_locked: bool = False  # the card is locked, as the bureau answered this visit's last call
    credit_reported: bool = False  # the default is on record and not yet corrected
    reported_fen: int = 0  # the amount reported, which the correction names
    lock_notified: bool = False  # the card_locked text went out
    released: bool = False  # undone by a person (upheld dispute, write-off): never imposed again
    card_released: bool = False  # an operator released this visit's hold on the card
    pause: Hold | None = None  # HoldKind.operator
    dispute: Hold | None = None  # HoldKind.dispute
    held_since: datetime | None = None  # the current suspension began (the first hold still on)
    moved_seconds: float = 0  # the deadline moved later: holds that ended, extensions
    notice_moved_seconds: float = 0  # hold time after the pre-default notice went out

    @property
    def moved(self) -> timedelta:
        return timedelta(seconds=self.moved_seconds)

    def hold(self) -> Hold | None:
        """The hold an operator sees: a dispute before a pause."""
        return self.dispute or self.pause

    @property
    def suspended(self) -> bool:
        return self.hold() is not None

    def pause_ends_at(self) -> datetime | None:
        """When an operator's pause ends by itself (the workflow wakes then)."""
        return None if self.pause is None else self.pause.until

    def in_force(self) -> frozenset[Sanction]:
        """The sanctions on record now (what undoing must take back)."""
        found: set[Sanction] = set()
        if self.card_locked and not self.card_released:
            found.add(Sanction.card_hold)
        if self.credit_reported:
            found.add(Sanction.credit_report)
        return frozenset(found)

    def may(self, sanction: Sanction) -> bool:
        """Whether `sanction` may go ahead now: nothing under a hold; once a person undid the
        sanctions, no notice, lock or report for this visit again (reminders go on)."""
        if self.suspended:
            return False
        if sanction is Sanction.card_hold and self.card_released:
            return False
        return sanction is Sanction.dunning or not self.released


def put_on(s: Sanctions, hold: Hold) -> Sanctions:
    """A hold goes on (a second kind may join the first; the suspension began with the first)."""
    held_since = s.held_since or hold.since
    if hold.kind is HoldKind.dispute:
        return replace(s, dispute=hold, held_since=held_since)
    return replace(s, pause=hold, held_since=held_since)


def take_off(s: Sanctions, kind: HoldKind, now: datetime, *, notice_sent: bool) -> Sanctions:
    """A hold ends at `now`; when none is left, the deadline (and, once the notice went out,
    the lock) moves later by the time the suspension lasted."""
    s = replace(s, dispute=None) if kind is HoldKind.dispute else replace(s, pause=None)
    if s.suspended or s.held_since is None:
        return s
    lasted = max((now - s.held_since).total_seconds(), 0.0)
    return replace(
        s,
        held_since=None,
        moved_seconds=s.moved_seconds + lasted,
        notice_moved_seconds=s.notice_moved_seconds + (lasted if notice_sent else 0.0),
    )


def expire(s: Sanctions, now: datetime, *, notice_sent: bool) -> Sanctions:
    """An operator's pause whose `until` has come ends then (not later, when noticed)."""
    until = s.pause_ends_at()
    if until is None or now < until:
        return s
    return take_off(s, HoldKind.operator, until, notice_sent=notice_sent)


def extend(s: Sanctions, by: timedelta) -> Sanctions:
    """An operator moves the deadline later."""
    if by < timedelta(0):
        raise ValueError("a deadline is extended, never brought forward")
    return replace(s, moved_seconds=s.moved_seconds + by.total_seconds())


def imposed(s: Sanctions, *, card_locked: bool, reported_fen: int) -> Sanctions:
    """Default: the card lock as the bureau answered, the report of `reported_fen`."""
    return replace(s, defaulted=True, card_locked=card_locked, credit_reported=True, reported_fen=reported_fen)


def lock_released(s: Sanctions, *, card_locked: bool, by_operator: bool = False) -> Sanctions:
    """This visit's hold on the card was released; `card_locked` is the card as the bureau has
    it after (still locked while another defaulted visit of the patient holds it). An
    operator's release is for good: this visit never locks the card again."""
    return replace(s, card_locked=card_locked, card_released=s.card_released or by_operator)


def corrected(s: Sanctions) -> Sanctions:
    """The credit platform was told the default is withdrawn."""
    return replace(s, credit_reported=False)


def released(s: Sanctions) -> Sanctions:
    """A person undid the sanctions (an upheld dispute, a write-off): none comes back."""
    return replace(s, released=True)
