"""Who may import whom (HOUSE_STYLE "Layout", issue 9 "Done means"), read from the source with
`ast`. Every import counts, function-local and TYPE_CHECKING ones too: a dependency is one
wherever it is written. Below, the same for sizes: no module over 400 lines, no function over 60.

A rule that does not hold yet is in KNOWN (KNOWN_SIZES) with the reason; the test fails on a
violation not listed and on a listed one that has gone, so the list stays true (delete its line
when fixed)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("domain", "workflows", "activities", "integrations", "ledger", "db", "api", "simulators")
MODULES = ("config", "worker", "devstack", "devconsole", "observability", "entrypoint")  # top-level files
PROJECT = {*PACKAGES, *MODULES, "tests", "bench"}

KNOWN: dict[str, str] = {}


def modules() -> Iterator[tuple[str, ast.Module]]:
    """(dotted name, tree) of every product module and of devstack."""
    paths = [ROOT / f"{m}.py" for m in MODULES]
    paths += [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    for path in paths:
        if path.exists():
            yield (
                ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"),
                ast.parse(path.read_text(encoding="utf-8"), filename=str(path)),
            )


def imports(module: str, tree: ast.Module) -> set[str]:
    """The top-level project packages `module` imports (relative imports stay inside it)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return (found & PROJECT) - {module.split(".")[0]}


def graph() -> dict[str, set[str]]:
    return {module: imports(module, tree) for module, tree in modules()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of top-level packages that import each other, round and round (Tarjan's SCCs)."""
    tops: dict[str, set[str]] = {}
    for module, targets in edges.items():
        tops.setdefault(module.split(".")[0], set()).update(targets)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(tops.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(tops):
        if node not in index:
            visit(node)
    return found


RULES = {  # rule name -> (which importers, which imports they may not have)
    "domain imports nothing of the project": (lambda m: m.startswith("domain"), lambda t: True),
    "workflows -> domain only": (lambda m: m.startswith("workflows"), lambda t: t != "domain"),
    "integrations -/-> db": (lambda m: m.startswith("integrations"), lambda t: t == "db"),
    "integrations -/-> api": (lambda m: m.startswith("integrations"), lambda t: t == "api"),
    # devstack is the one that starts the simulators
    "the product -/-> simulators": (
        lambda m: not m.startswith(("simulators", "devstack")),
        lambda t: t == "simulators",
    ),
    "api -/-> activities": (lambda m: m.startswith("api"), lambda t: t == "activities"),
    "the product -/-> tests, bench": (lambda m: True, lambda t: t in ("tests", "bench")),
}


def violations() -> set[str]:
    edges = graph()
    found = {
        f"{rule}: {module} -> {target}"
        for rule, (importer, forbidden) in RULES.items()
        for module, targets in edges.items()
        if importer(module)
        for target in targets
        if forbidden(target)
    }
    return found | {"no cycles: " + " <-> ".join(group) for group in cycles(edges)}


def test_the_walk_sees_the_product() -> None:
    edges = graph()
    assert {"domain.policy", "workflows.visit", "api.main", "worker", "config"} <= edges.keys()
    assert edges["workflows.visit"] == {"domain"} and "workflows" in edges["worker"]


def test_no_new_violations() -> None:
    assert sorted(violations() - KNOWN.keys()) == []


def test_known_violations_still_exist() -> None:
    """A fixed one leaves KNOWN in the same change."""
    assert sorted(KNOWN.keys() - violations()) == []


def test_cycles_are_found() -> None:
    assert cycles({"a.x": {"b"}, "b.y": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --- sizes (issue 9 "Done means"): no module over 400 lines, no function over 60 -------------

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# the product: every package but simulators/ (stand-ins of the third parties, not the product), the
# top-level modules and bench/
SIZED = (*(p for p in PACKAGES if p != "simulators"), "bench")
# migrations are frozen records of what ran against a database: never edited to fit a limit
FROZEN = ("db/migrations/",)
EXEMPT = {
    "function over 60 lines: domain/visit.py:apply": "the visit's state machine: one branch an event type, "
    "read as one table (issue 9)",
}
KNOWN_SIZES: dict[str, str] = {}


def sized_files() -> Iterator[tuple[str, str]]:
    """(path from the root, text) of every product file the limits apply to."""
    paths = [ROOT / f"{m}.py" for m in MODULES]
    paths += [p for pkg in SIZED for p in sorted((ROOT / pkg).rglob("*.py"))]
    for path in paths:
        name = path.relative_to(ROOT).as_posix()
        if path.exists() and not name.startswith(FROZEN):
            yield name, path.read_text(encoding="utf-8")


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of every function and method, nested ones too: from its `def` to its
    last line (decorators not counted); a nested function counts in its own lines and its parent's."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            yield prefix + node.name, node.end_lineno - node.lineno + 1
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def over_the_limits() -> set[str]:
    """Every module and function over its limit, the exempt ones too."""
    found = set()
    for name, text in sized_files():
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.add(f"module over {MAX_MODULE_LINES} lines: {name}")
        found |= {
            f"function over {MAX_FUNCTION_LINES} lines: {name}:{function}"
            for function, lines in functions(ast.parse(text, filename=name))
            if lines > MAX_FUNCTION_LINES
        }
    return found


def oversized() -> set[str]:
    return over_the_limits() - EXEMPT.keys()


def test_the_size_walk_sees_the_product() -> None:
    names = dict(sized_files()).keys()
    assert {"config.py", "worker.py", "devstack.py", "domain/visit.py", "bench/faults.py"} <= names
    assert not any(n.startswith(("simulators/", "db/migrations/", "tests/")) for n in names)


def test_functions_are_measured_from_def_to_their_last_line() -> None:
    tree = ast.parse(
        "@decorated\nasync def f():\n    def g():\n        pass\n    return g\n"
        "class C:\n    def m(self):\n        if True:\n            def h(): pass\n"
    )
    assert list(functions(tree)) == [("f", 4), ("f.g", 2), ("C.m", 3), ("C.m.h", 1)]


def test_no_new_oversized_module_or_function() -> None:
    assert sorted(oversized() - KNOWN_SIZES.keys()) == []


def test_known_oversized_ones_still_are() -> None:
    """A module or function brought under its limit leaves KNOWN_SIZES in the same change."""
    assert sorted(KNOWN_SIZES.keys() - oversized()) == []


def test_the_exemptions_are_still_needed() -> None:
    """An exempt function that shrinks below the limit loses its exemption."""
    assert sorted(EXEMPT.keys() - over_the_limits()) == []
