"""Windowed attention for plain ViT backbones (timm ``VisionTransformer`` incl. DINOv2, open_clip image towers), as
RF-DETR runs its DINOv2: most blocks attend within square windows of the patch grid, a few attend globally, and no
weight changes, so published weights load unchanged.

How the prefix tokens (class and register tokens) are handled (RF-DETR's scheme, the one this module implements):

- the patch grid (h, w) is cut into (h / s) x (w / s) windows of s x s patches, and every window gets its **own copy**
  of the prefix tokens (position embeddings already added): a window sequence is ``[prefix copy, s*s patches]``;
- a **windowed** block runs on each window sequence separately (windows folded into the batch);
- a **global** block runs on the concatenation of all window sequences of an image, prefix copies included, so
  every token (and every prefix copy) attends to the whole image;
- the output keeps the patches (back in raster order) and the **mean of the prefix copies** (what the summary is
  computed from: DINOv2's class token, a SigLIP attention pool over all tokens).

With one window covering the whole grid this is exactly global attention. Which blocks are global follows ViTDet's
(and RADIO's) rule: every ``depth // num_global``-th block and the last one (blocks 3/6/9/12 of a 12-block ViT with
4 global blocks: the blocks an LW-DETR / RF-DETR projector reads). RADIO backbones keep the reference RADIO ViTDet
mode instead (prefix tokens set aside in windowed blocks, see ``radio/vit.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from vfmkit.models.backbones.base import BackboneOutput, Preprocessing, resolve_block_indices, tokens_to_nchw

DEFAULT_NUM_GLOBAL = 4
"""Global-attention blocks of a windowed ViT (ViTDet's 4)."""


def global_block_flags(depth: int, num_global: int = DEFAULT_NUM_GLOBAL) -> list[bool]:
    """For each of ``depth`` blocks whether it attends globally: every ``depth // num_global``-th block and the last."""
    period = max(1, depth // max(1, num_global))
    return [(i % period) == period - 1 or i == depth - 1 for i in range(depth)]


class WindowLayout:
    """Moves tokens between the raster layout (B, P + h*w, D) and the window layout (B * nW, P + s*s, D).

    Args:
        grid: (h, w) patch grid; both divisible by ``window``.
        window: s, window side in patches.
        num_prefix: P, prefix tokens before the patches.
    """

    def __init__(self, grid: tuple[int, int], window: int, num_prefix: int):
        h, w = grid
        if h % window or w % window:
            raise ValueError(f"window {window} needs a token grid divisible by it, got {h}x{w}")
        self.grid, self.window, self.num_prefix = (int(h), int(w)), int(window), int(num_prefix)
        self.rows, self.cols = h // window, w // window
        self.count = self.rows * self.cols

    def split(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + h*w, D) raster -> (B * nW, P + s*s, D): window-major, the prefix copied into every window."""
        batch, _, dim = tokens.shape
        s, p = self.window, self.num_prefix
        patches = tokens[:, p:].reshape(batch, self.rows, s, self.cols, s, dim).permute(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(batch * self.count, s * s, dim)
        if not p:
            return patches
        prefix = tokens[:, :p, None].expand(-1, -1, self.count, -1).permute(0, 2, 1, 3).reshape(-1, p, dim)
        return torch.cat([prefix, patches], dim=1)

    def join(self, windows: torch.Tensor) -> torch.Tensor:
        """(B * nW, P + s*s, D) -> (B, nW * (P + s*s), D): all windows of an image as one sequence (global blocks)."""
        return windows.reshape(-1, self.count * windows.shape[1], windows.shape[2])

    def unjoin(self, sequence: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`join`."""
        return sequence.reshape(-1, self.num_prefix + self.window**2, sequence.shape[2])

    def patches(self, windows: torch.Tensor) -> torch.Tensor:
        """(B * nW, P + s*s, D) -> (B, h*w, D) patches in raster order."""
        s, dim = self.window, windows.shape[-1]
        x = windows[:, self.num_prefix :].reshape(-1, self.rows, self.cols, s, s, dim).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, self.grid[0] * self.grid[1], dim)

    def merge(self, windows: torch.Tensor) -> torch.Tensor:
        """(B * nW, P + s*s, D) -> (B, P + h*w, D): the prefix copies averaged, the patches in raster order."""
        patches = self.patches(windows)
        if not self.num_prefix:
            return patches
        prefix = windows[:, : self.num_prefix].reshape(-1, self.count, self.num_prefix, windows.shape[-1]).mean(1)
        return torch.cat([prefix, patches], dim=1)


def run_windowed_blocks(
    blocks: Sequence[nn.Module],
    tokens: torch.Tensor,
    layout: WindowLayout,
    global_flags: Sequence[bool],
    keep: set[int],
    run_block: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``blocks`` with windowed attention (see the module docstring).

    Args:
        blocks: the ViT blocks, each (N, L, D) -> (N, L, D).
        tokens: (B, P + h*w, D) tokens entering block 0.
        layout: the window layout of this grid.
        global_flags: per block, True for global attention.
        keep: indices of the blocks whose patch outputs to return.
        run_block: ``run_block(block, tokens)`` (the backbone's, honouring gradient checkpointing).

    Returns:
        The final tokens (B, P + h*w, D) (prefix averaged over windows) and the kept blocks' patches (B, h*w, D) each.
    """
    windows = layout.split(tokens)
    kept = []
    for index, (block, is_global) in enumerate(zip(blocks, global_flags, strict=True)):
        sequence = layout.join(windows) if is_global else windows  # global: all windows of an image as one
        windows = layout.unjoin(run_block(block, sequence))
        if index in keep:
            kept.append(layout.patches(windows))
    return layout.merge(windows), kept


class WindowedAttentionMixin:
    """Windowed attention for a backbone with the token-level view (``embed_tokens`` / ``finish_tokens``) and a
    plain block list (:meth:`_plain_blocks`). Off until :meth:`set_window_attention`."""

    window_size: int | None = None
    num_global_blocks: int = DEFAULT_NUM_GLOBAL
    preprocessing: Preprocessing

    def _plain_blocks(self) -> Sequence[nn.Module]:  # pragma: no cover - implemented by the backbones
        raise NotImplementedError

    def set_window_attention(self, window_size: int | None, num_global: int = DEFAULT_NUM_GLOBAL) -> None:
        """Windows of ``window_size`` x ``window_size`` patches in all but ``num_global`` blocks (None: global
        attention everywhere). Input sides must then be multiples of patch size x window size.

        Raises:
            ValueError: a window below 1, or a model without a plain block list (e.g. timm EVA with rotary
                positions).
        """
        self._plain_blocks()  # raises for models without a plain block list
        if window_size is not None and window_size < 1:
            raise ValueError(f"window size must be >= 1 patch, got {window_size}")
        self.window_size = int(window_size) if window_size else None
        self.num_global_blocks = int(num_global)
        step = self.preprocessing.patch_size * (self.window_size or 1)
        self.preprocessing = dataclasses.replace(self.preprocessing, resolution_step=step)

    def global_flags(self) -> list[bool]:
        """Per block, whether it attends globally (all True without windows)."""
        depth = len(self._plain_blocks())
        return global_block_flags(depth, self.num_global_blocks) if self.window_size else [True] * depth

    def token_pass(
        self, images: torch.Tensor, indices: Sequence[int] = ()
    ) -> tuple[BackboneOutput, list[torch.Tensor]]:
        """One pass through the blocks (windowed when set): the final output and the chosen blocks' patch maps.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].
            indices: block indices (negatives from the end) whose outputs to return.

        Returns:
            :class:`BackboneOutput` and one (B, D, h, w) map (before the final norm) per chosen block, in block order.
        """
        tokens, grid = self.embed_tokens(images)
        blocks = self._plain_blocks()
        keep = set(resolve_block_indices(list(indices), len(blocks))) if indices else set()
        if self.window_size is None:
            kept = []
            for index, block in enumerate(blocks):
                tokens = self.run_block(block, tokens)
                if index in keep:
                    kept.append(tokens[:, self.num_prefix_tokens :])
        else:
            layout = WindowLayout(grid, self.window_size, self.num_prefix_tokens)
            tokens, kept = run_windowed_blocks(blocks, tokens, layout, self.global_flags(), keep, self.run_block)
        return self.finish_tokens(tokens, grid), [tokens_to_nchw(patches, grid) for patches in kept]
