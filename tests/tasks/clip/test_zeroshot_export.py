"""Zero-shot classifier and ``zeroshot_source``; ONNX export (separate and combined) verified with onnxruntime."""

from __future__ import annotations

import csv

import pytest
import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from tests.tasks.clip.clip_data import CLASS_NAMES, make_images, write_caption_folders, write_class_folders

from vfmkit import Task
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.errors import DataError
from vfmkit.export.runtime import OnnxModel
from vfmkit.models.clip_zoo import load_clip_model
from vfmkit.models.text.tokenizers import load_tokenizer_folder
from vfmkit.tasks.clip.zeroshot import build_classifier, load_class_names, load_templates, zeroshot_source


@pytest.fixture(scope="module")
def model():
    return load_clip_model("test-nvclip-clip-tiny")


def test_classifier_is_the_mean_of_normalised_template_embeddings(model) -> None:
    classifier = build_classifier(model, ["red circle", "blue cross"], ["a {}.", "a photo of a {c}"])
    assert classifier.shape == (model.embed_dim, 2)
    texts = ["a red circle.", "a photo of a red circle"]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(model.tokenize(texts)).mean(0), dim=0)
    torch.testing.assert_close(classifier[:, 0], expected)
    assert len(load_templates("openai")) == len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(load_templates("simple")) == 7


def test_templates_and_classes_files(tmp_path) -> None:
    (tmp_path / "t.txt").write_text("# prompts\na {c}\n\nitap of a {}\n")
    assert [t("dog") for t in load_templates(tmp_path / "t.txt")] == ["a dog", "itap of a dog"]
    (tmp_path / "bad.txt").write_text("no placeholder\n")
    with pytest.raises(DataError, match=r"bad.txt: every template needs a \{\} or \{c\} placeholder"):
        load_templates(tmp_path / "bad.txt")
    with pytest.raises(DataError, match="expected openai, simple or a templates file"):
        load_templates("fancy")
    (tmp_path / "classes.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(DataError, match=r"classes.txt: class 'cat' is listed twice"):
        load_class_names(tmp_path / "classes.txt")


def test_zeroshot_source_writes_csv_and_accuracy_for_class_folders(model, tmp_path) -> None:
    root = write_class_folders(tmp_path / "images", per_combination=1)
    result = zeroshot_source(root, model, tmp_path / "classes.txt", templates=["a {}"], out_csv=tmp_path / "z.csv")
    assert result.labels is not None and result.top_indices.shape == (12, 5)
    assert set(result.metrics) == {"images", "top1", "top5", "mean_per_class_recall"}
    with open(result.csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and set(rows[0]) == {
        "image",
        "prediction",
        "score",
        "top_k",
        "top_k_scores",
        "label",
        "correct",
    }
    assert rows[0]["prediction"] in CLASS_NAMES and len(rows[0]["top_k"].split(";")) == 5
    top1 = sum(int(r["correct"]) for r in rows) / 12
    assert result.metrics["top1"] == pytest.approx(top1)
    flat = zeroshot_source(root / "red circle", model, CLASS_NAMES, templates="simple", top_k=3)
    assert flat.labels is None and flat.metrics is None and flat.top_scores.shape == (1, 3)


@pytest.mark.parametrize(
    ("name", "encoder_type"), [("test-nvclip-clip-tiny", "separate"), ("test-radio-clip-tiny", "combined")]
)
def test_onnx_export_of_the_pretrained_model_matches_pytorch(tmp_path, name: str, encoder_type: str) -> None:
    """``vfm clip export`` without a checkpoint: the pre-trained model, TAO's I/O names, tokenizer files beside."""
    images_dir, captions_dir = write_caption_folders(tmp_path / "val", per_combination=1, seed=3)
    overrides = [
        f"model.type={name}",
        f"dataset.val.image_dir={images_dir}",
        f"dataset.val.caption_dir={captions_dir}",
        f"export.encoder_type={encoder_type}",
        f"export.out={tmp_path / 'export' / 'clip.onnx'}",
    ]
    result = Task("clip", None, overrides).export()
    assert result.max_abs_diff <= 1e-4 and result.verified_samples == 4
    model = load_clip_model(name)
    tokenizer = load_tokenizer_folder(tmp_path / "export" / "clip_tokenizer")
    texts = ["a red circle", "a blue cross", "a green square"]
    ids = tokenizer.encode(texts)
    assert torch.equal(ids.input_ids, model.tokenize(texts))
    images = torch.stack([pil_to_tensor(image) for image in make_images(1, 0)[0][:3]])
    with torch.no_grad():
        image_embeddings, text_embeddings = model(images, ids.input_ids)
    if encoder_type == "separate":
        assert [f.name for f in result.files] == ["clip_vision.onnx", "clip_text.onnx"]
        vision, text = OnnxModel(result.files[0]), OnnxModel(result.files[1])
        assert vision.input_names == ["image"]
        assert vision.output_names == ["image_embedding", "logit_scale", "logit_bias"]
        assert text.input_names == ["input_ids", "attention_mask"]
        assert text.output_names == ["text_embedding", "logit_scale", "logit_bias"]
        outputs = {**vision(images.numpy()), **text(ids.input_ids.numpy(), ids.attention_mask.numpy())}
    else:
        assert [f.name for f in result.files] == ["clip.onnx"]
        combined = OnnxModel(result.files[0])
        assert combined.input_names == ["image", "input_ids", "attention_mask"]
        outputs = combined(images.numpy(), ids.input_ids.numpy(), ids.attention_mask.numpy())
        assert combined.metadata["task"] == "clip" and combined.metadata["model_id"] == name
    torch.testing.assert_close(torch.from_numpy(outputs["image_embedding"]), image_embeddings, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.from_numpy(outputs["text_embedding"]), text_embeddings, atol=1e-4, rtol=0)
    assert outputs["logit_scale"] == pytest.approx([model.logit_scale.exp().item()] * 3)
    assert outputs["logit_bias"] == pytest.approx([model.logit_bias.item()] * 3)
