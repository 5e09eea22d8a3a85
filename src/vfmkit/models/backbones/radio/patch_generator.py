"""RADIO's patch generator: linear patch embedding, cropped position embedding (CPE) and prefix tokens.

Token layout produced: ``[cls_0 .. cls_{C-1}, reg_0 .. reg_{R-1}, patch tokens in raster order]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ClsToken(nn.Module):
    """The learned prefix tokens, stored as ``token`` of shape (C + R, D) (checkpoint key ``cls_token.token``)."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(num_tokens, dim))
        nn.init.normal_(self.token, std=0.02)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, C + R + N, D)."""
        return torch.cat([self.token.unsqueeze(0).expand(patches.shape[0], -1, -1), patches], dim=1)


class PatchGenerator(nn.Module):
    """Patchify + bias-free linear embedding + CPE + prefix tokens.

    Args:
        patch_size: p.
        embed_dim: D.
        max_size: pixels covered by the position grid; grid side G = max_size // p.
        num_prefix_tokens: C + R.
        embedder_bias: give the embedder a bias (DINOv2-arch students).
        patch_norm: LayerNorm over all tokens after assembly.
        pos_dropout: probability, in training, of zeroing a sample's whole position term.
    """

    def __init__(
        self,
        patch_size: int,
        embed_dim: int,
        max_size: int,
        num_prefix_tokens: int,
        embedder_bias: bool = False,
        patch_norm: bool = False,
        pos_dropout: float = 0.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid_size = max_size // patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.pos_dropout = pos_dropout
        self.embedder = nn.Linear(3 * patch_size * patch_size, embed_dim, bias=embedder_bias)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.cls_token = ClsToken(num_prefix_tokens, embed_dim)
        self.patch_normalizer = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()
        self._eval_pos_cache: dict[tuple, torch.Tensor] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C + R + h*w, D) tokens."""
        patches = self.embed_patches(images)
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        patches = patches + self.position_embedding(grid, batch=images.shape[0])
        return self.patch_normalizer(self.cls_token(patches))

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Patches flattened in (channel, row, col) order through the linear embedder: (B, h*w, D).

        Done as the reference does (``b c (h p) (w q) -> b (h w) (c p q)`` then the Linear) rather than as a strided
        convolution, whose different summation order costs ~1e-5 of parity.
        """
        p = self.patch_size
        b, c, height, width = images.shape
        patches = images.reshape(b, c, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        return self.embedder(patches.reshape(b, (height // p) * (width // p), c * p * p))

    def position_embedding(self, grid: tuple[int, int], batch: int) -> torch.Tensor:
        """Position term for an h x w token grid: (1, h*w, D) in eval, (B, h*w, D) in training."""
        if self.training:
            return self._train_position_embedding(grid, batch)
        uncacheable = self.pos_embed.is_inference()  # built under inference_mode: no version counter to key on
        if uncacheable or torch.is_grad_enabled() and self.pos_embed.requires_grad or _is_exporting():
            return self._eval_position_embedding(grid)
        key = (grid, self.pos_embed._version, self.pos_embed.device, self.pos_embed.dtype)
        cached = self._eval_pos_cache.get(key)
        if cached is None:
            self._eval_pos_cache = {k: v for k, v in self._eval_pos_cache.items() if k[1:] == key[1:]}
            cached = self._eval_pos_cache[key] = self._eval_position_embedding(grid).detach()
        return cached

    def _grid_image(self) -> torch.Tensor:
        """The stored grid as an image (1, D, G, G) in float32."""
        g = self.grid_size
        return self.pos_embed.float().reshape(1, g, g, self.embed_dim).permute(0, 3, 1, 2)

    def _eval_position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Resize the grid to a square of the long side (bilinear, align_corners=False), keep the top-left h x w."""
        h, w = grid
        if (h, w) == (self.grid_size, self.grid_size):
            return self.pos_embed
        side = max(h, w)
        pos = F.interpolate(self._grid_image(), size=(side, side), mode="bilinear", align_corners=False)
        pos = pos[:, :, :h, :w].to(self.pos_embed.dtype)
        return pos.flatten(2).transpose(1, 2)

    def _train_position_embedding(self, grid: tuple[int, int], batch: int) -> torch.Tensor:
        """Per sample, a random window of the grid (area in [sqrt(0.1), 1], aspect in [3/4, 4/3]) resampled to h x w
        with grid_sample (bilinear, align_corners=True), then position dropout of whole samples."""
        h, w = grid
        device = self.pos_embed.device
        scale = torch.empty(batch, 1, 1, device=device).uniform_(math.sqrt(0.1), 1.0)
        aspect = torch.empty(batch, 1, 1, device=device).uniform_(math.log(3 / 4), math.log(4 / 3)).exp()
        scale_x = (scale * aspect).clamp(max=1.0)
        scale_y = (scale / aspect).clamp(max=1.0)
        offset_x = torch.rand(batch, 1, 1, device=device) * (1 - scale_x)
        offset_y = torch.rand(batch, 1, 1, device=device) * (1 - scale_y)
        ys = torch.linspace(0, 1, h, device=device).view(1, h, 1)
        xs = torch.linspace(0, 1, w, device=device).view(1, 1, w)
        sample_x = (offset_x + xs * scale_x) * 2 - 1
        sample_y = (offset_y + ys * scale_y) * 2 - 1
        coords = torch.stack(torch.broadcast_tensors(sample_x, sample_y), dim=-1)  # (B, h, w, 2) as (x, y)
        pos = F.grid_sample(self._grid_image().expand(batch, -1, -1, -1), coords, mode="bilinear", align_corners=True)
        pos = pos.to(self.pos_embed.dtype).flatten(2).transpose(1, 2)
        if self.pos_dropout > 0:
            keep = (torch.rand(batch, 1, 1, device=device) >= self.pos_dropout).to(pos.dtype)
            pos = pos * keep
        return pos


def _is_exporting() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
