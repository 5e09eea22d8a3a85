"""Arrows point down only: an ``ast`` scan of every module's imports (including imports inside functions and
``TYPE_CHECKING`` blocks) against the layering rules of the architecture."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "vfmkit"

EVERYTHING = (
    "vfmkit.models",
    "vfmkit.weights",
    "vfmkit.data",
    "vfmkit.metrics",
    "vfmkit.spec",
    "vfmkit.engine",
    "vfmkit.tasks",
    "vfmkit.cli",
    "vfmkit.task",
    "vfmkit.features",
    "vfmkit.export",
    "vfmkit.tao",
)

FORBIDDEN = {
    "utils": EVERYTHING,  # the lowest layer: atomic writes, strict YAML, error text
    "models": ("vfmkit.spec", "vfmkit.engine", "vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "weights": ("vfmkit.spec", "vfmkit.engine", "vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "data": ("vfmkit.spec", "vfmkit.engine", "vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "metrics": ("vfmkit.spec", "vfmkit.engine", "vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "engine": ("vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "spec": ("vfmkit.engine", "vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "features": ("vfmkit.engine", "vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "export": ("vfmkit.engine", "vfmkit.tasks", "vfmkit.cli", "vfmkit.task", "vfmkit.tao"),
    "tao": ("vfmkit.cli", "vfmkit.engine"),  # the converter reads specs and task tables; it runs nothing
}


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in a file under the package ``root``, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    problems = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in imported_modules(path, root):
                if any(module == f or module.startswith(f + ".") for f in forbidden):
                    problems.append(f"{path.relative_to(root.parent)}:{line} ({layer}) imports {module}")
    return problems


def test_arrows_point_down_only() -> None:
    assert violations() == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_every_layer_exists(layer: str) -> None:
    assert (PACKAGE / layer / "__init__.py").is_file()


def test_the_scan_catches_upward_imports(tmp_path) -> None:
    root = tmp_path / "vfmkit"
    (root / "models" / "heads").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "models" / "heads" / "probe.py").write_text("def f():\n    from vfmkit.engine import train\n")
    (root / "data" / "probe.py").write_text("from ..spec import base\nimport vfmkit.data.images\n")
    found = violations(root)
    assert any("probe.py:2 (models) imports vfmkit.engine" in v for v in found), found
    assert any("probe.py:1 (data) imports vfmkit.spec" in v for v in found), found
    assert len(found) == 2


def test_the_lazy_public_names_match_their_type_checking_imports() -> None:
    """``vfmkit/__init__.py`` imports its public names on first use; the ``TYPE_CHECKING`` imports (what type
    checkers and the API docs see) must name the same modules."""
    import vfmkit

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    guarded = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
        for node in block.body
        for alias in node.names
    }
    assert guarded == vfmkit._EXPORTS and vfmkit.__all__ == ["__version__", *vfmkit._EXPORTS]
