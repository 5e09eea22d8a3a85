"""Backbones built by open_clip: the image tower (``model.visual``) of an OpenCLIP / NV-CLIP model.

The tower is open_clip's own ``VisionTransformer`` built from an open_clip model name or a model config dict (the
NV-CLIP SigLIP-CLIPA variants need their own configs). :class:`OpenClipVisionBackbone` runs the tower's own modules
in the tower's order and only adds vfmkit's surface; the one addition is that the learned position embedding is
resampled (bicubic, as timm does) when the input grid differs from the trained one, so any multiple of the patch
size works. At the trained resolution the output is exactly the tower's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import _build_vision_tower
from open_clip.transformer import VisionTransformer
from timm.layers import resample_abs_pos_embed
from torch import nn

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing, resolve_block_indices
from vfmkit.models.backbones.patch_size import resample_patch_kernel
from vfmkit.models.backbones.timm_family import (
    apply_vit_options,
    fetch_hub_weights,
    local_only_weights_error,
    preprocessing_from_entry,
)
from vfmkit.models.backbones.windowed import WindowedAttentionMixin
from vfmkit.models.factory import register_family
from vfmkit.models.registry import ModelEntry
from vfmkit.weights.safe_load import load_weights_file

OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""Files an open_clip Hub repo publishes its weights as, in order of preference."""


