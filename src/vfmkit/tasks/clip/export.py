"""ONNX export plans of CLIP models (run by the engine's export skeleton), with TAO's graph I/O names and the
tokenizer files beside the graphs.

``encoder_type``:

- ``separate``: ``<stem>_vision.onnx`` (``image`` float (B, 3, H, W) RGB in [0, 1] -> ``image_embedding`` (B, D),
  ``logit_scale`` (B,), ``logit_bias`` (B,)) and ``<stem>_text.onnx`` (``input_ids`` int64 (B, L),
  ``attention_mask`` int64 (B, L) -> ``text_embedding`` (B, D), ``logit_scale``, ``logit_bias``);
- ``combined``: ``<stem>.onnx`` with inputs ``image, input_ids, attention_mask`` (one batch axis) and outputs
  ``image_embedding, text_embedding, logit_scale, logit_bias``.

Embeddings are L2-normalised; ``logit_scale`` is the multiplier ``exp(log scale)`` (as open_clip's forward returns it)
and ``logit_bias`` the bias (0 for a model without one), both repeated per row so every output has the dynamic
batch axis. As in TAO the attention mask is accepted and ignored (the towers attend to the padded sequence they were
trained on); it enters the graph only through a zero-weighted term so exporters keep the input. Normalisation
(mean/std) is inside the graph. The tokenizer is saved to ``<stem>_tokenizer/`` (reload with
:func:`vfmkit.models.text.tokenizers.load_tokenizer_folder`). The engine verifies every graph with onnxruntime on
real images and captions of the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from vfmkit.engine.taskdef import ExportPlan
from vfmkit.models.clip import ClipModel

EncoderType = Literal["combined", "separate"]
VISION_IO = (("image",), ("image_embedding", "logit_scale", "logit_bias"))
TEXT_IO = (("input_ids", "attention_mask"), ("text_embedding", "logit_scale", "logit_bias"))
COMBINED_IO = (
    ("image", "input_ids", "attention_mask"),
    ("image_embedding", "text_embedding", "logit_scale", "logit_bias"),
)


def _scalars(model: ClipModel, rows: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows,) exp(log scale) and (rows,) bias (zeros without a bias), in ``like``'s dtype and device."""
    scale = model.logit_scale.exp().to(like.dtype).expand(rows)
    bias = model.logit_bias if model.logit_bias is not None else torch.zeros((), device=like.device)
    return scale, bias.to(like.dtype).expand(rows)


class VisionGraph(nn.Module):
    """``image`` -> ``image_embedding, logit_scale, logit_bias``."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.model.encode_image(image)
        return (embedding, *_scalars(self.model, image.shape[0], embedding))


class TextGraph(nn.Module):
    """``input_ids, attention_mask`` -> ``text_embedding, logit_scale, logit_bias`` (mask accepted, ignored)."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.model.encode_text(input_ids)
        embedding = embedding + attention_mask[:, :1].to(embedding.dtype) * 0.0
        return (embedding, *_scalars(self.model, input_ids.shape[0], embedding))


class CombinedGraph(nn.Module):
    """``image, input_ids, attention_mask`` -> ``image_embedding, text_embedding, logit_scale, logit_bias``."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.vision = VisionGraph(model)
        self.text = TextGraph(model)

    def forward(
        self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        image_embedding, scale, bias = self.vision(image)
        return image_embedding, self.text(input_ids, attention_mask)[0], scale, bias


def export_plans(
    model: ClipModel,
    encoder_type: EncoderType,
    images: torch.Tensor,
    texts: Sequence[str],
    verify: bool = True,
) -> list[ExportPlan]:
    """The graphs of ``encoder_type`` as engine export plans (see the module docstring).

    Args:
        model: the model (exported in eval mode).
        encoder_type: ``separate`` (a ``_vision`` and a ``_text`` plan) or ``combined`` (one plan).
        images: float (B, 3, R, R) RGB in [0, 1]: real preprocessed images at the export resolution R (the example
            and verification inputs of the image graph).
        texts: captions for the text graph's example and verification inputs (``combined``: B of them are used).
        verify: give each plan its inputs as ``verify_inputs``.

    Raises:
        ValueError: an unknown ``encoder_type``.
    """
    tokens = model.tokenizer.encode(list(texts))
    meta = _metadata(model)
    model = model.eval()
    if encoder_type == "separate":
        vision = (images,)
        text = (tokens.input_ids, tokens.attention_mask)
        return [
            _plan(VisionGraph(model), vision, VISION_IO, {**meta, "graph": "vision"}, "_vision", verify),
            _plan(TextGraph(model), text, TEXT_IO, {**meta, "graph": "text"}, "_text", verify),
        ]
    if encoder_type == "combined":
        rows = min(len(images), len(tokens.input_ids))
        inputs = (images[:rows], tokens.input_ids[:rows], tokens.attention_mask[:rows])
        return [_plan(CombinedGraph(model), inputs, COMBINED_IO, {**meta, "graph": "combined"}, "", verify)]
    raise ValueError(f"encoder_type must be combined or separate, got {encoder_type!r}")


def _plan(module: nn.Module, inputs: tuple, io: tuple, metadata: dict, suffix: str, verify: bool) -> ExportPlan:
    names, outputs = io
    return ExportPlan(module.eval(), inputs, list(names), list(outputs), metadata, suffix, inputs if verify else None)


def save_tokenizer_beside(model: ClipModel, files: Sequence[Path]) -> Path:
    """Save the tokenizer to ``<stem>_tokenizer/`` beside exported graphs (``model_vision.onnx`` and
    ``model_text.onnx``, or ``model.onnx`` -> ``model_tokenizer/``); returns the folder."""
    first = Path(files[0])
    stem = first.stem.removesuffix("_vision").removesuffix("_text")
    return model.tokenizer.save(first.with_name(f"{stem}_tokenizer"))


def _metadata(model: ClipModel) -> dict[str, str]:
    return {
        "model_id": model.model_id,
        "embed_dim": str(model.embed_dim),
        "context_length": str(model.context_length),
        "tokenizer": json.dumps(model.tokenizer.describe()),
        "input": "image: float32 (batch, 3, H, W) RGB in [0, 1], normalised inside the graph; input_ids, "
        "attention_mask: int64 (batch, context_length) from the tokenizer saved beside the graph",
        "outputs": "image_embedding / text_embedding: float32 (batch, embed_dim), L2-normalised; logit_scale: "
        "exp(log scale) and logit_bias per row; pair score = logit_scale * cosine + logit_bias",
    }
