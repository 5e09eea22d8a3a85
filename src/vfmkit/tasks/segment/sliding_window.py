"""Sliding-window inference for dense heads on images larger than the training size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or (h, w), got {value!r}")
    return pair


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts covering ``0..length``: every ``stride``, the last one flush with the end."""
    if length <= window:
        return [0]
    count = -(-(length - window) // stride) + 1
    return sorted({min(i * stride, length - window) for i in range(count)})


@torch.no_grad()
def sliding_window_logits(
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    num_classes: int,
    windows_per_batch: int = 8,
) -> torch.Tensor:
    """Per-pixel logits of a large image from overlapping windows, averaged where windows overlap.

    The image is zero-padded at the bottom/right to at least the window size, windows of ``window`` start every
    ``stride`` pixels with the last row/column of windows flush with the (padded) border (so every pixel is
    covered whatever the image size), each window's logits are bilinearly resized to the window size when
    ``forward_fn`` returns a lower resolution (e.g. a SegFormer head at 1/4), summed and divided by the number of
    windows covering each pixel, and the padding is cropped off.

    Args:
        forward_fn: maps float (n, C, h, w) windows to logits float (n, K, h', w').
        image: float (B, C, H, W) (e.g. NCHW RGB in [0, 1]).
        window: window (h, w) or side, e.g. the training size.
        stride: step (h, w) or side; <= the window for full coverage with overlap.
        num_classes: K.
        windows_per_batch: windows of one image sent to ``forward_fn`` together (their B images each).

    Returns:
        float32 (B, K, H, W) logits.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if sh > wh or sw > ww:
        raise ValueError(f"stride {(sh, sw)} larger than the window {(wh, ww)} would leave pixels uncovered")
    batch, _, height, width = image.shape
    padded = F.pad(image, (0, max(ww - width, 0), 0, max(wh - height, 0)))
    ph, pw = padded.shape[-2:]
    boxes = [(y, x) for y in _starts(ph, wh, sh) for x in _starts(pw, ww, sw)]
    logits = image.new_zeros((batch, num_classes, ph, pw), dtype=torch.float32)
    counts = image.new_zeros((1, 1, ph, pw), dtype=torch.float32)
    for first in range(0, len(boxes), max(1, windows_per_batch)):
        chunk = boxes[first : first + max(1, windows_per_batch)]
        crops = torch.cat([padded[:, :, y : y + wh, x : x + ww] for y, x in chunk])
        out = forward_fn(crops).float()
        if out.ndim != 4 or out.shape[:2] != (crops.shape[0], num_classes):
            expected = f"({crops.shape[0]}, {num_classes}, h, w)"
            raise ValueError(f"forward_fn returned {tuple(out.shape)}; expected {expected}")
        if out.shape[-2:] != (wh, ww):
            out = F.interpolate(out, size=(wh, ww), mode="bilinear", align_corners=False)
        for k, (y, x) in enumerate(chunk):
            logits[:, :, y : y + wh, x : x + ww] += out[k * batch : (k + 1) * batch]
            counts[:, :, y : y + wh, x : x + ww] += 1
    return (logits / counts)[:, :, :height, :width]