class OpenClipVisionBackbone(WindowedAttentionMixin, Backbone):
    """An open_clip ``VisionTransformer`` image tower behind the vfmkit backbone surface.

    Args:
        tower: the image tower (class-token ViT with ``pool_type`` ``tok`` or ``avg``, no attentional pooler).
        preprocessing: how to feed it; ``mean``/``std`` become buffers applied in :meth:`normalize`.
    """

    def __init__(self, tower: VisionTransformer, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.tower = tower
        self.preprocessing = preprocessing
        self.embed_dim = int(tower.conv1.out_channels)
        self.summary_dim = int(tower.output_dim)
        self.num_blocks = len(tower.transformer.resblocks)
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the normalised input the tower expects (same shape and dtype)."""
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def _position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1 + h*w, width) position embedding for ``grid``; the trained one when the grid matches."""
        pos = self.tower.positional_embedding
        if tuple(grid) == tuple(self.tower.grid_size):
            return pos
        return resample_abs_pos_embed(pos.unsqueeze(0), list(grid), list(self.tower.grid_size), num_prefix_tokens=1)[0]

    def pin_position_grid(self, grid: tuple[int, int]) -> None:
        """Resample the position embedding once to ``grid`` (h, w) and keep it as the tower's own (see
        :meth:`vfmkit.models.backbones.timm_family.TimmBackbone.pin_position_grid`: for ONNX export, on a copy)."""
        if tuple(grid) == tuple(self.tower.grid_size):
            return
        with torch.no_grad():
            pinned = self._position_embedding(tuple(grid))
        pos = self.tower.positional_embedding
        self.tower.positional_embedding = nn.Parameter(pinned, requires_grad=pos.requires_grad)
        self.tower.grid_size = tuple(int(s) for s in grid)

    def _embed(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Normalised images -> (B, 1 + h*w, width) tokens entering the transformer (the tower's ``_embeds``)."""
        tower = self.tower
        x = tower.conv1(images).flatten(2).transpose(1, 2)
        cls = tower.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self._position_embedding(grid).to(x.dtype)
        return tower.ln_pre(tower.patch_dropout(x))

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        """Summary and patch features.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H and W multiples of the patch size.

        Returns:
            summary (B, summary_dim): the tower's pooled, projected embedding (the CLIP joint space);
            features (B, h*w, embed_dim): patch tokens as the tower outputs them (after ``ln_post`` unless the
            config applies it after pooling); grid (h, w). With windowed attention (:meth:`set_window_attention`)
            the class token is averaged over its window copies (see :mod:`~vfmkit.models.backbones.windowed`).
        """
        if self.window_size:
            return self.token_pass(images)[0]
        grid = self.check_input(images)
        x = self.tower.transformer(self._embed(self.normalize(images), grid))
        pooled, tokens = self.tower._pool(x)
        if self.tower.proj is not None:
            pooled = pooled @ self.tower.proj
        return BackboneOutput(summary=pooled, features=tokens, grid=grid)

    @property
    def num_prefix_tokens(self) -> int:
        """The class token before the patch tokens."""
        return 1

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Token-level view, step 1: normalisation, patch embedding, class token, position embedding, ``ln_pre``.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].

        Returns:
            Tokens (B, 1 + h*w, width) entering block 0 and the grid (h, w).
        """
        grid = self.check_input(images)
        return self._embed(self.normalize(images), grid), grid

    def token_blocks(self) -> torch.nn.ModuleList:
        """Token-level view, step 2: the residual blocks, each mapping (B, 1 + h*w, width) to the same shape.

        Raises:
            ValueError: the transformer is sequence-first (blocks would expect (L, B, width)), or windowed attention
                is on (its blocks run on windows, not on one plain sequence).
        """
        if self.window_size:
            raise ValueError(
                f"windowed attention (window {self.window_size}) runs the blocks on windows; the plain token-level "
                "block sequence is not available (load without vitdet_window_size)"
            )
        return self._plain_blocks()

    def _plain_blocks(self) -> torch.nn.ModuleList:
        if not self.tower.transformer.batch_first:
            raise ValueError("token-level access needs a batch-first open_clip transformer")
        return self.tower.transformer.resblocks

    def finish_tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> BackboneOutput:
        """Token-level view, step 3: pooling, ``ln_post`` and projection, exactly as :meth:`forward`.

        Args:
            tokens: (B, 1 + h*w, width) output of the last block.
            grid: (h, w) from :meth:`embed_tokens`.
        """
        pooled, features = self.tower._pool(tokens)
        if self.tower.proj is not None:
            pooled = pooled @ self.tower.proj
        return BackboneOutput(summary=pooled, features=features, grid=grid)

    def forward_intermediates(
        self, images: torch.Tensor, indices: int | list[int] = 4, return_final: bool = False
    ) -> list[torch.Tensor] | tuple[BackboneOutput, list[torch.Tensor]]:
        """Patch tokens after the chosen residual blocks (no final norm) as NCHW maps.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].
            indices: an int n for the last n blocks, or a list of block indices (negatives count from the end).
            return_final: also return the final :class:`BackboneOutput` of the same pass.

        Returns:
            One (B, embed_dim, h, w) map per selected block, in block order; preceded by the final output when
            ``return_final``.
        """
        grid = self.check_input(images)
        blocks = resolve_block_indices(indices, self.num_blocks)
        if self.window_size or (return_final and self.tower.transformer.batch_first):
            final, maps = self.token_pass(images, blocks)
            return (final, maps) if return_final else maps
        x = self._embed(self.normalize(images), grid)
        _, intermediates = self.tower.transformer.forward_intermediates(x, indices=blocks, stop_early=True)
        b = images.shape[0]
        maps = [y[:, 1:].transpose(1, 2).reshape(b, -1, *grid) for y in intermediates]
        return (self(images), maps) if return_final else maps  # sequence-first towers: two passes

    def change_patch_size(self, patch_size: int) -> None:
        """Load-time patch-size change: ``conv1``'s kernel resampled to ``patch_size`` (see
        :mod:`~vfmkit.models.backbones.patch_size`) and the position embedding resampled to the grid covering the same
        image (``image_size // patch_size``); no key is added or removed.

        Raises:
            ValueError: a patch size below 2.
        """
        tower = self.tower
        if tuple(tower.patch_size) == (patch_size, patch_size):
            return
        tower.conv1 = resample_patch_kernel(tower.conv1, patch_size)
        tower.patch_size = (patch_size, patch_size)
        grid = tuple(int(s) // patch_size for s in tower.image_size)
        with torch.no_grad():
            pos = self._position_embedding(grid)
        tower.positional_embedding = nn.Parameter(pos, requires_grad=tower.positional_embedding.requires_grad)
        tower.grid_size = grid
        self.preprocessing = dataclasses.replace(
            self.preprocessing,
            patch_size=patch_size,
            preferred_resolution=(grid[0] * patch_size, grid[1] * patch_size),
            resolution_step=patch_size * (self.window_size or 1),
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the residual blocks in open_clip's transformer loop and in the token-level view."""
        super().set_grad_checkpointing(enable)
        self.tower.set_grad_checkpointing(bool(enable))

    def no_weight_decay(self) -> set[str]:
        """The tower's no-weight-decay set (position and class embeddings), as names in this module."""
        names = {f"tower.{name}" for name in self.tower.no_weight_decay()}
        return names & {name for name, _ in self.named_parameters()}


def open_clip_model_config(entry: ModelEntry) -> dict[str, Any]:
    """The open_clip model config of an entry: ``arch["model_cfg"]``, or the config of ``arch["model_name"]``.

    Raises:
        ModelNotFoundError: open_clip has no config of that name.
    """
    if "model_cfg" in entry.arch:
        return entry.arch["model_cfg"]
    config = open_clip.get_model_config(entry.arch["model_name"])
    if config is None:
        name = entry.arch["model_name"]
        raise ModelNotFoundError(f"{entry.id}: open_clip {open_clip.__version__} has no model {name!r}")
    return config


def build_vision_tower(entry: ModelEntry) -> VisionTransformer:
    """Build the entry's image tower (random init) with open_clip.

    Raises:
        ModelNotFoundError: the config describes a tower this wrapper does not support (timm trunk, attentional
            pooler, pooling other than ``tok``/``avg``).
    """
    config = open_clip_model_config(entry)
    vision_cfg = dict(config["vision_cfg"])
    unsupported = vision_cfg.get("timm_model_name") or vision_cfg.get("attentional_pool")
    if unsupported or vision_cfg.get("pool_type", "tok") not in ("tok", "avg"):
        raise ModelNotFoundError(
            f"{entry.id}: only open_clip ViT towers with 'tok' or 'avg' pooling are supported; use the timm family "
            f"for timm-trunk towers"
        )
    tower = _build_vision_tower(config["embed_dim"], vision_cfg, quick_gelu=config.get("quick_gelu", False))
    if not isinstance(tower, VisionTransformer):
        raise ModelNotFoundError(f"{entry.id}: open_clip built a {type(tower).__name__}, not a VisionTransformer")
    return tower


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a ``torch.save`` checkpoint (``weights_only``; nothing is executed).

    Raises:
        WeightsError: the file is missing, unreadable, or holds no dict of tensors.
    """
    state = load_weights_file(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict of tensors")
    return state


def tower_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image-tower tensors of a full CLIP state dict (keys after ``visual.``), or the dict itself."""
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    visual = {k.split("visual.", 1)[1]: v for k, v in state.items() if "visual." in k}
    return visual or state


def load_tower_weights(tower: VisionTransformer, path: Path, model_id: str) -> None:
    """Load a full CLIP or tower-only checkpoint into ``tower`` (strict).

    Raises:
        WeightsError: unreadable file, or tensors that do not match the tower.
    """
    state = tower_state_dict(read_state_dict(path))
    result = tower.load_state_dict(state, strict=False)
    mismatched = [k for k, v in state.items() if k in tower.state_dict() and tower.state_dict()[k].shape != v.shape]
    if result.missing_keys or result.unexpected_keys or mismatched:
        raise WeightsError(
            f"{path} does not fit the image tower of {model_id!r}: {len(result.missing_keys)} missing "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]}), shape mismatches {mismatched[:3]}"
        )


