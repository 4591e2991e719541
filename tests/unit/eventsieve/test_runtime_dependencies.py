"""Everything the shipped packages import is installed by a plain ``pip install eventsieve``.

The test environment also has the ``dev`` extra, so a runtime module that
imports a dev-only library works in every test and fails in the Docker image
and for users. This walks the imports of the shipped packages and checks each
third-party one against the closure of the runtime requirements.
"""

from __future__ import annotations

import ast
import sys
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ("eventsieve", "producers", "streams", "sinks", "schemas")


def imported_top_level_modules() -> dict[str, str]:
    """Top-level module → one file importing it, over every shipped module."""
    found: dict[str, str] = {}
    for package in SHIPPED:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def runtime_closure() -> set[str]:
    """Normalised names of eventsieve's runtime requirements and all of theirs."""

    def applies(req: Requirement, extras: set[str]) -> bool:
        return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras)

    seen: set[str] = set()
    todo = [
        r for r in map(Requirement, distribution("eventsieve").requires or []) if applies(r, {""})
    ]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(req.name).requires or []
        except ModuleNotFoundError:  # PackageNotFoundError: not installed on this platform
            continue
        todo += [r for r in map(Requirement, requires) if applies(r, {"", *req.extras})]
    return seen


def test_every_third_party_import_of_the_shipped_packages_is_a_runtime_dependency():
    provided_by = packages_distributions()
    closure = runtime_closure()
    missing = {}
    for module, where in imported_top_level_modules().items():
        if module in SHIPPED or module in sys.stdlib_module_names or module == "__future__":
            continue
        distributions = {d.lower().replace("_", "-") for d in provided_by.get(module, [])}
        if not distributions & closure:
            missing[module] = where
    assert not missing, f"imported but not a runtime dependency: {missing}"
