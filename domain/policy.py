"""Payment policy (the patent's figure 4) as a pure function of (state, now).

Discharge time -> the end of the visit day (arrears) and the deadline (default);
`decide(state, now)` -> what the visit's workflow should do next. Durations are seconds
and quiet hours minutes of the local day, so the policy travels in workflow payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from domain.sanctions import Sanction, Sanctions


class PaymentStatus(StrEnum):
    open = "open"  # not yet discharged
    due = "due"  # discharged, within the visit day
    arrears = "arrears"  # past the visit day, before the deadline
    defaulted = "defaulted"  # past the deadline: card locked, credit reported
    settled = "settled"  # nothing owed
    written_off = "written_off"  # the hospital gave the debt up: no sanction remains, the bill stays


# discharged and owing: the statuses a payment ends
UNPAID = frozenset({PaymentStatus.due, PaymentStatus.arrears, PaymentStatus.defaulted})


def settling(recorded: str, balance_fen: int) -> bool:
    """Whether the ledger shows paid a discharged visit whose workflow has not yet recorded it
    settled (it has yet to hear of the money, or is undoing the sanctions)."""
    return PaymentStatus(recorded) in UNPAID and balance_fen <= 0


class ServiceStatus(StrEnum):
    normal = "normal"
    arrears = "arrears"
    defaulted = "defaulted"


def service_status(statuses: list[PaymentStatus] | list[str]) -> ServiceStatus:
    """A patient's service status follows from the statuses of their visits."""
    values = {PaymentStatus(s) for s in statuses}
    if PaymentStatus.defaulted in values:
        return ServiceStatus.defaulted
    if PaymentStatus.arrears in values:
        return ServiceStatus.arrears
    return ServiceStatus.normal


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, kw_only=True)
class QuietHours:
    """Local hours with no reminders; start > end spans midnight (21:00-08:00)."""

    start_minute: int
    end_minute: int

    @classmethod
    def of(cls, start: time, end: time) -> QuietHours:
        return cls(start_minute=start.hour * 60 + start.minute, end_minute=end.hour * 60 + end.minute)

    def contains(self, minute_of_day: int) -> bool:
        if self.start_minute == self.end_minute:
            return False
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute_of_day < self.end_minute
        return minute_of_day >= self.start_minute or minute_of_day < self.end_minute


@dataclass(frozen=True, kw_only=True)
class Deadlines:
    arrears_at: datetime  # end of the visit day: unpaid from here on is arrears
    default_at: datetime  # the deadline: card lock and credit report, never before it
    notice_at: datetime  # the pre-default notice is due: the last sendable instant before the notice period


