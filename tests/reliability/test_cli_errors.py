"""User errors through the `vfm` CLI: damaged and hostile checkpoints, empty model names and duplicate spec keys
each give exit code 2 and one ``error:`` line, with no traceback and no output written; `vfm models --all` shows
real weight sources. All commands run in ONE subprocess through the CLI's ``main`` (imports paid once); the hub
timeout test runs `vfm` as its own process."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
from PIL import Image
from tests.reliability.helpers import (
    assert_one_line_error,
    run_vfm_batch,
    save_hf_folder,
    save_torchhub_checkpoint,
    system_side_effect,
)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    """Build the inputs, run every command once, return the results by case name."""
    root = tmp_path_factory.mktemp("cli")
    images = root / "images"
    images.mkdir()
    for index in range(2):
        rng = np.random.default_rng(index)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(images / f"{index}.png")
    empty_ckpt = root / "empty.ckpt"
    empty_ckpt.touch()
    noise = root / "noise.pth.tar"
    noise.write_bytes(random.Random(3).randbytes(2048))
    truncated = save_hf_folder(root / "truncated-hf")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    effect = system_side_effect(root)
    evil = save_torchhub_checkpoint(root / "evil.pth.tar", extra={"note": effect})
    evil_folder = root / "evil-folder"
    evil_folder.mkdir()
    shutil.copy(evil, evil_folder / "radio.pth.tar")
    spec = root / "dup.yaml"
    spec.write_text("name: dup\ntrain:\n  epochs: 3\n  batch_size: 4\n  epochs: 30\n")
    out = root / "out"
    cases = {
        "empty-ckpt": ["embed", images, "--model", empty_ckpt, "-o", out / "a.safetensors"],
        "noise-pth": ["embed", images, "--model", noise, "-o", out / "b.safetensors"],
        "truncated-hf": ["embed", images, "--model", truncated, "-o", out / "c.safetensors"],
        "evil-pth": ["embed", images, "--model", evil, "-o", out / "d.safetensors"],
        "evil-folder": ["pca", images, "--model", evil_folder, "-o", out / "pca"],
        "empty-embed": ["embed", images, "--model", "", "-o", out / "e.safetensors"],
        "empty-pca": ["pca", images, "--model", "", "-o", out / "pca2"],
        "empty-knn": ["knn", "--train", images, "--val", images, "--model", ""],
        "empty-demo": ["demo", "--model", "", "-o", out / "demo"],
        "dup-spec": ["classify", "train", "-c", spec, f"results_dir={root / 'runs'}"],
        "models": ["models", "--all"],
    }
    results = run_vfm_batch(list(cases.values()), root / "logs")
    return {
        "results": dict(zip(cases, results, strict=True)),
        "files": {"empty": empty_ckpt, "noise": noise, "truncated": weights, "evil": evil, "evil_folder": evil_folder},
        "effect": effect,
        "out": out,
        "runs": root / "runs",
        "spec": spec,
    }


def test_damaged_checkpoints_exit_2_with_one_line(batch) -> None:
    results, files = batch["results"], batch["files"]
    assert_one_line_error(*_code_err(results["empty-ckpt"]), str(files["empty"]), "empty")
    line = assert_one_line_error(*_code_err(results["noise-pth"]), str(files["noise"]), "not a readable checkpoint")
    assert "weights_only" not in line and "vfmkit reads .safetensors files and torch.save checkpoints" in line
    assert_one_line_error(*_code_err(results["truncated-hf"]), str(files["truncated"]), "safetensors")


def test_hostile_checkpoints_are_refused_and_never_run(batch) -> None:
    results, files, effect = batch["results"], batch["files"], batch["effect"]
    for case, path in (("evil-pth", files["evil"]), ("evil-folder", files["evil_folder"])):
        line = assert_one_line_error(*_code_err(results[case]), str(path), "refused", effect.global_name)
        assert "nothing in the file was run" in line and "corrupt" not in line
    assert not effect.marker.exists()


def test_empty_model_name_exits_2_in_every_command(batch) -> None:
    for case in ("empty-embed", "empty-pca", "empty-knn", "empty-demo"):
        assert_one_line_error(*_code_err(batch["results"][case]), "model name is empty")


def test_failed_commands_write_no_output(batch) -> None:
    assert not batch["out"].exists() and not batch["runs"].exists()


def test_duplicate_spec_key_exits_2_naming_key_and_lines(batch) -> None:
    line = assert_one_line_error(*_code_err(batch["results"]["dup-spec"]), str(batch["spec"]), "'train.epochs'")
    assert "line 3" in line and "line 5" in line


def test_models_all_shows_where_ngc_weights_come_from(batch) -> None:
    result = batch["results"]["models"]
    assert result.code == 0 and result.err == ""
    rows = {line.split()[0]: line for line in result.out.splitlines()[1:]}
    assert "NGC" in rows["nv-dinov2-vit-l"] and "random init" not in rows["nv-dinov2-vit-l"]
    assert "NGC" in rows["nv-clip-vit-h14-224"] and "random init" not in rows["nv-clip-vit-h14-224"]
    assert rows["test-radio-v2-tiny"].endswith("random init (test variant)")


def _code_err(result) -> tuple[int, str]:
    return result.code, result.err
