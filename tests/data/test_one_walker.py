"""One folder walker: every reader of a data folder lists it through ``vfmkit.data.images`` (``iter_files``,
``list_subfolders``, ``list_image_files``), which follows symlinked folders once and skips hidden ones. An ``ast``
scan bans every other way of listing a folder outside a short list of places that list vfmkit's own folders."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "vfmkit"
WALKER = "data/images.py"
PATH_METHODS = {"rglob", "glob", "iterdir"}
"""``pathlib.Path`` methods that list a folder (any receiver)."""
MODULE_FUNCTIONS = {("os", "walk"), ("os", "listdir"), ("os", "scandir"), ("glob", "glob"), ("glob", "iglob")}
"""Module functions that list a folder (``os.walk`` ..., called through their module)."""
NOT_DATA_FOLDERS = {
    "engine/runs.py": "temp files of the run folder vfmkit writes",
    "export/onnx.py": "the exporter's own staging folder",
    "export/cache.py": "the ONNX cache folder",
    "models/text/tokenizers.py": "the tokenizer download staging folder",
    "models/backbones/radio/load.py": "a checkpoint folder (weights, not data)",
    "weights/record.py": "a checkpoint folder (the weights files it hashes)",
    "utils/atomic.py": "temp files of an atomic write",
    "features/demo.py": "the package's own demo assets (importlib.resources)",
    "export/backbone.py": "the package's own demo assets (importlib.resources)",
    "features/shards.py": "the shard files of an embedding folder vfmkit writes",
    "features/distributed.py": "the per-rank error files of a --devices launch",
    "tao/tables.py": "the package's own TAO mapping tables",
}
"""Modules allowed to list folders, and why: none of them reads a user's dataset."""


def listing_calls(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every call of a folder-listing function or method in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            receiver = func.value.id if isinstance(func.value, ast.Name) else ""
            if (receiver, func.attr) in MODULE_FUNCTIONS or (func.attr in PATH_METHODS and receiver != "glob"):
                found.append((node.lineno, func.attr))
    return found


def test_data_folders_are_walked_only_by_the_one_walker() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == WALKER or relative in NOT_DATA_FOLDERS:
            continue
        offenders += [f"{relative}:{line} calls {name}()" for line, name in listing_calls(path)]
    assert offenders == [], "list data folders with vfmkit.data.images.iter_files / list_subfolders"


def test_the_allowed_modules_still_exist() -> None:
    assert all((PACKAGE / module).is_file() for module in NOT_DATA_FOLDERS)


def test_the_scan_finds_each_way_of_listing(tmp_path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import os, glob\nfrom pathlib import Path\n"
        "Path('x').rglob('*')\nos.walk('x')\nglob.glob('x/*')\nPath('x').iterdir()\nos.listdir('x')\n"
        "tree.walk(node)\nself.walk(node)\n"
    )
    assert [name for _, name in listing_calls(source)] == ["rglob", "walk", "glob", "iterdir", "listdir"]
