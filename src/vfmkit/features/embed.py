"""Batched feature extraction: image source -> safetensors file + index.

Output (``out``, e.g. ``features.safetensors``), every tensor float32 with one row per embedded image, rows in the
order of the index file's ``files`` list:

- ``summary``: (N, C) global embeddings (``what`` = ``summary`` or ``both``);
- ``spatial``: (N, D, h, w) patch features as NCHW maps (``what`` = ``spatial`` or ``both``);
- ``adaptor.<name>.summary`` (N, C_a) and ``adaptor.<name>.spatial`` (N, D_a, h_a, w_a) for each adaptor head the
  model was loaded with, following ``what`` likewise.

The safetensors metadata holds the model id, the input resolution (``HxW``), ``what``, the runtime that computed
the features (e.g. ``torch-fp32``, ``onnxruntime-int8-opset17``), the vfmkit version and the index file name. The
index (``<out stem>.index.json``, next to ``out``) holds the same and ``files`` (paths as listed, row order) and
``skipped``: ``[{"path", "error"}]`` for images that could not be read. Unreadable images are reported, skipped and
listed; they never leave a silent gap.

Every image is resized to one size (the model's preferred resolution, or N x N), so rows stack. All rows are held in
memory until the file is written: spatial features take N x D x h x w x 4 bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from vfmkit._version import __version__
from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.data.preprocess import get_preprocessing, preprocess_image, target_size
from vfmkit.data.webdataset import ImageRef
from vfmkit.errors import DataError, UnreadableFileError, VfmError
from vfmkit.features.progress import Progress, ProgressCallback
from vfmkit.features.runners import BackboneRunner, RuntimeOptions, make_runner
from vfmkit.features.sources import EmbedItem, ListingProblem
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing
from vfmkit.utils.atomic import atomic_output, atomic_write_text
from vfmkit.weights.fingerprint import weights_fingerprint

WHAT_CHOICES = ("summary", "spatial", "both")


@dataclass(frozen=True)
class SkippedImage:
    """An image that could not be read: its path and the reason."""

    path: Path
    error: str


@dataclass
class Embeddings:
    """Features of an image list held in memory.

    Attributes:
        tensors: key (``summary``, ``spatial``, ``adaptor.<name>.*``) -> float32 tensor, one row per entry of
            ``files``.
        files: the embedded images, in row order.
        skipped: the unreadable images, in listing order.
        resolution: (H, W) the images were resized to.
    """

    tensors: dict[str, torch.Tensor]
    files: list[Path]
    skipped: list[SkippedImage] = field(default_factory=list)
    resolution: tuple[int, int] = (0, 0)


@dataclass
class EmbedResult:
    """What :func:`embed_source` wrote: the features file, its index, and the embeddings themselves."""

    out: Path
    index: Path
    embeddings: Embeddings


class _ImageItems(Dataset):
    """Decodes and resizes image files / shard members; a failure is returned (not raised) so the caller can report
    it. Items: ``(position, image float32 (3, H, W) or None, error message, original (W, H) or None)``."""

    def __init__(self, items: Sequence[EmbedItem], preprocessing: Preprocessing, size: tuple[int, int]) -> None:
        self.items, self.preprocessing, self.size = list(items), preprocessing, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str, tuple[int, int] | None]:
        item = self.items[index]
        try:
            if isinstance(item, ListingProblem):
                raise UnreadableFileError(item.error)
            image = item.load() if isinstance(item, ImageRef) else load_image_rgb(item)
            return index, preprocess_image(image, self.preprocessing, self.size), "", image.size
        except DataError as exc:
            return index, None, str(exc), None


@dataclass
class DecodedBatch:
    """One decoded batch: ``indices`` (positions in the item list of the decoded images), ``images`` float32
    (len(indices), 3, H, W) in [0, 1] or None when the whole batch failed, ``sizes`` (original (W, H) per decoded
    image) and ``failed``: ``[(position, error message)]``."""

    indices: list[int]
    images: torch.Tensor | None
    sizes: list[tuple[int, int]]
    failed: list[tuple[int, str]]


def _collate(items: list[tuple[int, torch.Tensor | None, str, tuple[int, int] | None]]) -> DecodedBatch:
    good = [(index, tensor, size) for index, tensor, _, size in items if tensor is not None]
    failed = [(index, error) for index, tensor, error, _ in items if tensor is None]
    batch = torch.stack([tensor for _, tensor, _ in good]) if good else None
    return DecodedBatch([index for index, _, _ in good], batch, [size for _, _, size in good], failed)


def default_num_workers(num_items: int, batch_size: int, processes: int = 1) -> int:
    """Decoding processes: 0 when everything fits in one batch, else min(2, CPU count / processes)."""
    if num_items <= batch_size:
        return 0
    return max(0, min(2, (os.cpu_count() or 1) // max(processes, 1)))


def iter_decoded_batches(
    items: Sequence[EmbedItem],
    preprocessing: Preprocessing,
    size: tuple[int, int],
    batch_size: int = 32,
    num_workers: int | None = None,
) -> Iterator[DecodedBatch]:
    """Decode images (files or shard members) in a DataLoader, in order, and yield a :class:`DecodedBatch` each.

    Args:
        items: image paths, :class:`~vfmkit.data.webdataset.ImageRef` shard members or listing problems.
        preprocessing: the model's preprocessing.
        size: (H, W) every image is resized to.
        batch_size: images per batch.
        num_workers: decoding processes; None: :func:`default_num_workers`.
    """
    if batch_size < 1:
        raise VfmError(f"batch size must be at least 1, got {batch_size}")
    if num_workers is None:
        num_workers = default_num_workers(len(items), batch_size)
    loader = DataLoader(
        _ImageItems(items, preprocessing, size), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    yield from loader


def iter_image_batches(
    files: Sequence[Path],
    preprocessing: Preprocessing,
    size: tuple[int, int],
    batch_size: int = 32,
    num_workers: int | None = None,
):
    """Decode images in a DataLoader and yield ``(indices, batch, failed)`` per batch.

    Args:
        files: image paths.
        preprocessing: the model's preprocessing (sets nothing but validation here; ``size`` is final).
        size: (H, W) every image is resized to.
        batch_size: images per batch.
        num_workers: decoding processes; None: 0 when everything fits in one batch, else min(2, CPU count).

    Yields:
        ``indices`` (positions in ``files`` of the decoded images), ``batch`` float32 (len(indices), 3, H, W) in
        [0, 1] or None when the whole batch failed, and ``failed``: ``[(position, error message)]``.
    """
    for batch in iter_decoded_batches(files, preprocessing, size, batch_size, num_workers):
        yield batch.indices, batch.images, batch.failed


def output_tensors(output: BackboneOutput, what: str) -> dict[str, torch.Tensor]:
    """The tensors to store from one forward: float32, NCHW for spatial features."""
    tensors = {}
    heads = [("", output)] + [(f"adaptor.{name}.", head) for name, head in output.adaptors.items()]
    for prefix, head in heads:
        if what in ("summary", "both"):
            tensors[prefix + "summary"] = head.summary.float()
        if what in ("spatial", "both"):
            tensors[prefix + "spatial"] = head.spatial().float()
    return tensors


def extract_embeddings(
    model: Backbone | BackboneRunner,
    files: Sequence[str | Path],
    resolution: int | tuple[int, int] | None = None,
    batch_size: int = 32,
    what: str = "summary",
    num_workers: int | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    desc: str = "embed",
) -> Embeddings:
    """Run ``model`` over image files and keep the outputs in memory.

    Args:
        model: a backbone (eval mode) or a runner of one (:mod:`vfmkit.features.runners`); its adaptor heads are
            stored too.
        files: image paths; unreadable ones are skipped and listed in ``Embeddings.skipped``.
        resolution: None for the model's preferred resolution, N for N x N, or (H, W).
        batch_size: images per forward.
        what: ``summary``, ``spatial`` or ``both``.
        num_workers: decoding processes (see :func:`iter_image_batches`).
        progress: show progress on stderr.
        on_progress: called as ``on_progress(done, total)`` after each batch.
        desc: label of the progress bar / lines.

    Returns:
        The :class:`Embeddings`, rows in the order of ``files`` minus the skipped ones.

    Raises:
        VfmError: bad ``what``/``resolution``/``batch_size``; DataError: every image was unreadable.
    """
    if what not in WHAT_CHOICES:
        raise VfmError(f"what must be one of {', '.join(WHAT_CHOICES)}, got {what!r}")
    files = [Path(f) for f in files]
    if not files:
        raise DataError("no images to embed")
    preprocessing = get_preprocessing(model)
    size = target_size(preprocessing.preferred_resolution[::-1], preprocessing, resolution, "preferred")
    buffers: dict[str, torch.Tensor] = {}
    rows: list[int] = []
    failures: list[tuple[int, str]] = []
    bar = Progress(len(files), desc, enabled=progress, callback=on_progress)
    with torch.inference_mode():
        for indices, batch, failed in iter_image_batches(files, preprocessing, size, batch_size, num_workers):
            failures.extend(failed)
            if batch is not None:
                for key, value in output_tensors(model(batch), what).items():
                    if key not in buffers:
                        buffers[key] = torch.empty((len(files), *value.shape[1:]), dtype=torch.float32)
                    buffers[key][len(rows) : len(rows) + len(indices)] = value
                rows.extend(indices)
            bar.update(len(indices) + len(failed))
    bar.close()
    skipped = [SkippedImage(files[index], error) for index, error in sorted(failures)]
    if not rows:
        raise DataError(f"none of the {len(files)} images could be read; first error: {skipped[0].error}")
    tensors = {key: buffer[: len(rows)].clone() for key, buffer in buffers.items()}
    return Embeddings(tensors, [files[index] for index in rows], skipped, size)


def runtime_tag(runner: Backbone | BackboneRunner) -> str:
    """What computes the features: the runner's ``cache_tag``, ``torch-fp32`` for a bare backbone."""
    return str(getattr(runner, "cache_tag", "torch-fp32"))


