"""The tree reads as the architecture: imports only point down the floors.

Floors, bottom up (each package's README says what it owns):

    eventsieve  foundation: config, errors, logging, service addresses, the Kafka adapter
    schemas     the contract: Avro records, codecs, reasons, the topology of topics
    producers | streams | sinks   the three stages, which never import each other
    ops         what operators run: CLI, local stack, supervisor, DLQ tools, replay, demo

Imports sit at the top of a module, so its dependencies are read in one place,
except where a comment in ``LATE_IMPORTS`` below says why not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOOR = {"eventsieve": 0, "schemas": 1, "producers": 2, "streams": 2, "sinks": 2, "ops": 3}

# Module prefixes allowed to import inside functions, and why.
LATE_IMPORTS = {
    # A command imports the stage it runs when it runs, so `eventsieve --help`,
    # `eventsieve tail` or `eventsieve stack up` do not load Faust, uvicorn or
    # the sink's compiled decoder (seconds of start-up on a small machine).
    "ops/cli/": "a command loads what it runs",
    # Faust (and everything it pulls in) is loaded only when the faust engine is chosen.
    "streams/worker.py": "the faust engine is optional",
}


def _modules() -> list[Path]:
    return sorted(p for package in FLOOR for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[ast.stmt, str, bool]]:
    """(node, imported module, at module level) for every absolute import of ``path``.

    Module level includes ``if TYPE_CHECKING:`` and ``try:`` blocks; inside a
    function (or a method) is not.
    """
    tree = ast.parse(path.read_text(), str(path))
    in_functions = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    found: list[tuple[ast.stmt, str, bool]] = []
    for node in ast.walk(tree):
        top = id(node) not in in_functions
        if isinstance(node, ast.Import):
            found += [(node, alias.name, top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node, node.module, top))
    return found


def _where(path: Path, node: ast.stmt) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def test_imports_point_down_the_floors_and_stages_stay_apart() -> None:
    wrong: list[str] = []
    for path in _modules():
        package = path.relative_to(ROOT).parts[0]
        for node, module, _ in _imports(path):
            target = module.split(".")[0]
            if target not in FLOOR or target == package:
                continue
            if FLOOR[target] >= FLOOR[package]:
                wrong.append(f"{_where(path, node)} {package} imports {module}")
    assert not wrong, "imports pointing up or across the floors:\n" + "\n".join(wrong)


def test_imports_are_at_the_top_of_modules() -> None:
    late: list[str] = []
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if any(rel.startswith(prefix) for prefix in LATE_IMPORTS):
            continue
        late += [
            f"{_where(path, node)} {module}" for node, module, top in _imports(path) if not top
        ]
    assert not late, "imports inside functions:\n" + "\n".join(late)


@pytest.mark.parametrize("package", sorted(FLOOR))
def test_every_package_says_what_it_owns_and_may_import(package: str) -> None:
    readme = ROOT / package / "README.md"
    assert readme.is_file(), f"{package}/README.md is missing"
    text = readme.read_text()
    assert "may import:" in text.lower(), f"{package}/README.md does not say what it may import"
