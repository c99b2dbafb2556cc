"""The library does not depend on its command line: no module outside ``metaembed.cli`` imports it, the index
imports neither the command line nor training, and ``python -m metaembed.training`` runs without ``metaembed.cli``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import metaembed

PACKAGE = Path(metaembed.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every ``metaembed...`` module a file imports, at its top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.startswith("metaembed")}


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    """The files that import a module under one of the ``forbidden`` prefixes, and those modules."""
    found = {}
    for path in sorted(files):
        bad = {name for name in imported_modules(path) if name.startswith(forbidden)}
        if bad:
            found[str(path.relative_to(PACKAGE))] = bad
    return found


def test_only_the_command_line_imports_the_command_line():
    library = [path for path in PACKAGE.rglob("*.py") if "cli" not in path.relative_to(PACKAGE).parts]
    assert offenders(library, ("metaembed.cli",)) == {}


def test_the_index_imports_neither_command_line_nor_training():
    index = list((PACKAGE / "index").rglob("*.py"))
    assert offenders(index, ("metaembed.cli", "metaembed.training", "metaembed.serve")) == {}


def test_python_m_metaembed_training_runs_without_the_command_line():
    code = ("import runpy, sys; sys.argv = ['metaembed-train', '--help']\n"
            "try:\n    runpy.run_module('metaembed.training', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('metaembed.cli')))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "--batch-size" in completed.stdout and completed.stdout.strip().splitlines()[-1] == "[]"
