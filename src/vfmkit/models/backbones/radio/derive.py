"""Derive a :class:`RadioConfig` from a checkpoint's ``args`` and tensor shapes, and map its weights to the model.

Sizes (width, depth, MLP width, prefix tokens, position grid, patch size) come from the tensors; heads, teachers and
flags from ``args``. The mapping to :class:`RadioBackbone` keys renames LayerScale ``grandma`` to ``gamma``, drops
timm's unused ``reg_token`` and the heads of adaptors that were not asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vfmkit.errors import WeightsError
from vfmkit.models.backbones.radio.checkpoint import RadioCheckpoint, grid_side
from vfmkit.models.backbones.radio.config import AdaptorConfig, RadioConfig, count_registers, vit_kwargs_for

_IGNORED_BACKBONE_KEYS = ("model.reg_token", "model.head.weight", "model.head.bias")


def unique_teachers(args: dict[str, Any]) -> list[dict[str, Any]]:
    """Teacher dicts de-duplicated by name, first occurrence first."""
    seen, teachers = set(), []
    for teacher in args.get("teachers") or []:
        teacher = dict(teacher) if not isinstance(teacher, dict) else teacher
        if teacher.get("name") not in seen:
            seen.add(teacher.get("name"))
            teachers.append(teacher)
    return teachers


def summary_indices(ckpt: RadioCheckpoint) -> tuple[int, ...]:
    """Cls slots of the summary: the HF buffer when present, else the teachers with ``use_summary``."""
    if "summary_idxs" in ckpt.state_dict:
        return tuple(int(i) for i in ckpt.state_dict["summary_idxs"].tolist())
    if not ckpt.args.get("cls_token_per_teacher", True):
        return (0,)
    return tuple(i for i, t in enumerate(unique_teachers(ckpt.args)) if t.get("use_summary", True))


def _num_heads(arch: str, model_kwargs: dict[str, Any], source: str) -> int:
    try:
        return int(vit_kwargs_for(arch, model_kwargs)["num_heads"])
    except KeyError:
        pass
    if "num_heads" in model_kwargs:
        return int(model_kwargs["num_heads"])
    try:  # any other timm ViT name: read its head count from a meta-device instance (no memory, no weights)
        import timm

        with torch.device("meta"):
            vit = timm.create_model(arch, pretrained=False, **model_kwargs)
        return int(vit.blocks[0].attn.num_heads)
    except Exception:
        raise WeightsError(
            f"{source}: unknown architecture args.model={arch!r}; cannot tell its number of heads"
        ) from None


def _backbone_sizes(ckpt: RadioCheckpoint) -> dict[str, Any]:
    sd, src = ckpt.state_dict, ckpt.source
    try:
        embedder = sd["model.patch_generator.embedder.weight"]
        pos = sd["model.patch_generator.pos_embed"]
        prefix = sd["model.patch_generator.cls_token.token"]
    except KeyError as err:
        raise WeightsError(f"{src}: backbone key {err.args[0]} is missing; not a RADIO (CPE) checkpoint") from None
    embed_dim, patch_dim = embedder.shape
    patch_size = math.isqrt(patch_dim // 3)
    depth = 1 + max((int(k.split(".")[2]) for k in sd if k.startswith("model.blocks.")), default=-1)
    if depth == 0:
        raise WeightsError(f"{src}: no transformer blocks (model.blocks.*) in the checkpoint")
    fc1 = sd.get("model.blocks.0.mlp.fc1.weight")
    fc2 = sd.get("model.blocks.0.mlp.fc2.weight")
    swiglu = fc1 is not None and fc2 is not None and fc2.shape[1] * 2 == fc1.shape[0]  # packed SwiGLU fc1
    layer_scale = any(k.startswith("model.blocks.0.ls1.") for k in sd)
    return dict(
        embed_dim=embed_dim,
        depth=depth,
        patch_size=patch_size,
        mlp_ratio=fc1.shape[0] / embed_dim if fc1 is not None else 4.0,
        init_values=1e-5 if layer_scale else None,
        mlp_norm="model.blocks.0.mlp.norm.weight" in sd,
        ffn="swiglu" if swiglu else "mlp",
        qkv_bias="model.blocks.0.attn.qkv.bias" in sd,
        embedder_bias="model.patch_generator.embedder.bias" in sd,
        patch_norm="model.patch_generator.patch_normalizer.weight" in sd,
        cpe_max_size=grid_side(pos.shape[1], src) * patch_size,
        num_prefix=prefix.shape[0],
        model_norm="model.norm.weight" in sd,
    )


def config_from_checkpoint(
    ckpt: RadioCheckpoint, adaptors: Sequence[str] = (), defaults: dict[str, Any] | None = None
) -> RadioConfig:
    """The architecture of a checkpoint, with ``defaults`` (registry facts: resolutions, ViTDet) applied first.

    Raises:
        WeightsError: inconsistent shapes/args, or an adaptor the checkpoint does not carry.
    """
    args, src = ckpt.args, ckpt.source
    sizes = _backbone_sizes(ckpt)
    teachers = unique_teachers(args)
    num_cls = len(teachers) if args.get("cls_token_per_teacher", True) and teachers else 1
    registers = sizes.pop("num_prefix") - num_cls
    expected = count_registers(num_cls, args.get("register_multiple"), args.get("cpe_num_registers"))
    if registers < 0 or (teachers and registers != expected):
        raise WeightsError(
            f"{src}: cls_token.token has {num_cls + registers} rows but args imply {num_cls} cls + {expected} registers"
        )
    cfg = RadioConfig(**(defaults or {}))
    hf = ckpt.hf_config
    resolution = {}
    if hf.get("preferred_resolution"):
        resolution["preferred_resolution"] = int(max(hf["preferred_resolution"]))
    if hf.get("max_resolution"):
        resolution["max_resolution"] = int(hf["max_resolution"])
    if hf.get("vitdet_window_size"):
        resolution["vitdet_window_size"] = int(hf["vitdet_window_size"])
    return cfg.with_overrides(
        **sizes,
        **resolution,
        num_heads=_num_heads(str(args.get("model", "")), dict(args.get("model_kwargs") or {}), src),
        num_cls_tokens=num_cls,
        num_registers=registers,
        summary_idxs=summary_indices(ckpt),
        teachers=tuple(t.get("name", "") for t in teachers),
        feature_normalizer="feature_normalizer.mean" in ckpt.state_dict,
        **_intermediate_normalizer(ckpt),
        adaptors=[adaptor_config(ckpt, name, teachers) for name in adaptors],
    )


def _intermediate_normalizer(ckpt: RadioCheckpoint) -> dict[str, Any]:
    means = ckpt.state_dict.get("inter_feature_normalizer.means")
    if means is None:
        return {"num_intermediate_normalizers": 0}
    rotation = ckpt.state_dict["inter_feature_normalizer.rotation"]
    return {"num_intermediate_normalizers": means.shape[0], "intermediate_rotation_per_layer": rotation.ndim == 3}


def available_adaptors(ckpt: RadioCheckpoint) -> list[str]:
    """Names of the adaptors whose heads the checkpoint carries."""
    if ckpt.layout == "hf":
        return sorted({k.split(".")[1] for k in ckpt.state_dict if k.startswith("adaptors.")})
    names = []
    for index, teacher in enumerate(unique_teachers(ckpt.args)):
        name = teacher.get("name", "")
        if _head_prefix(ckpt, "heads", index, name) or _head_prefix(ckpt, "projections", index, name):
            names.append(name)
    return names


def _head_prefix(ckpt: RadioCheckpoint, kind: str, index: int, name: str) -> str | None:
    for prefix in (f"{kind}.{index}.", f"{kind}.{name}."):  # match on the trailing dot: heads.1 is not heads.10
        if any(k.startswith(prefix) for k in ckpt.state_dict):
            return prefix
    return None


def adaptor_head_prefixes(ckpt: RadioCheckpoint, name: str) -> tuple[str | None, str | None]:
    """Checkpoint prefixes of an adaptor's summary head and feature head (None where absent)."""
    if ckpt.layout == "hf":
        head, feat = f"adaptors.{name}.head_mlp.", f"adaptors.{name}.feat_mlp."
        has = lambda p: any(k.startswith(p) for k in ckpt.state_dict)  # noqa: E731
        return (head if has(head) else None), (feat if has(feat) else None)
    names = [t.get("name") for t in unique_teachers(ckpt.args)]
    index = names.index(name) if name in names else -1
    return _head_prefix(ckpt, "heads", index, name), _head_prefix(ckpt, "projections", index, name)


