"""Sliding-window inference equals a direct forward for a translation-equivariant per-pixel model."""

from __future__ import annotations

import pytest
import torch

from vfmkit.tasks.segment.sliding_window import sliding_window_logits


@pytest.fixture(scope="module")
def per_pixel() -> torch.nn.Conv2d:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 5, kernel_size=1)


@pytest.mark.parametrize(
    ("size", "window", "stride"),
    [((37, 50), (16, 16), (12, 10)), ((32, 32), 16, 16), ((10, 9), 16, 8), ((40, 23), (24, 16), (5, 16))],
)
def test_matches_full_image_forward(per_pixel, size, window, stride) -> None:
    image = torch.rand(2, 3, *size)
    with torch.no_grad():
        direct = per_pixel(image)
    logits = sliding_window_logits(per_pixel, image, window, stride, num_classes=5, windows_per_batch=3)
    assert logits.shape == (2, 5, *size) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, direct, atol=1e-5, rtol=1e-5)


def test_averages_overlaps_and_upsamples_low_resolution_outputs() -> None:
    calls = []

    def quarter_resolution(windows: torch.Tensor) -> torch.Tensor:
        calls.append(windows.shape[0])
        mean = windows.mean(dim=(1, 2, 3), keepdim=True)
        return mean.expand(-1, 2, windows.shape[-2] // 4, windows.shape[-1] // 4)

    image = torch.zeros(1, 3, 20, 20)
    image[..., 10:] = 1.0
    logits = sliding_window_logits(quarter_resolution, image, 16, 4, num_classes=2, windows_per_batch=4)
    # windows start at 0 and 4 in each direction; their means are 6/16 (x 0..15) and 10/16 (x 4..19)
    expected_col = torch.tensor([6 / 16] * 4 + [8 / 16] * 12 + [10 / 16] * 4)  # 1 window, 2 windows, 1 window
    torch.testing.assert_close(logits[0, 0, 0], expected_col)
    assert calls == [4] and torch.isfinite(logits).all()


def test_rejects_gaps_and_wrong_outputs(per_pixel) -> None:
    image = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="larger than the window"):
        sliding_window_logits(per_pixel, image, 8, 9, num_classes=5)
    with pytest.raises(ValueError, match=r"expected \(\d+, 4, h, w\)"):
        sliding_window_logits(per_pixel, image, 8, 8, num_classes=4)
