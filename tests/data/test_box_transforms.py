"""Box-aware augmentation: boxes follow the pixels, sanitising keeps labels in sync, and every random choice is
reproducible from the sample seed."""

from __future__ import annotations

import pytest
import torch

from vfmkit.data.box_transforms import DetectionAugment, pick_scale, resize_batch, resize_with_boxes


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A black 90x120 image with two white rectangles and their xyxy boxes."""
    image = torch.zeros(3, 90, 120)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [70.0, 10.0, 110.0, 40.0]])
    for x0, y0, x1, y1 in boxes.int().tolist():
        image[:, y0:y1, x0:x1] = 1.0
    return image, boxes, torch.tensor([2, 0])


def _bright_extent(image: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """xyxy extent of the bright pixels inside ``box`` (grown by 3 px)."""
    x0, y0, x1, y1 = box.tolist()
    h, w = image.shape[-2:]
    left, top = max(int(x0) - 3, 0), max(int(y0) - 3, 0)
    region = image[0, top : min(int(y1) + 3, h), left : min(int(x1) + 3, w)] > 0.5
    ys, xs = torch.nonzero(region, as_tuple=True)
    return torch.tensor([xs.min() + left, ys.min() + top, xs.max() + left + 1, ys.max() + top + 1], dtype=torch.float32)


@pytest.mark.parametrize("seed", range(6))
def test_boxes_follow_the_pixels(seed):
    image, boxes, labels = _scene()
    augment = DetectionAugment(64, photometric=0.0, zoom_out=0.5, iou_crop=0.8, hflip=0.5)
    out, out_boxes, out_labels = augment(image, boxes, labels, seed)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    assert len(out_boxes) == len(out_labels) >= 1
    for box in out_boxes:
        if (box[2] - box[0]) > 4 and (box[3] - box[1]) > 4:  # resampling blurs tiny boxes too much to compare
            assert torch.allclose(_bright_extent(out, box), box, atol=2.0), (box, _bright_extent(out, box))


def test_same_seed_same_sample_and_rng_untouched():
    image, boxes, labels = _scene()
    augment = DetectionAugment(64)
    state = torch.get_rng_state()
    first, second, other = (
        augment(image, boxes, labels, 7),
        augment(image, boxes, labels, 7),
        augment(image, boxes, labels, 8),
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])


def test_sanitize_drops_boxes_with_their_labels():
    image, boxes, labels = _scene()
    tiny = torch.cat([boxes, torch.tensor([[5.0, 5.0, 5.5, 5.5]])])
    out, out_boxes, out_labels = DetectionAugment(64, 0, 0, 0, 0, min_box_size=1.0)(
        image, tiny, torch.tensor([2, 0, 1]), 0
    )
    assert out_labels.tolist() == [2, 0]
    torch.testing.assert_close(out_boxes, boxes * torch.tensor([64 / 120, 64 / 90] * 2))


def test_images_without_boxes_pass():
    image, _, _ = _scene()
    out, boxes, labels = DetectionAugment(64)(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 3)
    assert out.shape == (3, 64, 64) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_resize_with_boxes_scales_both_axes():
    image, boxes, _ = _scene()
    out, out_boxes = resize_with_boxes(image, boxes, (45, 240))
    assert out.shape == (3, 45, 240)
    torch.testing.assert_close(out_boxes, boxes * torch.tensor([2.0, 0.5, 2.0, 0.5]))


def test_batch_scales_are_reproducible_choices():
    scales = [32, 64, 96]
    picks = [pick_scale(scales, 0, epoch, key) for epoch in range(3) for key in range(10)]
    assert set(picks) <= set(scales) and len(set(picks)) > 1
    assert picks == [pick_scale(scales, 0, epoch, key) for epoch in range(3) for key in range(10)]
    assert resize_batch(torch.rand(2, 3, 64, 64), 32).shape == (2, 3, 32, 32)
