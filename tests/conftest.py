"""Shared test settings: no network, a private Hugging Face cache, the reference fixtures beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("VFMKIT_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


def _test_threads() -> int:
    """Torch threads per test process: VFM_TEST_THREADS if set, else the cores (at most 2) shared among the
    pytest-xdist workers, so ``-n 2`` on 2 cores runs two single-threaded workers."""
    if "VFM_TEST_THREADS" in os.environ:
        return int(os.environ["VFM_TEST_THREADS"])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, os.cpu_count() or 1) // workers)


torch.set_num_threads(_test_threads())


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    """Every test runs offline against an empty, private Hugging Face cache (and a private vfmkit cache)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("VFMKIT_CACHE", str(tmp_path_factory.getbasetemp() / "vfmkit-cache"))  # never ~/.cache


def radio_fixtures() -> Path:
    """The RADIO fixture folder; skips the test with the reason when ../shared is absent."""
    path = FIXTURES / "radio"
    if not (path / "index.json").is_file():
        pytest.skip(f"RADIO reference fixtures not found at {path} (../shared is absent)")
    return path
