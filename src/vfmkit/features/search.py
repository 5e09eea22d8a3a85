"""``vfm search``: nearest images of a query image or text, over an index (or exact search on the embeddings).

Image queries are embedded exactly as the collection was: the model, adaptors, resolution and runtime that the
manifest (or the index record) names, with weights whose fingerprint must equal the recorded one (other weights are
refused). Text queries need a text tower in the space of the indexed vectors: a CLIP family embedded through its
``summary`` (the tower's own projection), or RADIO embedded with a CLIP/SigLIP adaptor (``--adaptor clip``,
``siglip`` or ``siglip2-g``) whose ``adaptor.<name>.summary`` is indexed; the CLIP registry supplies the matching
text tower, or the caller passes a :class:`~vfmkit.models.clip.ClipModel` (e.g. a ``vfm clip train`` run). Its image
tower must carry the same weights as the embedding model, so text and images meet in one space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmkit.data.preprocess import preprocess_image
from vfmkit.errors import DataError, VfmError
from vfmkit.features.embed import output_tensors, resolve_model
from vfmkit.features.index import LoadedIndex, default_vectors_key, exact_search, index_paths_for, load_index
from vfmkit.features.reader import open_embeddings
from vfmkit.features.runners import RuntimeOptions, make_runner
from vfmkit.models.backbones.base import Backbone
from vfmkit.weights.fingerprint import weights_fingerprint

TEXT_HELP = (
    "text queries need a text tower in the space of the indexed vectors: embed with a CLIP model's image tower "
    "(`vfm clip models`), or with RADIO and --adaptor clip / siglip / siglip2-g (then index adaptor.<name>.summary), "
    "or pass --text-model"
)


@dataclass(frozen=True)
class SearchHit:
    """One result: ``rank`` (1 = best), cosine ``score``, the image ``path`` and its ``row``."""

    rank: int
    score: float
    path: str
    row: int


class Collection:
    """What searches run over: an index, or (without one) the embeddings themselves by exact search.

    Attributes:
        facts: the embedding run's facts (model, weights_fingerprint, resolution, what, adaptors, runtime).
        vectors: the indexed tensor name; paths: the image of each row; kind: the index kind or ``exact``.
    """

    def __init__(self, location: str | Path, index: str | Path | None = None) -> None:
        location = Path(location).expanduser()
        self.index: LoadedIndex | None = None
        default_index = index_paths_for(location)[0] if location.suffix != ".faiss" else location
        if index is not None or location.suffix == ".faiss" or default_index.is_file():
            self.index = load_index(index or location)
            self.facts, self.vectors, self.paths = (
                self.index.meta["facts"],
                self.index.meta["vectors"],
                self.index.paths,
            )
            self.kind = self.index.meta["kind"]
        else:
            view = open_embeddings(location)
            self.view, self.vectors = view, default_vectors_key(view)
            self.facts, self.paths, self.kind = view.facts, view.paths, "exact"
        self.location = location

    @property
    def dim(self) -> int:
        return int(self.index.meta["dim"]) if self.index is not None else int(self.view[self.vectors].shape[1])

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """The ``k`` best rows for each query vector (q, d) (normalised here), best first."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise VfmError(f"query vectors are {queries.shape[1:]}-d, the index holds {self.dim}-d vectors")
        if self.index is not None:
            scores, rows = self.index.search(queries, k)
        else:
            scores, rows = exact_search(self.view[self.vectors], queries, min(k, len(self.paths)))
        return [
            [
                SearchHit(rank + 1, float(s), self.paths[r], int(r))
                for rank, (s, r) in enumerate(zip(ss, rr, strict=True))
                if r >= 0
            ]
            for ss, rr in zip(scores, rows, strict=True)
        ]


def runtime_options_from_tag(tag: str) -> RuntimeOptions:
    """The :class:`RuntimeOptions` that reproduce a runtime tag (``torch-fp32``, ``torch-bf16``,
    ``onnxruntime-int8-opset17`` ...).

    Raises:
        VfmError: a tag no runtime here produces.
    """
    parts = str(tag).split("-")
    if parts[0] == "torch" and len(parts) == 2 and parts[1] in ("fp32", "bf16", "fp16"):
        return RuntimeOptions(runtime="torch", dtype=parts[1])
    if parts[0] == "onnxruntime" and len(parts) >= 2 and parts[1] in ("fp32", "int8"):
        return RuntimeOptions(runtime="onnxruntime", int8=parts[1] == "int8")
    raise VfmError(f"the embeddings were computed by runtime {tag!r}, which this vfmkit cannot reproduce")


