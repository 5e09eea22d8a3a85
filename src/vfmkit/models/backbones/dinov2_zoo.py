"""Registry entries of the DINOv2 family (Meta's DINOv2 through timm, NVIDIA's NV-DINOv2) and its tiny test variant.

DINOv2: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (2023); registers: Darcet et al.,
"Vision Transformers Need Registers" (2023). Weights: the ``timm/vit_*_patch14_*dinov2.lvd142m`` Hub repos
(converted from facebookresearch/dinov2, Apache-2.0).
"""

from __future__ import annotations

from vfmkit.models.backbones import timm_family  # noqa: F401  (registers the "timm" builder)
from vfmkit.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry, register

_DINOV2_SIZES = {
    # size letter: (timm size word, width, params in millions)
    "s": ("small", 384, 22.1),
    "b": ("base", 768, 86.6),
    "l": ("large", 1024, 304.4),
    "g": ("giant", 1536, 1136.5),
}

_EXTRA_ALIASES = {
    # TAO names that denote exactly these weights.
    ("l", False): ("vit_large_dinov2",),
    ("g", True): ("vit_giant_patch14_reg4_dinov2_swiglu",),
}


def _dinov2(size: str, registers: bool) -> ModelEntry:
    """The entry of Meta's DINOv2 ViT-<size>/14 (LVD-142M), with 4 register tokens when ``registers``."""
    word, width, params = _DINOV2_SIZES[size]
    reg = "_reg4" if registers else ""
    timm_name = f"vit_{word}_patch14{reg}_dinov2"
    suffix = "-reg" if registers else ""
    return ModelEntry(
        id=f"dinov2-vit-{size}14{suffix}",
        family="timm",
        arch={"timm_name": f"{timm_name}.lvd142m"},
        description=f"DINOv2 ViT-{size.upper()}/14{' with 4 registers' if registers else ''} (Meta, LVD-142M)",
        license="Apache-2.0",
        params_m=params,
        patch_size=14,
        preferred_resolution=518,
        max_resolution=518,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        summary_dim=width,
        feature_dim=width,
        source=f"hf-hub:timm/{timm_name}.lvd142m",
        aliases=(
            timm_name,
            f"{timm_name}.lvd142m",
            f"dinov2_vit{size}14{reg}",
            *_EXTRA_ALIASES.get((size, registers), ()),
        ),
    )


for _size in _DINOV2_SIZES:
    for _registers in (False, True):
        register(_dinov2(_size, _registers))

register(
    ModelEntry(
        id="nv-dinov2-vit-l",
        family="timm",
        arch={
            # ViT-L/14 with a SwiGLU MLP (Meta's "swiglufused": fc1 1024 -> 2 x 2736, SiLU gate), LayerScale, no
            # registers; the same layout as TAO's vit_large_patch14_dinov2_swiglu.
            "timm_name": "vit_large_patch14_dinov2",
            "kwargs": {"mlp_layer": "swiglu_packed", "act_layer": "silu", "mlp_ratio": 5472 / 1024},
        },
        description=(
            "NV-DINOv2 ViT-L/14 (NVIDIA TAO, SwiGLU MLP); weights come from NGC as a local file, not the HF Hub "
            "(load with checkpoint=<file>)"
        ),
        license="NVIDIA (see the NGC model card)",
        params_m=304.8,
        patch_size=14,
        preferred_resolution=224,
        max_resolution=518,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        summary_dim=1024,
        feature_dim=1024,
        source=None,
        aliases=("vit_large_nvdinov2", "vit_large_patch14_dinov2_swiglu", "nv_dinov2_vit_l"),
        extra={"weights": "NGC: local file only"},
    )
)

register(
    ModelEntry(
        id="test-dinov2-tiny",
        family="timm",
        arch={
            "timm_name": "vit_small_patch14_reg4_dinov2",
            "kwargs": {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0},
        },
        description="tiny random-init DINOv2-style ViT (4 registers, LayerScale) for tests",
        license="Apache-2.0",
        params_m=0.12,
        patch_size=8,
        preferred_resolution=64,
        max_resolution=64,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        summary_dim=64,
        feature_dim=64,
        test_only=True,
    )
)
