"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in plain PyTorch.

The core :func:`ms_deform_attn` samples every level with ``F.grid_sample`` (bilinear, zero padding,
``align_corners=False``), which is exactly what the reference CUDA kernel computes, so it runs on the CPU and exports
to ONNX with standard operators only (``GridSample``, opset >= 16). Level sizes are plain Python ints (static at trace
time); the value tensor is split with them.

:class:`MSDeformAttn` keeps the reference module's parameter names (``sampling_offsets``, ``attention_weights``,
``value_proj``, ``output_proj``) and initialisation, so published ViT-Adapter / Deformable-DETR weights load as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SpatialShapes = Sequence[tuple[int, int]]
"""Per level (H_l, W_l) as Python ints, in the order the levels are concatenated in the value tensor."""


def as_spatial_shapes(shapes: SpatialShapes | torch.Tensor) -> list[tuple[int, int]]:
    """Normalise level sizes given as pairs or as the reference's (L, 2) int64 tensor to a list of int pairs.

    A tensor is read with ``tolist`` (a constant at trace time): give Python ints when exporting.
    """
    if isinstance(shapes, torch.Tensor):
        shapes = shapes.tolist()
    return [(int(h), int(w)) for h, w in shapes]


def level_start_indices(spatial_shapes: SpatialShapes) -> list[int]:
    """Offset of each level in the flattened value tensor: [0, H0*W0, H0*W0 + H1*W1, ...]."""
    starts, total = [], 0
    for h, w in spatial_shapes:
        starts.append(total)
        total += h * w
    return starts


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes | torch.Tensor,
    level_start_index: Sequence[int] | torch.Tensor | None,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The deformable attention core: a weighted sum of bilinear samples of every level.

    Args:
        value: (N, S, M, Dh) float, S = sum of H_l * W_l, M heads of Dh channels; levels concatenated in raster order.
        spatial_shapes: per level (H_l, W_l) (Python ints, or an (L, 2) int tensor).
        level_start_index: per level its first row in ``value`` (ints or an (L,) tensor); None derives it from
            ``spatial_shapes``.
        sampling_locations: (N, Lq, M, L, P, 2) float, (x, y) in [0, 1] of each level (0 = left/top edge,
            1 = right/bottom edge; outside reads zeros).
        attention_weights: (N, Lq, M, L, P) float, weights of the L * P samples of each query and head.

    Returns:
        (N, Lq, M * Dh) float, heads concatenated.
    """
    shapes = as_spatial_shapes(spatial_shapes)
    starts = level_start_indices(shapes) if level_start_index is None else [int(s) for s in level_start_index]
    n, _, m, dh = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    if len(shapes) != num_levels or len(starts) != num_levels:
        raise ValueError(f"{len(shapes)} level shapes / {len(starts)} starts for {num_levels} sampled levels")
    grids = (2 * sampling_locations - 1).to(value.dtype)  # grid_sample coordinates in [-1, 1]
    samples = []
    for level, ((h, w), start) in enumerate(zip(shapes, starts, strict=True)):
        level_value = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(n * m, dh, h, w)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P, 2)
        samples.append(
            F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*M, Dh, Lq, P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, Dh, Lq)
    return out.reshape(n, m * dh, lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (the reference ``MSDeformAttn``, with ViT-Adapter's value ``ratio``).

    Args:
        d_model: channels C of queries and of the input features.
        n_levels: L, levels of the input.
        n_heads: M; ``int(d_model * ratio)`` must be divisible by it.
        n_points: P, samples per head and level.
        ratio: value channels = ``int(d_model * ratio)`` (ViT-Adapter's ``deform_ratio``).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, ratio: float = 1.0):
        super().__init__()
        value_dim = int(d_model * ratio)
        if d_model % n_heads or value_dim % n_heads:
            raise ValueError(f"d_model {d_model} and value dim {value_dim} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads = d_model, n_levels, n_heads
        self.n_points, self.ratio = n_points, ratio
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dim)
        self.output_proj = nn.Linear(value_dim, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The reference initialisation: offsets start on rings of radius 1..P pointing in M directions."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: SpatialShapes | torch.Tensor,
        input_level_start_index: Sequence[int] | torch.Tensor | None = None,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from each query to P points per head around its reference point in each level.

        Args:
            query: (N, Lq, C) float.
            reference_points: (N or 1, Lq, L, 2) (x, y) in [0, 1] per level, or (N, Lq, L, 4) boxes (cx, cy, w, h).
            input_flatten: (N, S, C) float, the levels flattened (raster order) and concatenated.
            input_spatial_shapes: per level (H_l, W_l) with sum H_l * W_l = S.
            input_level_start_index: per level its first row in ``input_flatten`` (None: derived).
            input_padding_mask: (N, S) bool, True where the input is padding (its value is zeroed).

        Returns:
            (N, Lq, C) float.
        """
        shapes = as_spatial_shapes(input_spatial_shapes)
        n, lq, _ = query.shape
        if sum(h * w for h, w in shapes) != input_flatten.shape[1]:
            raise ValueError(f"level shapes {shapes} do not cover {input_flatten.shape[1]} input positions")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, value.shape[1], self.n_heads, -1)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            ref = reference_points[:, :, None, :, None]
            locations = ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")
        out = ms_deform_attn(value, shapes, input_level_start_index, locations, weights)
        return self.output_proj(out)
