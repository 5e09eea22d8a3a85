"""Registry entries of the CLIP-style image towers and their tiny test variants.

- OpenAI CLIP (Radford et al., 2021) and OpenCLIP LAION-2B (Cherti et al., 2023) ViTs: timm's conversions
  (``timm/vit_*_clip_*.{openai,laion2b}``); ``summary`` is the pre-projection class token (timm drops the projection
  with ``num_classes=0``).
- EVA-CLIP (Sun et al., "EVA-CLIP", 2023): timm's ``eva02_*_clip_*`` conversions.
- SigLIP2 so400m (Tschannen et al., 2025): timm's ``*.v2_webli`` conversions; ``summary`` is the attention-pool
  (MAP) head output, i.e. the SigLIP image embedding.
- NV-CLIP SigLIP-CLIPA (NVIDIA TAO): open_clip CLIPA-style ViTs (no pre-norm, average pooling with the final
  LayerNorm after pooling) trained with the SigLIP sigmoid loss (logit bias, init -10). The weights are published on
  NGC only, so the entries have no Hub source: pass the downloaded file as ``checkpoint=<file>``.
"""

from __future__ import annotations

from typing import Any

from vfmkit.models.backbones import open_clip_family, timm_family  # noqa: F401  (register the builders)
from vfmkit.models.registry import (
    HALF_MEAN_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ModelEntry,
    register,
)

_CLIP_TASKS = ("embed", "classify", "segment", "change", "detect", "universal", "distill", "clip")


def _timm_clip(
    model_id: str,
    timm_name: str,
    description: str,
    license: str,
    params_m: float,
    width: int,
    patch: int,
    res: int,
    aliases: tuple[str, ...],
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
    std: tuple[float, float, float] = OPENAI_CLIP_STD,
    max_res: int | None = None,
    **arch: Any,
) -> ModelEntry:
    """A timm-built CLIP-style tower published as ``hf-hub:timm/<timm_name>`` (``timm_name`` is ``arch.tag``)."""
    return ModelEntry(
        id=model_id,
        family="timm",
        arch={"timm_name": timm_name, **arch},
        description=description,
        license=license,
        params_m=params_m,
        patch_size=patch,
        preferred_resolution=res,
        max_resolution=max_res or res,
        mean=mean,
        std=std,
        summary_dim=width,
        feature_dim=width,
        source=f"hf-hub:timm/{timm_name}",
        aliases=(timm_name, *aliases),
        tasks=_CLIP_TASKS,
    )


_OPENAI = "OpenAI CLIP {} image tower (WIT-400M)"
_SIGLIP2 = "SigLIP2 so400m {} image tower (WebLI)"

_TIMM_ENTRIES = (
    # OpenAI CLIP (MIT).
    (
        "openai-clip-vit-b32",
        "vit_base_patch32_clip_224.openai",
        _OPENAI.format("ViT-B/32"),
        "MIT",
        87.5,
        768,
        32,
        224,
        ("ViT-B-32", "ViT-B-32-openai"),
    ),
    (
        "openai-clip-vit-b16",
        "vit_base_patch16_clip_224.openai",
        _OPENAI.format("ViT-B/16"),
        "MIT",
        85.8,
        768,
        16,
        224,
        ("ViT-B-16", "ViT-B-16-openai"),
    ),
    (
        "openai-clip-vit-l14",
        "vit_large_patch14_clip_224.openai",
        _OPENAI.format("ViT-L/14"),
        "MIT",
        303.2,
        1024,
        14,
        224,
        ("ViT-L-14", "ViT-L-14-openai"),
    ),
    (
        "openai-clip-vit-l14-336",
        "vit_large_patch14_clip_336.openai",
        _OPENAI.format("ViT-L/14@336"),
        "MIT",
        303.5,
        1024,
        14,
        336,
        ("ViT-L-14-336", "ViT-L-14-336-openai"),
    ),
    # OpenCLIP LAION-2B (MIT).
    (
        "openclip-vit-h14-laion2b",
        "vit_huge_patch14_clip_224.laion2b",
        "OpenCLIP ViT-H/14 image tower (LAION-2B)",
        "MIT",
        630.8,
        1280,
        14,
        224,
        ("ViT-H-14", "ViT-H-14-laion2b"),
    ),
    (
        "openclip-vit-g14-laion2b",
        "vit_giant_patch14_clip_224.laion2b",
        "OpenCLIP ViT-g/14 image tower (LAION-2B)",
        "MIT",
        1011.2,
        1408,
        14,
        224,
        ("ViT-g-14", "ViT-g-14-laion2b"),
    ),
    # EVA-CLIP (MIT).
    (
        "eva02-clip-l14",
        "eva02_large_patch14_clip_224.merged2b",
        "EVA02-CLIP-L/14 image tower (Merged-2B)",
        "MIT",
        303.3,
        1024,
        14,
        224,
        ("EVA02-L-14", "eva02_large_patch14_clip_224"),
    ),
    (
        "eva02-clip-l14-336",
        "eva02_large_patch14_clip_336.merged2b",
        "EVA02-CLIP-L/14@336 image tower (Merged-2B)",
        "MIT",
        303.6,
        1024,
        14,
        336,
        ("EVA02-L-14-336", "eva02_large_patch14_clip_336"),
    ),
    (
        "eva02-clip-e14",
        "eva02_enormous_patch14_clip_224.laion2b",
        "EVA02-CLIP-E/14 image tower (LAION-2B)",
        "MIT",
        4348.7,
        1792,
        14,
        224,
        ("EVA02-E-14",),
    ),
    (
        "eva02-clip-e14-plus",
        "eva02_enormous_patch14_clip_224.laion2b_plus",
        "EVA02-CLIP-E/14+ image tower (LAION-2B, longer schedule)",
        "MIT",
        4348.7,
        1792,
        14,
        224,
        ("EVA02-E-14-plus",),
    ),
)

