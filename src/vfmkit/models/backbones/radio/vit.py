"""The ViT trunk of a RADIO model: the patch generator followed by timm's transformer blocks.

Blocks are timm's ``Block`` unchanged (pre-norm, fused qkv, SDPA attention, GELU MLP, optional LayerScale), so the
state-dict keys match the published checkpoints (``patch_generator.*``, ``blocks.{i}.*``, ``norm.*``).
ViTDet mode (windowed attention in most blocks) is done in :meth:`RadioViT.forward_tokens` without extra weights.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import GluMlp, Mlp
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from vfmkit.models.backbones.base import needs_grad
from vfmkit.models.backbones.radio.config import RadioConfig
from vfmkit.models.backbones.radio.patch_generator import PatchGenerator


class SwiGLU(GluMlp):
    """DINOv2's SwiGLU FFN (``silu(x1) * x2`` of the packed ``fc1``, checkpoint names ``w12``/``w3``)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: type | None = None, **kwargs):
        super().__init__(in_features, hidden_features, act_layer=nn.SiLU, gate_last=False, **kwargs)


class RadioViT(nn.Module):
    """Patch generator + blocks + final norm (identity unless ``model_norm``).

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: RadioConfig):
        super().__init__()
        self.cfg = cfg
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        mlp_layer = SwiGLU if cfg.ffn == "swiglu" else partial(Mlp, norm_layer=norm_layer) if cfg.mlp_norm else Mlp
        self.patch_generator = PatchGenerator(
            cfg.patch_size,
            cfg.embed_dim,
            cfg.cpe_max_size,
            cfg.num_prefix_tokens,
            embedder_bias=cfg.embedder_bias,
            patch_norm=cfg.patch_norm,
            pos_dropout=cfg.pos_dropout,
        )
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias,
                init_values=cfg.init_values,
                norm_layer=norm_layer,
                mlp_layer=mlp_layer,
            )
            for _ in range(cfg.depth)
        )
        self.norm = norm_layer(cfg.embed_dim) if cfg.model_norm else nn.Identity()
        self.grad_checkpointing = False

    def forward_tokens(self, images: torch.Tensor, keep: list[int] | None = None) -> tuple[torch.Tensor, list]:
        """Run the trunk.

        Args:
            images: (B, 3, H, W) conditioned (normalised) images.
            keep: block indices whose outputs to return (raster order, prefix included).

        Returns:
            The final tokens after ``norm`` (B, P + h*w, D) and the kept block outputs (B, P + h*w, D) each.
        """
        grid = (images.shape[-2] // self.cfg.patch_size, images.shape[-1] // self.cfg.patch_size)
        tokens = self.patch_generator(images)
        keep_set = set(keep or ())
        window = self.cfg.vitdet_window_size
        if window:
            return _WindowedRunner(self, grid, window).run(tokens, keep_set)
        kept = []
        for index, block in enumerate(self.blocks):
            tokens = self._run_block(block, tokens)
            if index in keep_set:
                kept.append(tokens)
        return self.norm(tokens), kept

    def _run_block(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and needs_grad(block, tokens):
            return checkpoint(block, tokens, use_reentrant=False)
        return block(tokens)

    def windowed_blocks(self) -> list[bool]:
        """For each block, whether it attends within windows (ViTDet mode); the last block is always global."""
        depth = len(self.blocks)
        period = max(1, depth // max(1, self.cfg.vitdet_num_global))
        return [(i % period) != period - 1 and i != depth - 1 for i in range(depth)]


class _WindowedRunner:
    """Runs blocks with ViTDet windowed attention.

    Patch tokens are put in window-major order; before a windowed block the prefix tokens are set aside and the
    windows folded into the batch, before a global block they are unfolded and the prefix re-attached. So prefix
    tokens are updated only by global blocks. Raster order is restored at the end.
    """

    def __init__(self, vit: RadioViT, grid: tuple[int, int], window: int):
        h, w = grid
        if h % window or w % window:
            raise ValueError(f"ViTDet window {window} needs a token grid divisible by it, got {h}x{w}")
        self.vit, self.grid, self.window = vit, grid, window
        self.num_prefix = vit.cfg.num_prefix_tokens

    def to_windows(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, h*w, D) raster -> (B * nW, ws*ws, D)."""
        b, _, d = patches.shape
        (h, w), s = self.grid, self.window
        x = patches.reshape(b, h // s, s, w // s, s, d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b * (h // s) * (w // s), s * s, d)

    def from_windows(self, windows: torch.Tensor, batch: int) -> torch.Tensor:
        """(B * nW, ws*ws, D) -> (B, h*w, D) raster."""
        (h, w), s = self.grid, self.window
        d = windows.shape[-1]
        x = windows.reshape(batch, h // s, w // s, s, s, d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(batch, h * w, d)

    def run(self, tokens: torch.Tensor, keep: set[int]) -> tuple[torch.Tensor, list]:
        batch = tokens.shape[0]
        prefix, patches = tokens[:, : self.num_prefix], tokens[:, self.num_prefix :]
        windows = None  # patches folded into windows while consecutive blocks are windowed
        kept = []
        for index, (block, windowed) in enumerate(zip(self.vit.blocks, self.vit.windowed_blocks(), strict=True)):
            if windowed:
                windows = self.vit._run_block(block, self.to_windows(patches) if windows is None else windows)
            else:
                if windows is not None:
                    patches, windows = self.from_windows(windows, batch), None
                out = self.vit._run_block(block, torch.cat([prefix, patches], dim=1))
                prefix, patches = out[:, : self.num_prefix], out[:, self.num_prefix :]
            if index in keep:
                current = patches if windows is None else self.from_windows(windows, batch)
                kept.append(torch.cat([prefix, current], dim=1))
        return self.vit.norm(torch.cat([prefix, patches], dim=1)), kept
