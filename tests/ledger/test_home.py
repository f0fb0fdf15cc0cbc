"""ledger/ is the one home of money: no other product module constructs, inserts, updates or
deletes a money row, and every ledger refusal has its HTTP status in the API's one table."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.errors import STATUS, responses, status_of
from ledger import errors as le

ROOT = Path(__file__).resolve().parents[2]
MONEY_ROWS = {"LedgerEntry", "Payment", "Refund", "VisitNotification"}  # the ORM classes of money
WRITES = {"insert", "update", "delete"}
PRODUCT = ("api", "activities", "db", "domain", "integrations", "workflows", "ledger")


def writes_of_money(tree: ast.AST) -> Iterator[str]:
    """`LedgerEntry(...)`, `update(Payment)`, ...: a money row made or changed in SQL."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name in MONEY_ROWS:
            yield f"{name}(...)"
        elif name in WRITES and node.args:
            target = node.args[0]
            target_name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            if target_name in MONEY_ROWS:
                yield f"{name}({target_name})"


def test_only_the_ledger_writes_money() -> None:
    found = []
    for path in sorted(p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith(("ledger/", "db/migrations/")) or name == "db/models.py":
            continue
        found += [f"{name}: {w}" for w in writes_of_money(ast.parse(path.read_text(encoding="utf-8")))]
    assert found == []


def test_the_walk_sees_a_write() -> None:
    tree = ast.parse("session.add(LedgerEntry(kind='charge'))\nawait s.execute(update(Payment).values(x=1))")
    assert list(writes_of_money(tree)) == ["LedgerEntry(...)", "update(Payment)"]


ERRORS = [
    cls
    for _, cls in inspect.getmembers(le, inspect.isclass)
    if issubclass(cls, le.LedgerError) and cls is not le.LedgerError
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_every_ledger_error_has_a_status_and_a_stable_code(error: type[le.LedgerError]) -> None:
    assert error in STATUS and 400 <= status_of(error) < 500
    assert re.fullmatch(r"[a-z][a-z_]*", error.code) and error.code != le.LedgerError.code


def test_codes_are_unique() -> None:
    assert len({e.code for e in ERRORS}) == len(ERRORS)


def test_a_route_declares_ledger_errors_by_class() -> None:
    assert list(responses(401, le.VisitNotFound, 404, le.NothingToPay)) == [401, 404, 409]
