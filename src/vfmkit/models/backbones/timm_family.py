"""Backbones built by timm: DINOv2, OpenAI / OpenCLIP CLIP image towers, EVA-CLIP and SigLIP2.

The networks are timm's own (``timm.create_model``), never re-implemented here; :class:`TimmBackbone` only adds
vfmkit's surface: [0, 1] input with the normalisation inside the model, a ``summary`` (timm's pooled pre-logits
output) and patch ``features`` with the prefix (class / register) tokens removed.

Published weights are the ``timm/<arch>.<tag>`` repos on the Hugging Face Hub. They are read from the local Hugging
Face cache first (offline-first, through :mod:`vfmkit.weights.sources`; ``HF_HUB_OFFLINE=1`` forbids any download)
and handed to timm's own pretrained loader, which remaps keys, drops the classifier / CLIP projection and resamples
position embeddings. The files themselves are read by :mod:`vfmkit.weights.safe_load` (safetensors, or
``torch.load(weights_only=True)`` with a one-line error for a damaged or refused file), never by timm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import GluMlp, Mlp, SwiGLU, SwiGLUPacked, resample_abs_pos_embed
from torch import nn

from vfmkit.errors import ConfigurationError, ModelNotFoundError, WeightsError
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing, resolve_block_indices
from vfmkit.models.backbones.patch_size import resample_patch_kernel
from vfmkit.models.backbones.windowed import WindowedAttentionMixin
from vfmkit.models.factory import register_family
from vfmkit.models.registry import ModelEntry
from vfmkit.utils.text import error_reason
from vfmkit.weights.safe_load import load_weights_file
from vfmkit.weights.sources import HubUnreachableError, fetch_hub_file, parse_hub

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""Files a timm Hub repo publishes its weights as, in order of preference."""

_MLP_LAYERS: dict[str, type[nn.Module]] = {
    "mlp": Mlp,
    "glu": GluMlp,
    "swiglu": SwiGLU,
    "swiglu_packed": SwiGLUPacked,
}
"""Names usable for ``mlp_layer`` in an entry's ``arch["kwargs"]`` (registry entries stay plain data)."""


