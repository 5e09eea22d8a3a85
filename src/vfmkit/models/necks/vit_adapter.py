"""ViT-Adapter (Chen et al., "Vision Transformer Adapter for Dense Predictions", ICLR 2023) over any vfmkit backbone.

A convolutional spatial prior module (SPM) sees the image at strides 4/8/16/32; the backbone's blocks run in
interaction stages, each preceded by an *injector* (the ViT patch tokens query the SPM's stride 8/16/32 features with
multi-scale deformable attention, added through a LayerScale ``gamma``) and followed by an *extractor* (the SPM
features query the stage's patch tokens, then a ConvFFN with a depthwise 3x3 conv per level). The output pyramid is
the SPM features (stride 4 = up-sampled stride 8 + SPM c1), plus, with ``add_vit_features``, each stage's patch
tokens resized to the matching level, each through its own norm.

Generic over backbones through the token-level API every vfmkit ViT backbone has (``embed_tokens``,
``token_blocks``, ``finish_tokens``, ``num_prefix_tokens``): prefix tokens (class / summary / register tokens) are kept
aside from injection and extraction but run through every block, so the final summary comes out of the same pass.
Patch size 14 works: token grids and pyramid levels are matched by normalised deformable-attention coordinates and
bilinear resizing. Module and parameter names follow the reference implementation (``spm``, ``interactions``,
``level_embed``, ``up``, ``norm1``..``norm4``) so published adapter weights map onto it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import DropPath
from torch import nn

from vfmkit.models.backbones.base import Backbone, tokens_to_nchw
from vfmkit.models.necks.common import (
    BackboneNeck,
    NeckOutput,
    SummaryFusion,
    freeze,
    make_norm2d,
    resize_to,
)
from vfmkit.models.necks.msdeform_attn import MSDeformAttn

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


def reference_points(shapes: Sequence[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Pixel centres of each level in normalised (x, y): (1, sum H_l * W_l, 1, 2) float32, raster order per level."""
    points = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1))
    return torch.cat(points, 0)[None, :, None]


def conv_bn_relu(in_ch: int, out_ch: int, stride: int, norm: str) -> list[nn.Module]:
    """3x3 conv (no bias) + norm + ReLU, as a list for ``nn.Sequential``."""
    return [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), make_norm2d(norm, out_ch), nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """Conv stem -> c1..c4 at strides 4/8/16/32, each projected by a 1x1 conv to ``embed_dim``.

    Args:
        inplanes: stem width (``conv_inplane``); c2 has 2x, c3 and c4 4x this.
        embed_dim: output channels of every level.
        norm: 2-D norm kind (see :func:`make_norm2d`).
    """

    def __init__(self, inplanes: int = 64, embed_dim: int = 384, norm: str = "bn"):
        super().__init__()
        self.stem = nn.Sequential(
            *conv_bn_relu(3, inplanes, 2, norm),
            *conv_bn_relu(inplanes, inplanes, 1, norm),
            *conv_bn_relu(inplanes, inplanes, 1, norm),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*conv_bn_relu(inplanes, 2 * inplanes, 2, norm))
        self.conv3 = nn.Sequential(*conv_bn_relu(2 * inplanes, 4 * inplanes, 2, norm))
        self.conv4 = nn.Sequential(*conv_bn_relu(4 * inplanes, 4 * inplanes, 2, norm))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised image -> [c1, c2, c3, c4], (B, embed_dim, ceil(H/s), ceil(W/s)), s = 4..32."""
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return [self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)]


class DWConv(nn.Module):
    """Depthwise 3x3 conv applied to each level of a flattened multi-level sequence."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(B, sum H_l*W_l, C) -> same shape; ``shapes`` are the levels' (H_l, W_l) in order."""
        out, start = [], 0
        for h, w in shapes:
            level = tokens_to_nchw(x[:, start : start + h * w], (h, w))
            out.append(self.dwconv(level).flatten(2).transpose(1, 2))
            start += h * w
        return torch.cat(out, dim=1)


class ConvFFN(nn.Module):
    """Linear -> depthwise conv per level -> GELU -> Linear (hidden = ``cffn_ratio`` x dim)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(B, S, C) -> (B, S, C)."""
        x = self.drop(self.act(self.dwconv(self.fc1(x), shapes)))
        return self.drop(self.fc2(x))


