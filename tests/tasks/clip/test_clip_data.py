"""Pair readers for the four layouts, preflight errors naming the file, dataset and collate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.tasks.clip.clip_data import make_images, write_caption_folders, write_coco, write_csv, write_shard

from vfmkit.data.preflight import recording_left_out
from vfmkit.errors import DataError
from vfmkit.models.text.tokenizers import ClipBpeTokenizer
from vfmkit.tasks.clip.data import (
    CaptionPairs,
    ImageRef,
    PairCollate,
    PairDataset,
    expected_dropped_fraction,
    preflight,
    read_pairs,
)
from vfmkit.tasks.clip.embeddings import unique_captions
from vfmkit.tasks.clip.spec import ClipSpec


def test_custom_layout(tmp_path) -> None:
    image_dir, caption_dir = write_caption_folders(tmp_path, per_combination=1)
    pairs = read_pairs("custom", image_dir=image_dir, caption_dir=caption_dir)
    assert len(pairs) == 12 and pairs.captions[0] == "a red circle"
    assert preflight(pairs, "train")[1] == {"images": 12, "captions": 12}
    (image_dir / "005.png").write_bytes(b"not a png")  # an unreadable image is left out with its caption
    with recording_left_out() as left_out:
        cleaned, counts = preflight(read_pairs("custom", image_dir=image_dir, caption_dir=caption_dir), "train")
    assert counts == {"images": 11, "captions": 11} and [Path(i.path).name for i in left_out] == ["005.png"]
    assert [Path(str(image)).name for image in cleaned.images] == [f"{i:03d}.png" for i in range(12) if i != 5]
    assert cleaned.caption_image.tolist() == list(range(11))
    (caption_dir / "003.txt").unlink()
    (caption_dir / "004.txt").write_text("  \n")
    with pytest.raises(DataError) as err:
        preflight(read_pairs("custom", image_dir=image_dir, caption_dir=caption_dir), "train")
    message = str(err.value)
    assert message.startswith("2 problem(s)") and "\n" not in message
    assert f"003.png: no caption file {caption_dir / '003.txt'}" in message
    assert f"{caption_dir / '004.txt'}:1: empty caption" in message


def test_csv_jsonl_duplicates_and_missing_images(tmp_path) -> None:
    images, _ = make_images(1, 0)
    for i in range(2):
        images[i].save(tmp_path / f"{i}.png")
    csv_file = write_csv(tmp_path, [("0.png", "a red circle"), ("0.png", "red disc"), ("1.png", "a red square")])
    pairs = read_pairs("csv", file=csv_file)
    assert pairs.caption_image.tolist() == [0, 0, 1] and preflight(pairs, "train")[1]["captions"] == 3
    bad = write_csv(tmp_path, [("0.png", "x"), ("0.png", "x"), ("9.png", "y")], name="bad.csv")
    with pytest.raises(
        DataError, match=r"2 problem\(s\).*bad.csv:3: duplicate of .*bad.csv:2.*bad.csv:4: image .*9.png does"
    ):
        preflight(read_pairs("csv", file=bad), "train")
    (tmp_path / "no_header.csv").write_text("0.png,x\n")
    with pytest.raises(DataError, match="must name the columns 'image' and 'caption'"):
        read_pairs("csv", file=tmp_path / "no_header.csv")
    lines = [{"image": "0.png", "caption": ["one", "two"]}, {"image": "1.png", "caption": "three"}]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert read_pairs("jsonl", file=jsonl).captions == ["one", "two", "three"]
    with pytest.raises(DataError, match="needs file"):
        read_pairs("jsonl")


def test_coco_captions_several_per_image(tmp_path) -> None:
    file = write_coco(tmp_path, captions_per_image=3)
    pairs = read_pairs("coco", file=file, root=tmp_path / "images")
    assert (len(pairs.images), len(pairs.captions)) == (12, 36)
    assert pairs.relevance().sum(axis=1).tolist() == [3] * 12
    texts, relevance = unique_captions(pairs)
    assert len(texts) == 36 and relevance.sum() == 36
    data = json.loads(file.read_text())
    data["annotations"].append({"id": 99, "image_id": 1234, "caption": "lost"})
    file.write_text(json.dumps(data))
    with pytest.raises(DataError, match="annotation 99: image_id 1234 is not in 'images'"):
        preflight(read_pairs("coco", file=file, root=tmp_path / "images"), "train", check_images=False)
    data["images"][1]["id"] = data["images"][0]["id"]
    file.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[1\]: duplicate image id .* \(also images\[0\]\)"):
        read_pairs("coco", file=file, root=tmp_path / "images")
    data["images"][1]["id"] = "x"
    file.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[1\]: key 'id' must be int, got 'x'"):
        read_pairs("coco", file=file, root=tmp_path / "images")


def test_webdataset_shards(tmp_path) -> None:
    write_shard(tmp_path / "shards" / "train-000.tar", seed=0)
    write_shard(tmp_path / "shards" / "train-001.tar", seed=1, drop_caption_of=4)
    pairs = read_pairs("wds", shards=tmp_path / "shards")
    assert len(pairs.images) == 23 and pairs.images[0].member == "00000.png"  # the sample without caption is out
    assert pairs.images[0].load().size == (64, 64)
    with pytest.raises(DataError, match=r"train-001.tar: sample '00004' has no .txt caption"):
        preflight(pairs, "train")
    with pytest.raises(DataError, match="no .tar shards"):
        read_pairs("wds", shards=tmp_path / "nothing-*.tar")


def test_dataset_and_collate_drop_duplicate_captions(tmp_path) -> None:
    pairs = read_pairs("coco", file=write_coco(tmp_path, captions_per_image=3), root=tmp_path / "images")
    dataset = PairDataset(pairs, 32, train=True, crop_scale=(0.5, 1.0), seed=3)
    image, caption, index = dataset[5]
    assert image.shape == (3, 32, 32) and image.min() >= 0.0 and image.max() <= 1.0
    assert pairs.caption_image[caption] == index == 5
    chosen = {dataset[5][1] for _ in range(2)}
    assert len(chosen) == 1  # the caption is a function of (seed, epoch, image)
    assert PairDataset(pairs, 32)[5][1] == pairs.captions_of()[5][0]  # evaluation: the first caption
    collate = PairCollate(ClipBpeTokenizer(16), ["a", "b", "a"])
    batch = collate([(torch.zeros(3, 4, 4), 0, 0), (torch.ones(3, 4, 4), 1, 1), (torch.ones(3, 4, 4), 2, 2)])
    assert batch["images"].shape == (2, 3, 4, 4) and batch["input_ids"].shape == (2, 16)
    assert batch["caption_index"].tolist() == [0, 1] and batch["dropped"].item() == 1


def test_spec_accepts_tao_names(tmp_path) -> None:
    spec = ClipSpec.model_validate(
        {
            "model": {"type": "c-radio_v3-h", "adaptor_name": "siglip2-g", "freeze_vision_encoder": True},
            "train": {"loss_type": "clip", "vision_lr": 1e-5, "text_lr": 1e-6, "wise_ft": {"alpha": 0.5}},
            "export": {"encoder_type": "combined"},
            "dataset": {"train": {"type": "wds", "shards": str(tmp_path)}},
        }
    )
    assert spec.model.type == "c-radio_v3-h" and spec.model.backbone is None and spec.train.wise_ft.alpha == 0.5
    assert ClipSpec().model.type == "siglip2-so400m-patch16-256" and ClipSpec().train.loss_type == "siglip"
    with pytest.raises(ValueError, match="nothing trains"):
        ClipSpec.model_validate({"model": {"freeze_vision_encoder": True, "freeze_text_encoder": True}})


def _pairs_of(captions_per_image: list[list[str]]) -> CaptionPairs:
    captions = [text for texts in captions_per_image for text in texts]
    owners = [i for i, texts in enumerate(captions_per_image) for _ in texts]
    images = [ImageRef(Path(f"{i}.png")) for i in range(len(captions_per_image))]
    return CaptionPairs(images, captions, np.asarray(owners, dtype=np.int64), "generated", [])


def test_expected_dropped_fraction_of_repeated_captions() -> None:
    """Unique captions drop nothing, one caption for all keeps 1 per batch, two captions over 100 images keep 2 of
    32; an image with several captions spreads its share over them (checked against the collate's rule)."""
    assert expected_dropped_fraction(_pairs_of([[f"c{i}"] for i in range(100)]), 32) == pytest.approx(0.0, abs=1e-9)
    assert expected_dropped_fraction(_pairs_of([["a thing"]] * 16), 8) == pytest.approx(1 - 1 / 8, abs=1e-5)
    assert expected_dropped_fraction(_pairs_of([["cat"], ["dog"]] * 50), 32) == pytest.approx(1 - 2 / 32, abs=1e-5)
    two_each = _pairs_of([[f"a{i}", "shared"] for i in range(20)])  # "shared" carries half of every image
    rng = np.random.default_rng(0)
    simulated = []
    for _ in range(4000):  # the collate's rule on batches of 8 with one caption drawn per image
        picks = [f"a{i}" if rng.random() < 0.5 else "shared" for i in rng.choice(20, 8, replace=False)]
        simulated.append(1 - len(set(picks)) / 8)
    assert expected_dropped_fraction(two_each, 8) == pytest.approx(np.mean(simulated), abs=0.02)
