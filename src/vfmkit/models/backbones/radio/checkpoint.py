"""Reading the two published RADIO checkpoint layouts into one form.

- Hugging Face: ``config.json`` (``args`` + adaptor configs) and ``model.safetensors`` with ``radio_model.*`` keys.
- torch.hub: a ``.pth.tar`` pickle ``{"args": Namespace, "state_dict"[, "state_dict_ema"]}`` with ``base_model.*``,
  ``input_conditioner.*``, ``_heads.<t>.*``, ``_feature_projections.<t>.*``, ``_feature_normalizer.*`` and
  ``_intermediate_feature_normalizer.*`` keys; raw training checkpoints may hold spectral parametrizations.

Both are turned into a :class:`RadioCheckpoint` whose ``state_dict`` uses neutral prefixes: ``model.``,
``input_conditioner.``, ``heads.<t>.``, ``projections.<t>.``, ``feature_normalizer.``, ``inter_feature_normalizer.``,
with every tensor materialised in float32.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vfmkit.errors import WeightsError
from vfmkit.weights.safe_load import load_pickle_checkpoint, load_safetensors

_HUB_PREFIXES = {
    "base_model.inner.": "model.",  # DINOv2-arch students (RADIOv2.5-g) nest the ViT in `inner`
    "base_model.": "model.",
    "input_conditioner.": "input_conditioner.",
    "_heads.": "heads.",
    "_feature_projections.": "projections.",
    "_feature_normalizer.": "feature_normalizer.",
    "_intermediate_feature_normalizer.": "inter_feature_normalizer.",
}
_HF_PREFIXES = {
    "radio_model.model.": "model.",
    "radio_model.input_conditioner.": "input_conditioner.",
    "radio_model.adaptors.": "adaptors.",
    "radio_model.feature_normalizer.": "feature_normalizer.",
    "radio_model.inter_feature_normalizer.": "inter_feature_normalizer.",
    "radio_model.summary_idxs": "summary_idxs",
}
_PARAM_MARK = ".parametrizations.weight."


@dataclass
class RadioCheckpoint:
    """A RADIO checkpoint in neutral form.

    Attributes:
        source: where it was read from (for messages).
        layout: ``hf`` or ``torchhub``.
        args: the training args as a dict.
        hf_config: the Hugging Face ``config.json`` (without ``args``), empty for torch.hub files.
        state_dict: neutral-prefix keys -> float32 tensors.
        dropped: raw keys that matched no known prefix (training state).
        converted: keys materialised from training form.
    """

    source: str
    layout: str
    args: dict[str, Any]
    hf_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)


def read_hf_layout(config_path: Path, weights_path: Path, source: str) -> RadioCheckpoint:
    """Read ``config.json`` + ``model.safetensors``.

    Raises:
        WeightsError: unreadable files or a config without ``args``.
    """
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{config_path}: not a readable JSON config ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("args"), dict):
        raise WeightsError(f"{config_path}: field 'args' (the RADIO training args) is missing; not a RADIO config")
    raw = load_safetensors(weights_path)
    state, dropped = _strip_prefixes(raw, _HF_PREFIXES)
    hf_config = {k: v for k, v in config.items() if k != "args"}
    return RadioCheckpoint(source, "hf", dict(config["args"]), hf_config, _to_float32(state), dropped)


def read_torchhub_layout(path: Path, source: str) -> RadioCheckpoint:
    """Read a torch.hub ``.pth.tar``: EMA weights take precedence; training-form weights are materialised.

    Raises:
        WeightsError: unsafe or unreadable pickle, or one without ``args`` / a state dict.
    """
    payload = load_pickle_checkpoint(path)
    if not isinstance(payload, dict) or "args" not in payload:
        raise WeightsError(f"{path}: expected a dict with 'args' and 'state_dict' (torch.hub RADIO layout)")
    args = payload["args"]
    args = dict(vars(args)) if hasattr(args, "__dict__") else dict(args)
    use_ema = "state_dict_ema" in payload
    raw = payload.get("state_dict_ema") if use_ema else payload.get("state_dict")
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: field 'state_dict' is missing or not a dict of tensors")
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    raw, converted = materialize_parametrizations(raw, spectral_settings(args, use_ema))
    state, dropped = _strip_prefixes(raw, _HUB_PREFIXES)
    return RadioCheckpoint(source, "torchhub", args, {}, _to_float32(state), dropped, converted)


def _strip_prefixes(raw: dict[str, Any], prefixes: dict[str, str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    state, dropped = {}, []
    for key, value in raw.items():
        for prefix, target in prefixes.items():
            if key.startswith(prefix) and isinstance(value, torch.Tensor):
                rest = key[len(prefix) :].replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
                state[target + rest] = value
                break
        else:
            dropped.append(key)
    return state, dropped


def _to_float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


@dataclass(frozen=True)
class SpectralSettings:
    """Spectral-norm settings of a raw training checkpoint: epsilon and power-iteration steps."""

    eps: float
    power_iterations: int = 1


def spectral_settings(args: dict[str, Any], use_ema: bool) -> SpectralSettings | None:
    """Spectral settings of a raw checkpoint, or None when its weights are plain (EMA, or no reparam)."""
    if use_ema:
        return None
    spectral = args.get("spectral_reparam")
    if isinstance(spectral, dict):
        return SpectralSettings(float(spectral.get("eps", 1e-12)), int(spectral.get("n_power_iterations", 1)))
    return SpectralSettings(1e-6) if spectral else None


def materialize_parametrizations(
    raw: dict[str, Any], spectral: SpectralSettings | None
) -> tuple[dict[str, Any], list[str]]:
    """Turn ``<layer>.parametrizations.weight.original`` (+ spectral parts) into ``<layer>.weight``.

    Per spectral part: ``W' = W * k / (u^T W v + eps)`` in float32, ``k = softplus(scale) + 0.05`` when
    ``_sn_version`` is 2, else ``k = scale``. u and v are refined from their stored values by the power-iteration
    steps the reference loader runs when it registers the parametrization (1 by default:
    ``u = normalize(W v); v = normalize(W^T u)``); the fixtures confirm it (with 0 steps parity is off by 5e-5).
    ``attn.qkv`` weights are split in 3 row chunks (``parts.{0,1,2}``), SwiGLU ``w12`` in 2; a chunk without
    entries is left unscaled. Without ``spectral`` (EMA weights) or spectral entries (DAMP) the original is only
    renamed.

    Returns:
        The state dict with plain weights, and the list of converted weight keys.
    """
    out = {k: v for k, v in raw.items() if _PARAM_MARK not in k}
    converted = []
    for key in [k for k in raw if k.endswith(_PARAM_MARK + "original")]:
        layer = key[: -len(_PARAM_MARK + "original")]
        weight = raw[key].float()
        mark = layer + _PARAM_MARK + "0."
        extras = {k[len(mark) :]: v for k, v in raw.items() if k.startswith(mark)}
        if extras and spectral is not None:
            weight = _apply_spectral(layer, weight, extras, spectral)
        out[layer + ".weight"] = weight
        converted.append(layer + ".weight")
    return out, converted


def _apply_spectral(
    layer: str, weight: torch.Tensor, extras: dict[str, torch.Tensor], spectral: SpectralSettings
) -> torch.Tensor:
    if not any(k.startswith("parts.") for k in extras):
        return _spectral_scale(weight, extras, spectral)
    num_parts = (
        3
        if layer.endswith("qkv")
        else 2
        if layer.endswith("w12")
        else 1 + max(int(k.split(".")[1]) for k in extras if k.startswith("parts."))
    )
    chunks = list(weight.chunk(num_parts, dim=0))
    for i, chunk in enumerate(chunks):
        part = {k[len(f"parts.{i}.") :]: v for k, v in extras.items() if k.startswith(f"parts.{i}.")}
        if part:
            chunks[i] = _spectral_scale(chunk, part, spectral)
    return torch.cat(chunks, dim=0)


def _spectral_scale(weight: torch.Tensor, part: dict[str, torch.Tensor], spectral: SpectralSettings) -> torch.Tensor:
    u, v, scale = part["_u"].float(), part["_v"].float(), part["scale"].float()
    for _ in range(spectral.power_iterations):
        u = F.normalize(torch.mv(weight, v), dim=0, eps=spectral.eps)
        v = F.normalize(torch.mv(weight.T, u), dim=0, eps=spectral.eps)
    version = int(part["_sn_version"]) if "_sn_version" in part else 1
    k = F.softplus(scale) + 0.05 if version == 2 else scale
    sigma = torch.dot(u, torch.mv(weight, v))
    return weight * k / (sigma + spectral.eps)


def grid_side(num_positions: int, source: str) -> int:
    """Side of the square position grid stored as (1, G*G, D)."""
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise WeightsError(f"{source}: pos_embed has {num_positions} positions, not a square grid")
    return side
