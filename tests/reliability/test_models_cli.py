"""Model names: `vfm models` shows where each entry's weights really come from, and an empty model name is an error
(as a path it meant the current folder). The CLI side runs in subprocesses in test_cli_errors.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.reliability.helpers import save_torchhub_checkpoint

from vfmkit import list_backbones, load_backbone
from vfmkit.cli.main import models_table, weights_source
from vfmkit.errors import ModelNotFoundError
from vfmkit.weights.sources import local_path

RANDOM_INIT = "random init (test variant)"


def test_models_table_reserves_random_init_for_test_variants() -> None:
    lines = {line.split()[0]: line for line in models_table(include_test=True).splitlines()[1:]}
    entries = list_backbones(include_test=True)
    assert set(lines) == {e.id for e in entries}
    for entry in entries:
        assert (RANDOM_INIT in lines[entry.id]) == entry.test_only, lines[entry.id]
    published_elsewhere = [e for e in entries if e.source is None and not e.test_only]
    assert published_elsewhere, "the registry has NGC-only entries (nv-dinov2-vit-l, nv-clip-*)"
    for entry in published_elsewhere:
        assert entry.extra["weights"] in lines[entry.id] and "NGC" in lines[entry.id]
        assert "checkpoint=<file>" in weights_source(entry)


@pytest.mark.parametrize("name", ["", "   "], ids=["empty", "blank"])
def test_an_empty_model_name_is_an_error(name, tmp_path: Path, monkeypatch) -> None:
    """Even where the current folder holds a loadable checkpoint (which `''` used to load)."""
    save_torchhub_checkpoint(tmp_path / "model.pth.tar")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="model name is empty"):
        load_backbone(name)


def test_an_empty_checkpoint_or_path_is_an_error() -> None:
    with pytest.raises(ModelNotFoundError, match="checkpoint is empty"):
        load_backbone("test-clip-tiny", checkpoint="")
    with pytest.raises(ModelNotFoundError, match="empty path"):
        local_path("")