def index_path_for(out: str | Path) -> Path:
    """The index file that goes with a features file: ``dir/name.safetensors`` -> ``dir/name.index.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".index.json")


def save_embeddings(
    embeddings: Embeddings,
    out: str | Path,
    model_id: str,
    what: str,
    runtime: str = "torch-fp32",
    model_facts: dict | None = None,
) -> Path:
    """Write ``embeddings`` to ``out`` (safetensors) and its index JSON; returns the index path.

    ``runtime`` names what computed the features (a runner's ``cache_tag``, e.g. ``onnxruntime-int8-opset17``);
    ``model_facts`` (``weights_fingerprint``, ``adaptors``) are added to the index record, so searches can load and
    check the same model.

    Raises:
        OSError: the output folder cannot be created or written (the error names the file or folder).
    """
    out = Path(out)
    index = index_path_for(out)
    height, width = embeddings.resolution
    metadata = {
        "model": model_id,
        "resolution": f"{height}x{width}",
        "what": what,
        "runtime": runtime,
        "vfmkit_version": __version__,
        "index": index.name,
        "row_order": f"rows follow the 'files' list of {index.name}",
    }
    record = {
        "format": "vfmkit.embeddings/1",
        **{key: metadata[key] for key in ("model", "what", "runtime", "vfmkit_version")},
        "resolution": [height, width],
        **(model_facts or {}),
        "features_file": out.name,
        "tensors": {key: list(value.shape) for key, value in embeddings.tensors.items()},
        "files": [str(path) for path in embeddings.files],
        "skipped": [{"path": str(item.path), "error": item.error} for item in embeddings.skipped],
    }
    with atomic_output(out) as tmp:  # a disk error names the file (safetensors' own error included)
        save_file({key: value.contiguous() for key, value in embeddings.tensors.items()}, str(tmp), metadata=metadata)
    atomic_write_text(index, json.dumps(record, indent=2) + "\n")
    return index


def resolve_model(model: str | Path | Backbone, adaptors: Sequence[str] = ()) -> tuple[Backbone, str]:
    """A backbone and the id to record for it: loads ``model`` when it is a name or path."""
    if isinstance(model, Backbone):
        return model, str(getattr(model, "model_id", type(model).__name__))
    from vfmkit.models.factory import load_backbone

    return load_backbone(model, adaptors=list(adaptors) or None), str(model)


def embed_source(
    source: str | Path | Sequence[str | Path],
    model: str | Path | Backbone,
    out: str | Path = "embeddings.safetensors",
    resolution: int | None = None,
    batch_size: int = 32,
    what: str = "summary",
    adaptors: Sequence[str] = (),
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    runtime: RuntimeOptions | None = None,
) -> EmbedResult:
    """Embed every image of a source and write the features file and its index (see the module docstring).

    Args:
        source: a folder, glob, list file or image file (see :func:`vfmkit.data.images.list_image_files`), or an
            explicit sequence of image paths.
        model: a registry id, ``hf-hub:`` source or checkpoint path, or a loaded backbone.
        out: the safetensors file to write (its folder is created).
        resolution: None for the model's preferred resolution, N for N x N.
        batch_size: images per forward.
        what: ``summary``, ``spatial`` or ``both``.
        adaptors: adaptor heads to load with ``model`` (ignored when ``model`` is a loaded backbone).
        progress: show progress on stderr.
        on_progress: ``on_progress(done, total)`` after each batch.
        runtime: how to run the model (:class:`RuntimeOptions`: PyTorch device/dtype/compile, or onnxruntime fp32 /
            int8); None: eager PyTorch on the model's device.

    Returns:
        An :class:`EmbedResult`.
    """
    files = list_image_files(source) if isinstance(source, (str, Path)) else [Path(s) for s in source]
    if what not in WHAT_CHOICES:
        raise VfmError(f"what must be one of {', '.join(WHAT_CHOICES)}, got {what!r}")
    backbone, model_id = resolve_model(model, adaptors)
    runner = make_runner(backbone, model_id, runtime)
    embeddings = extract_embeddings(
        runner, files, resolution, batch_size, what, progress=progress, on_progress=on_progress
    )
    loaded = list(adaptors) if not isinstance(model, Backbone) else list(getattr(backbone, "adaptors", {}))
    facts = {"weights_fingerprint": weights_fingerprint(backbone), "adaptors": loaded}
    index = save_embeddings(embeddings, out, model_id, what, runtime_tag(runner), facts)
    return EmbedResult(Path(out), index, embeddings)
