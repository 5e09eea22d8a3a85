"""Zero-shot classification: a text classifier built from class names and prompt templates.

The classifier is open_clip's ``build_zero_shot_classifier``: for each class every template is filled in, the text
embeddings are L2-normalised, averaged and re-normalised; image logits are ``100 * image_embedding @ classifier``
(open_clip, CLIP_benchmark and RADIO's zero-shot script all do this). Template sets: ``openai`` (the 80 ImageNet
prompts of CLIP), ``simple`` (open_clip's 7), or a file: one template per line with ``{}`` or ``{c}`` where the class
name goes (blank lines and ``#`` comments skipped), or a JSON list of such strings.

:func:`zeroshot_source` labels every image of a source and writes a CSV; when the source is a folder of class
folders named like the classes, it also reports top-1 / top-5 accuracy and mean per-class recall.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from vfmkit.data.images import list_image_files, list_subfolders
from vfmkit.data.preprocess import preprocess_images
from vfmkit.errors import DataError
from vfmkit.models.clip import ClipModel
from vfmkit.tasks.clip.metrics import zeroshot_metrics
from vfmkit.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

TEMPLATE_SETS = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}


@dataclass(frozen=True)
class Template:
    """A prompt template: ``{}`` or ``{c}`` is replaced by the class name."""

    text: str

    def __call__(self, class_name: str) -> str:
        return self.text.replace("{c}", class_name).replace("{}", class_name)


def load_templates(templates: str | Path | Sequence[str]) -> list:
    """``openai`` / ``simple`` (open_clip's lists), a templates file, or a list of template strings.

    Raises:
        DataError: an unreadable or empty file, or a template without ``{}`` / ``{c}`` (the message names it).
    """
    if isinstance(templates, str) and templates in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[templates])
    if isinstance(templates, (str, Path)):
        path = Path(templates).expanduser()
        if not path.is_file():
            raise DataError(f"templates {str(templates)!r}: expected openai, simple or a templates file")
        lines = read_lines(path, "templates file")
        if path.suffix == ".json":
            lines = json.loads("\n".join(lines))
        source = str(path)
    else:
        lines, source = list(templates), "templates"
    bad = [t for t in lines if not isinstance(t, str) or ("{}" not in t and "{c}" not in t)]
    if not lines or bad:
        raise DataError(f"{source}: every template needs a {{}} or {{c}} placeholder, got {bad[:1] or 'none'}")
    return [Template(t) for t in lines]


def read_lines(path: Path, what: str, comments: bool = True) -> list[str]:
    """The stripped non-empty lines of a UTF-8 text file (``#`` comment lines skipped when ``comments``).

    Raises:
        DataError: missing or unreadable (the message names ``what`` and the file).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what} {path}: {err}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [line for line in lines if not (comments and line.startswith("#"))]


def load_class_names(path: str | Path) -> list[str]:
    """Class names, one per line (blank lines and ``#`` comments skipped).

    Raises:
        DataError: unreadable, empty, or with duplicate names (the message names the file and the name).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"classes file {path} does not exist (expected one class name per line)")
    names = read_lines(path, "classes file")
    if not names:
        raise DataError(f"classes file {path} lists no class names")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"classes file {path}: class {name!r} is listed twice")
        seen.add(name)
    return names


@torch.no_grad()
def build_classifier(
    model: ClipModel,
    class_names: Sequence[str],
    templates: str | Path | Sequence[str] = "openai",
    batch_classes: int = 10,
) -> torch.Tensor:
    """float (D, C) zero-shot classifier: per class, the renormalised mean of its normalised template embeddings.

    Built by open_clip's ``build_zero_shot_classifier`` on the model's device.
    """
    device = next(model.parameters()).device
    return build_zero_shot_classifier(
        model, model.tokenizer, list(class_names), load_templates(templates), batch_classes, device=device
    )


def zeroshot_logits(image_embeddings: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """(N, C) logits ``100 * image_embeddings @ classifier`` of L2-normalised (N, D) embeddings."""
    return 100.0 * image_embeddings @ classifier.to(image_embeddings.device, image_embeddings.dtype)


@dataclass
class ZeroShotResult:
    """Zero-shot labels of an image source.

    Attributes:
        files: the N images, in source order.
        class_names: the C classes.
        top_indices: int64 (N, k) class indices, best first.
        top_scores: float (N, k) softmax probabilities over the classes of ``100 * cosine``.
        labels: int64 (N,) true classes when the source is a class-folder tree, else None.
        metrics: ``top1``, ``top5``, ``mean_per_class_recall``, ``images`` when ``labels`` is known.
        csv_path: the CSV written (None when not asked).
        no_accuracy: why a folder source gave no accuracy (folders that are not classes, loose images); empty when
            accuracy was computed or no class folders were meant.
    """

    files: list[Path]
    class_names: list[str]
    top_indices: torch.Tensor
    top_scores: torch.Tensor
    labels: torch.Tensor | None = None
    metrics: dict[str, float] | None = None
    csv_path: Path | None = None
    templates: str = ""
    extra: dict = field(default_factory=dict)
    no_accuracy: str = ""


def folder_class_names(root: str | Path) -> list[str]:
    """The sorted names of the class folders under ``root``.

    Raises:
        DataError: ``root`` is not a folder or has no sub-folders.
    """
    root = Path(root).expanduser()
    names = [p.name for p in list_subfolders(root)]  # hidden folders (.ipynb_checkpoints) are not classes
    if not names:
        raise DataError(f"{root}: expected a folder of class folders (or give a classes file)")
    return names


def folder_labels(root: Path, files: Sequence[Path], class_names: Sequence[str]) -> tuple[torch.Tensor | None, str]:
    """int64 (N,) labels when every image lies under ``root/<class name>/``; else None and why (empty when ``root``
    is not a folder or holds only loose images: no class folders were meant)."""
    if not root.is_dir():
        return None, ""
    index = {name: i for i, name in enumerate(class_names)}
    labels, loose, strangers = [], 0, set()
    for file in files:
        parts = Path(file).relative_to(root).parts
        if len(parts) < 2:
            loose += 1
        elif parts[0] not in index:
            strangers.add(parts[0])
        else:
            labels.append(index[parts[0]])
    if not loose and not strangers:
        return torch.tensor(labels, dtype=torch.int64), ""
    if not strangers:
        return None, "" if loose == len(files) else f"{loose} image(s) lie directly in {root}, outside class folders"
    return None, _not_classes(sorted(strangers), list(class_names), root)


def _not_classes(folders: list[str], class_names: list[str], root: Path) -> str:
    """Which folders of ``root`` are not class names, with the class each differs from only in case."""
    lower = {name.lower(): name for name in class_names}
    cased = [f"{folder!r} vs {lower[folder.lower()]!r}" for folder in folders if folder.lower() in lower]
    shown = ", ".join(repr(folder) for folder in folders[:10]) + (" ..." if len(folders) > 10 else "")
    hint = f"; names must match exactly, these differ in case: {', '.join(cased[:5])}" if cased else ""
    listed = ", ".join(class_names[:10]) + (" ..." if len(class_names) > 10 else "")
    return f"the folder(s) {shown} in {root} are not in the class list ({listed}){hint}"


@torch.no_grad()
def encode_image_files(
    model: ClipModel, files: Sequence[Path], batch_size: int = 32, resolution: int | None = None
) -> torch.Tensor:
    """float32 (N, D) L2-normalised image embeddings of image files (resized to the model's preferred resolution,
    or ``resolution``), on the CPU."""
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(files), batch_size):
        images = preprocess_images(list(files[start : start + batch_size]), model.preprocessing, resolution)
        rows.append(model.encode_image(images.to(device)).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, model.embed_dim)


def zeroshot_source(
    source: str | Path,
    model: ClipModel,
    class_names: Sequence[str] | str | Path,
    templates: str | Path | Sequence[str] = "openai",
    out_csv: str | Path | None = None,
    batch_size: int = 32,
    resolution: int | None = None,
    top_k: int = 5,
) -> ZeroShotResult:
    """Zero-shot labels for every image of ``source`` (a folder, glob, list file or image).

    Args:
        source: the images; a folder of class folders named like ``class_names`` also gives accuracy.
        model: the CLIP model (eval mode; its device is used).
        class_names: the names, or a classes file (one per line).
        templates: ``openai``, ``simple``, a templates file or a list of templates.
        out_csv: write ``image,prediction,score,top_k,top_k_scores[,label,correct]`` rows here (atomically).
        batch_size: images per forward.
        resolution: input side (default: the model's preferred resolution).
        top_k: predictions kept per image.

    Raises:
        DataError: no images, unreadable files, a bad classes or templates file.
    """
    names = list(class_names) if not isinstance(class_names, (str, Path)) else load_class_names(class_names)
    files = list_image_files(source)
    model.eval()
    classifier = build_classifier(model, names, templates)
    logits = zeroshot_logits(encode_image_files(model, files, batch_size, resolution), classifier.float().cpu())
    k = min(top_k, len(names))
    top_scores, top_indices = logits.softmax(dim=-1).topk(k, dim=-1)
    labels, no_labels = folder_labels(Path(source).expanduser(), files, names)
    metrics = zeroshot_metrics(logits, labels) if labels is not None else None
    result = ZeroShotResult(
        files,
        names,
        top_indices,
        top_scores,
        labels,
        metrics,
        templates=str(templates) if isinstance(templates, (str, Path)) else "custom",
        no_accuracy=no_labels,
    )
    if out_csv is not None:
        result.csv_path = write_predictions_csv(result, Path(out_csv))
    if metrics is not None:
        logger.info(
            "zero-shot on %s: top1 %.4f, mean per-class recall %.4f",
            source,
            metrics["top1"],
            metrics["mean_per_class_recall"],
        )
    return result


def write_predictions_csv(result: ZeroShotResult, path: Path) -> Path:
    """Write one row per image to ``path`` atomically (:func:`vfmkit.utils.atomic.atomic_output`)."""
    header = ["image", "prediction", "score", "top_k", "top_k_scores"]
    if result.labels is not None:
        header += ["label", "correct"]
    with atomic_output(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, file in enumerate(result.files):
            top = [result.class_names[j] for j in result.top_indices[i].tolist()]
            scores = [f"{s:.6f}" for s in result.top_scores[i].tolist()]
            row = [str(file), top[0], scores[0], ";".join(top), ";".join(scores)]
            if result.labels is not None:
                label = int(result.labels[i])
                row += [result.class_names[label], int(label == int(result.top_indices[i, 0]))]
            writer.writerow(row)
    return path


def summarise(result: ZeroShotResult) -> dict[str, float | int | str]:
    """A JSON-ready summary: image and class counts, the template set and the metrics (when known)."""
    summary: dict[str, float | int | str] = {
        "images": len(result.files),
        "classes": len(result.class_names),
        "templates": result.templates,
    }
    summary.update({k: (None if np.isnan(v) else v) for k, v in (result.metrics or {}).items()})
    return summary