class TimmBackbone(WindowedAttentionMixin, Backbone):
    """A timm vision transformer behind the vfmkit backbone surface.

    Args:
        model: a timm model created with ``num_classes=0`` that implements ``forward_features``, ``forward_head``
            and ``forward_intermediates`` (VisionTransformer, Eva, NaFlexVit).
        preprocessing: how to feed it; ``mean``/``std`` become buffers applied in :meth:`normalize`.
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.preprocessing = preprocessing
        self.embed_dim = int(model.embed_dim)
        self.summary_dim = int(getattr(model, "head_hidden_size", model.num_features))
        self.num_blocks = len(model.blocks)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the normalised input the timm model expects (same shape and dtype)."""
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        """Summary and patch features.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1]; H and W multiples of the patch size.

        Returns:
            summary (B, summary_dim): timm's pre-logits output (class token for DINOv2 / CLIP / EVA, attention-pool
            output for SigLIP); features (B, h*w, embed_dim): patch tokens after the final norm; grid (h, w).
            With windowed attention (:meth:`set_window_attention`) the summary comes from the prefix tokens averaged
            over their window copies (see :mod:`~vfmkit.models.backbones.windowed`).
        """
        if self.window_size:
            return self.token_pass(images)[0]
        grid = self.check_input(images)
        tokens = self.model.forward_features(self.normalize(images))
        summary = self.model.forward_head(tokens, pre_logits=True)
        return BackboneOutput(summary=summary, features=tokens[:, self.num_prefix_tokens :], grid=grid)

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Token-level view, step 1: normalisation, patch embedding, position embedding and prefix tokens.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].

        Returns:
            Tokens (B, P + h*w, D) entering block 0 (P = ``num_prefix_tokens``) and the grid (h, w).

        Raises:
            ValueError: the timm model is not a plain ``VisionTransformer`` (e.g. EVA, whose rotary blocks need
                per-call position arguments).
        """
        grid = self.check_input(images)
        self._require_plain_vit()
        model = self.model
        tokens = model._pos_embed(model.patch_embed(self.normalize(images)))
        return model.norm_pre(model.patch_drop(tokens)), grid

    def token_blocks(self) -> nn.Sequential:
        """Token-level view, step 2: the blocks, each mapping (B, P + h*w, D) -> (B, P + h*w, D).

        Raises:
            ValueError: not a plain ``VisionTransformer`` (see :meth:`embed_tokens`), or windowed attention is on
                (its blocks run on windows, not on one plain sequence).
        """
        if self.window_size:
            raise ValueError(
                f"windowed attention (window {self.window_size}) runs the blocks on windows; the plain token-level "
                "block sequence is not available (load without vitdet_window_size)"
            )
        return self._plain_blocks()

    def _plain_blocks(self) -> nn.Sequential:
        self._require_plain_vit()
        return self.model.blocks

    def finish_tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> BackboneOutput:
        """Token-level view, step 3: final norm, pooled summary and patch features, exactly as :meth:`forward`.

        Args:
            tokens: (B, P + h*w, D) output of the last block.
            grid: (h, w) from :meth:`embed_tokens`.
        """
        tokens = self.model.norm(tokens)
        summary = self.model.forward_head(tokens, pre_logits=True)
        return BackboneOutput(summary=summary, features=tokens[:, self.num_prefix_tokens :], grid=grid)

    def _require_plain_vit(self) -> None:
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(self.model, VisionTransformer):
            raise ValueError(
                f"token-level access (ViT-Adapter) supports timm VisionTransformer models only, not "
                f"{type(self.model).__name__} (EVA blocks need rotary position arguments); use the simple pyramid"
            )

    def forward_intermediates(
        self, images: torch.Tensor, indices: int | list[int] = 4, return_final: bool = False
    ) -> list[torch.Tensor] | tuple[BackboneOutput, list[torch.Tensor]]:
        """Patch tokens after the chosen blocks (before the final norm) as NCHW maps.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1].
            indices: an int n for the last n blocks, or a list of block indices (negatives count from the end).
            return_final: also return the final :class:`BackboneOutput` (one pass for both where the model has the
                token-level view; timm EVA / NaFlex: two passes).

        Returns:
            One (B, embed_dim, h, w) map per selected block, in block order; preceded by the final output when
            ``return_final``.
        """
        self.check_input(images)
        blocks = resolve_block_indices(indices, self.num_blocks)
        if self.window_size or (return_final and self._has_plain_blocks()):
            final, maps = self.token_pass(images, blocks)
            return (final, maps) if return_final else maps
        maps = self.model.forward_intermediates(
            self.normalize(images), indices=blocks, output_fmt="NCHW", intermediates_only=True
        )
        return (self(images), maps) if return_final else maps

    def _has_plain_blocks(self) -> bool:
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(self.model, VisionTransformer)

    def change_patch_size(self, patch_size: int) -> None:
        """Load-time patch-size change (e.g. DINOv2 14 -> 16, as RF-DETR runs it): the patch-embedding kernel is
        resampled to ``patch_size`` (FlexiViT's pseudo-inverse resize, so a patch resized with the image gives about
        the same embedding) and the absolute position embedding resampled to the grid that covers the same image
        (``img_size // patch_size``); no key is added or removed.

        Raises:
            ValueError: not a plain ``VisionTransformer`` or a patch size below 2.
        """
        self._require_plain_vit()
        model, embed = self.model, self.model.patch_embed
        if tuple(embed.patch_size) == (patch_size, patch_size):
            return
        embed.proj = resample_patch_kernel(embed.proj, patch_size)
        embed.patch_size = (patch_size, patch_size)
        old_grid = tuple(int(s) for s in embed.grid_size)
        grid = tuple(int(s) // patch_size for s in embed.img_size)
        embed.grid_size, embed.num_patches = grid, grid[0] * grid[1]
        if getattr(model, "pos_embed", None) is not None:
            prefix = 0 if getattr(model, "no_embed_class", False) else self.num_prefix_tokens
            with torch.no_grad():
                pos = resample_abs_pos_embed(model.pos_embed, list(grid), list(old_grid), num_prefix_tokens=prefix)
            model.pos_embed = nn.Parameter(pos, requires_grad=model.pos_embed.requires_grad)
        self.preprocessing = dataclasses.replace(
            self.preprocessing,
            patch_size=patch_size,
            preferred_resolution=(grid[0] * patch_size, grid[1] * patch_size),
            resolution_step=patch_size * (self.window_size or 1),
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint blocks in timm's own loops (``forward_features``, ``forward_intermediates``) and ours."""
        super().set_grad_checkpointing(enable)
        self.model.set_grad_checkpointing(bool(enable))

    def pin_position_grid(self, grid: tuple[int, int]) -> None:
        """Resample the absolute position embedding once to ``grid`` (h, w) and keep it as the model's own: a forward
        at that grid then computes exactly what it computed before, without resizing.

        For ONNX export (use it on a copy): timm resizes the embedding on every forward with an antialiased bicubic
        interpolation, which has no opset-17 operator. A forward at another grid resamples from the pinned one.
        """
        model = self.model
        old = tuple(int(s) for s in model.patch_embed.grid_size)
        if getattr(model, "pos_embed", None) is None or old == tuple(grid):
            return
        prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
        with torch.no_grad():
            pinned = resample_abs_pos_embed(model.pos_embed, list(grid), list(old), num_prefix_tokens=prefix)
        model.pos_embed = nn.Parameter(pinned, requires_grad=model.pos_embed.requires_grad)
        model.patch_embed.grid_size = tuple(int(s) for s in grid)

    def no_weight_decay(self) -> set[str]:
        """timm's no-weight-decay set (position embeddings, class / register tokens), as names in this module."""
        names = {f"model.{name}" for name in self.model.no_weight_decay()}
        return names & {name for name, _ in self.named_parameters()}


def preprocessing_from_entry(entry: ModelEntry, fixed_resolution: bool = False) -> Preprocessing:
    """The :class:`Preprocessing` a registry entry describes (square preferred resolution, patch-size step)."""
    return Preprocessing(
        mean=entry.mean,
        std=entry.std,
        patch_size=entry.patch_size,
        preferred_resolution=(entry.preferred_resolution, entry.preferred_resolution),
        max_resolution=entry.max_resolution,
        resolution_step=entry.patch_size,
        fixed_resolution=fixed_resolution,
    )


def timm_name_and_kwargs(entry: ModelEntry) -> tuple[str, dict[str, Any]]:
    """The timm architecture name and ``create_model`` kwargs of a timm-family entry.

    ``entry.arch`` holds ``timm_name`` and optional ``kwargs`` (plain data: ``mlp_layer`` is a name from
    ``_MLP_LAYERS``, ``act_layer`` a timm activation name). ``dynamic_img_size`` is on unless the arch says
    otherwise, so any multiple of the patch size works.

    Raises:
        ModelNotFoundError: timm does not know the architecture.
    """
    name = entry.arch["timm_name"]
    if not timm.is_model(name):
        raise ModelNotFoundError(f"{entry.id}: timm {timm.__version__} has no architecture {name!r}; upgrade timm")
    kwargs = dict(entry.arch.get("kwargs", {}))
    if isinstance(kwargs.get("mlp_layer"), str):
        kwargs["mlp_layer"] = _MLP_LAYERS[kwargs["mlp_layer"]]
    if entry.arch.get("dynamic_img_size", True):
        kwargs.setdefault("dynamic_img_size", True)
    return name, kwargs


def fetch_hub_weights(source: str, model_id: str, filenames: Sequence[str] = HF_WEIGHT_FILES) -> Path:
    """Path of a weights file from the local Hugging Face cache, downloaded only when online.

    Args:
        source: ``hf-hub:<org>/<repo>[@revision][/file]``; without ``/file`` each of ``filenames`` is tried in turn.
        model_id: registry id, for the error message.
        filenames: candidate file names in the repo, in order of preference.

    Raises:
        WeightsError: no candidate is cached or downloadable; the message (from :func:`fetch_hub_file`) names the
            repo and the cache folder and says how to fetch the files. An unreachable or silent endpoint stops at
            the first candidate.
    """
    ref = parse_hub(source)
    candidates = (ref.filename,) if ref.filename else tuple(filenames)
    first_error: WeightsError | None = None
    for name in candidates:
        try:
            return fetch_hub_file(ref, name)
        except HubUnreachableError as err:  # the endpoint is silent or unreachable: the other files would be too
            raise WeightsError(f"weights of {model_id!r}: {err}") from None
        except WeightsError as err:
            first_error = first_error or err
    raise WeightsError(f"weights of {model_id!r}: {first_error}") from None


def local_only_weights_error(entry: ModelEntry) -> WeightsError:
    """The error for an entry whose weights are not on the Hub (e.g. NGC-only) when no local file was given."""
    where = entry.extra.get("weights", "not published on the Hugging Face Hub")
    return WeightsError(
        f"{entry.id!r} has no downloadable weights ({where}); download the checkpoint yourself and pass it as a "
        f"local file (checkpoint=<path>), or use pretrained=False for a random init."
    )


def create_timm_model(name: str, kwargs: dict[str, Any], weights: Path | None, model_id: str) -> nn.Module:
    """``timm.create_model(name, num_classes=0, **kwargs)``, loading ``weights`` through timm's pretrained loader.

    Raises:
        WeightsError: the file is missing, unreadable, damaged, refused (a pickle needing globals outside the
            allow-list) or its tensors do not fit the architecture; one line naming the file.
    """
    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    return create_with_weights(name, weights, f"{model_id!r} (timm {name})", num_classes=0, **kwargs)


def read_timm_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a timm weights file, unwrapped as timm unwraps it (``state_dict_ema``, ``model_ema``,
    ``state_dict`` or ``model`` entry; ``module.`` / ``_orig_mod.`` prefixes removed), read safely.

    Raises:
        WeightsError: missing, unreadable or refused file, or one that holds no tensors.
    """
    from timm.models import clean_state_dict

    payload = load_weights_file(path)
    if isinstance(payload, dict):
        wrapped = ("state_dict_ema", "model_ema", "state_dict", "model")
        key = next((k for k in wrapped if isinstance(payload.get(k), dict)), None)
        payload = payload[key] if key else payload
    if not isinstance(payload, dict) or not any(isinstance(v, torch.Tensor) for v in payload.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors (found {type(payload).__name__})")
    return clean_state_dict(payload)


def create_with_weights(name: str, weights: Path, what: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)`` with the tensors of the file ``weights`` (read by
    :func:`read_timm_state_dict`) through timm's pretrained loader (key remapping, classifier dropped, position
    grids resampled).

    Raises:
        WeightsError: the file is missing or unreadable, or its tensors do not fit ``what``.
    """
    if not Path(weights).is_file():
        raise WeightsError(f"checkpoint file {weights} for {what} does not exist")
    state = read_timm_state_dict(Path(weights))
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:  # tensors that do not fit
        raise WeightsError(f"{weights} does not hold weights for {what}: {error_reason(exc, 500)}") from None


def build_timm(
    entry: ModelEntry,
    pretrained: bool = True,
    adaptors: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    vitdet_window_size: int | None = None,
    patch_size: int | None = None,
) -> TimmBackbone:
    """Build a timm-family registry entry.

    Args:
        entry: the registry entry (``arch = {"timm_name": ..., "kwargs": {...}}``).
        pretrained: load the published weights (from ``entry.source``, or ``checkpoint`` when given).
        adaptors: must be empty; timm backbones carry no adaptor heads.
        checkpoint: a local weights file (safetensors or a ``torch.save`` state dict) used instead of the Hub.
        vitdet_window_size: windowed attention with this window (patches) in all but 4 blocks (see
            :mod:`~vfmkit.models.backbones.windowed`).
        patch_size: change the patch size after loading (see :meth:`TimmBackbone.change_patch_size`).

    Raises:
        ModelNotFoundError: adaptors requested, or the timm architecture is unknown.
        WeightsError: the weights are absent from the cache and cannot be fetched, or do not fit.
        ConfigurationError: windows or a patch-size change on a model without a plain block list (EVA, NaFlex).
    """
    if adaptors:
        raise ModelNotFoundError(f"{entry.id!r} has no adaptor heads (asked for {', '.join(adaptors)})")
    name, kwargs = timm_name_and_kwargs(entry)
    weights = Path(checkpoint).expanduser() if checkpoint is not None else None
    if weights is None and pretrained:
        if entry.source is None or not entry.source.startswith("hf-hub:"):
            raise local_only_weights_error(entry)
        weights = fetch_hub_weights(entry.source, entry.id)
    model = create_timm_model(name, kwargs, weights, entry.id)
    backbone = TimmBackbone(model, preprocessing_from_entry(entry))
    apply_vit_options(backbone, entry.id, vitdet_window_size, patch_size)
    return backbone.eval()


def apply_vit_options(backbone: Backbone, model_id: str, window_size: int | None, patch_size: int | None) -> None:
    """The load-time options of a plain ViT backbone (timm or open_clip): patch-size change, then windows.

    Raises:
        ConfigurationError: the model does not support them (one line naming the option).
    """
    if patch_size:
        _apply_option(model_id, "patch_size", lambda: backbone.change_patch_size(int(patch_size)))
    if window_size:
        _apply_option(model_id, "vitdet_window_size", lambda: backbone.set_window_attention(int(window_size)))


def _apply_option(model_id: str, option: str, action: Callable[[], None]) -> None:
    try:
        action()
    except ValueError as err:
        raise ConfigurationError(f"{model_id}: {option} is not available for this model ({err})") from None


register_family("timm", build_timm)