@dataclass(frozen=True, kw_only=True)
class PaymentPolicy:
    timezone: str = "Asia/Shanghai"
    arrears_after_seconds: float | None = None  # None: at the end of the visit day
    default_after_seconds: float = 7 * 86400
    dunning_every_seconds: float = 86400
    quiet_hours: QuietHours | None = QuietHours(start_minute=21 * 60, end_minute=8 * 60)
    # the pre-default notice goes out at least this long before the lock (not before arrears)
    notice_before_seconds: float = 86400
    # a settled visit stays open this long for cancellations (退费) and late money to refund;
    # 0: it closes when settled
    refund_window_seconds: float = 0
    # no reminders this long after the deadline; the debt stays in the books
    dunning_stop_after_seconds: float = 90 * 86400
    # a visit the HIS never discharges is discharged this long after registration
    auto_discharge_after_seconds: float = 86400

    def deadlines(self, discharged_at: datetime, moved_seconds: float = 0) -> Deadlines:
        """The visit's deadlines; `moved_seconds` (holds that ended, extensions) moves the
        deadline and the notice later, never the end of the visit day."""
        _require_aware(discharged_at)
        default_at = discharged_at + timedelta(seconds=self.default_after_seconds + moved_seconds)
        if self.arrears_after_seconds is None:
            tz = _zone(self.timezone)
            local_day = discharged_at.astimezone(tz).date()
            arrears_at = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=tz)
        else:
            arrears_at = discharged_at + timedelta(seconds=self.arrears_after_seconds)
        arrears_at = min(arrears_at, default_at)
        # the notice goes out before the quiet hours that would hold it past its time
        notice_at = max(arrears_at, self.last_sendable(default_at - timedelta(seconds=self.notice_before_seconds)))
        return Deadlines(arrears_at=arrears_at, default_at=default_at, notice_at=notice_at)

    def lock_at(
        self, d: Deadlines, notice_sent_at: datetime | None, now: datetime, notice_moved_seconds: float = 0
    ) -> datetime:
        """The earliest lock: never before the deadline, nor sooner than the full notice
        period after the notice went out (or would go out, if it has not yet); a hold after
        the notice moves the lock later by the time it lasted."""
        if notice_sent_at is not None:
            notice = notice_sent_at + timedelta(seconds=notice_moved_seconds)
        else:
            notice = self.next_sendable(max(now, d.notice_at))
        return max(d.default_at, notice + timedelta(seconds=self.notice_before_seconds))

    def local_label(self, at: datetime) -> str:
        """A time as the patient reads it in an SMS: 3月8日 10:00."""
        local = at.astimezone(_zone(self.timezone))
        return f"{local.month}月{local.day}日 {local.hour:02d}:{local.minute:02d}"

    def is_quiet(self, at: datetime) -> bool:
        if self.quiet_hours is None:
            return False
        local = at.astimezone(_zone(self.timezone))
        return self.quiet_hours.contains(local.hour * 60 + local.minute)

    def _quiet_start(self, at: datetime) -> datetime:
        """The start of the quiet hours `at` falls in."""
        assert self.quiet_hours is not None
        tz = _zone(self.timezone)
        local = at.astimezone(tz)
        q = self.quiet_hours
        day = local.date()
        if q.start_minute > q.end_minute and local.hour * 60 + local.minute < q.start_minute:
            day -= timedelta(days=1)  # after midnight: the quiet hours began the evening before
        return datetime.combine(day, time(q.start_minute // 60, q.start_minute % 60), tzinfo=tz)

    def next_sendable(self, at: datetime) -> datetime:
        """`at`, or the end of the quiet hours it falls in."""
        _require_aware(at)
        if not self.is_quiet(at):
            return at
        assert self.quiet_hours is not None
        tz = _zone(self.timezone)
        local = at.astimezone(tz)
        end = time(self.quiet_hours.end_minute // 60, self.quiet_hours.end_minute % 60)
        candidate = datetime.combine(local.date(), end, tzinfo=tz)
        if candidate <= local:
            candidate = datetime.combine(local.date() + timedelta(days=1), end, tzinfo=tz)
        return candidate

    def last_sendable(self, at: datetime) -> datetime:
        """`at`, or the last minute before the quiet hours it falls in (20:59)."""
        _require_aware(at)
        if not self.is_quiet(at):
            return at
        return self._quiet_start(at) - timedelta(minutes=1)

    def status_at(self, *, discharged_at: datetime | None, balance_fen: int, now: datetime) -> PaymentStatus:
        if discharged_at is None:
            return PaymentStatus.open
        if balance_fen <= 0:
            return PaymentStatus.settled
        d = self.deadlines(discharged_at)
        if now >= d.default_at:
            return PaymentStatus.defaulted
        if now >= d.arrears_at:
            return PaymentStatus.arrears
        return PaymentStatus.due

    def decide(self, state: PaymentState, now: datetime) -> Decision:
        """The next step. The caller reads `state.balance_fen` from the ledger before it
        acts on anything but `wait`. Under a hold nothing but the arrears status moves; the
        wait lasts until the hold ends (an operator's pause with an end wakes by itself)."""
        _require_aware(now)
        if state.balance_fen <= 0:
            return Decision(action=Action.settle)
        s = state.sanctions
        d = self.deadlines(state.discharged_at, s.moved_seconds)
        if now >= d.arrears_at and not state.in_arrears:
            return Decision(action=Action.enter_arrears)
        if s.suspended:
            return Decision(action=Action.wait, until=s.pause_ends_at())
        sendable = self.next_sendable(now)  # texts wait for the end of the quiet hours
        wake: list[datetime] = []
        step = self._sanction_step(state, d, now, sendable, wake)
        if step is not None:
            return step
        if state.in_arrears:
            due = max(self.next_dunning_at(state, d), sendable)
            if due < d.default_at + timedelta(seconds=self.dunning_stop_after_seconds):
                if now >= due:
                    return Decision(
                        action=Action.send_dunning,
                        first_dunning=state.last_dunning_at is None,
                        after_default=state.defaulted,
                    )
                wake.append(due)
        else:
            wake.append(d.arrears_at)
        return Decision(action=Action.wait, until=min(wake) if wake else None)

    def _sanction_step(
        self, state: PaymentState, d: Deadlines, now: datetime, sendable: datetime, wake: list[datetime]
    ) -> Decision | None:
        """The notice, the default or the lock's text when due; otherwise when it will be."""
        s = state.sanctions
        if not state.defaulted:
            if not s.may(Sanction.pre_default_notice):
                return None
            if state.notice_sent_at is None:
                notice_at = max(d.notice_at, sendable)  # late (short policy, busy worker): the lock waits
                if now >= notice_at:
                    return Decision(action=Action.send_notice)
                wake.append(notice_at)
            else:
                lock_at = self.lock_at(d, state.notice_sent_at, now, s.notice_moved_seconds)
                if now >= lock_at:
                    return Decision(action=Action.default)
                wake.append(lock_at)
        elif not state.lock_notified and s.may(Sanction.card_hold):
            # the lock may come at night; its text waits for the morning
            if now >= sendable:
                return Decision(action=Action.send_lock_notice)
            wake.append(sendable)
        return None

    def next_dunning_at(self, state: PaymentState, d: Deadlines | None = None) -> datetime:
        d = d or self.deadlines(state.discharged_at, state.sanctions.moved_seconds)
        if state.last_dunning_at is None:
            return self.next_sendable(d.arrears_at)
        return self.next_sendable(state.last_dunning_at + timedelta(seconds=self.dunning_every_seconds))


class Action(StrEnum):
    wait = "wait"
    enter_arrears = "enter_arrears"
    send_dunning = "send_dunning"
    send_notice = "send_notice"  # the pre-default notice: pay before the lock or be reported
    default = "default"  # lock the insurance card and report to the credit platform
    send_lock_notice = "send_lock_notice"  # the card_locked text, outside quiet hours
    settle = "settle"


@dataclass(frozen=True, kw_only=True)
class PaymentState:
    discharged_at: datetime
    balance_fen: int  # as read from the ledger
    in_arrears: bool = False
    defaulted: bool = False  # card locked and credit reported
    last_dunning_at: datetime | None = None
    notice_sent_at: datetime | None = None  # the pre-default notice
    lock_notified: bool = False  # the card_locked text went out
    # holds, the deadline moved, sanctions undone by a person (domain.sanctions)
    sanctions: Sanctions = field(default_factory=Sanctions)


@dataclass(frozen=True, kw_only=True)
class Decision:
    action: Action
    until: datetime | None = None  # for wait; None: until something changes (a payment, an action)
    first_dunning: bool = False  # for send_dunning: the arrears notice rather than a reminder
    after_default: bool = False  # for send_dunning: the card is locked already; say so, not a past deadline


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("policy times must carry a time zone")
