"""``vfm clip predict``: L2-normalised image and/or text embeddings in one safetensors file plus an index, as
``vfm embed`` writes them.

Output (``predict.out``: a ``.safetensors`` file, or a folder that receives ``embeddings.safetensors``), float32:

- ``image_embeddings`` (N_img, D): one row per readable image of ``predict.source``, in the order of the index's
  ``files`` (unreadable images are listed under ``skipped`` with the reason);
- ``text_embeddings`` (N_txt, D): one row per non-empty line of ``predict.text_file``, in the order of ``texts``.

The index (``<stem>.index.json`` beside it) also records the model, the resolution, the tokenizer (cleaning,
``padding: max_length``) and the logit scale and bias, so pair scores ``logit_scale * cosine + logit_bias`` can be
computed from the file alone. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from vfmkit._version import __version__
from vfmkit.data.images import list_image_files
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.engine.taskdef import PredictResult, Trained
from vfmkit.errors import DataError, VfmError
from vfmkit.features.embed import extract_embeddings, index_path_for
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing
from vfmkit.models.clip import ClipModel
from vfmkit.tasks.clip.embeddings import encode_captions
from vfmkit.tasks.clip.zeroshot import read_lines

FORMAT = "vfmkit.clip_embeddings/1"


class ImageEmbedder(Backbone):
    """A CLIP model's image side as a backbone whose ``summary`` is the L2-normalised image embedding, so
    ``vfm embed``'s batched extraction (decoding, skipping unreadable files) runs it."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model
        self.embed_dim = self.summary_dim = model.embed_dim
        self.num_blocks = model.visual.backbone.num_blocks

    @property
    def preprocessing(self) -> Preprocessing:
        return self.model.preprocessing

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        summary = self.model.encode_image(images)
        return BackboneOutput(summary=summary, features=summary.new_zeros(len(summary), 0, self.embed_dim), grid=(0, 0))


def output_file(out: Path) -> Path:
    """``out`` itself when it names a ``.safetensors`` file, else ``out/embeddings.safetensors``."""
    out = Path(out)
    return out if out.suffix == ".safetensors" else out / "embeddings.safetensors"


def predict_embeddings(
    trained: Trained, source: Path | None, text_file: Path | None, out: Path, resolution: int, batch_size: int
) -> PredictResult:
    """Embed the images of ``source`` and the lines of ``text_file`` (either may be None, not both) into ``out``.

    Raises:
        VfmError: neither ``predict.source`` nor ``predict.text_file``; DataError: no image could be read, or an
            unreadable or empty text file.
    """
    if source is None and text_file is None:
        raise VfmError("predict.source (images) and/or predict.text_file (texts, one per line) is required")
    model: ClipModel = trained.model.eval()
    tensors: dict[str, torch.Tensor] = {}
    index: dict = {"files": [], "skipped": [], "texts": []}
    if source is not None:
        embeddings = extract_embeddings(
            ImageEmbedder(model), list_image_files(source), resolution, batch_size, progress=False, desc="predict"
        )
        tensors["image_embeddings"] = embeddings.tensors["summary"]
        index["files"] = [str(path) for path in embeddings.files]
        index["skipped"] = [{"path": str(s.path), "error": s.error} for s in embeddings.skipped]
    if text_file is not None:
        texts = read_lines(Path(text_file), "predict.text_file", comments=False)
        if not texts:
            raise DataError(f"predict.text_file {text_file}: no text lines")
        tensors["text_embeddings"] = encode_captions(model, texts, batch_size)
        index["texts"] = texts
    path = output_file(out)
    _write(path, tensors, _record(trained, resolution, tensors, index, path))
    written = len(index["files"]) + len(index["texts"])
    print(f"embedded {len(index['files'])} image(s) and {len(index['texts'])} text(s) -> {path}")
    skipped = [f"{s['path']}: {s['error']}" for s in index["skipped"]]
    return PredictResult(path, written, skipped)


def _record(trained: Trained, resolution: int, tensors: dict, index: dict, path: Path) -> dict:
    model: ClipModel = trained.model
    bias = model.logit_bias
    return {
        "format": FORMAT,
        "model": model.model_id,
        "checkpoint": str(trained.checkpoint) if trained.checkpoint is not None else None,
        "vfmkit_version": __version__,
        "resolution": [resolution, resolution],
        "embed_dim": model.embed_dim,
        "logit_scale": float(model.logit_scale.detach().exp()),
        "logit_bias": float(bias.detach()) if bias is not None else 0.0,
        "tokenizer": model.tokenizer.describe(),
        "features_file": path.name,
        "tensors": {key: list(value.shape) for key, value in tensors.items()},
        **index,
    }


def _write(path: Path, tensors: dict[str, torch.Tensor], record: dict) -> None:
    """The safetensors file and its index, each written to a temporary name and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    metadata = {"model": record["model"], "vfmkit_version": __version__, "index": index_path_for(path).name}
    try:
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_text(index_path_for(path), json.dumps(record, indent=2) + "\n")
