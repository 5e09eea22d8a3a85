"""Load-time patch-size change of a ViT's patch embedding (e.g. DINOv2's 14 -> 16, the patch RF-DETR runs DINOv2
with), without adding or removing a weight.

The kernel (D, 3, p, p) is resampled to (D, 3, q, q) with FlexiViT's pseudo-inverse resize (Beyer et al. 2023, timm's
``resample_patch_embed``): the new kernel applied to a q x q patch gives about the embedding the old kernel gave the
same patch at p x p, so the pre-trained features carry over. (RF-DETR builds a patch-16 DINOv2 and starts from its own
detection checkpoints instead; it loads no DINOv2 weights at patch 16.)
"""

from __future__ import annotations

import torch
from timm.layers import resample_patch_embed
from torch import nn


def resample_patch_kernel(conv: nn.Conv2d, patch_size: int) -> nn.Conv2d:
    """A copy of the patch-embedding convolution ``conv`` (kernel = stride = p) with kernel = stride = ``patch_size``.

    Args:
        conv: the patch embedding, weight (D, C, p, p), optional bias (D,).
        patch_size: q >= 2.

    Returns:
        A new ``nn.Conv2d`` (C -> D, kernel q, stride q) holding the resampled kernel and the same bias, with the
        same ``requires_grad``, dtype and device.

    Raises:
        ValueError: ``patch_size`` below 2, or ``conv`` is not a non-overlapping square patch embedding.
    """
    if patch_size < 2:
        raise ValueError(f"patch size must be >= 2, got {patch_size}")
    kernel, stride = tuple(conv.kernel_size), tuple(conv.stride)
    if kernel[0] != kernel[1] or kernel != stride or conv.padding not in ((0, 0), 0, "valid"):
        raise ValueError(f"expected a square patch embedding with kernel = stride, got kernel {kernel} stride {stride}")
    weight = conv.weight
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        patch_size,
        patch_size,
        bias=conv.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    if weight.is_meta:
        return new.requires_grad_(weight.requires_grad)
    with torch.no_grad():
        new.weight.copy_(resample_patch_embed(weight.float(), [patch_size, patch_size]).to(weight.dtype))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new.requires_grad_(weight.requires_grad)
