"""The RADIO backbone (C-RADIOv2/v3/v4, RADIOv2.5): input conditioner, ViT trunk with CPE, summary/spatial split,
feature normalizers and teacher adaptors.

State-dict keys (vfmkit's own layout; both published layouts are remapped to it by ``checkpoint.py``):
``input_conditioner.norm_{mean,std}``, ``model.patch_generator.*``, ``model.blocks.{i}.*``, ``model.norm.*``,
``adaptors.<name>.{head_mlp,feat_mlp}.*``, ``feature_normalizer.{mean,tx}``,
``inter_feature_normalizer.{means,rotation,alphas}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vfmkit.models.backbones.base import (
    Backbone,
    BackboneOutput,
    Preprocessing,
    resolve_block_indices,
    tokens_to_nchw,
)
from vfmkit.models.backbones.radio.adaptors import Adaptor
from vfmkit.models.backbones.radio.config import RadioConfig
from vfmkit.models.backbones.radio.normalizers import (
    FeatureNormalizer,
    InputConditioner,
    IntermediateFeatureNormalizer,
)
from vfmkit.models.backbones.radio.vit import RadioViT


class RadioBackbone(Backbone):
    """A RADIO model.

    Input: float (B, 3, H, W) RGB in [0, 1], H and W multiples of ``preprocessing.resolution_step``.
    Output: :class:`BackboneOutput` with ``summary`` (B, len(summary_idxs) * D) = the selected cls tokens
    concatenated, ``features`` (B, h*w, D) = the tokens after the cls + register prefix (through the feature
    normalizer when the checkpoint has one), and one :class:`AdaptorOutput` per loaded adaptor.
    """

    def __init__(self, cfg: RadioConfig):
        super().__init__()
        self.cfg = cfg
        self.input_conditioner = InputConditioner(cfg.mean, cfg.std)
        self.model = RadioViT(cfg)
        self.register_buffer("summary_idxs", torch.tensor(cfg.summary_idxs, dtype=torch.int64), persistent=False)
        self.adaptors = nn.ModuleDict({a.name: Adaptor(a, num_heads=cfg.num_heads) for a in cfg.adaptors})
        self.feature_normalizer = FeatureNormalizer(cfg.embed_dim) if cfg.feature_normalizer else None
        self.inter_feature_normalizer = (
            IntermediateFeatureNormalizer(
                cfg.num_intermediate_normalizers, cfg.embed_dim, cfg.intermediate_rotation_per_layer
            )
            if cfg.num_intermediate_normalizers
            else None
        )
        self.embed_dim = cfg.embed_dim
        self.summary_dim = cfg.summary_dim
        self.num_blocks = cfg.depth
        self.adaptor_names = tuple(a.name for a in cfg.adaptors)

    @property
    def preprocessing(self) -> Preprocessing:
        step = self.cfg.patch_size * (self.cfg.vitdet_window_size or 1)
        conditioner = self.input_conditioner
        if conditioner.norm_mean.is_meta:  # built without storage (a dry build): the config's values
            mean, std = tuple(self.cfg.mean), tuple(self.cfg.std)
        else:  # the checkpoint's values
            mean, std = tuple(conditioner.norm_mean.flatten().tolist()), tuple(conditioner.norm_std.flatten().tolist())
        return Preprocessing(
            mean=mean,
            std=std,
            patch_size=self.cfg.patch_size,
            preferred_resolution=(self.cfg.preferred_resolution, self.cfg.preferred_resolution),
            max_resolution=self.cfg.max_resolution,
            resolution_step=step,
        )

    @property
    def num_prefix_tokens(self) -> int:
        """Cls + register tokens before the patch tokens."""
        return self.cfg.num_prefix_tokens

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        grid = self.check_input(images)
        tokens, _ = self.model.forward_tokens(self.input_conditioner(images))
        return self._split_outputs(tokens, grid)

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Token-level view, step 1: conditioning, patch embedding, CPE and the prefix tokens.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].

        Returns:
            Tokens (B, P + h*w, D) entering block 0 (P = :attr:`num_prefix_tokens`) and the grid (h, w).
        """
        grid = self.check_input(images)
        return self.model.patch_generator(self.input_conditioner(images)), grid

    def token_blocks(self) -> nn.ModuleList:
        """Token-level view, step 2: the blocks, each mapping (B, P + h*w, D) -> (B, P + h*w, D).

        Raises:
            ValueError: in ViTDet mode, where blocks run on windows in window-major order (not a plain sequence).
        """
        if self.cfg.vitdet_window_size:
            raise ValueError(
                f"RADIO in ViTDet mode (window {self.cfg.vitdet_window_size}) runs its blocks on windows; the plain "
                f"token-level block sequence is not available (load without vitdet_window_size)"
            )
        return self.model.blocks

    def finish_tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> BackboneOutput:
        """Token-level view, step 3: final norm and the summary / features split, exactly as :meth:`forward`.

        Args:
            tokens: (B, P + h*w, D) output of the last block.
            grid: (h, w) from :meth:`embed_tokens`.
        """
        return self._split_outputs(self.model.norm(tokens), grid)

    def _split_outputs(self, tokens: torch.Tensor, grid: tuple[int, int]) -> BackboneOutput:
        cls_tokens = tokens[:, : self.cfg.num_cls_tokens]
        summary = cls_tokens[:, self.summary_idxs].flatten(1)
        features = tokens[:, self.cfg.num_prefix_tokens :]
        if self.feature_normalizer is not None:
            features = self.feature_normalizer(features)
        adaptors = {name: adaptor(cls_tokens, features, grid) for name, adaptor in self.adaptors.items()}
        return BackboneOutput(summary=summary, features=features, grid=grid, adaptors=adaptors)

    def forward_intermediates(
        self,
        images: torch.Tensor,
        indices: int | Sequence[int] = 4,
        output_fmt: str = "NCHW",
        normalize: bool = True,
        return_final: bool = False,
    ) -> list[torch.Tensor] | tuple[BackboneOutput, list[torch.Tensor]]:
        """Patch tokens after the chosen blocks (prefix tokens removed).

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].
            indices: int n for the last n blocks, or block indices (negatives from the end).
            output_fmt: ``NCHW`` -> (B, D, h, w) maps; ``NLC`` -> (B, h*w, D).
            normalize: apply the intermediate feature normalizer when the checkpoint has one.
            return_final: also return the final :class:`BackboneOutput` (one forward pass for both).

        Returns:
            The list of maps in block order, preceded by the final output when ``return_final``.
        """
        grid = self.check_input(images)
        blocks = resolve_block_indices(list(indices) if not isinstance(indices, int) else indices, self.num_blocks)
        tokens, kept = self.model.forward_tokens(self.input_conditioner(images), keep=blocks)
        maps = []
        for block_index, layer_tokens in zip(blocks, kept, strict=True):
            patches = layer_tokens[:, self.cfg.num_prefix_tokens :]
            if normalize and self.inter_feature_normalizer is not None:
                patches = self.inter_feature_normalizer(patches, block_index)
            maps.append(tokens_to_nchw(patches, grid) if output_fmt == "NCHW" else patches)
        if return_final:
            return self._split_outputs(tokens, grid), maps
        return maps

    def no_weight_decay(self) -> set[str]:
        return {"model.patch_generator.pos_embed", "model.patch_generator.cls_token.token"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory (the ViT's own block loop too)."""
        super().set_grad_checkpointing(enable)
        self.model.grad_checkpointing = bool(enable)
