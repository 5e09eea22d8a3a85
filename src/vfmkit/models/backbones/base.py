"""The surface every vfmkit backbone exposes.

A backbone maps a float RGB image batch in [0, 1], NCHW, to a :class:`BackboneOutput`: a global ``summary``
vector per image and ``features``, one vector per patch in raster order (NLC). Each backbone owns its own
normalisation (mean/std) so callers never normalise themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class Preprocessing:
    """How to feed a backbone.

    Attributes:
        mean: per-channel RGB mean applied inside the model to inputs in [0, 1].
        std: per-channel RGB std, likewise.
        patch_size: side of one patch in pixels; input H and W must be multiples of ``resolution_step``.
        preferred_resolution: (H, W) the weights were tuned for (best for summary tasks).
        max_resolution: largest side the position embedding was trained for (larger works, by interpolation).
        resolution_step: H and W must be multiples of this (patch size, times the window size in ViTDet mode).
        fixed_resolution: True when the model only accepts ``preferred_resolution`` (learned absolute
            position embeddings that are not resampled, e.g. some CLIP towers).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int
    preferred_resolution: tuple[int, int]
    max_resolution: int
    resolution_step: int
    fixed_resolution: bool = False


@dataclass
class AdaptorOutput:
    """Output of one teacher adaptor head (always float32).

    Attributes:
        summary: (B, C_summary) the teacher-space summary vector.
        features: (B, N * u^2, C_feature) per-patch teacher-space features, raster order (u = upsample factor).
        grid: (h, w) token grid of ``features``.
    """

    summary: torch.Tensor
    features: torch.Tensor
    grid: tuple[int, int]

    def spatial(self) -> torch.Tensor:
        """Features as an NCHW map: (B, C_feature, h, w)."""
        return tokens_to_nchw(self.features, self.grid)


@dataclass
class BackboneOutput:
    """Output of a backbone forward.

    Attributes:
        summary: (B, C) global embedding (RADIO: the selected cls tokens concatenated; others: pooled output).
        features: (B, h * w, D) patch features in raster order (prefix tokens removed).
        grid: (h, w) = (H / patch, W / patch).
        adaptors: adaptor name -> :class:`AdaptorOutput` for the adaptors the model was loaded with.
    """

    summary: torch.Tensor
    features: torch.Tensor
    grid: tuple[int, int]
    adaptors: dict[str, AdaptorOutput] = field(default_factory=dict)

    def spatial(self) -> torch.Tensor:
        """Features as an NCHW map: (B, D, h, w)."""
        return tokens_to_nchw(self.features, self.grid)

    def __iter__(self):
        """Unpack as ``summary, features`` like the RADIO reference's RadioOutput."""
        return iter((self.summary, self.features))


def tokens_to_nchw(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) raster-order tokens -> (B, D, h, w)."""
    b, n, d = tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"cannot view {n} tokens as a {h}x{w} grid")
    return tokens.transpose(1, 2).reshape(b, d, h, w)


class Backbone(nn.Module):
    """Base class of every vfmkit backbone.

    Subclasses set ``embed_dim`` (D of ``features``), ``summary_dim`` (C of ``summary``), ``num_blocks``,
    ``preprocessing`` and implement :meth:`forward` and :meth:`forward_intermediates`.
    """

    embed_dim: int
    summary_dim: int
    num_blocks: int
    preprocessing: Preprocessing
    adaptor_names: tuple[str, ...] = ()
    weights_source: str | None = None
    """Where the weights came from (set by ``load_backbone``); None for random initialisation."""
    grad_checkpointing: bool = False
    """Recompute block activations in the backward pass (see :meth:`set_grad_checkpointing`)."""

    @property
    def patch_size(self) -> int:
        return self.preprocessing.patch_size

    def check_input(self, images: torch.Tensor) -> tuple[int, int]:
        """Validate an NCHW batch and return its token grid (h, w).

        Raises:
            ValueError: not 4-D with 3 channels, or H/W not multiples of the resolution step.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected float RGB images (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        step = self.preprocessing.resolution_step
        height, width = images.shape[-2:]
        if height % step or width % step:
            raise ValueError(
                f"input {height}x{width} is not a multiple of {step}; nearest supported resolution: "
                f"{nearest_supported_resolution(height, width, step)}"
            )
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: torch.Tensor) -> BackboneOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_intermediates(
        self, images: torch.Tensor, indices: int | list[int] = 4
    ) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """Patch features after the chosen blocks as NCHW maps (B, D, h, w).

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].
            indices: an int n for the last n blocks, or a list of block indices (negatives count from the end).
        """
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Parameter names (as in ``named_parameters``) that should get no weight decay."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the blocks' activations in the backward pass instead of storing them (training only): less
        memory, one more forward per block. Every path honours it: ``forward``, ``forward_intermediates`` and the
        token-level view through :meth:`run_block`. Families extend this to set their library's own flag."""
        self.grad_checkpointing = bool(enable)

    def run_block(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """``block(tokens)``, through ``torch.utils.checkpoint`` when checkpointing is on and gradients flow through
        the block (into its weights or back to its input: a frozen backbone under a ViT-Adapter still passes
        gradients to the adapter, so it is checkpointed too)."""
        if self.grad_checkpointing and torch.is_grad_enabled() and needs_grad(block, tokens):
            return checkpoint(block, tokens, use_reentrant=False)
        return block(tokens)


def needs_grad(block: nn.Module, tokens: torch.Tensor) -> bool:
    """Whether a backward pass reaches ``block``: its input or one of its weights requires grad."""
    return tokens.requires_grad or any(p.requires_grad for p in block.parameters())


class BackboneOwner(nn.Module):
    """Base of the modules that own a ``backbone`` (necks, heads on a backbone): a frozen backbone stays in eval
    mode while the rest trains (no position-embedding jitter, dropout or norm-statistics updates in weights that
    never change). ``set_grad_checkpointing`` is forwarded to the backbone; subclasses that run blocks themselves
    extend it."""

    backbone: Backbone

    def train(self, mode: bool = True) -> BackboneOwner:
        super().train(mode)
        if is_frozen(self.backbone):
            self.backbone.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's block activations in the backward pass instead of storing them."""
        self.backbone.set_grad_checkpointing(enable)


def freeze(module: nn.Module) -> None:
    """Stop gradients into every parameter of ``module``."""
    for param in module.parameters():
        param.requires_grad_(False)


def is_frozen(module: nn.Module) -> bool:
    """True when ``module`` has parameters and none of them requires grad."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def resolve_block_indices(indices: int | list[int], num_blocks: int) -> list[int]:
    """Turn ``indices`` (last-n int or list with negatives) into sorted absolute block indices."""
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"asked for the last {indices} blocks of a {num_blocks}-block model")
        return list(range(num_blocks - indices, num_blocks))
    resolved = sorted({i % num_blocks if -num_blocks <= i < num_blocks else _bad_index(i, num_blocks) for i in indices})
    return resolved


def _bad_index(index: int, num_blocks: int) -> int:
    raise ValueError(f"block index {index} out of range for a {num_blocks}-block model")


def nearest_supported_resolution(height: int, width: int, step: int) -> tuple[int, int]:
    """Round each side to the nearest multiple of ``step`` (at least one step), as the RADIO reference does."""
    return max(step, round(height / step) * step), max(step, round(width / step) * step)