def adaptor_config(ckpt: RadioCheckpoint, name: str, teachers: list[dict[str, Any]]) -> AdaptorConfig:
    """The adaptor ``name`` as the checkpoint defines it (MLP kinds and sizes read from the weights)."""
    head, feat = adaptor_head_prefixes(ckpt, name)
    if head is None and feat is None:
        hint = " (some Hugging Face safetensors lack adaptor heads; the .pth.tar has them)"
        hint = hint if ckpt.layout == "hf" else ""
        carried = available_adaptors(ckpt) or "none"
        raise WeightsError(f"{ckpt.source}: adaptor {name!r} is not in the checkpoint; it carries {carried}{hint}")
    teacher = next((t for t in teachers if t.get("name") == name), {})
    slot = _token_slot(ckpt, name, teacher, teachers)
    upsample = int(teacher.get("fd_upsample_factor") or 1)
    hf_feature = ((ckpt.hf_config.get("adaptor_configs") or {}).get(name) or {}).get("feature") or {}
    upsample = int(hf_feature.get("upsample_factor") or upsample)
    return AdaptorConfig(
        name=name,
        token_slot=slot,
        summary_mlp=_mlp_spec(ckpt.state_dict, head, 1) if head else None,
        feature_mlp=_mlp_spec(ckpt.state_dict, feat, upsample) if feat else None,
        upsample_factor=upsample,
    )


