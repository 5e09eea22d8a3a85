"""CLIP text towers built by open_clip from its model configs, with text-only weight loading.

:class:`TextTower` wraps open_clip's own ``TextTransformer`` (built by ``open_clip.model._build_text_tower`` from a
model config's ``text_cfg``) and adds a contract: token ids must be exactly ``context_length`` wide (see
:mod:`vfmkit.models.text.tokenizers`). Its output is the tower's projected, unnormalised text embedding.

Weights come from a full CLIP checkpoint: only the text keys are read (lazily for safetensors, so the vision tower of
a 1B-parameter teacher is never loaded), from either open_clip layout: ``CLIP`` keeps the text modules at the top
level (``token_embedding``, ``positional_embedding``, ``transformer.*``, ``ln_final``, ``text_projection``),
``CustomTextCLIP`` under ``text.*``. What happened to every key is in a :class:`~vfmkit.weights.report.LoadReport`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from open_clip.model import _build_text_tower
from open_clip.transformer import TextTransformer
from torch import nn

from vfmkit.errors import ModelNotFoundError
from vfmkit.models.backbones.open_clip_family import read_state_dict
from vfmkit.weights.report import LoadReport
from vfmkit.weights.safe_load import read_safetensors

logger = logging.getLogger(__name__)

_TOP_LEVEL_TEXT = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
    "cls_emb",
)
LOGIT_KEYS = ("logit_scale", "logit_bias")
"""Scalars of a CLIP checkpoint kept beside the text weights (the pre-trained temperature and bias)."""


class TextTower(nn.Module):
    """An open_clip text transformer: int64 (B, context_length) ids -> float (B, output_dim) text embeddings.

    Args:
        text: the open_clip ``TextTransformer``.
    """

    def __init__(self, text: TextTransformer) -> None:
        super().__init__()
        self.text = text
        self.context_length = int(text.context_length)
        self.vocab_size = int(text.vocab_size)
        self.width = int(text.width)
        self.output_dim = int(text.output_dim or text.width)
        self.pool_type = text.pool_type
        self.causal = text.attn_mask is not None

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Projected text embeddings (not normalised).

        Args:
            token_ids: int64 (B, context_length) ids from the tower's tokenizer.

        Returns:
            float (B, output_dim).

        Raises:
            ValueError: ids that are not 2-D or not ``context_length`` wide (the tokenizer must always pad).
        """
        if token_ids.ndim != 2 or token_ids.shape[1] != self.context_length:
            raise ValueError(
                f"expected token ids of shape (B, {self.context_length}) (always padded to the context length), "
                f"got {tuple(token_ids.shape)}"
            )
        return self.text(token_ids)

    def no_weight_decay(self) -> set[str]:
        """Names (in this module) of the position embedding and class embedding."""
        return {f"text.{name}" for name in self.text.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass."""
        self.text.set_grad_checkpointing(enable)


def build_text_tower(model_cfg: dict[str, Any], model_id: str) -> TextTower:
    """A random-init :class:`TextTower` from an open_clip model config (``embed_dim``, ``text_cfg``, ``quick_gelu``).

    Raises:
        ModelNotFoundError: no ``text_cfg``, or a Hugging Face text model (``hf_model_name``: needs transformers).
    """
    text_cfg = model_cfg.get("text_cfg")
    if not text_cfg:
        raise ModelNotFoundError(f"{model_id}: the open_clip config has no text_cfg")
    if text_cfg.get("hf_model_name"):
        raise ModelNotFoundError(
            f"{model_id}: Hugging Face text models ({text_cfg['hf_model_name']}) are not supported"
        )
    cfg = {k: v for k, v in text_cfg.items() if k not in ("hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode")}
    text = _build_text_tower(model_cfg["embed_dim"], cfg, quick_gelu=model_cfg.get("quick_gelu", False))
    return TextTower(text)


def text_key(key: str) -> str | None:
    """The :class:`TextTower` name of a CLIP checkpoint key, or None for a non-text key."""
    key = key.removeprefix("_orig_mod.").removeprefix("module.")
    if key.startswith("text."):
        return key
    if key.startswith(_TOP_LEVEL_TEXT):
        return f"text.{key}"
    return None


def read_text_state(path: Path) -> tuple[dict[str, torch.Tensor], list[str], dict[str, float]]:
    """The text tensors of a CLIP checkpoint, the other keys, and the logit scale / bias scalars.

    Safetensors files are read lazily: only text tensors and the two scalars are materialised.

    Returns:
        (tower-named text tensors, ignored checkpoint keys, ``{"logit_scale": float, "logit_bias": float}`` for
        the scalars present).

    Raises:
        WeightsError: unreadable file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, keys = read_safetensors(path, select=_is_text_or_scalar)
    else:
        tensors = read_state_dict(path)
        keys = list(tensors)
    state, ignored, scalars = {}, [], {}
    for key in keys:
        target = text_key(key)
        if target is not None:
            state[target] = tensors[key]
        elif _bare(key) in LOGIT_KEYS and key in tensors:
            scalars[_bare(key)] = float(tensors[key].float().reshape(-1)[0])
        else:
            ignored.append(key)
    return state, ignored, scalars


def _is_text_or_scalar(key: str) -> bool:
    return text_key(key) is not None or _bare(key) in LOGIT_KEYS


def _bare(key: str) -> str:
    return key.removeprefix("_orig_mod.").removeprefix("module.")


def load_text_weights(tower: TextTower, path: Path, source: str) -> tuple[LoadReport, dict[str, float]]:
    """Load the text weights of a CLIP checkpoint into ``tower`` (strict over the tower's keys).

    Returns:
        The load report (also stored as ``tower.load_report``) and the checkpoint's logit scalars.

    Raises:
        WeightsError: missing or unexpected text keys, or shape mismatches.
    """
    state, ignored, scalars = read_text_state(path)
    report = LoadReport(source=source, ignored=ignored)
    report.load_exact(tower, state)
    tower.load_report = report
    logger.info(report.summary())
    return report, scalars
