"""Registry entries of the RADIO family and its builder.

Architectures are the ones the published checkpoints' ``args`` describe (radio.md / radio-reference.md §3); when
weights are loaded the checkpoint's own args and tensor shapes are authoritative and these are only defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vfmkit.errors import WeightsError
from vfmkit.models.backbones.radio.config import AdaptorConfig, RadioConfig
from vfmkit.models.backbones.radio.load import load_radio_checkpoint
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.models.factory import register_family
from vfmkit.models.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ModelEntry, register

OPEN_MODEL_LICENSE = "NVIDIA Open Model License (commercial use allowed)"
NC_LICENSE = "NVIDIA RADIO license (non-commercial)"

_VIT = {
    "B": dict(embed_dim=768, depth=12, num_heads=12),
    "L": dict(embed_dim=1024, depth=24, num_heads=16),
    "H": dict(embed_dim=1280, depth=32, num_heads=16),
    "g": dict(embed_dim=1536, depth=40, num_heads=24),
    "SO400M": dict(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=4304 / 1152),
}
# cls tokens, registers and summary slots of each generation (radio-reference.md §3)
_V2_TOKENS = dict(num_cls_tokens=4, num_registers=4, summary_idxs=(0, 1, 2))
_V4_TOKENS = dict(num_cls_tokens=3, num_registers=7, summary_idxs=(0, 1))


def _params_m(arch: dict[str, Any]) -> float:
    """Backbone parameters in millions, counted on a meta-device instance (no memory, no init)."""
    with torch.device("meta"):
        model = RadioBackbone(RadioConfig(**{k: v for k, v in arch.items() if k != "adaptors"}))
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


def _entry(
    id_: str,
    size: str,
    description: str,
    source: str,
    *,
    alt: tuple[str, ...] = (),
    license_: str = OPEN_MODEL_LICENSE,
    tokens: dict[str, Any] = _V2_TOKENS,
    adaptors: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    preferred: int = 512,
    arch: dict[str, Any] | None = None,
) -> ModelEntry:
    arch = {**_VIT[size], **tokens, **(arch or {})}
    return register(
        ModelEntry(
            id=id_,
            family="radio",
            arch=arch,
            description=description,
            license=license_,
            params_m=_params_m(arch),
            patch_size=arch.get("patch_size", 16),
            preferred_resolution=preferred,
            max_resolution=arch.get("max_resolution", 2048),
            mean=OPENAI_CLIP_MEAN,
            std=OPENAI_CLIP_STD,
            summary_dim=arch["embed_dim"] * len(arch["summary_idxs"]),
            feature_dim=arch["embed_dim"],
            source=source,
            alt_sources=alt,
            adaptors=adaptors,
            aliases=aliases,
        )
    )


def _register_c_radio_v2() -> None:
    for size, width in (("B", "base"), ("L", "large"), ("H", "huge")):
        s = size.lower()
        _entry(
            f"c-radio-v2-{s}",
            size,
            f"C-RADIOv2 ViT-{size}/16 (plain ViT blocks, 4 cls + 4 registers)",
            f"hf-hub:nvidia/C-RADIOv2-{size}",
            adaptors=("clip", "siglip", "dino_v2", "sam"),
            aliases=(
                f"c_radio_v2_vit_{width}_patch16",
                f"c_radio_v2_vit_{width}_patch16_224",
                f"radio_v2-{s}",
                f"c-radio_v2-{s}",
            ),
        )
    _entry(
        "c-radio-v2-g",
        "g",
        "C-RADIOv2 ViT-g/16 (ViTDet mode with 8 global blocks available)",
        "hf-hub:nvidia/C-RADIOv2-g",
        alt=("hf-hub:nvidia/C-RADIOv2-g/c-radio_v2-g_half.pth.tar",),
        aliases=("c-radio_v2-g", "c_radio_v2_vit_giant_patch16"),
        preferred=768,
        arch=dict(vitdet_num_global=8),
    )


def _register_c_radio_v3() -> None:
    files = {
        "b": "c-radio_v3-b_half.pth.tar",
        "l": "c-radio-v3_l_half.pth.tar",
        "h": "c-radio_v3-h_half.pth.tar",
        "g": "c-radio_v3-g_half.pth.tar",
    }
    widths = {"b": "base", "l": "large", "h": "huge", "g": "giant"}
    for s, file in files.items():
        size = s.upper() if s != "g" else "g"
        siglip = "siglip2-g" if s in ("h", "g") else "siglip2"
        tao = (f"c_radio_v3_vit_{widths[s]}_patch16_reg4_dinov2",) if s != "g" else ()
        _entry(
            f"c-radio-v3-{s}",
            size,
            f"C-RADIOv3 ViT-{size}/16 (DINOv2-style blocks with LayerScale; no ViTDet)",
            f"hf-hub:nvidia/C-RADIOv3-{size}",
            alt=(f"hf-hub:nvidia/C-RADIOv3-{size}/{file}",),
            adaptors=("clip", siglip, "dino_v2", "sam"),
            aliases=(f"c-radio_v3-{s}", f"radio_v3-{s}", f"c_radio_v3_{s}", *tao),
            arch=dict(init_values=1e-5, supports_vitdet=False),
        )


def _register_c_radio_v4() -> None:
    variants = (("H", "h", "c_radio_v4_vit_huge_patch16"), ("SO400M", "so400m", "c_radio_v4_vit_so400m_patch16"))
    for size, s, tao in variants:
        _entry(
            f"c-radio-v4-{s}",
            size,
            f"C-RADIOv4 ViT-{size}/16 (3 cls + 7 registers; teachers SigLIP2-g, DINOv3, SAM3)",
            f"hf-hub:nvidia/C-RADIOv4-{size}",
            alt=(f"hf-hub:nvidia/C-RADIOv4-{size}/c-radio_v4-{s}_half.pth.tar",),
            tokens=_V4_TOKENS,
            adaptors=("siglip2-g", "dino_v3", "sam3"),
            aliases=(f"c-radio_v4-{s}", tao),
        )


def _register_radio_v25() -> None:
    files = {"b": "radio-v2.5-b_half.pth.tar", "l": "radio-v2.5-l_half.pth.tar", "h": "radio_v2.5-h.pth.tar"}
    for s, file in files.items():
        size = s.upper()
        _entry(
            f"radio-v2.5-{s}",
            size,
            f"RADIOv2.5 ViT-{size}/16 (ViTDet mode available, 4 global blocks)",
            f"hf-hub:nvidia/RADIO/{file}",
            license_=NC_LICENSE,
            preferred=768,
            adaptors=("clip", "siglip", "dino_v2", "sam"),
            aliases=(f"radio_v2.5-{s}", f"radio-v2.5-{s}_half"),
        )
    _entry(
        "radio-v2.5-g",
        "g",
        "RADIOv2.5 DINOv2-g/14 student (SwiGLU, LayerScale, final norm; layout read from the reference, unverified)",
        "hf-hub:nvidia/RADIO/radio_v2.5-g.pth.tar",
        license_=NC_LICENSE,
        preferred=896,
        aliases=("radio_v2.5-g", "radio-g"),
        arch=dict(
            patch_size=14,
            max_resolution=1792,
            cpe_max_size=1792,
            init_values=1e-5,
            ffn="swiglu",
            mlp_ratio=8192 / 1536,
            model_norm=True,
            embedder_bias=True,
            num_cls_tokens=1,
            num_registers=4,
            summary_idxs=(0,),
            vitdet_num_global=8,
        ),
    )


def _register_test_variants() -> None:
    """Tiny random-init variants of each generation (width 64) so tests and demos run the real builder."""
    siglip = dict(name="siglip", token_slot=1, summary_mlp=("v2", 64, 32, 40, 1), feature_mlp=("v2", 64, 32, 24, 1))
    common = dict(embed_dim=64, num_heads=2, cpe_max_size=256, max_resolution=256)
    variants = {
        "v2": dict(depth=2, **_V2_TOKENS, adaptors=[siglip], teachers=("clip", "siglip", "dino_v2", "sam")),
        "v3": dict(depth=2, **_V2_TOKENS, init_values=1e-5, supports_vitdet=False),
        "v4": dict(depth=3, **_V4_TOKENS, mlp_ratio=4304 / 1152),
        # RADIOv2.5-g style: DINOv2 student (patch 14, SwiGLU, LayerScale, embedder bias, final norm, 1 cls token)
        "v2.5g": dict(
            depth=2,
            patch_size=14,
            cpe_max_size=224,
            max_resolution=224,
            init_values=1e-5,
            ffn="swiglu",
            model_norm=True,
            embedder_bias=True,
            num_cls_tokens=1,
            num_registers=4,
            summary_idxs=(0,),
        ),
    }
    for version, arch in variants.items():
        arch = {**common, **arch}
        patch = arch.get("patch_size", 16)
        register(
            ModelEntry(
                id=f"test-radio-{version}-tiny",
                family="radio",
                arch=arch,
                description=f"tiny random-init RADIO{version}-style model for tests and the demo",
                license="Apache-2.0 (random weights)",
                params_m=None,
                patch_size=patch,
                preferred_resolution=4 * patch,
                max_resolution=arch["max_resolution"],
                mean=OPENAI_CLIP_MEAN,
                std=OPENAI_CLIP_STD,
                summary_dim=64 * len(arch["summary_idxs"]),
                feature_dim=64,
                adaptors=tuple(a["name"] for a in arch.get("adaptors", [])),
                test_only=True,
            )
        )


def _registry_defaults(entry: ModelEntry, vitdet_window_size: int | None) -> dict[str, Any]:
    """RadioConfig fields that come from the registry rather than the checkpoint."""
    arch = entry.arch
    if vitdet_window_size and not arch.get("supports_vitdet", True):
        raise WeightsError(f"{entry.id} does not support ViTDet windowed attention (the reference refuses it too)")
    defaults = dict(
        preferred_resolution=entry.preferred_resolution,
        max_resolution=entry.max_resolution,
        vitdet_window_size=vitdet_window_size,
    )
    defaults.update({k: arch[k] for k in ("supports_vitdet", "vitdet_num_global") if k in arch})
    return defaults


def build_radio(
    entry: ModelEntry,
    pretrained: bool,
    adaptors: Sequence[str] = (),
    vitdet_window_size: int | None = None,
    checkpoint: str | Path | None = None,
) -> RadioBackbone:
    """Build a RADIO registry entry: load its published checkpoint (or ``checkpoint``, a local file or folder in
    either layout), or random init when not ``pretrained``.

    With adaptors requested and a primary source that lacks them (some Hugging Face safetensors), the entry's
    torch.hub file is tried next.

    Raises:
        WeightsError: weights not available offline, or adaptors the checkpoint (or test variant) lacks.
    """
    defaults = _registry_defaults(entry, vitdet_window_size)
    if pretrained:
        sources = [str(checkpoint)] if checkpoint is not None else [entry.source, *entry.alt_sources]
        for index, source in enumerate(sources):
            try:
                return load_radio_checkpoint(source, adaptors=adaptors, defaults=defaults)
            except WeightsError as err:
                if index == len(sources) - 1 or "is not in the checkpoint" not in str(err):
                    raise
    arch = {k: v for k, v in entry.arch.items() if k != "adaptors"}
    known = {a["name"]: a for a in entry.arch.get("adaptors", [])}
    missing = [a for a in adaptors if a not in known]
    if missing:
        raise WeightsError(
            f"{entry.id}: adaptor(s) {missing} are not available without weights (random init has "
            f"{sorted(known) or 'none'}); adaptor sizes come from the checkpoint"
        )
    cfg = RadioConfig(**{**arch, **defaults}, adaptors=[AdaptorConfig(**known[a]) for a in adaptors])
    return RadioBackbone(cfg)


_register_c_radio_v2()
_register_c_radio_v3()
_register_c_radio_v4()
_register_radio_v25()
_register_test_variants()
register_family("radio", build_radio)
