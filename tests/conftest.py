"""Shared test settings: no network, a private Hugging Face cache, the reference fixtures beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("VFMKIT_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))

# VFM_TEST_THREADS=1 avoids oversubscription when several test runs share the cores
torch.set_num_threads(int(os.environ.get("VFM_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    """Every test runs offline against an empty, private Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def radio_fixtures() -> Path:
    """The RADIO fixture folder; skips the test with the reason when ../shared is absent."""
    path = FIXTURES / "radio"
    if not (path / "index.json").is_file():
        pytest.skip(f"RADIO reference fixtures not found at {path} (../shared is absent)")
    return path
