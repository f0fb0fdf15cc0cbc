"""The payment policy at instants around midnight in Asia/Shanghai, whatever the host's zone."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from domain.policy import (
    Action, PaymentPolicy, PaymentState, PaymentStatus, QuietHours, ServiceStatus, service_status,
)

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
POLICY = PaymentPolicy()


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


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
    st = PaymentState(discharged_at=discharged, balance_fen=5000, in_arrears=True,
                      last_dunning_at=sh(2026, 3, 2, 8, 0))
    d = POLICY.decide(st, sh(2026, 3, 2, 8, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 3, 8, 0)
    # a day before the deadline the patient is told what will happen
    st = PaymentState(discharged_at=discharged, balance_fen=5000, in_arrears=True,
                      last_dunning_at=sh(2026, 3, 7, 8, 0))
    d = POLICY.decide(st, sh(2026, 3, 7, 9, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 7, 10, 0)
    assert POLICY.decide(st, sh(2026, 3, 7, 10, 0)).action is Action.send_notice
    # no report without the notice, however late it is
    assert POLICY.decide(st, sh(2026, 3, 8, 10, 0)).action is Action.send_notice
    st = PaymentState(discharged_at=discharged, balance_fen=5000, in_arrears=True, notice_sent=True,
                      last_dunning_at=sh(2026, 3, 8, 8, 0))
    d = POLICY.decide(st, sh(2026, 3, 8, 10, 0))
    assert d.action is Action.default
    st = PaymentState(discharged_at=discharged, balance_fen=5000, in_arrears=True, defaulted=True,
                      notice_sent=True, last_dunning_at=sh(2026, 3, 8, 8, 0))
    d = POLICY.decide(st, sh(2026, 3, 8, 10, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 9, 8, 0)
    assert POLICY.decide(PaymentState(discharged_at=discharged, balance_fen=0, defaulted=True),
                         sh(2026, 3, 20)).action is Action.settle


def test_dunning_that_falls_in_quiet_hours_waits_for_morning() -> None:
    st = PaymentState(discharged_at=sh(2026, 3, 1, 10), balance_fen=1, in_arrears=True,
                      last_dunning_at=sh(2026, 3, 2, 20, 30))
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
    [([], ServiceStatus.normal), (["open", "due", "settled"], ServiceStatus.normal),
     (["due", "arrears"], ServiceStatus.arrears), (["arrears", "defaulted", "settled"], ServiceStatus.defaulted)],
)
def test_service_status(statuses: list[str], service: ServiceStatus) -> None:
    assert service_status(statuses) is service


def test_every_payment_status_maps_to_a_service_status() -> None:
    for status in PaymentStatus:
        assert service_status([status]) in ServiceStatus


def test_the_notice_waits_for_the_morning_and_the_report_for_the_notice() -> None:
    discharged = sh(2026, 3, 1, 23, 0)  # deadline 03-08 23:00, notice due 03-07 23:00 (quiet)
    st = PaymentState(discharged_at=discharged, balance_fen=100, in_arrears=True,
                      last_dunning_at=sh(2026, 3, 7, 20, 0))
    d = POLICY.decide(st, sh(2026, 3, 7, 23, 0))
    assert d.action is Action.wait and d.until == sh(2026, 3, 8, 8, 0)
    assert POLICY.decide(st, sh(2026, 3, 8, 8, 0)).action is Action.send_notice
    deadline = POLICY.deadlines(discharged)
    assert deadline.notice_at == sh(2026, 3, 7, 23, 0)


def test_notice_never_before_arrears() -> None:
    p = PaymentPolicy(arrears_after_seconds=2, default_after_seconds=6, notice_before_seconds=86400)
    t0 = sh(2026, 3, 1, 10)
    d = p.deadlines(t0)
    assert d.notice_at == d.arrears_at == t0 + timedelta(seconds=2)
