"""The clip task through the engine beyond the contract: WiSE-FT checkpoints, the control set before and after,
evaluation of the pre-trained model without a checkpoint, the embeddings file, and ``vfm clip zeroshot|models``."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file
from tests.tasks.clip.clip_data import write_caption_folders, write_class_folders

from vfmkit import Task
from vfmkit.cli.main import main
from vfmkit.models.clip_zoo import load_clip_model
from vfmkit.tasks import get_task
from vfmkit.tasks.clip.module import WISE_FT_KEY, ClipModule
from vfmkit.weights.safe_load import load_pickle_checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip-task")
    for split, seed in (("train", 0), ("val", 1)):
        write_caption_folders(root / split, per_combination=1, seed=seed)
    write_class_folders(root / "control" / "images", per_combination=1, seed=2)
    (root / "texts.txt").write_text("a red circle\na blue cross\na green square\n")
    return root


def _overrides(root, *more: str) -> list[str]:
    return [
        "model.type=test-nvclip-clip-tiny",
        f"results_dir={root / 'runs'}",
        *(f"dataset.{s}.{k}_dir={root / s / f'{k}s'}" for s in ("train", "val") for k in ("image", "caption")),
        f"evaluate.control.source={root / 'control' / 'images'}",
        "evaluate.control.templates=simple",
        "train.num_workers=0",
        "train.batch_size=12",
        "evaluate.batch_size=12",
        "train.vision_lr=0.01",
        "train.text_lr=0.01",
        *more,
    ]


def test_wise_ft_alpha_zero_gives_the_pretrained_metrics_exactly(root) -> None:
    pretrained = Task("clip", None, _overrides(root)).evaluate()  # no checkpoint: the pre-trained model
    assert pretrained.checkpoint is None and pretrained.out_dir.parts[-4:-2] == ("pretrained", "test-nvclip-clip-tiny")
    run = Task("clip", None, _overrides(root, "train.epochs=2", "train.wise_ft.alpha=0", "name=wise")).train()
    payload = load_pickle_checkpoint(run.best_checkpoint)
    finetuned = payload[WISE_FT_KEY]["finetuned"]
    saved = {k.removeprefix("model."): v for k, v in payload["state_dict"].items()}
    reference = load_clip_model("test-nvclip-clip-tiny").state_dict()
    changed = [k for k in finetuned if not torch.equal(finetuned[k], saved[k])]
    assert changed and all(torch.equal(saved[k], reference[k]) for k in finetuned)  # saved: the pre-trained weights
    assert run.val == pretrained.metrics | {"control_top1_before": pretrained.metrics["control_top1"]}
    assert run.val["control_top1"] == run.val["control_top1_before"]  # reported before and after fine-tuning


def test_checkpoints_hold_wise_ft_weights_and_resume_from_the_fine_tuned_ones(root) -> None:
    spec = Task("clip", None, _overrides(root, "train.wise_ft.alpha=0.25")).spec
    taskdef = get_task("clip")
    module = ClipModule(taskdef.build_model(spec, {}, pretrained=True), spec, {}, taskdef)
    pretrained = {k: v.clone() for k, v in module.model.state_dict().items()}
    with torch.no_grad():  # stands for fine-tuning
        for param in module.model.parameters():
            param.add_(torch.randn_like(param))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    finetuned = checkpoint[WISE_FT_KEY]["finetuned"]
    assert set(finetuned) == {n for n, p in module.model.named_parameters() if p.requires_grad}
    for key, tuned in finetuned.items():
        expected = 0.75 * pretrained[key] + 0.25 * tuned
        torch.testing.assert_close(checkpoint["state_dict"][f"model.{key}"], expected, rtol=0, atol=1e-6)
    module.on_load_checkpoint(checkpoint)  # resuming
    for key, tuned in finetuned.items():
        assert torch.equal(checkpoint["state_dict"][f"model.{key}"], tuned)


def test_predict_writes_normalised_embeddings_and_an_index(root) -> None:
    out = root / "embeddings" / "clip.safetensors"
    overrides = _overrides(
        root,
        f"predict.source={root / 'val' / 'images'}",
        f"predict.text_file={root / 'texts.txt'}",
        f"predict.out={out}",
    )
    result = Task("clip", None, overrides).predict()
    tensors = load_file(str(out))
    index = json.loads(out.with_name("clip.index.json").read_text())
    assert result.written == 12 + 3 and tensors["image_embeddings"].shape == (12, 32)
    torch.testing.assert_close(tensors["text_embeddings"].norm(dim=-1), torch.ones(3))
    assert index["texts"] == ["a red circle", "a blue cross", "a green square"] and len(index["files"]) == 12
    model = load_clip_model("test-nvclip-clip-tiny")
    with torch.no_grad():
        expected = model.encode_text(model.tokenize(index["texts"]))
    torch.testing.assert_close(tensors["text_embeddings"], expected)
    assert index["logit_bias"] == pytest.approx(model.logit_bias.item())


def test_zeroshot_and_models_commands(root, tmp_path, capsys) -> None:
    (tmp_path / "classes.txt").write_text((root / "control" / "classes.txt").read_text())
    out = tmp_path / "labels.csv"
    args = ["clip", "zeroshot", str(root / "control" / "images"), "--model", "test-nvclip-clip-tiny"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--classes", str(tmp_path / "classes.txt"), "--templates", "simple", "--out", str(out)])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "labelled 12 image(s) with 12 classes" in printed and "mean per-class recall" in printed
    assert len(list(csv.DictReader(out.open()))) == 12
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:3], "--model", "no-such-clip", "--classes", str(tmp_path / "classes.txt")])
    assert exit_info.value.code == 2 and "unknown CLIP model 'no-such-clip'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["clip", "models", "--all"])
    listing = capsys.readouterr().out
    assert "c-radio-v4-so400m" in listing and "test-radio-clip-tiny" in listing


def test_a_spec_without_training_pairs_points_at_the_clip_page(tmp_path) -> None:
    from vfmkit.cli.docs_links import page_url
    from vfmkit.errors import DataError

    with pytest.raises(DataError) as error:
        Task("clip", None, ["model.type=test-nvclip-clip-tiny", f"results_dir={tmp_path / 'runs'}"]).train()
    assert str(error.value).startswith("dataset.train names no pairs: set dataset.train.type and its paths")
    assert f"{page_url('tasks/clip.md')}#data" in str(error.value)  # the data layouts, not a README section
    assert not (tmp_path / "runs").exists()
