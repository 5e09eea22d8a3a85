"""ONNX export of CLIP models, with TAO's graph I/O names, tokenizer files beside the graphs, and verification.

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
:func:`vfmkit.models.text.tokenizers.load_tokenizer_folder`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from vfmkit.export.onnx import export_onnx
from vfmkit.export.verify import VerifyResult, verify_onnx
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


@dataclass
class ClipExportResult:
    """What :func:`export_clip_onnx` wrote.

    Attributes:
        files: graph name (``vision``, ``text`` or ``combined``) -> ``.onnx`` path.
        tokenizer_dir: the saved tokenizer.
        verification: graph name -> onnxruntime-vs-PyTorch differences (when verified).
    """

    files: dict[str, Path]
    tokenizer_dir: Path
    verification: dict[str, VerifyResult] = field(default_factory=dict)


def export_clip_onnx(
    model: ClipModel,
    out: str | Path,
    encoder_type: EncoderType = "separate",
    resolution: int | None = None,
    opset: int = 17,
    verify_images: torch.Tensor | None = None,
    verify_texts: Sequence[str] | None = None,
    tolerance: float = 1e-4,
    metadata: dict[str, str] | None = None,
) -> ClipExportResult:
    """Export a CLIP model to ONNX (see the module docstring), save its tokenizer, and verify with onnxruntime.

    Args:
        model: the model (exported in eval mode on its device).
        out: the ``.onnx`` path (``separate``: ``<stem>_vision.onnx`` and ``<stem>_text.onnx`` are written beside it).
        encoder_type: ``separate`` or ``combined``.
        resolution: the graph's fixed input side (default: the model's preferred resolution).
        opset: ONNX operator set (>= 17).
        verify_images: float (B, 3, R, R) RGB in [0, 1] real images; with ``verify_texts`` (B strings for
            ``combined``) the graphs are compared with PyTorch and an error raised above ``tolerance``.
        verify_texts: texts to verify the text graph with.
        tolerance: max abs difference allowed.
        metadata: extra ONNX metadata strings.

    Returns:
        The files written and the verification results.

    Raises:
        ExportError: export or verification failure (the files are removed only by the exporter on its own failure).
    """
    out = Path(out)
    stem = out.with_suffix("")
    side = resolution or model.preprocessing.preferred_resolution[0]
    image = verify_images if verify_images is not None else torch.rand(2, 3, side, side)
    tokens = model.tokenizer.encode(list(verify_texts) if verify_texts is not None else ["a photo", "a diagram"])
    meta = {**_metadata(model, side), **(metadata or {})}
    graphs: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], tuple[tuple[str, ...], tuple[str, ...]], Path]] = {}
    if encoder_type == "separate":
        graphs["vision"] = (VisionGraph(model), (image,), VISION_IO, Path(f"{stem}_vision.onnx"))
        graphs["text"] = (
            TextGraph(model),
            (tokens.input_ids, tokens.attention_mask),
            TEXT_IO,
            Path(f"{stem}_text.onnx"),
        )
    elif encoder_type == "combined":
        rows = min(len(image), len(tokens.input_ids))
        inputs = (image[:rows], tokens.input_ids[:rows], tokens.attention_mask[:rows])
        graphs["combined"] = (CombinedGraph(model), inputs, COMBINED_IO, out)
    else:
        raise ValueError(f"encoder_type must be combined or separate, got {encoder_type!r}")
    result = ClipExportResult(files={}, tokenizer_dir=model.tokenizer.save(Path(f"{stem}_tokenizer")))
    verify = verify_images is not None or verify_texts is not None
    for name, (module, inputs, (input_names, output_names), path) in graphs.items():
        export_onnx(module, inputs, path, input_names, output_names, {**meta, "graph": name}, opset=opset)
        result.files[name] = path
        if verify:
            result.verification[name] = verify_onnx(path, module, inputs, tolerance)
    return result


def _metadata(model: ClipModel, side: int) -> dict[str, str]:
    return {
        "task": "clip",
        "model_id": model.model_id,
        "embed_dim": str(model.embed_dim),
        "resolution": json.dumps([side, side]),
        "context_length": str(model.context_length),
        "tokenizer": json.dumps(model.tokenizer.describe()),
        "input_range": "RGB float in [0, 1], normalised inside the graph",
    }