def load_recorded_model(facts: dict) -> Backbone:
    """The backbone the facts name (with their adaptors), checked against the recorded weights fingerprint.

    Raises:
        DataError: other weights than the embeddings were made with.
    """
    backbone, _ = resolve_model(facts["model"], facts.get("adaptors") or ())
    recorded = facts.get("weights_fingerprint")
    if recorded and weights_fingerprint(backbone) != recorded:
        raise DataError(
            f"the weights of {facts['model']} are not those the embeddings were made with (fingerprint "
            f"{weights_fingerprint(backbone)[:12]}, recorded {recorded[:12]}); re-embed or use the same weights"
        )
    return backbone


class ImageQueries:
    """Embeds query images as the collection was embedded: ``queries(images)`` -> float32 (n, d) vectors.

    Args:
        collection: the searched collection (its facts name the model, resolution and runtime).
        backbone: the recorded model, already loaded and checked (None: load it).
    """

    def __init__(self, collection: Collection, backbone: Backbone | None = None) -> None:
        facts = collection.facts
        self.backbone = backbone or load_recorded_model(facts)
        self.runner = make_runner(self.backbone, facts["model"], runtime_options_from_tag(facts["runtime"]))
        self.size = tuple(facts["resolution"])
        self.key, self.what = collection.vectors, "summary"

    def __call__(self, images: Sequence[str | Path | Image.Image]) -> np.ndarray:
        batch = torch.stack([preprocess_image(image, self.runner.preprocessing, self.size) for image in images])
        with torch.inference_mode():
            outputs = output_tensors(self.runner(batch), self.what)
        return outputs[self.key].float().cpu().numpy()


def vectors_adaptor(vectors: str) -> str | None:
    """``adaptor.siglip.summary`` -> ``siglip``; ``summary`` -> None."""
    return vectors.split(".")[1] if vectors.startswith("adaptor.") else None


def registry_text_model(facts: dict, vectors: str):
    """The CLIP registry model whose image tower is the embedding model (with the indexed adaptor).

    Raises:
        VfmError: no such model (the message says how to get a text tower).
    """
    from vfmkit.models.clip_zoo import CLIP_MODELS, load_clip_model
    from vfmkit.models.registry import find_entry

    entry = find_entry(str(facts["model"]))
    adaptor = vectors_adaptor(vectors)
    matches = [
        clip
        for clip in CLIP_MODELS.entries(include_test=True)
        if entry is not None and clip.vision_entry.id == entry.id and adaptor in clip.adaptor_texts
    ]
    if not matches:
        raise VfmError(f"{facts['model']} ({vectors}) has no text tower: {TEXT_HELP}")
    return load_clip_model(matches[0].id, adaptor_name=adaptor)


class TextQueries:
    """Embeds query texts into the collection's space: ``queries(texts)`` -> float32 (n, d) vectors.

    Args:
        collection: the searched collection.
        clip_model: the CLIP model whose text tower to use; None: the registry's (:func:`registry_text_model`).
        backbone: the recorded embedding model, loaded and checked (None: load it) to compare image towers.

    Raises:
        VfmError: no text tower for these vectors, or a text model whose image tower differs from the embedding
            model (other weights, another adaptor, an added projection, another width).
    """

    def __init__(self, collection: Collection, clip_model=None, backbone: Backbone | None = None) -> None:
        self.model = clip_model if clip_model is not None else registry_text_model(collection.facts, collection.vectors)
        check_text_model(self.model, backbone or load_recorded_model(collection.facts), collection)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode():
            return self.model.encode_text(self.model.tokenize(list(texts))).float().cpu().numpy()


def check_text_model(clip_model, backbone: Backbone, collection: Collection) -> None:
    """Refuse a text model whose image side is not the one that embedded the collection (see :class:`TextQueries`)."""
    adaptor = vectors_adaptor(collection.vectors)
    tower = clip_model.visual
    name = getattr(clip_model, "model_id", "") or "the text model"
    if tower.adaptor_name != adaptor or tower.projection is not None:
        side = f"adaptor {tower.adaptor_name}" if tower.adaptor_name else "its summary"
        extra = " through a trained projection" if tower.projection is not None else ""
        raise VfmError(f"{name} pairs text with {side}{extra}, but the index holds {collection.vectors}: {TEXT_HELP}")

    def include(key: str) -> bool:
        return not key.startswith("adaptors.") or (adaptor is not None and key.startswith(f"adaptors.{adaptor}."))

    if weights_fingerprint(tower.backbone, include) != weights_fingerprint(backbone, include):
        raise VfmError(
            f"the image tower of {name} has other weights than {collection.facts['model']}, which embedded the "
            "collection: its text embeddings would not be in the same space (embed with that tower's weights)"
        )
    if clip_model.embed_dim != collection.dim:
        raise VfmError(f"{name} embeds text as {clip_model.embed_dim}-d vectors, the index holds {collection.dim}-d")
