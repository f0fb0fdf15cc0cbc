"""Payment policy (the patent's figure 4) as a pure function of (state, now).

Discharge time -> the end of the visit day (arrears) and the deadline (default);
`decide(state, now)` -> what the visit's workflow should do next. Durations are seconds
and quiet hours minutes of the local day, so the policy travels in workflow payloads.
"""


from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo


class PaymentStatus(StrEnum):
    open = "open"  # not yet discharged
    due = "due"  # discharged, within the visit day
    arrears = "arrears"  # past the visit day, before the deadline
    defaulted = "defaulted"  # past the deadline: card locked, credit reported
    settled = "settled"  # nothing owed


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
    default_at: datetime  # the deadline: card lock and credit report
    notice_at: datetime  # the pre-default notice: no report without it


@dataclass(frozen=True, kw_only=True)
class PaymentPolicy:
    timezone: str = "Asia/Shanghai"
    arrears_after_seconds: float | None = None  # None: at the end of the visit day
    default_after_seconds: float = 7 * 86400
    dunning_every_seconds: float = 86400
    quiet_hours: QuietHours | None = QuietHours(start_minute=21 * 60, end_minute=8 * 60)
    # the pre-default notice goes out this long before the deadline (not before arrears)
    notice_before_seconds: float = 86400
    # a settled visit stays open this long for cancellations (退费) and late money to refund;
    # 0 (visits started before refunds existed): it closes when settled
    refund_window_seconds: float = 0

    def deadlines(self, discharged_at: datetime) -> Deadlines:
        _require_aware(discharged_at)
        default_at = discharged_at + timedelta(seconds=self.default_after_seconds)
        if self.arrears_after_seconds is None:
            tz = _zone(self.timezone)
            local_day = discharged_at.astimezone(tz).date()
            arrears_at = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=tz)
        else:
            arrears_at = discharged_at + timedelta(seconds=self.arrears_after_seconds)
        arrears_at = min(arrears_at, default_at)
        notice_at = max(arrears_at, default_at - timedelta(seconds=self.notice_before_seconds))
        return Deadlines(arrears_at=arrears_at, default_at=default_at, notice_at=notice_at)

    def local_label(self, at: datetime) -> str:
        """A time as the patient reads it in an SMS: 3月8日 10:00."""
        local = at.astimezone(_zone(self.timezone))
        return f"{local.month}月{local.day}日 {local.hour:02d}:{local.minute:02d}"

    def is_quiet(self, at: datetime) -> bool:
        if self.quiet_hours is None:
            return False
        local = at.astimezone(_zone(self.timezone))
        return self.quiet_hours.contains(local.hour * 60 + local.minute)

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
        _require_aware(now)
        if state.balance_fen <= 0:
            return Decision(action=Action.settle)
        d = self.deadlines(state.discharged_at)
        if now >= d.arrears_at and not state.in_arrears:
            return Decision(action=Action.enter_arrears)
        if not state.notice_sent and not state.defaulted and now >= d.notice_at:
            # the sanction waits for its notice, and the notice for the morning
            if self.is_quiet(now):
                return Decision(action=Action.wait, until=self.next_sendable(now))
            return Decision(action=Action.send_notice)
        if now >= d.default_at and not state.defaulted:
            return Decision(action=Action.default)
        wake: list[datetime] = []
        if state.in_arrears:
            due = self.next_dunning_at(state, d)
            if now >= due:
                first = state.last_dunning_at is None
                return Decision(action=Action.send_dunning, first_dunning=first)
            wake.append(due)
        else:
            wake.append(d.arrears_at)
        if not state.defaulted:
            wake.append(d.default_at)
        if not state.notice_sent and not state.defaulted:
            wake.append(d.notice_at)
        return Decision(action=Action.wait, until=min(wake))

    def next_dunning_at(self, state: PaymentState, d: Deadlines | None = None) -> datetime:
        d = d or self.deadlines(state.discharged_at)
        if state.last_dunning_at is None:
            return self.next_sendable(d.arrears_at)
        return self.next_sendable(state.last_dunning_at + timedelta(seconds=self.dunning_every_seconds))


class Action(StrEnum):
    wait = "wait"
    enter_arrears = "enter_arrears"
    send_dunning = "send_dunning"
    send_notice = "send_notice"  # the pre-default notice: pay by the deadline or be reported
    default = "default"  # lock the insurance card and report to the credit platform
    settle = "settle"


@dataclass(frozen=True, kw_only=True)
class PaymentState:
    discharged_at: datetime
    balance_fen: int
    in_arrears: bool = False
    defaulted: bool = False
    last_dunning_at: datetime | None = None
    notice_sent: bool = False


@dataclass(frozen=True, kw_only=True)
class Decision:
    action: Action
    until: datetime | None = None  # for wait
    first_dunning: bool = False  # for send_dunning: the arrears notice rather than a reminder


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("policy times must carry a time zone")
