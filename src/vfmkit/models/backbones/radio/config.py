"""The architecture of a RADIO model, derived from a checkpoint's training ``args`` or written by the registry.

One :class:`RadioConfig` fully determines the modules (and so the state-dict keys) of a
:class:`~vfmkit.models.backbones.radio.model.RadioBackbone`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from vfmkit.models.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# timm architecture names used by RADIO checkpoints -> ViT hyper-parameters. ``model_kwargs`` from the checkpoint
# are applied on top. Widths, depths and MLP widths are checked against the weights' shapes when loading.
VIT_ARCHS: dict[str, dict[str, Any]] = {
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch16_224": dict(embed_dim=1280, depth=32, num_heads=16),
    "vit_giant_patch16_224": dict(embed_dim=1536, depth=40, num_heads=24, mlp_ratio=4.0),
    "vit_huge_patch16_224_mlpnorm": dict(embed_dim=1280, depth=32, num_heads=16, mlp_norm=True),
    "vit_so400m_patch16_224": dict(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=4304 / 1152),
    "vit_so400m_v2_patch16_224": dict(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=4320 / 1152),
    # DINOv2-style blocks (LayerScale); timm's reg tokens exist in the checkpoint but are unused by RADIO.
    "vit_small_patch14_reg4_dinov2": dict(embed_dim=384, depth=12, num_heads=6, init_values=1e-5, patch_size=14),
    "vit_base_patch16_v2_224": dict(embed_dim=768, depth=12, num_heads=12, init_values=1e-5),
    "vit_large_patch16_v2_224": dict(embed_dim=1024, depth=24, num_heads=16, init_values=1e-5),
    "vit_huge_patch16_v2_224": dict(embed_dim=1280, depth=32, num_heads=16, init_values=1e-5),
    "vit_giant_patch16_v2_224": dict(embed_dim=1536, depth=40, num_heads=24, init_values=1e-5),
    "vit_base_patch16_reg4_dinov2": dict(embed_dim=768, depth=12, num_heads=12, init_values=1e-5),
    "vit_large_patch16_reg4_dinov2": dict(embed_dim=1024, depth=24, num_heads=16, init_values=1e-5),
    "vit_huge_patch16_reg4_dinov2": dict(embed_dim=1280, depth=32, num_heads=16, init_values=1e-5),
}

_VIT_KWARGS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "init_values", "patch_size", "qkv_bias", "mlp_norm")


@dataclass
class AdaptorConfig:
    """One teacher adaptor head.

    Attributes:
        name: teacher name (``siglip``, ``clip``, ``dino_v2``, ...).
        token_slot: which cls token feeds the summary head.
        summary_mlp / feature_mlp: ``(version, input_dim, hidden_dim, output_dim, num_inner)``;
            version ``v1``, ``v2`` or ``attn`` (feature head only).
        upsample_factor: the feature head emits ``u^2 * C`` channels re-laid out to a u-times finer grid.
    """

    name: str
    token_slot: int
    summary_mlp: tuple[str, int, int, int, int] | None
    feature_mlp: tuple[str, int, int, int, int] | None
    upsample_factor: int = 1


@dataclass
class RadioConfig:
    """Architecture and behaviour of a RADIO model.

    Attributes:
        embed_dim, depth, num_heads, mlp_ratio: ViT width/depth/heads/MLP ratio (timm Block semantics).
        init_values: LayerScale init (None: no LayerScale).
        mlp_norm: LayerNorm inside the MLP (the ``_mlpnorm`` variant).
        ffn: ``mlp`` (GELU MLP) or ``swiglu`` (DINOv2-g students; ``mlp_ratio`` then sizes the packed fc1).
        patch_size: patch side; the embedder is a bias-free Linear ``3 * p * p -> D`` unless ``embedder_bias``.
        num_cls_tokens: C, one per unique teacher (1 when not ``cls_token_per_teacher``).
        num_registers: R, extra learned prefix tokens.
        summary_idxs: cls slots concatenated into ``summary``.
        cpe_max_size: pixels covered by the stored position grid (grid side = cpe_max_size / patch_size).
        model_norm: keep a final LayerNorm (else identity).
        mean, std: input conditioner defaults (checkpoint buffers override them).
        preferred_resolution, max_resolution: from the published resource table.
        vitdet_window_size / vitdet_num_global: windowed attention (None: off).
        feature_normalizer: the checkpoint carries a whitening of the spatial features.
        num_intermediate_normalizers: layers of an intermediate feature normalizer (0: none).
        adaptors: adaptor heads to build.
        teachers: the teacher names in checkpoint order (adaptor lookup).
        supports_vitdet: False for C-RADIOv3 (the reference refuses windowed attention there).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    init_values: float | None = None
    mlp_norm: bool = False
    ffn: str = "mlp"
    qkv_bias: bool = True
    patch_size: int = 16
    embedder_bias: bool = False
    patch_norm: bool = False
    num_cls_tokens: int = 4
    num_registers: int = 4
    summary_idxs: tuple[int, ...] = (0, 1, 2)
    cpe_max_size: int = 2048
    model_norm: bool = False
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    preferred_resolution: int = 512
    max_resolution: int = 2048
    vitdet_window_size: int | None = None
    vitdet_num_global: int = 4
    supports_vitdet: bool = True
    feature_normalizer: bool = False
    num_intermediate_normalizers: int = 0
    intermediate_rotation_per_layer: bool = False
    adaptors: list[AdaptorConfig] = field(default_factory=list)
    teachers: tuple[str, ...] = ()
    pos_dropout: float = 0.1

    @property
    def num_prefix_tokens(self) -> int:
        return self.num_cls_tokens + self.num_registers

    @property
    def grid_size(self) -> int:
        return self.cpe_max_size // self.patch_size

    @property
    def summary_dim(self) -> int:
        return self.embed_dim * len(self.summary_idxs)

    def with_overrides(self, **changes: Any) -> RadioConfig:
        return replace(self, **changes)


def vit_kwargs_for(arch: str, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """ViT hyper-parameters for a timm arch name with the checkpoint's ``model_kwargs`` applied.

    Raises:
        KeyError: an arch name vfmkit does not know (the caller turns it into a WeightsError).
    """
    if arch not in VIT_ARCHS:
        raise KeyError(arch)
    kwargs = dict(VIT_ARCHS[arch])
    for key, value in (model_kwargs or {}).items():
        if key in _VIT_KWARGS:
            kwargs[key] = value
    return kwargs


def count_registers(num_cls_tokens: int, register_multiple: int | None, num_registers: int | None) -> int:
    """Registers after the cls tokens: explicit count, else up to the next multiple (a full group when divisible)."""
    if num_registers is not None:
        return int(num_registers)
    if register_multiple:
        return register_multiple - (num_cls_tokens % register_multiple)
    return 0