for _spec in _TIMM_ENTRIES:
    register(_timm_clip(*_spec))

_SIGLIP2_ENTRIES = (
    (
        "siglip2-so400m-p16-256",
        "vit_so400m_patch16_siglip_256.v2_webli",
        "patch16 256",
        427.9,
        16,
        256,
        ("siglip2-so400m-patch16-256", "google/siglip2-so400m-patch16-256", "ViT-SO400M-16-SigLIP2-256"),
    ),
    (
        "siglip2-so400m-p16-384",
        "vit_so400m_patch16_siglip_384.v2_webli",
        "patch16 384",
        428.3,
        16,
        384,
        ("siglip2-so400m-patch16-384", "google/siglip2-so400m-patch16-384", "ViT-SO400M-16-SigLIP2-384"),
    ),
    (
        "siglip2-so400m-p16-512",
        "vit_so400m_patch16_siglip_512.v2_webli",
        "patch16 512",
        428.8,
        16,
        512,
        (
            "siglip2-so400m-patch16-512",
            "google/siglip2-so400m-patch16-512",
            "ViT-SO400M-16-SigLIP2-512",
            "siglip2_so400m_patch16_512",
        ),
    ),
    (
        "siglip2-so400m-p14-224",
        "vit_so400m_patch14_siglip_224.v2_webli",
        "patch14 224",
        427.7,
        14,
        224,
        ("siglip2-so400m-patch14-224", "google/siglip2-so400m-patch14-224", "ViT-SO400M-14-SigLIP2"),
    ),
    # Google's "patch14-384" feeds 384 px but its conv drops the remainder: a 27 x 27 grid, i.e. 378 px.
    (
        "siglip2-so400m-p14-384",
        "vit_so400m_patch14_siglip_378.v2_webli",
        "patch14 384 (27x27 grid = 378 px)",
        428.2,
        14,
        378,
        ("siglip2-so400m-patch14-384", "google/siglip2-so400m-patch14-384", "ViT-SO400M-14-SigLIP2-378"),
    ),
)

for _id, _name, _what, _params, _patch, _res, _aliases in _SIGLIP2_ENTRIES:
    register(
        _timm_clip(
            _id,
            _name,
            _SIGLIP2.format(_what),
            "Apache-2.0",
            _params,
            1152,
            _patch,
            _res,
            _aliases,
            mean=HALF_MEAN_STD,
            std=HALF_MEAN_STD,
        )
    )

register(
    _timm_clip(
        "siglip2-so400m-p16-naflex",
        "naflexvit_so400m_patch16_siglip.v2_webli",
        _SIGLIP2.format("patch16 NaFlex (native aspect ratio, 256-1024 patches)"),
        "Apache-2.0",
        427.9,
        1152,
        16,
        384,
        ("siglip2-so400m-patch16-naflex", "google/siglip2-so400m-patch16-naflex", "siglip2_so400m"),
        mean=HALF_MEAN_STD,
        std=HALF_MEAN_STD,
        max_res=512,
        dynamic_img_size=False,
    )
)


def _clipa_vision_cfg(width: int, layers: int, res: int, **extra: Any) -> dict[str, Any]:
    """open_clip CLIPA-style ViT/14 tower config (as open_clip's ViT-*-14-CLIPA configs)."""
    return {
        "image_size": res,
        "layers": layers,
        "width": width,
        "patch_size": 14,
        "no_ln_pre": True,
        "pool_type": "avg",
        "final_ln_after_pool": True,
        **extra,
    }


