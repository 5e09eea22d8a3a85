"""Multi-scale deformable attention: the grid_sample core against a per-point reference loop, and the module."""

from __future__ import annotations

import math

import pytest
import torch

from vfmkit.models.necks.msdeform_attn import MSDeformAttn, level_start_indices, ms_deform_attn

SHAPES = [(5, 7), (3, 4), (2, 2)]


def _bilinear(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample a (C, H, W) image at normalised (x, y) with zero padding, align_corners=False, one point at a time."""
    _, h, w = image.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(image.shape[0], dtype=torch.float64)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        if 0 <= yy < h and 0 <= xx < w:
            out += (1 - abs(px - xx)) * (1 - abs(py - yy)) * image[:, yy, xx].double()
    return out


def _reference(value, shapes, locations, weights) -> torch.Tensor:
    """Straightforward loop over batch, query, head, level and point."""
    n, _, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = locations.shape
    starts = level_start_indices(shapes)
    out = torch.zeros(n, lq, m, dh, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for level, ((h, w), start) in enumerate(zip(shapes, starts, strict=True)):
                    image = value[b, start : start + h * w, head].T.reshape(dh, h, w)
                    for p in range(num_points):
                        x, y = locations[b, q, head, level, p].tolist()
                        out[b, q, head] += weights[b, q, head, level, p].double() * _bilinear(image, x, y)
    return out.reshape(n, lq, m * dh).float()


def _inputs(seed: int = 0, n: int = 2, lq: int = 6, m: int = 2, dh: int = 3, points: int = 3):
    g = torch.Generator().manual_seed(seed)
    total = sum(h * w for h, w in SHAPES)
    value = torch.randn(n, total, m, dh, generator=g)
    locations = torch.rand(n, lq, m, len(SHAPES), points, 2, generator=g) * 1.4 - 0.2  # some outside [0, 1]
    weights = torch.rand(n, lq, m, len(SHAPES), points, generator=g)
    return value, locations, weights


def test_core_matches_per_point_loop() -> None:
    value, locations, weights = _inputs()
    out = ms_deform_attn(value, SHAPES, None, locations, weights)
    assert out.shape == (2, 6, 2 * 3)
    torch.testing.assert_close(out, _reference(value, SHAPES, locations, weights), atol=1e-5, rtol=0)


def test_core_accepts_reference_tensor_arguments() -> None:
    value, locations, weights = _inputs(seed=1)
    shapes_t = torch.tensor(SHAPES, dtype=torch.int64)
    starts_t = torch.tensor(level_start_indices(SHAPES), dtype=torch.int64)
    expected = ms_deform_attn(value, SHAPES, None, locations, weights)
    torch.testing.assert_close(ms_deform_attn(value, shapes_t, starts_t, locations, weights), expected)
    with pytest.raises(ValueError, match="level shapes"):
        ms_deform_attn(value, SHAPES[:2], None, locations, weights)


def test_module_matches_reference_formula() -> None:
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=3, ratio=0.5)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.3)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.3)
    total = sum(h * w for h, w in SHAPES)
    query, feat = torch.randn(2, 4, 8), torch.randn(2, total, 8)
    ref_points = torch.rand(2, 4, 3, 2)
    out = attn(query, ref_points, feat, SHAPES)

    value = attn.value_proj(feat).view(2, total, 2, 2)
    offsets = attn.sampling_offsets(query).view(2, 4, 2, 3, 3, 2)
    normalizer = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float32).view(1, 1, 1, 3, 1, 2)
    locations = ref_points[:, :, None, :, None, :] + offsets / normalizer
    weights = attn.attention_weights(query).view(2, 4, 2, 9).softmax(-1).view(2, 4, 2, 3, 3)
    expected = attn.output_proj(_reference(value.detach(), SHAPES, locations.detach(), weights.detach()))
    assert out.shape == (2, 4, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_box_reference_points_and_padding_mask() -> None:
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2)
    total = sum(h * w for h, w in SHAPES)
    query, feat = torch.randn(1, 3, 8), torch.randn(1, total, 8)
    boxes = torch.tensor([0.5, 0.5, 0.4, 0.2]).expand(1, 3, 3, 4)
    assert attn(query, boxes, feat, SHAPES).shape == (1, 3, 8)
    all_padding = torch.ones(1, total, dtype=torch.bool)
    masked = attn(query, boxes, feat, SHAPES, None, all_padding)
    torch.testing.assert_close(masked, attn.output_proj.bias.expand(1, 3, 8))
    with pytest.raises(ValueError, match="do not cover"):
        attn(query, boxes, feat[:, :-1], SHAPES)
    with pytest.raises(ValueError, match="2 or 4"):
        attn(query, boxes[..., :3], feat, SHAPES)


def test_reference_parameter_names_and_init() -> None:
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2, ratio=0.5)
    assert sorted(attn.state_dict()) == sorted(
        f"{layer}.{kind}"
        for layer in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
        for kind in ("weight", "bias")
    )
    assert attn.value_proj.out_features == 8 and attn.output_proj.in_features == 8
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    torch.testing.assert_close(bias[0, :, 0], torch.tensor([[1.0, 0.0]] * 3))  # head 0 points right, radius 1
    torch.testing.assert_close(bias[1, 2, 1], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)  # head 1 down, radius 2
    assert not attn.attention_weights.weight.any() and not attn.sampling_offsets.weight.any()
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=10, n_heads=4)
