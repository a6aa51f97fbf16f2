"""The package's layers: each module imports only from its own layer and the layers below it.

From the bottom: the modules at the package root (the shared vocabulary, models, window rule,
validators, Airflow shims); ``hooks/`` (HTTP and Metronome); ``engine/`` (the per-customer fetch and
the availability rule, above the hooks) and, beside it on the root modules only, ``output/`` (URIs,
records, encodings, writers, sinks, reading back); on top ``operators/``, ``sensors/`` and
``triggers/``. ``testing/`` (the simulator) stands apart: it imports nothing else of the package, and
nothing outside it imports it. ``utils/`` holds deprecated aliases that nothing may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "airflow_provider_metronome"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Each layer and what it may import (itself included).
ALLOWED: dict[str, frozenset[str]] = {
    "root": frozenset({"root"}),
    "hooks": frozenset({"root", "hooks"}),
    "engine": frozenset({"root", "hooks", "engine"}),
    "output": frozenset({"root", "output"}),
    "tasks": frozenset({"root", "hooks", "engine", "output", "tasks"}),
    "testing": frozenset({"testing"}),
    "utils": frozenset({"root", "output"}),
}
FOLDERS = {
    "hooks": "hooks",
    "engine": "engine",
    "output": "output",
    "operators": "tasks",
    "sensors": "tasks",
    "triggers": "tasks",
    "testing": "testing",
    "utils": "utils",
}


def layer_of(module: str) -> str:
    """The layer of a dotted name inside the package (a module, or a name of the root package)."""
    parts = module.split(".")[1:]
    if parts and parts[0] in FOLDERS:
        return FOLDERS[parts[0]]
    assert not (parts and (ROOT / parts[0]).is_dir()), f"{module}: a folder with no layer; add it to FOLDERS"
    return "root"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import name` may name a module or a name of the package's root.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
            found.add(node.module)
    return {name for name in found if name == PACKAGE or name.startswith(f"{PACKAGE}.")}


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_is_seen() -> None:
    assert len(MODULES) > 20
    assert {layer_of(module_name(path)) for path in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_run_only_down_the_layers(path: Path) -> None:
    module = module_name(path)
    layer = layer_of(module)
    wrong = sorted(name for name in imported_modules(path) if layer_of(name) not in ALLOWED[layer])
    assert not wrong, f"{module} ({layer}) imports {wrong}, above its layer or outside what it may use"


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The check is not vacuous: an import from the engine in a hooks module is found."""
    source = tmp_path / "upward.py"
    source.write_text(f"from {PACKAGE}.engine.fetch import fetch_customers\n", encoding="utf-8")

    names = imported_modules(source)

    assert {layer_of(name) for name in names} == {"engine"}
    assert "engine" not in ALLOWED["hooks"]
