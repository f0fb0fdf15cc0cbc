"""Statuses, kinds and refusal codes: lower-case StrEnums, each defined once in domain/, and
the named sets of payment statuses agree with one another."""

from __future__ import annotations

import importlib
import pkgutil
from enum import StrEnum

import pytest

import domain
from domain.payment import (
    FINAL,
    PAID,
    REFUND_FINAL,
    REFUND_NOT_AT_CHANNEL,
    UNRESOLVED,
    WAITING,
    PaymentProgress as S,
    RefundStatus as R,
)


def domain_enums() -> list[type[StrEnum]]:
    """Every StrEnum class defined in a domain module (not the ones it imports; once, whatever
    other names a module gives it)."""
    found: dict[int, type[StrEnum]] = {}
    for info in pkgutil.iter_modules(domain.__path__):
        module = importlib.import_module(f"domain.{info.name}")
        for v in vars(module).values():
            if isinstance(v, type) and issubclass(v, StrEnum) and v.__module__ == module.__name__:
                found[id(v)] = v
    return sorted(found.values(), key=lambda e: (e.__module__, e.__name__))


def test_the_walk_finds_the_enums() -> None:
    names = {e.__name__ for e in domain_enums()}
    assert {"Stage", "PaymentStatus", "PaymentProgress", "RefundStatus", "SettlementStatus"} <= names
    assert {"RefusalCode", "EnrolmentRefusal"} <= names


def test_each_enum_is_defined_once() -> None:
    names = [e.__name__ for e in domain_enums()]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


@pytest.mark.parametrize("enum", domain_enums(), ids=lambda e: e.__name__)
def test_values_are_their_lower_case_names(enum: type[StrEnum]) -> None:
    for member in enum:
        assert member.value == member.name == member.value.lower(), member


def test_a_payment_is_waiting_paid_or_failed() -> None:
    """WAITING, PAID and failed split the statuses: none in two, none in neither."""
    parts = [WAITING, PAID, {S.failed}]
    assert sorted(s for part in parts for s in part) == sorted(S)
    assert UNRESOLVED < WAITING and S.created not in UNRESOLVED  # created is not at the channel yet
    assert PAID | {S.failed} > FINAL


def test_a_refund_not_at_its_channel_is_decided_or_manual() -> None:
    assert REFUND_FINAL | {R.manual} == REFUND_NOT_AT_CHANNEL
    assert {R.created, R.processing}.isdisjoint(REFUND_NOT_AT_CHANNEL)