class Injector(nn.Module):
    """ViT patch tokens (query) attend to the SPM levels; the result is added scaled by ``gamma`` (LayerScale)."""

    def __init__(self, dim: int, num_heads: int, n_points: int, n_levels: int, deform_ratio: float, init_values: float):
        super().__init__()
        self.query_norm = LayerNorm6(dim)
        self.feat_norm = LayerNorm6(dim)
        self.attn = MSDeformAttn(dim, n_levels=n_levels, n_heads=num_heads, n_points=n_points, ratio=deform_ratio)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, query, reference, feat, shapes) -> torch.Tensor:
        """query (B, h*w, C), reference (1, h*w, 1, 2), feat (B, S, C) over ``shapes`` -> (B, h*w, C)."""
        attn = self.attn(self.query_norm(query), reference, self.feat_norm(feat), shapes)
        return query + self.gamma * attn


class Extractor(nn.Module):
    """SPM features (query) attend to the ViT patch tokens (one level), then an optional ConvFFN."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_points: int,
        deform_ratio: float,
        with_cffn: bool,
        cffn_ratio: float,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.query_norm = LayerNorm6(dim)
        self.feat_norm = LayerNorm6(dim)
        self.attn = MSDeformAttn(d_model=dim, n_levels=1, n_heads=num_heads, n_points=n_points, ratio=deform_ratio)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio), drop=drop)
            self.ffn_norm = LayerNorm6(dim)
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, query, reference, feat, feat_shape, query_shapes) -> torch.Tensor:
        """query (B, S, C) over ``query_shapes``, reference (1, S, 1, 2), feat (B, h*w, C) -> (B, S, C)."""
        query = query + self.attn(self.query_norm(query), reference, self.feat_norm(feat), [feat_shape])
        if self.with_cffn:
            query = query + self.drop_path(self.ffn(self.ffn_norm(query), query_shapes))
        return query


class InteractionBlock(nn.Module):
    """One injector, (the caller's ViT blocks), one extractor and optionally two extra extractors."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_points: int,
        deform_ratio: float,
        init_values: float,
        with_cffn: bool,
        cffn_ratio: float,
        drop_path: float,
        extra_extractor: bool,
    ):
        super().__init__()
        self.injector = Injector(dim, num_heads, n_points, 3, deform_ratio, init_values)
        make = partial(Extractor, dim, num_heads, n_points, deform_ratio, with_cffn, cffn_ratio, drop_path=drop_path)
        self.extractor = make()
        self.extra_extractors = nn.Sequential(make(), make()) if extra_extractor else None

    def extract(self, c, reference, patches, grid, shapes) -> torch.Tensor:
        """Run the extractor(s): c (B, S, C) queries the stage's patch tokens (B, h*w, C)."""
        c = self.extractor(c, reference, patches, grid, shapes)
        for extractor in self.extra_extractors or ():
            c = extractor(c, reference, patches, grid, shapes)
        return c


def default_interaction_indexes(num_blocks: int, groups: int = 4) -> list[list[int]]:
    """Split ``num_blocks`` into ``min(groups, num_blocks)`` contiguous, near-equal [first, last] ranges."""
    groups = min(groups, num_blocks)
    bounds = [round(i * num_blocks / groups) for i in range(groups + 1)]
    return [[bounds[i], bounds[i + 1] - 1] for i in range(groups)]


def check_interaction_indexes(indexes: Sequence[Sequence[int]], num_blocks: int) -> list[list[int]]:
    """Validate [first, last] ranges: contiguous, ascending, covering blocks 0..num_blocks-1 exactly.

    Raises:
        ValueError: gaps, overlaps, or not covering every block.
    """
    ranges = [[int(a), int(b)] for a, b in indexes]
    expected = 0
    for first, last in ranges:
        if first != expected or last < first:
            break
        expected = last + 1
    else:
        if ranges and expected == num_blocks:
            return ranges
    raise ValueError(
        f"interaction_indexes {ranges} must be contiguous [first, last] block ranges covering blocks "
        f"0..{num_blocks - 1} (e.g. {default_interaction_indexes(num_blocks)})"
    )


