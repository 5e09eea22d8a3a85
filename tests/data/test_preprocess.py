"""Image files / PIL images -> model input batches under the two resolution policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vfmkit.data.preprocess import preprocess_image_groups, preprocess_images, resize, target_size
from vfmkit.errors import DataError, VfmError
from vfmkit.models.backbones.base import Preprocessing

PRE = Preprocessing(
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    patch_size=16,
    preferred_resolution=(64, 48),
    max_resolution=512,
    resolution_step=16,
)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_preferred_policy_resizes_everything_to_the_preferred_size(tmp_path: Path) -> None:
    _image(30, 20).save(tmp_path / "a.png")
    batch = preprocess_images([tmp_path / "a.png", _image(100, 70), str(tmp_path / "a.png")], PRE)
    assert batch.shape == (3, 3, 64, 48)
    assert batch.dtype == torch.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    torch.testing.assert_close(batch[0], batch[2])


def test_same_size_keeps_exact_pixel_values() -> None:
    image = _image(48, 64)
    batch = preprocess_images(image, PRE)
    expected = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(batch[0], expected, rtol=0, atol=0)


def test_resize_is_antialiased_bilinear_like_torchvision() -> None:
    tv_functional = pytest.importorskip("torchvision.transforms.v2.functional")
    image = torch.rand(3, 97, 131)
    ours = resize(image, (32, 48))
    theirs = tv_functional.resize(image, [32, 48], antialias=True)
    torch.testing.assert_close(ours, theirs.clamp(0, 1), atol=1e-6, rtol=0)
    constant = torch.full((3, 50, 70), 0.25)
    torch.testing.assert_close(resize(constant, (16, 32)), torch.full((3, 16, 32), 0.25))


def test_explicit_resolution() -> None:
    assert preprocess_images(_image(10, 10), PRE, resolution=32).shape == (1, 3, 32, 32)
    assert preprocess_images(_image(10, 10), PRE, resolution=(16, 48)).shape == (1, 3, 16, 48)
    with pytest.raises(VfmError, match="nearest supported: 224x224"):
        preprocess_images(_image(10, 10), PRE, resolution=230)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(100, 50, (48, 96)), (60, 90, (64, 48)), (60, 100, (80, 48)), (48, 48, (48, 48)), (1000, 40, (48, 1200))],
)
def test_aspect_policy_keeps_ratio_and_snaps_to_the_step(width: int, height: int, expected: tuple[int, int]) -> None:
    assert target_size((width, height), PRE, None, "aspect") == expected


def test_aspect_policy_with_a_short_side() -> None:
    assert target_size((300, 200), PRE, 64, "aspect") == (64, 96)
    with pytest.raises(VfmError, match="short-side"):
        target_size((300, 200), PRE, (64, 64), "aspect")


def test_aspect_policy_mixed_shapes_need_groups() -> None:
    images = [_image(100, 50), _image(50, 100), _image(200, 100)]
    with pytest.raises(DataError, match="preprocess_image_groups"):
        preprocess_images(images, PRE, policy="aspect")
    groups = preprocess_image_groups(images, PRE)
    assert [(indices, tuple(batch.shape)) for indices, batch in groups] == [
        ([0, 2], (2, 3, 48, 96)),
        ([1], (1, 3, 96, 48)),
    ]


def test_fixed_resolution_models_refuse_other_sizes() -> None:
    fixed = Preprocessing((0.5,) * 3, (0.5,) * 3, 14, (224, 224), 224, 14, fixed_resolution=True)
    assert preprocess_images(_image(30, 30), fixed).shape == (1, 3, 224, 224)
    with pytest.raises(VfmError, match="only accepts 224x224"):
        preprocess_images(_image(30, 30), fixed, resolution=448)
    with pytest.raises(VfmError, match="only accepts"):
        preprocess_images(_image(60, 30), fixed, policy="aspect")


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(VfmError, match="policy"):
        preprocess_images(_image(10, 10), PRE, policy="crop")
    with pytest.raises(DataError, match="no images"):
        preprocess_images([], PRE)
    with pytest.raises(DataError, match="missing.png"):
        preprocess_images([tmp_path / "missing.png"], PRE)
    with pytest.raises(TypeError, match="Backbone or a Preprocessing"):
        preprocess_images(_image(10, 10), object())


def test_other_modes_become_rgb() -> None:
    gray = Image.fromarray(np.full((48, 64), 51, dtype=np.uint8)).transpose(Image.Transpose.TRANSPOSE)
    batch = preprocess_images([gray, Image.new("RGBA", (48, 64), (0, 0, 0, 0))], PRE)
    torch.testing.assert_close(batch[0], torch.full((3, 64, 48), 0.2))
    torch.testing.assert_close(batch[1], torch.ones(3, 64, 48))
