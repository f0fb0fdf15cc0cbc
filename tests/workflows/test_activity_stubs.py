"""Every activity the workflows call (the typed stubs in workflows/activities.py) has one
implementation the worker registers, under the same name, with the same input and result
types; and the worker registers nothing the workflows never call."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

from temporalio import activity

from config import Settings
from worker import activity_functions
from workflows import activities as stubs


def definition(fn: Any) -> tuple[str, list[type], type | None]:
    # the SDK's own reading of an activity (name and resolved types), as the worker reads it
    defn = activity._Definition.must_from_callable(fn)
    assert defn.name is not None
    return defn.name, list(defn.arg_types or []), defn.ret_type


def declared() -> dict[str, tuple[str, list[type], type | None]]:
    return {
        name: definition(fn)
        for name, fn in inspect.getmembers(stubs, inspect.iscoroutinefunction)
        if activity._Definition.from_callable(fn) is not None
    }


def registered() -> dict[str, tuple[str, list[type], type | None]]:
    # the classes only keep what they are given: no database or integration is reached
    integrations = SimpleNamespace(channels={}, sms=None, bureau=None, credit=None, ebill=None)
    found = [definition(fn) for fn in activity_functions(Settings(sandbox=True), None, integrations)]  # type: ignore[arg-type]  # stand-ins for the factory and integrations
    return {name: (name, args, ret) for name, args, ret in found}


def test_every_stub_has_an_implementation_with_its_types() -> None:
    implemented = registered()
    for stub_name, (name, args, ret) in declared().items():
        assert name in implemented, f"{stub_name}: no activity named {name} is registered"
        assert implemented[name] == (name, args, ret), f"{name}: the stub and the implementation differ"


def test_every_registered_activity_is_declared() -> None:
    assert sorted(registered()) == sorted(name for name, _, _ in declared().values())


def test_stubs_are_named_as_they_are_registered() -> None:
    """The stub's Python name is its activity name: a reader finds one from the other."""
    for stub_name, (name, _, _) in declared().items():
        assert stub_name == name
