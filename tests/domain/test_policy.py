"""The payment policy at instants around midnight in Asia/Shanghai, whatever the host's zone."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.policy import (
    Action,
    Decision,
    PaymentPolicy,
    PaymentState,
    PaymentStatus,
    QuietHours,
    ServiceStatus,
    service_status,
    settling,
)

SH = ZoneInfo("Asia/Shanghai")
POLICY = PaymentPolicy()


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SH)


@pytest.mark.parametrize(
    ("discharged", "arrears_at"),
    [
        (sh(2026, 3, 1, 10, 0), sh(2026, 3, 2, 0, 0)),
        (sh(2026, 3, 1, 23, 59, 59), sh(2026, 3, 2, 0, 0)),
        (sh(2026, 3, 1, 0, 0), sh(2026, 3, 2, 0, 0)),
        # 15:30 UTC is 23:30 in Shanghai: the visit day ends 30 minutes later, not at UTC midnight
        (datetime(2026, 3, 1, 15, 30, tzinfo=UTC), sh(2026, 3, 2, 0, 0)),
        # 16:30 UTC on Mar 1 is already Mar 2 in Shanghai
        (datetime(2026, 3, 1, 16, 30, tzinfo=UTC), sh(2026, 3, 3, 0, 0)),
        (sh(2026, 12, 31, 18, 0), sh(2027, 1, 1, 0, 0)),
    ],
)
def test_end_of_visit_day(discharged: datetime, arrears_at: datetime) -> None:
    d = POLICY.deadlines(discharged)
    assert d.arrears_at == arrears_at
    assert d.default_at == discharged + timedelta(days=7)


@pytest.mark.parametrize(
    ("now", "balance", "status"),
    [
        (sh(2026, 3, 1, 10, 0), 100, PaymentStatus.due),
        (sh(2026, 3, 1, 23, 59, 59), 100, PaymentStatus.due),
        (sh(2026, 3, 2, 0, 0), 100, PaymentStatus.arrears),
        (sh(2026, 3, 8, 9, 59), 100, PaymentStatus.arrears),
        (sh(2026, 3, 8, 10, 0), 100, PaymentStatus.defaulted),
        (sh(2026, 3, 8, 10, 0), 0, PaymentStatus.settled),
        (sh(2026, 3, 2, 0, 0), -5, PaymentStatus.settled),
    ],
)
def test_status_at(now: datetime, balance: int, status: PaymentStatus) -> None:
    assert POLICY.status_at(discharged_at=sh(2026, 3, 1, 10, 0), balance_fen=balance, now=now) is status


def test_not_discharged_is_open() -> None:
    assert POLICY.status_at(discharged_at=None, balance_fen=100, now=sh(2026, 3, 1)) is PaymentStatus.open


def test_decide_walks_the_figure_4_path() -> None:
    discharged = sh(2026, 3, 1, 10, 0)
    st = PaymentState(discharged_at=discharged, balance_fen=5000)
    d = POLICY.decide(st, discharged)
    assert d.action is Action.wait and d.until == sh(2026, 3, 2, 0, 0)
    assert POLICY.decide(st, sh(2026, 3, 2, 0, 0)).action is Action.enter_arrears
    st = PaymentState(discharged_at=discharged, balance_fen=5000, in_arrears=True)
    # midnight is in the quiet hours: the first message waits for 08:00
    d = POLICY.decide(st, sh(2026, 3, 2, 0, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 2, 8, 0)
    d = POLICY.decide(st, sh(2026, 3, 2, 8, 0))
    assert d.action is Action.send_dunning and d.first_dunning
    st = PaymentState(discharged_at=discharged, balance_fen=5000, in_arrears=True, last_dunning_at=sh(2026, 3, 2, 8, 0))
    d = POLICY.decide(st, sh(2026, 3, 2, 8, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 3, 8, 0)
    # a day before the deadline the patient is told what will happen
    st = PaymentState(discharged_at=discharged, balance_fen=5000, in_arrears=True, last_dunning_at=sh(2026, 3, 7, 8, 0))
    d = POLICY.decide(st, sh(2026, 3, 7, 9, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 7, 10, 0)
    assert POLICY.decide(st, sh(2026, 3, 7, 10, 0)).action is Action.send_notice
    # no report without the notice, however late it is
    assert POLICY.decide(st, sh(2026, 3, 8, 10, 0)).action is Action.send_notice
    notice = sh(2026, 3, 7, 10, 0)
    st = PaymentState(
        discharged_at=discharged,
        balance_fen=5000,
        in_arrears=True,
        notice_sent_at=notice,
        last_dunning_at=sh(2026, 3, 8, 8, 0),
    )
    d = POLICY.decide(st, sh(2026, 3, 8, 9, 59))
    assert d.action is Action.wait and d.until == sh(2026, 3, 8, 10, 0)
    assert POLICY.decide(st, sh(2026, 3, 8, 10, 0)).action is Action.default
    st = PaymentState(
        discharged_at=discharged,
        balance_fen=5000,
        in_arrears=True,
        defaulted=True,
        notice_sent_at=notice,
        last_dunning_at=sh(2026, 3, 8, 8, 0),
    )
    assert POLICY.decide(st, sh(2026, 3, 8, 10, 0)).action is Action.send_lock_notice
    st = PaymentState(
        discharged_at=discharged,
        balance_fen=5000,
        in_arrears=True,
        defaulted=True,
        notice_sent_at=notice,
        lock_notified=True,
        last_dunning_at=sh(2026, 3, 8, 8, 0),
    )
    d = POLICY.decide(st, sh(2026, 3, 8, 10, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 9, 8, 0)
    d = POLICY.decide(st, sh(2026, 3, 9, 8, 0))
    assert d.action is Action.send_dunning and d.after_default and not d.first_dunning
    assert (
        POLICY.decide(PaymentState(discharged_at=discharged, balance_fen=0, defaulted=True), sh(2026, 3, 20)).action
        is Action.settle
    )


def test_dunning_that_falls_in_quiet_hours_waits_for_morning() -> None:
    st = PaymentState(
        discharged_at=sh(2026, 3, 1, 10), balance_fen=1, in_arrears=True, last_dunning_at=sh(2026, 3, 2, 20, 30)
    )
    assert PaymentPolicy(dunning_every_seconds=86400).next_dunning_at(st) == sh(2026, 3, 3, 20, 30)
    assert PaymentPolicy(dunning_every_seconds=5400).next_dunning_at(st) == sh(2026, 3, 3, 8, 0)


@pytest.mark.parametrize(
    ("at", "sendable"),
    [
        (sh(2026, 3, 2, 20, 59), sh(2026, 3, 2, 20, 59)),
        (sh(2026, 3, 2, 21, 0), sh(2026, 3, 3, 8, 0)),
        (sh(2026, 3, 2, 23, 30), sh(2026, 3, 3, 8, 0)),
        (sh(2026, 3, 3, 0, 0), sh(2026, 3, 3, 8, 0)),
        (sh(2026, 3, 3, 7, 59), sh(2026, 3, 3, 8, 0)),
        (sh(2026, 3, 3, 8, 0), sh(2026, 3, 3, 8, 0)),
        (datetime(2026, 3, 2, 13, 30, tzinfo=UTC), sh(2026, 3, 3, 8, 0)),  # 21:30 in Shanghai
    ],
)
def test_quiet_hours(at: datetime, sendable: datetime) -> None:
    assert POLICY.next_sendable(at) == sendable


def test_no_quiet_hours_and_short_durations() -> None:
    p = PaymentPolicy(arrears_after_seconds=2, default_after_seconds=6, dunning_every_seconds=1, quiet_hours=None)
    t0 = sh(2026, 3, 1, 23, 0)
    d = p.deadlines(t0)
    assert d.arrears_at == t0 + timedelta(seconds=2) and d.default_at == t0 + timedelta(seconds=6)
    assert p.next_sendable(sh(2026, 3, 1, 23, 30)) == sh(2026, 3, 1, 23, 30)


def test_arrears_never_after_the_deadline() -> None:
    p = PaymentPolicy(default_after_seconds=60)
    t0 = sh(2026, 3, 1, 10)
    assert p.deadlines(t0).arrears_at == t0 + timedelta(seconds=60)


def test_quiet_hours_within_a_day() -> None:
    q = QuietHours(start_minute=12 * 60, end_minute=14 * 60)
    assert q.contains(12 * 60) and q.contains(13 * 60 + 59) and not q.contains(14 * 60) and not q.contains(0)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        POLICY.deadlines(datetime(2026, 3, 1, 10))


@pytest.mark.parametrize(
    ("statuses", "service"),
    [
        ([], ServiceStatus.normal),
        (["open", "due", "settled"], ServiceStatus.normal),
        (["due", "arrears"], ServiceStatus.arrears),
        (["arrears", "defaulted", "settled"], ServiceStatus.defaulted),
    ],
)
def test_service_status(statuses: list[str], service: ServiceStatus) -> None:
    assert service_status(statuses) is service


def test_every_payment_status_maps_to_a_service_status() -> None:
    for status in PaymentStatus:
        assert service_status([status]) in ServiceStatus


def test_a_notice_due_in_quiet_hours_goes_out_before_they_begin() -> None:
    discharged = sh(2026, 3, 1, 23, 0)  # deadline 03-08 23:00; a day before is 03-07 23:00 (quiet)
    assert POLICY.deadlines(discharged).notice_at == sh(2026, 3, 7, 20, 59)
    st = PaymentState(discharged_at=discharged, balance_fen=100, in_arrears=True, last_dunning_at=sh(2026, 3, 7, 20, 0))
    d = POLICY.decide(st, sh(2026, 3, 7, 20, 30))
    assert d.action is Action.wait and d.until == sh(2026, 3, 7, 20, 59)
    assert POLICY.decide(st, sh(2026, 3, 7, 20, 59)).action is Action.send_notice


def test_a_late_notice_waits_for_the_morning_and_the_lock_for_the_full_notice() -> None:
    discharged = sh(2026, 3, 1, 23, 0)
    # the worker was away at 20:59: the notice waits for 08:00, the lock for 08:00 a day later
    st = PaymentState(discharged_at=discharged, balance_fen=100, in_arrears=True, last_dunning_at=sh(2026, 3, 7, 20, 0))
    d = POLICY.decide(st, sh(2026, 3, 7, 23, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 8, 8, 0)
    st = replace(st, notice_sent_at=sh(2026, 3, 8, 8, 0))
    d = POLICY.decide(st, sh(2026, 3, 8, 23, 0))  # the deadline, but not yet a full day of notice
    assert d.action is Action.wait and d.until == sh(2026, 3, 9, 8, 0)
    assert POLICY.decide(st, sh(2026, 3, 9, 8, 0)).action is Action.default


@pytest.mark.parametrize(
    ("at", "last"),
    [
        (sh(2026, 3, 2, 20, 59), sh(2026, 3, 2, 20, 59)),
        (sh(2026, 3, 2, 21, 0), sh(2026, 3, 2, 20, 59)),
        (sh(2026, 3, 2, 23, 59), sh(2026, 3, 2, 20, 59)),
        (sh(2026, 3, 3, 0, 30), sh(2026, 3, 2, 20, 59)),
        (sh(2026, 3, 3, 7, 59), sh(2026, 3, 2, 20, 59)),
        (sh(2026, 3, 3, 8, 0), sh(2026, 3, 3, 8, 0)),
        (datetime(2026, 3, 2, 17, 0, tzinfo=UTC), sh(2026, 3, 2, 20, 59)),  # 01:00 in Shanghai
    ],
)
def test_last_sendable(at: datetime, last: datetime) -> None:
    assert POLICY.last_sendable(at) == last


EFFECTS = {
    Action.enter_arrears: lambda st, now: replace(st, in_arrears=True),
    Action.send_dunning: lambda st, now: replace(st, last_dunning_at=now),
    Action.send_notice: lambda st, now: replace(st, notice_sent_at=now),
    Action.default: lambda st, now: replace(st, defaulted=True),
    Action.send_lock_notice: lambda st, now: replace(st, lock_notified=True),
}


def test_every_action_is_walked() -> None:
    assert set(EFFECTS) | {Action.wait, Action.settle} == set(Action)


def walk(
    policy: PaymentPolicy, discharged: datetime, days: int = 10, *, away: tuple[datetime, datetime] | None = None
) -> list[tuple[Decision, datetime]]:
    """Follow the policy unpaid for `days`, as the workflow does; `away`: no worker then."""
    st, now, done = PaymentState(discharged_at=discharged, balance_fen=5000), discharged, []
    while now < discharged + timedelta(days=days):
        if away and away[0] <= now < away[1]:
            now = away[1]
        d = policy.decide(st, now)
        if d.action is Action.wait:
            assert d.until is not None and d.until > now
            now = d.until
            continue
        done.append((d, now))
        st = EFFECTS[d.action](st, now)
    return done


def at(done: list[tuple[Decision, datetime]], action: Action) -> list[datetime]:
    return [t for d, t in done if d.action is action]


STARTS = [(0, 30), (7, 59), (12, 0), (20, 59), (23, 59)]


@pytest.mark.parametrize("notice_days", [1, 2])
@pytest.mark.parametrize(("hour", "minute"), STARTS, ids=[f"{h:02d}{m:02d}" for h, m in STARTS])
def test_the_notice_period_holds_from_any_local_start(hour: int, minute: int, notice_days: int) -> None:
    policy = PaymentPolicy(notice_before_seconds=notice_days * 86400)
    discharged = sh(2026, 3, 1, hour, minute)
    done = walk(policy, discharged)
    [notice], [lock], [locked_sms] = (
        at(done, a) for a in (Action.send_notice, Action.default, Action.send_lock_notice)
    )
    assert not policy.is_quiet(notice)
    assert lock - notice >= timedelta(days=notice_days)
    assert lock >= policy.deadlines(discharged).default_at
    assert lock <= discharged + timedelta(days=7, minutes=1)  # notice in time: the lock is not late either
    assert locked_sms >= lock and not policy.is_quiet(locked_sms)
    for d, t in done:
        if d.action is Action.send_dunning:
            assert not policy.is_quiet(t)
            assert d.after_default is (t >= lock)


@pytest.mark.parametrize(("hour", "minute"), STARTS, ids=[f"{h:02d}{m:02d}" for h, m in STARTS])
def test_a_late_notice_pushes_the_lock(hour: int, minute: int) -> None:
    discharged = sh(2026, 3, 1, hour, minute)
    notice_due = POLICY.deadlines(discharged).notice_at
    done = walk(POLICY, discharged, away=(notice_due, notice_due + timedelta(hours=3)))
    [notice], [lock], [locked_sms] = (
        at(done, a) for a in (Action.send_notice, Action.default, Action.send_lock_notice)
    )
    assert not POLICY.is_quiet(notice) and notice >= notice_due + timedelta(hours=3)
    assert lock == max(POLICY.deadlines(discharged).default_at, notice + timedelta(days=1))
    assert locked_sms >= lock and not POLICY.is_quiet(locked_sms)


def test_short_policy_notice_at_arrears_in_the_night() -> None:
    # arrears at midnight, deadline 12 h after a 20:00 discharge: the notice cannot be a day ahead
    p = PaymentPolicy(default_after_seconds=12 * 3600, notice_before_seconds=86400)
    discharged = sh(2026, 3, 1, 20, 0)
    done = walk(p, discharged, days=3)
    [notice], [lock] = at(done, Action.send_notice), at(done, Action.default)
    assert notice == sh(2026, 3, 2, 8, 0) and lock == sh(2026, 3, 3, 8, 0)


def test_notice_never_before_arrears() -> None:
    p = PaymentPolicy(arrears_after_seconds=2, default_after_seconds=6, notice_before_seconds=86400)
    t0 = sh(2026, 3, 1, 10)
    d = p.deadlines(t0)
    assert d.notice_at == d.arrears_at == t0 + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("recorded", "balance", "waiting"),
    [
        ("open", 0, False),  # not discharged: nothing to settle yet
        ("open", 500, False),
        ("due", 500, False),
        ("due", 0, True),  # paid; its workflow has not recorded it yet
        ("arrears", 0, True),
        ("defaulted", -200, True),  # over-paid: a refund follows
        ("defaulted", 1, False),
        ("written_off", 0, False),
        ("written_off", 900, False),
        ("settled", 0, False),
    ],
)
def test_a_paid_visit_not_yet_recorded_settled_is_settling(recorded: str, balance: int, waiting: bool) -> None:
    assert settling(recorded, balance) is waiting