def _token_slot(ckpt: RadioCheckpoint, name: str, teacher: dict, teachers: list[dict]) -> int:
    if not ckpt.args.get("cls_token_per_teacher", True):
        return 0
    if teacher.get("token_slot") is not None:
        return int(teacher["token_slot"])
    hf_cfg = (ckpt.hf_config.get("adaptor_configs") or {}).get(name) or {}
    if hf_cfg.get("head_idx") is not None:
        return int(hf_cfg["head_idx"])
    return [t.get("name") for t in teachers].index(name)


def _mlp_spec(sd: dict[str, torch.Tensor], prefix: str, upsample: int) -> tuple[str, int, int, int, int]:
    """(version, in, hidden, out, num_inner) of an adaptor MLP, read from its weights."""
    keys = {k[len(prefix) :] for k in sd if k.startswith(prefix)}
    if "mlp.final.2.weight" in keys:  # attention feature head
        fc1, final = sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.final.2.weight"]
        return "attn", fc1.shape[1], fc1.shape[0], final.shape[0] // upsample**2, 0
    fc1 = sd[prefix + "fc1.weight"]
    if "final.2.weight" in keys:
        inner = len({k.split(".")[1] for k in keys if k.startswith("blocks.")})
        return "v2", fc1.shape[1], fc1.shape[0], sd[prefix + "final.2.weight"].shape[0] // upsample**2, inner
    inner = len([k for k in keys if k.startswith("inner.") and k.endswith(".weight") and sd[prefix + k].ndim == 2])
    return "v1", fc1.shape[1], fc1.shape[0], sd[prefix + "fc2.weight"].shape[0] // upsample**2, inner
