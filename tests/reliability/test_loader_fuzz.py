"""Damaged and hostile checkpoints end in one-line WeightsErrors naming the file; nothing in a pickle ever runs.

Fuzzed files are random bytes, empty files, truncations and bit flips of real checkpoints: a torch.hub RADIO
``.pth.tar``, a Hugging Face RADIO folder (``config.json`` + ``model.safetensors``), a Lightning-style ``.ckpt`` and
a timm weights file given to the timm family builder (read by vfmkit's safe reader, then handed to timm's loader).
Bit flips inside tensor payloads cannot be detected (no checksums), so a flipped file may load; every other outcome
must be a :class:`~vfmkit.errors.VfmError` whose one line carries none of torch's advice to load unsafely.
"""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tests.reliability.helpers import (
    lightning_payload,
    mkdir_side_effect,
    save_hf_folder,
    save_torchhub_checkpoint,
    system_side_effect,
)

from vfmkit import load_backbone
from vfmkit.engine.trained import read_training_checkpoint
from vfmkit.errors import VfmError, WeightsError
from vfmkit.models.backbones.timm_family import build_timm
from vfmkit.models.registry import resolve_entry
from vfmkit.weights.safe_load import load_pickle_checkpoint, load_safetensors, refused_globals

FUZZ_CASES = 60
DAMAGES = ("random", "empty", "truncated", "flipped")
BASES = ("pth", "ckpt", "hf-weights", "hf-config", "timm")
TIMM_MODEL = "test-clip-tiny"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Real, loadable checkpoints of each kind."""
    root = tmp_path_factory.mktemp("originals")
    ckpt = root / "last.ckpt"
    torch.save(lightning_payload(), ckpt)
    timm_file = root / "clip.safetensors"
    save_file(load_backbone(TIMM_MODEL).model.state_dict(), str(timm_file))
    return {
        "pth": save_torchhub_checkpoint(root / "radio.pth.tar"),
        "hf": save_hf_folder(root / "hf"),
        "ckpt": ckpt,
        "timm": timm_file,
    }


def load_timm_checkpoint(path: Path):
    """The timm family builder with a weights file: what reads the file (``load_backbone`` above it also decides
    whether a file may be named at all)."""
    return build_timm(resolve_entry(TIMM_MODEL), pretrained=True, checkpoint=path)


def test_the_originals_load(originals) -> None:
    """The fuzz starts from checkpoints that load (else every damaged copy would fail for the wrong reason)."""
    images = torch.rand(1, 3, 64, 64)
    reference = load_backbone("test-radio-v2-tiny")
    with torch.no_grad():
        for source in (originals["pth"], originals["hf"]):
            torch.testing.assert_close(load_backbone(source)(images).summary, reference(images).summary)
    assert load_pickle_checkpoint(originals["ckpt"])["hyper_parameters"]["classes"] == ["a", "b", "c"]
    load_timm_checkpoint(originals["timm"])


def _damage(data: bytes, kind: str, rng: random.Random) -> bytes:
    if kind == "random":
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == "empty":
        return b""
    if kind == "truncated":
        return data[: rng.randrange(1, len(data))]
    flipped = bytearray(data)
    for _ in range(rng.randrange(1, 24)):
        position = rng.randrange(len(flipped))
        flipped[position] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def _fuzz_case(index: int, originals: dict[str, Path], root: Path, rng: random.Random):
    """(damaged file, what to load, loaders, damage kind) for case ``index``."""
    kind = DAMAGES[index % len(DAMAGES)]
    base = BASES[(index // len(DAMAGES)) % len(BASES)]
    case = root / f"case{index:02d}"
    if base.startswith("hf"):
        folder = shutil.copytree(originals["hf"], case)
        damaged = folder / ("model.safetensors" if base == "hf-weights" else "config.json")
        damaged.write_bytes(_damage(damaged.read_bytes(), kind, rng))
        loaders = [load_backbone] + ([load_safetensors] if base == "hf-weights" else [])
        return damaged, folder, loaders, kind
    case.mkdir()
    damaged = case / originals[base].name
    damaged.write_bytes(_damage(originals[base].read_bytes(), kind, rng))
    loaders = [load_timm_checkpoint] if base == "timm" else [load_backbone, load_pickle_checkpoint]
    return damaged, damaged, loaders, kind


def test_fuzzed_checkpoints_end_in_one_line_weights_errors(originals, tmp_path) -> None:
    rng = random.Random(12)
    outcomes = {kind: {"error": 0, "loaded": 0} for kind in DAMAGES}
    for index in range(FUZZ_CASES):
        damaged, source, loaders, kind = _fuzz_case(index, originals, tmp_path, rng)
        for loader in loaders:
            target = damaged if loader is load_safetensors else source
            try:
                loader(target)
            except VfmError as err:
                message = str(err)
                assert "\n" not in message, (index, kind, message)
                assert "weights_only" not in message and "Re-running" not in message, (index, kind, message)
                assert str(source) in message or damaged.name in message, (index, kind, message)
                outcomes[kind]["error"] += 1
                continue
            except Exception as err:  # the failure this test exists for: IndexError & co. escaping
                raise AssertionError(f"case {index} ({kind} {damaged.name}) via {loader.__name__}: {err!r}") from err
            assert kind == "flipped", f"case {index}: a {kind} {damaged.name} loaded via {loader.__name__}"
            outcomes[kind]["loaded"] += 1
    assert all(outcomes[kind]["error"] > 0 for kind in DAMAGES), outcomes


def test_empty_ckpt_names_the_file(tmp_path) -> None:
    empty = tmp_path / "last.ckpt"
    empty.touch()
    with pytest.raises(WeightsError, match=r"last\.ckpt: not a readable checkpoint \(the file is empty\)"):
        load_pickle_checkpoint(empty)


# --- hostile pickles -----------------------------------------------------------------------------------------------


def _hostile_files(tmp_path: Path) -> list[tuple[Path, Path, object, object]]:
    """(file, what to load, side effect, loader): a real checkpoint with a `__reduce__` payload injected, in the
    zip format, the legacy format and as a plain protocol-4 pickle (STACK_GLOBAL), alone or inside a folder."""
    system, mkdir = system_side_effect(tmp_path), mkdir_side_effect(tmp_path)
    pth = save_torchhub_checkpoint(tmp_path / "evil.pth.tar", extra={"note": system})
    legacy = tmp_path / "legacy.ckpt"
    torch.save(lightning_payload({"callbacks": mkdir}), legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"epoch": 2, "global_step": 12, "loops": system}, protocol=4))
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(pth, folder / "model.pth.tar")
    timm_file = tmp_path / "clip.pth"
    torch.save({**load_backbone(TIMM_MODEL).model.state_dict(), "note": mkdir}, timm_file)
    return [
        (timm_file, timm_file, mkdir, load_timm_checkpoint),
        (pth, pth, system, load_backbone),
        (legacy, legacy, mkdir, read_training_checkpoint),
        (plain, plain, system, load_pickle_checkpoint),
        (folder / "model.pth.tar", folder, system, load_backbone),
    ]


def test_hostile_pickles_are_refused_naming_the_global(tmp_path) -> None:
    for file, target, effect, loader in _hostile_files(tmp_path):
        assert refused_globals(file) == [effect.global_name]
        with pytest.raises(WeightsError) as info:
            loader(target)
        message = str(info.value)
        assert "\n" not in message and str(file) in message
        assert "refused" in message and effect.global_name in message, message
        assert "nothing in the file was run" in message
        assert "corrupt" not in message
        assert not effect.marker.exists(), f"{file.name}: the pickle's code ran"


def test_allowed_globals_are_not_reported(originals) -> None:
    """The RADIO checkpoint needs argparse.Namespace and torch's tensor rebuilders only: nothing to refuse."""
    assert refused_globals(originals["pth"]) == []
