"""api/schemas/: one package that re-exports every body, and statuses, kinds and channels that
come from domain/ rather than being spelled out again as Literal strings."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import api.schemas as s
from domain.channels import STATEMENT_CHANNELS, TOTALS_CHECKS, ChannelName
from tests.domain.test_statuses import domain_enums


def defined(module: Any) -> list[str]:
    """The public names a module defines itself (classes, functions, assignments), not those it imports."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = [n.name for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)]
    names += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    names += [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return [n for n in names if not n.startswith("_")]


def models() -> list[type[BaseModel]]:
    return [v for v in vars(s).values() if isinstance(v, type) and issubclass(v, BaseModel)]


def test_the_package_reexports_every_public_name() -> None:
    modules = [importlib.import_module(f"api.schemas.{m.name}") for m in pkgutil.iter_modules(s.__path__)]
    assert len(modules) >= 7
    for module in modules:
        for name in defined(module):
            assert name in s.__all__ and getattr(s, name) is getattr(module, name), f"{module.__name__}.{name}"


def literals(annotation: Any) -> list[tuple[Any, ...]]:
    """The arguments of every Literal inside an annotation (X | None, list[...], Annotated[...])."""
    if typing.get_origin(annotation) is typing.Literal:
        return [typing.get_args(annotation)]
    return [found for arg in typing.get_args(annotation) for found in literals(arg)]


def test_no_literal_spells_out_a_domain_enum() -> None:
    """A Literal of plain strings that are all values of one domain enum is that enum (or a
    Literal of its members), so the values are written once."""
    values = {e.__name__: {m.value for m in e} for e in domain_enums()}
    spelled = [
        f"{model.__name__}.{field} is {enum}"
        for model in models()
        for field, info in model.model_fields.items()
        for args in literals(info.annotation)
        if not any(isinstance(a, Enum) for a in args)
        for enum, of in values.items()
        if set(args) <= of
    ]
    assert spelled == []


def test_the_channels_come_from_domain() -> None:
    schema = s.StatementRunIn.model_json_schema()["properties"]["channel"]
    assert schema["enum"] == [*STATEMENT_CHANNELS, *TOTALS_CHECKS]
    for name in ChannelName:
        assert s.PatientPaymentIn(channel=name.value).channel is name
        assert s.InsurancePayIn(channel=name.value).channel is name