_NV_CLIP_PARAMS = {("L", 224): 304.0, ("L", 336): 304.3, ("H", 224): 632.1, ("H", 336): 632.5}


def _nv_clip(size: str, res: int, aliases: tuple[str, ...]) -> ModelEntry:
    """NV-CLIP SigLIP-CLIPA ViT-<size>/14 at ``res`` (open_clip image tower, NGC weights)."""
    width, layers, embed = {"L": (1024, 24, 768), "H": (1280, 32, 1024)}[size]
    extra = {"head_width": 80} if size == "H" else {}
    return ModelEntry(
        id=f"nv-clip-vit-{size.lower()}14-{res}",
        family="open_clip",
        arch={
            "model_cfg": {
                "embed_dim": embed,
                "init_logit_bias": -10.0,
                "vision_cfg": _clipa_vision_cfg(width, layers, res, **extra),
            }
        },
        description=(
            f"NV-CLIP SigLIP-CLIPA ViT-{size}/14 @ {res} image tower (NVIDIA TAO); weights come from NGC as a "
            f"local file, not the HF Hub (load with checkpoint=<file>)"
        ),
        license="NVIDIA (see the NGC model card)",
        params_m=_NV_CLIP_PARAMS[size, res],
        patch_size=14,
        preferred_resolution=res,
        max_resolution=res,
        mean=IMAGENET_MEAN,  # open_clip's CLIPA preprocessing; check against the NGC model card
        std=IMAGENET_STD,
        summary_dim=embed,
        feature_dim=width,
        source=None,
        aliases=aliases,
        tasks=_CLIP_TASKS,
        extra={"weights": "NGC: local file only"},
    )


register(_nv_clip("L", 224, ("vit_l_14_siglip_clipa_224", "ViT-L-14-SigLIP-CLIPA-224")))
register(_nv_clip("L", 336, ("vit_l_14_siglip_clipa_336", "ViT-L-14-SigLIP-CLIPA-336")))
register(_nv_clip("H", 224, ("vit_h_14_siglip_clipa_224", "ViT-H-14-SigLIP-CLIPA-224", "vit_huge_nvclip_14_siglip")))
register(_nv_clip("H", 336, ("vit_h_14_siglip_clipa_336", "ViT-H-14-SigLIP-CLIPA-336")))


def _tiny(
    model_id: str,
    family: str,
    arch: dict[str, Any],
    description: str,
    params_m: float,
    summary_dim: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> ModelEntry:
    """A tiny random-init test variant: width 64, patch 8, 64 px."""
    return ModelEntry(
        id=model_id,
        family=family,
        arch=arch,
        description=description,
        license="Apache-2.0",
        params_m=params_m,
        patch_size=8,
        preferred_resolution=64,
        max_resolution=64,
        mean=mean,
        std=std,
        summary_dim=summary_dim,
        feature_dim=64,
        tasks=_CLIP_TASKS,
        test_only=True,
    )


_TINY_VIT = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
_TINY_TOWER = {"image_size": 64, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32, "mlp_ratio": 2.0}

register(
    _tiny(
        "test-clip-tiny",
        "timm",
        {"timm_name": "vit_base_patch16_clip_224", "kwargs": _TINY_VIT},
        "tiny random-init CLIP-style timm ViT (pre-norm, class token) for tests",
        0.08,
        64,
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
    )
)
register(
    _tiny(
        "test-siglip-tiny",
        "timm",
        {"timm_name": "vit_so400m_patch16_siglip_256", "kwargs": _TINY_VIT},
        "tiny random-init SigLIP-style timm ViT (attention-pool head) for tests",
        0.12,
        64,
        HALF_MEAN_STD,
        HALF_MEAN_STD,
    )
)
register(
    _tiny(
        "test-openclip-tiny",
        "open_clip",
        {"model_cfg": {"embed_dim": 32, "vision_cfg": _TINY_TOWER}},
        "tiny random-init open_clip image tower (class-token pooling, projection to 32) for tests",
        0.09,
        32,
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
    )
)
register(
    _tiny(
        "test-nvclip-tiny",
        "open_clip",
        {
            "model_cfg": {
                "embed_dim": 32,
                "init_logit_bias": -10.0,
                "vision_cfg": {**_TINY_TOWER, "no_ln_pre": True, "pool_type": "avg", "final_ln_after_pool": True},
            }
        },
        "tiny random-init CLIPA-style open_clip tower (as NV-CLIP: average pool, LN after pool) for tests",
        0.09,
        32,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
)
