"""k-NN classification: the weighted vote, the accuracy bookkeeping, and the class-folder pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vfmkit.errors import DataError, VfmError
from vfmkit.features.knn import knn_accuracy, knn_evaluate, knn_scores, list_class_folders


def test_votes_are_temperature_weighted_cosine_similarities() -> None:
    train = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[3.0, 0.0]])
    scores = knn_scores(train, labels, query, num_classes=3, k=2, temperature=0.5)
    # neighbours: train 0 (cos 1) and train 2 (cos 1/sqrt 2); train 1 (cos 0) is not among the k=2
    expected = torch.tensor([[math.exp(1 / 0.5), math.exp((1 / math.sqrt(2)) / 0.5), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(scores, expected)
    assert knn_scores(train, labels, query, 3, k=50).shape == (1, 3)  # k capped at the training size
    with pytest.raises(VfmError, match="temperature"):
        knn_scores(train, labels, query, 3, temperature=0.0)


def _near_collinear(count: int, direction: torch.Tensor, base: torch.Tensor, generator) -> torch.Tensor:
    """float32 summaries ``base + 1e-5 (direction + noise)``: cosine similarities that differ by ~1e-8 only."""
    noise = 0.5 * torch.randn(count, base.numel(), generator=generator)
    return (base + 1e-5 * (direction + noise)).float()


def test_near_collinear_embeddings_are_ranked_in_float64_and_ties_are_warned_about(caplog) -> None:
    """Summaries equal up to 1e-5 (similarities up to 1e-8): float32 orders the neighbours by rounding noise, the
    votes here follow the exact float64 similarities, and a warning says the neighbours tie."""
    generator = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(64, generator=generator), dim=0)
    directions = torch.randn(2, 64, generator=generator)
    train = torch.cat([_near_collinear(20, directions[c], base, generator) for c in (0, 1)])
    query = torch.cat([_near_collinear(20, directions[c], base, generator) for c in (0, 1)])
    labels = torch.tensor([0] * 20 + [1] * 20)
    exact = (
        torch.nn.functional.normalize(query.double(), dim=1) @ torch.nn.functional.normalize(train.double(), dim=1).T
    )
    top = exact.topk(20, dim=1)
    expected = torch.zeros(40, 2, dtype=torch.float64).scatter_add_(1, labels[top.indices], (top.values / 0.07).exp())
    single = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(train, dim=1).T
    in_float32 = torch.zeros(40, 2).scatter_add_(1, labels[single.topk(20, dim=1).indices], torch.ones(40, 20))
    assert (in_float32.argmax(1) != expected.argmax(1)).any()  # float32 gets top-1 wrong on these rows
    with caplog.at_level("WARNING", logger="vfmkit.features.knn"):
        scores = knn_scores(train, labels, query, num_classes=2)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-12, atol=0)
    assert (scores.argmax(1) == labels).all()  # the exact neighbours are the query's own class
    assert "40 of 40 queries have neighbours k and k + 1 (k = 20) within 1e-06" in caplog.text
    caplog.clear()
    knn_scores(torch.eye(3), torch.tensor([0, 1, 2]), torch.tensor([[1.0, 0.2, 0.0]]), 3, k=1)
    assert "k-NN" not in caplog.text  # separable embeddings: no warning


def test_accuracy_and_per_class_counts() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    labels = torch.tensor([0, 1, 1, 0])
    top1, top5, per_class = knn_accuracy(scores, labels, ["a", "b", "c"])
    assert top1 == pytest.approx(50.0)
    assert top5 == pytest.approx(100.0)
    assert {name: (c.correct, c.total) for name, c in per_class.items()} == {"a": (1, 2), "b": (1, 2)}


def _class_folders(root: Path, per_class: int, seed: int) -> None:
    """Three clearly separable classes: noisy red, green and blue images."""
    rng = np.random.default_rng(seed)
    for name, channel in (("blue", 2), ("green", 1), ("red", 0)):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            array = rng.integers(0, 90, (48, 48, 3))
            array[..., channel] += 160
            Image.fromarray(array.astype(np.uint8)).save(root / name / f"{index}.png")


def test_knn_on_separable_classes_beats_chance(tmp_path: Path) -> None:
    _class_folders(tmp_path / "train", 8, seed=0)
    _class_folders(tmp_path / "val", 4, seed=1)
    (tmp_path / "val" / "red" / "broken.png").write_bytes(b"not a png")
    result = knn_evaluate(tmp_path / "train", tmp_path / "val", "test-radio-v2-tiny", progress=False)
    assert result.classes == ["blue", "green", "red"]
    assert (result.num_train, result.num_val, result.k) == (24, 12, 20)
    assert result.top1 >= 90.0  # chance is 33%
    assert result.top5 == pytest.approx(100.0)
    assert sum(c.total for c in result.per_class.values()) == 12
    assert [s.path.name for s in result.skipped] == ["broken.png"]


def test_class_folder_errors(tmp_path: Path) -> None:
    _class_folders(tmp_path / "train", 1, seed=0)
    with pytest.raises(DataError, match="not a folder"):
        list_class_folders(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        list_class_folders(tmp_path / "flat")
    (tmp_path / "val" / "purple").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "purple" / "x.png")
    with pytest.raises(DataError, match="purple"):
        list_class_folders(tmp_path / "val", classes=["blue", "green", "red"])
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        list_class_folders(tmp_path / "train")


def test_one_class_is_refused(tmp_path: Path) -> None:
    _class_folders(tmp_path / "all", 1, seed=0)
    (tmp_path / "one").mkdir()
    (tmp_path / "all" / "red").rename(tmp_path / "one" / "red")
    with pytest.raises(DataError, match=r"k-NN needs at least 2 classes, .*one has 1 \(red\)"):
        knn_evaluate(tmp_path / "one", tmp_path / "one", "test-radio-v2-tiny", progress=False)
