"""The code stays `ruff check` and `ruff format` clean (ruff comes with the dev extra)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from tests.conftest import REPO_ROOT

PATHS = ["src", "tests", "benchmarks", "docs"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    result = subprocess.run([ruff, *command, *PATHS], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
