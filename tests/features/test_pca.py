"""PCA colour maps: the projection, the pictures, and the files written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vfmkit.features.pca import GAP_PX, pca_colors, pca_source, picture_names, side_by_side
from vfmkit.models.factory import load_backbone


def test_first_component_separates_two_clusters() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 6, 6, generator=generator) * 0.05
    direction = torch.randn(16, generator=generator)
    features[:, :, :, :3] += direction[:, None, None]  # left half of every map differs along one direction
    colors = pca_colors(features)
    assert colors.shape == (2, 3, 6, 6)
    assert colors.dtype == torch.float32
    assert colors.min() >= 0 and colors.max() <= 1
    left, right = colors[:, 0, :, :3], colors[:, 0, :, 3:]
    assert (left.mean() - right.mean()).abs() > 0.7
    assert left.std() < 0.2 and right.std() < 0.2
    torch.testing.assert_close(pca_colors(features), colors)


def test_fewer_than_three_feature_channels() -> None:
    colors = pca_colors(torch.arange(8.0).reshape(1, 2, 2, 2))
    assert colors.shape == (1, 3, 2, 2)
    assert torch.all(colors[:, 2] == 0.5)


def test_side_by_side_layout() -> None:
    image = torch.zeros(3, 32, 48)
    colors = torch.zeros(3, 2, 3)
    colors[0, 0, 0] = 1.0
    picture = side_by_side(image, colors, min_side=64)
    assert picture.size == (2 * 96 + GAP_PX, 64)
    array = np.asarray(picture)
    assert (array[:, 96 : 96 + GAP_PX] == 255).all()
    right = array[:, 96 + GAP_PX :]
    assert (right[:32, :32, 0] == 255).all() and (right[32:, :, 0] == 0).all()


def test_picture_names_are_unique() -> None:
    names = picture_names([Path("a/x.png"), Path("b/x.jpg"), Path("y.png")])
    assert names == ["x_pca.png", "x_pca_2.png", "y_pca.png"]


@pytest.fixture(scope="module")
def model():
    return load_backbone("test-radio-v2-tiny")


def test_pca_source_writes_one_picture_per_readable_image(model, tmp_path: Path) -> None:
    source = tmp_path / "images"
    source.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(source / name)
    (source / "bad.png").write_bytes(b"broken")
    result = pca_source(source, model, tmp_path / "pca", resolution=32, progress=False)
    assert [p.name for p in result.pictures] == ["a_pca.png", "b_pca.png", "c_pca.png"]
    assert [s.path.name for s in result.skipped] == ["bad.png"]
    for picture in result.pictures:
        with Image.open(picture) as image:
            assert image.mode == "RGB"
            assert image.size == (2 * 256 + GAP_PX, 256)
