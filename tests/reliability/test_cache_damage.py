"""Damaged cache entries through the CLI: a miss, rebuilt, counted in one line, never a traceback nor a wrong value.

- N8: CLIP's frozen image tower (the classification feature cache) with every entry cut in half: the next training
  recomputes them (exit code 0) and says so in one line.
- N16: a teacher-cache entry replaced by zeros with the same names, shapes and metadata is caught by its content
  hash and rebuilt; N8: an entry whose ``features`` has another shape is a miss (it crashed ``collate_distill``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tests.synthetic import make_shapes_dataset
from tests.tasks.clip.clip_data import write_caption_folders

from vfmkit.cli.main import main

TEACHER = "[{backbone: test-radio-v3-tiny, pretrained: false, name: tiny, mode: combo}]"


def _cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata() or {})  # noqa: SIM118


def test_clip_frozen_tower_feature_cache_cut_in_half_is_rebuilt(tmp_path, capsys) -> None:
    root = tmp_path / "pairs"
    for split, seed in (("train", 0), ("val", 1)):
        write_caption_folders(root / split, per_combination=1, seed=seed)
    args = [
        "clip",
        "train",
        "model.type=test-radio-clip-tiny",
        "model.image_size=32",
        "model.freeze_vision_encoder=true",
        *(f"dataset.{s}.{k}_dir={root / s / f'{k}s'}" for s in ("train", "val") for k in ("image", "caption")),
        f"results_dir={tmp_path / 'runs'}",
        "train.epochs=1",
        "train.batch_size=12",
        "train.num_workers=0",
    ]
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    entries = sorted((tmp_path / "runs" / ".cache" / "features").glob("*.safetensors"))
    assert len(entries) == 2  # train and val
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    assert "Traceback" not in err
    lines = [line for line in out.splitlines() if line.startswith("feature cache:")]
    assert len(lines) == 1 and lines[0].startswith("feature cache: 0 hits, 2 damaged entries rebuilt (e.g. "), out
    code, out, err = _cli(capsys, *args)  # rebuilt entries verify: both from the cache, no damage line
    assert code == 0 and "feature cache:" not in out and out.count("image features from the cache") == 2, out


def test_teacher_cache_zeros_and_wrong_shape_entries_are_rebuilt(tmp_path, capsys) -> None:
    data = make_shapes_dataset(tmp_path / "data", {"train": 2}, size=32)  # 8 images
    cache = tmp_path / "teacher-cache"
    args = [
        "distill",
        "train",
        "model.backbone=test-radio-v2-tiny",
        "model.pretrained=false",
        "model.resolution=32",
        f"distill.teacher={TEACHER}",
        "distill.cache_teacher_outputs=true",
        "distill.cache_dtype=float32",
        f"distill.cache_dir={cache}",
        f"dataset.train_nolabel.folder_path={data / 'train'}",
        f"results_dir={tmp_path / 'runs'}",
        "train.epochs=1",
        "train.batch_size=4",
        "train.num_workers=0",
    ]
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    assert "teacher cache: 0 hits, 8 computed" in out
    entries = sorted(cache.rglob("*.safetensors"))
    assert len(entries) == 8
    zeros, reshaped = entries[0], entries[1]
    original, metadata = _read(zeros)
    save_file({k: torch.zeros_like(v) for k, v in original.items()}, str(zeros), metadata=metadata)  # N16
    tensors, metadata = _read(reshaped)
    features = tensors["features"]
    tensors["features"] = features[: features.shape[0] // 2].contiguous()  # N8: another shape, same metadata
    save_file(tensors, str(reshaped), metadata=metadata)
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    assert "Traceback" not in err
    line = next(line for line in out.splitlines() if line.startswith("teacher cache:"))
    assert re.fullmatch(r"teacher cache: 6 hits, 2 damaged entries rebuilt \(e\.g\. [0-9a-f]+\.safetensors: .+\)", line)
    rebuilt, _ = _read(zeros)
    for name, value in original.items():
        torch.testing.assert_close(rebuilt[name], value)  # the teacher's outputs again, not the zeros
    assert _read(reshaped)[0]["features"].shape == features.shape