def build_open_clip(
    entry: ModelEntry,
    pretrained: bool = True,
    adaptors: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    vitdet_window_size: int | None = None,
    patch_size: int | None = None,
) -> OpenClipVisionBackbone:
    """Build an open_clip-family registry entry (its image tower only).

    Args:
        entry: the registry entry (``arch = {"model_name": ...}`` or ``{"model_cfg": {...}}``).
        pretrained: load the published weights (``entry.source`` on the Hub, or ``checkpoint`` when given).
        adaptors: must be empty.
        checkpoint: a local full-CLIP or tower-only checkpoint used instead of the Hub (NGC-only weights).
        vitdet_window_size: windowed attention with this window (patches) in all but 4 blocks (see
            :mod:`~vfmkit.models.backbones.windowed`).
        patch_size: change the patch size after loading (see :meth:`OpenClipVisionBackbone.change_patch_size`).

    Raises:
        ModelNotFoundError: adaptors requested, or an unsupported tower config.
        WeightsError: weights absent (NGC-only without ``checkpoint``, or not cached) or not matching.
    """
    if adaptors:
        raise ModelNotFoundError(f"{entry.id!r} has no adaptor heads (asked for {', '.join(adaptors)})")
    weights = Path(checkpoint).expanduser() if checkpoint is not None else None
    if weights is None and pretrained:
        if entry.source is None or not entry.source.startswith("hf-hub:"):
            raise local_only_weights_error(entry)
        weights = fetch_hub_weights(entry.source, entry.id, OPEN_CLIP_WEIGHT_FILES)
    tower = build_vision_tower(entry)
    if weights is not None:
        load_tower_weights(tower, weights, entry.id)
    backbone = OpenClipVisionBackbone(tower, preprocessing_from_entry(entry))
    apply_vit_options(backbone, entry.id, vitdet_window_size, patch_size)
    return backbone.eval()


register_family("open_clip", build_open_clip)
