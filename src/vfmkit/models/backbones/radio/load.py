"""Load a RADIO model from ``hf-hub:`` sources, local folders or files, in either published layout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.models.backbones.radio.checkpoint import RadioCheckpoint, read_hf_layout, read_torchhub_layout
from vfmkit.models.backbones.radio.config import RadioConfig
from vfmkit.models.backbones.radio.derive import adaptor_head_prefixes, config_from_checkpoint
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.utils.text import error_reason
from vfmkit.weights.report import LoadReport
from vfmkit.weights.sources import HUB_PREFIX, fetch_hub_file, local_path, parse_hub

logger = logging.getLogger(__name__)

_TORCHHUB_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar")
_DAMAGED_CONTENT_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError, ArithmeticError)
"""What a damaged checkpoint that still unpickles / parses can raise (values of the wrong kind, shape or range)."""


def read_radio_checkpoint(source: str | Path) -> RadioCheckpoint:
    """Read a RADIO checkpoint from ``hf-hub:org/repo[@rev][/file]``, a folder or a file.

    A folder (or repo) in the Hugging Face layout has ``config.json`` + ``model.safetensors``; otherwise a folder must
    hold exactly one torch.hub ``*.pth.tar``. A ``.safetensors`` file needs its ``config.json`` beside it.

    Raises:
        ModelNotFoundError: nothing at that path; WeightsError: unreadable or not a RADIO checkpoint.
    """
    source = str(source)
    if source.startswith(HUB_PREFIX):
        ref = parse_hub(source)
        if ref.filename and ref.filename.endswith(_TORCHHUB_SUFFIXES):
            return read_torchhub_layout(fetch_hub_file(ref, ref.filename), source)
        weights_name = ref.filename or "model.safetensors"
        config = fetch_hub_file(ref, "config.json")
        return read_hf_layout(config, fetch_hub_file(ref, weights_name), source)
    path = local_path(source)
    if path.is_dir():
        if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            return read_hf_layout(path / "config.json", path / "model.safetensors", source)
        candidates = sorted(p for p in path.iterdir() if p.name.endswith(_TORCHHUB_SUFFIXES))
        if len(candidates) != 1:
            raise WeightsError(
                f"{path}: expected config.json + model.safetensors (Hugging Face layout) or exactly one *.pth.tar "
                f"(torch.hub layout), found {[p.name for p in candidates] or 'neither'}"
            )
        return read_torchhub_layout(candidates[0], source)
    if path.suffix == ".safetensors":
        return read_hf_layout(path.with_name("config.json"), path, source)
    return read_torchhub_layout(path, source)


def model_state_dict(ckpt: RadioCheckpoint, cfg: RadioConfig, report: LoadReport) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under :class:`RadioBackbone` key names; skipped keys go to ``report.ignored``."""
    wanted = {a.name for a in cfg.adaptors}
    heads = {}
    for name in wanted:
        head, feat = adaptor_head_prefixes(ckpt, name)
        heads.update({head: f"adaptors.{name}.head_mlp.", feat: f"adaptors.{name}.feat_mlp."})
    heads.pop(None, None)
    state = {}
    for key, value in ckpt.state_dict.items():
        target = _target_key(key, heads)
        if target is None:
            report.ignored.append(key)
            continue
        if target.endswith(".grandma"):
            target = target[: -len("grandma")] + "gamma"
            report.converted.append(target)
        state[target] = value
    return state


def _target_key(key: str, heads: dict[str, str]) -> str | None:
    if key == "summary_idxs" or key in ("model.reg_token", "model.head.weight", "model.head.bias"):
        return None
    for prefix, target in heads.items():
        if key.startswith(prefix):
            return target + key[len(prefix) :]
    if key.startswith(("heads.", "projections.", "adaptors.")):
        return None  # an adaptor that was not asked for
    return key


def load_radio_checkpoint(
    source: str | Path,
    adaptors: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
) -> RadioBackbone:
    """Build the model a RADIO checkpoint describes and load it key for key.

    Args:
        source: ``hf-hub:...``, a folder or a file (see :func:`read_radio_checkpoint`).
        adaptors: adaptor heads to attach (must be in the checkpoint).
        defaults: :class:`RadioConfig` fields known from the registry (resolutions, ViTDet window).

    Returns:
        The model in eval mode, float32; ``model.load_report`` tells what happened to every key.

    Raises:
        WeightsError: missing or unexpected backbone keys, shape mismatches, unknown adaptors, or a damaged file
            whose content does not describe a RADIO model (one line naming ``source``).
    """
    try:
        return _load_radio(source, adaptors, defaults)
    except _DAMAGED_CONTENT_ERRORS as err:  # a readable pickle/JSON holding values of the wrong kind or shape
        raise WeightsError(f"{source}: not a usable RADIO checkpoint ({error_reason(err)})") from None


def _load_radio(source: str | Path, adaptors: Sequence[str], defaults: dict[str, Any] | None) -> RadioBackbone:
    ckpt = read_radio_checkpoint(source)
    cfg = config_from_checkpoint(ckpt, adaptors, defaults)
    report = LoadReport(source=str(source), ignored=list(ckpt.dropped), converted=list(ckpt.converted))
    state = model_state_dict(ckpt, cfg, report)
    model = RadioBackbone(cfg)
    report.load_exact(model, state)
    model.load_report = report
    logger.info(report.summary())
    return model.eval()


def require_existing(source: str) -> None:
    """Raise ModelNotFoundError for a local path that does not exist (hub sources are checked when fetched)."""
    if not source.startswith(HUB_PREFIX) and not Path(source).expanduser().exists():
        raise ModelNotFoundError(f"no such file or folder: {source}")