def default_deform_heads(dim: int, ratio: float) -> int:
    """dim // 64 heads (12 for ViT-B, 16 for ViT-L), lowered until it divides ``dim`` and ``int(dim * ratio)``."""
    heads = max(1, dim // 64)
    while dim % heads or int(dim * ratio) % heads:
        heads -= 1
    return heads


def require_token_api(backbone: Backbone) -> None:
    """Refuse backbones whose blocks cannot run as a plain token sequence, with the reason.

    Raises:
        ValueError: RADIO in ViTDet mode, a backbone without the token-level API, or one that refuses it (EVA).
    """
    window = getattr(getattr(backbone, "cfg", None), "vitdet_window_size", None)
    if window:
        raise ValueError(
            f"the ViT-Adapter needs raster-order tokens, but this RADIO runs in ViTDet mode (window {window}); "
            f"use the simple_pyramid neck, or load the backbone without vitdet_window_size"
        )
    missing = [m for m in ("embed_tokens", "token_blocks", "finish_tokens") if not hasattr(backbone, m)]
    if missing:
        raise ValueError(f"{type(backbone).__name__} has no token-level API ({', '.join(missing)}); use simple_pyramid")
    backbone.token_blocks()  # raises ValueError with the reason for unsupported models


class ViTAdapter(BackboneNeck):
    """ViT-Adapter neck: backbone + SPM + interaction blocks -> 4-level pyramid at strides 4/8/16/32.

    Args:
        backbone: a vfmkit backbone with the token-level API (RADIO, timm ViTs, open_clip towers).
        out_channels: channels of every output level; default the backbone width (a 1x1 projection otherwise).
        interaction_indexes: [first, last] block ranges of the interaction stages, covering all blocks; default
            ``min(4, num_blocks)`` near-equal groups (ViT-B: [[0,2],[3,5],[6,8],[9,11]]).
        conv_inplane: SPM stem width.
        n_points: deformable sampling points per head and level.
        deform_num_heads: deformable attention heads (default width // 64).
        deform_ratio: value channels / width in the deformable attention.
        init_values: initial LayerScale ``gamma`` of the injectors.
        with_cffn: ConvFFN after each extractor; ``cffn_ratio``: its hidden width / width.
        drop_path: stochastic depth of the extractors' ConvFFN.
        add_vit_features: add each stage's patch features (resized) to the matching level.
        use_extra_extractor: two extra extractors after the last stage.
        norm: 2-D norm of the SPM and the output levels: ``bn``, ``syncbn``, ``gn`` or ``ln``.
        summary_fusion: add a Linear projection of the backbone summary to every level.
        freeze_backbone: no gradients into the backbone's own parameters (they still flow *through* its blocks into
            the injectors); the backbone then stays in eval mode when the neck trains.

    Raises:
        ValueError: RADIO in ViTDet mode, a backbone without a plain token-level block sequence, or bad indexes.
    """

    def __init__(
        self,
        backbone: Backbone,
        out_channels: int | None = None,
        interaction_indexes: Sequence[Sequence[int]] | None = None,
        conv_inplane: int = 64,
        n_points: int = 4,
        deform_num_heads: int | None = None,
        deform_ratio: float = 0.5,
        init_values: float = 1e-6,
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        drop_path: float = 0.0,
        add_vit_features: bool = True,
        use_extra_extractor: bool = True,
        norm: str = "bn",
        summary_fusion: bool = False,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        require_token_api(backbone)
        dim = backbone.embed_dim
        self.backbone = backbone
        self.out_channels = out_channels or dim
        self.interaction_indexes = check_interaction_indexes(
            interaction_indexes or default_interaction_indexes(backbone.num_blocks), backbone.num_blocks
        )
        self.add_vit_features = add_vit_features
        heads = deform_num_heads or default_deform_heads(dim, deform_ratio)
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(conv_inplane, dim, norm)
        last = len(self.interaction_indexes) - 1
        self.interactions = nn.Sequential(
            *[
                InteractionBlock(
                    dim,
                    heads,
                    n_points,
                    deform_ratio,
                    init_values,
                    with_cffn,
                    cffn_ratio,
                    drop_path,
                    extra_extractor=use_extra_extractor and i == last,
                )
                for i in range(last + 1)
            ]
        )
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        for i in range(1, 5):
            self.add_module(f"norm{i}", make_norm2d(norm, dim))
        self.out_proj = (
            nn.ModuleList(nn.Conv2d(dim, self.out_channels, 1) for _ in range(4)) if self.out_channels != dim else None
        )
        self.summary_fusion = SummaryFusion(backbone.summary_dim, [self.out_channels] * 4) if summary_fusion else None
        self.register_buffer("mean", torch.tensor(backbone.preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.preprocessing.std).view(1, 3, 1, 1), persistent=False)
        self._init_adapter_weights()
        if freeze_backbone:
            freeze(backbone)

    def _init_adapter_weights(self) -> None:
        """The reference initialisation (trunc-normal Linear, fan-out normal convs, then MSDeformAttn's own)."""
        for module in (self.spm, self.interactions, self.up):
            module.apply(_init_weights)
        for module in self.interactions.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, images: torch.Tensor) -> NeckOutput:
        """Pyramid and summary of one backbone pass.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H, W multiples of the backbone's resolution step (multiples of
                32 give exact strides).

        Returns:
            :class:`NeckOutput`: features (B, out_channels, ceil(H/s), ceil(W/s)) for s = 4, 8, 16, 32; summary
            (B, summary_dim) from the backbone's final tokens.
        """
        tokens, grid = self.backbone.embed_tokens(images)
        c1, c2, c3, c4 = self.spm((images - self.mean.to(images.dtype)) / self.std.to(images.dtype))
        shapes = [tuple(c.shape[-2:]) for c in (c2, c3, c4)]
        c = torch.cat([m.flatten(2).transpose(1, 2) + self.level_embed[i] for i, m in enumerate((c2, c3, c4))], 1)
        tokens, c, stage_maps = self._interact(tokens, c, grid, shapes)
        final = self.backbone.finish_tokens(tokens, grid)
        sizes = [tuple(c1.shape[-2:]), *shapes]
        levels, start = [], 0
        for h, w in shapes:
            levels.append(tokens_to_nchw(c[:, start : start + h * w], (h, w)))
            start += h * w
        levels.insert(0, resize_to(self.up(levels[0]), sizes[0]) + c1)
        if self.add_vit_features:
            n = len(stage_maps)
            levels = [lvl + resize_to(stage_maps[round(i * (n - 1) / 3)], sizes[i]) for i, lvl in enumerate(levels)]
        features = [getattr(self, f"norm{i + 1}")(lvl) for i, lvl in enumerate(levels)]
        if self.out_proj is not None:
            features = [proj(f) for proj, f in zip(self.out_proj, features, strict=True)]
        if self.summary_fusion is not None:
            features = self.summary_fusion(features, final.summary)
        return NeckOutput(features=features, summary=final.summary)

    def _interact(self, tokens, c, grid, shapes) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Run the interaction stages.

        Args:
            tokens: (B, P + h*w, D) from ``embed_tokens``; c: (B, S, D) SPM levels 8/16/32 flattened; grid: (h, w);
            shapes: the SPM levels' (H_l, W_l).

        Returns:
            The final tokens (B, P + h*w, D), the updated c and each stage's patch features (B, D, h, w).
        """
        prefix_len = self.backbone.num_prefix_tokens
        blocks = self.backbone.token_blocks()
        ref_inject = reference_points([grid], tokens.device)
        ref_extract = reference_points(shapes, tokens.device)
        stage_maps = []
        for (first, last), interaction in zip(self.interaction_indexes, self.interactions, strict=True):
            patches = interaction.injector(tokens[:, prefix_len:], ref_inject, c, shapes)
            tokens = torch.cat([tokens[:, :prefix_len], patches], dim=1)
            for block in blocks[first : last + 1]:
                tokens = self.backbone.run_block(block, tokens)
            patches = tokens[:, prefix_len:]
            c = interaction.extract(c, ref_extract, patches, grid, shapes)
            stage_maps.append(tokens_to_nchw(patches, grid))
        return tokens, c, stage_maps

    def no_weight_decay(self) -> set[str]:
        """The backbone's no-decay names (prefixed) plus the level embedding and the injectors' gammas."""
        names = {f"backbone.{n}" for n in self.backbone.no_weight_decay()} | {"level_embed"}
        return names | {n for n, _ in self.named_parameters() if n.endswith("injector.gamma")}


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
        if m.weight is not None:
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
