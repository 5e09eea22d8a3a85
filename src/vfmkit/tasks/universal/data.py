"""Universal-segmentation data: a preflight of the splits (:mod:`vfmkit.tasks.universal.splits` reads the three
formats) and the dataset.

Training targets follow OneFormer's unified mapper (:mod:`vfmkit.tasks.universal.targets`): each sample draws a task
(``task_prob``) and gets, from its one segment-id map, ``semantic`` targets (one mask per class: the union of
its non-crowd segments), ``instance`` targets (non-crowd things only) or ``panoptic`` targets (every non-crowd
segment), plus the contrastive texts ("a photo with a {class}" per target in class order, padded with
"a {task} photo"). Crowd regions are never targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vfmkit.data.augment import EpochSeededDataset, sample_seed
from vfmkit.data.coco import annotation_dict
from vfmkit.data.dense_augment import JointAugment, eval_transform
from vfmkit.data.images import load_image_rgb
from vfmkit.data.preflight import check_samples
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.errors import DataError
from vfmkit.metrics.panoptic import VOID
from vfmkit.models.heads.mask2former.oneformer import task_tokens, tokenize_texts
from vfmkit.tasks.universal.categories import SegmentInfo
from vfmkit.tasks.universal.splits import PanopticSample, UniversalSplit, load_annotation
from vfmkit.tasks.universal.targets import draw_task, resolve_task_prob, semantic_map, target_texts, task_targets


@dataclass
class UniversalPreflightReport:
    """What :func:`preflight_universal` found.

    Attributes:
        splits: split name -> split (None when absent).
        segments: split name -> int64 (K,) non-crowd segments per category.
        crowd: split name -> crowd segments.
        void_pixels: split name -> VOID pixels.
        warnings: human-readable lines.
    """

    splits: dict[str, UniversalSplit | None]
    segments: dict[str, np.ndarray] = field(default_factory=dict)
    crowd: dict[str, int] = field(default_factory=dict)
    void_pixels: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def format(self) -> str:
        """A text report: segments per category and split, crowd / VOID counts, images, warnings."""
        names = [n for n in self.splits if n in self.segments]
        table = next(s for s in self.splits.values() if s is not None).categories
        rows = [["category", "kind", *names]]
        for k, category in enumerate(table.categories):
            kind = "thing" if category.isthing else "stuff"
            rows.append([f"{category.name} ({category.id})", kind, *(str(int(self.segments[n][k])) for n in names)])
        rows.append(["(crowd segments)", "", *(str(self.crowd[n]) for n in names)])
        rows.append(["(VOID pixels)", "", *(str(self.void_pixels[n]) for n in names)])
        rows.append(["images", "", *(str(len(self.splits[n])) for n in names)])
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["segments per category and split:"]
        lines += [
            "  " + "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), *map(str.rjust, r[2:], widths[2:])])
            for r in rows
        ]
        if self.warnings:
            lines += ["warnings:", *(f"  - {w}" for w in self.warnings)]
        return "\n".join(lines)


def preflight_universal(splits: Mapping[str, UniversalSplit | None], workers: int = 8) -> UniversalPreflightReport:
    """Check every annotation against its image before training: sizes, segment ids, categories.

    Every image and PNG / mask is decoded once by the shared preflight (:func:`vfmkit.data.preflight.check_samples`):
    a sample with an undecodable file is left out, listed and recorded; the report's splits are the cleaned ones.

    Raises:
        DataError: naming the file and the id: a PNG segment id absent from ``segments_info``, a PNG of another size
            than its image, unknown mask values; a training split without readable images, or without a single
            (non-crowd) segment to learn from.
    """
    report = UniversalPreflightReport(dict(splits))
    for name, split in splits.items():
        if split is None:
            report.warnings.append(f"no {name} split")
            continue
        if not len(split):
            if name == "train":
                raise DataError(f"the training split ({split.source}) holds no annotated images")
            report.warnings.append(f"the {name} split ({split.source}) holds no annotated images")
        checked = check_samples(
            split.samples, name, lambda s, sp=split: _check_sample(s, sp), lambda s: s.image, workers, "samples"
        )
        split = report.splits[name] = split.subset(checked.keep)
        if name == "train" and not len(split):
            raise DataError(f"the training split ({split.source}) holds no readable images (see above)")
        counts = np.zeros(len(split.categories), dtype=np.int64)
        empty = []
        for sample, (segments, void, unused) in zip(split.samples, checked.kept_values, strict=True):
            for segment in segments:
                counts[segment.category] += 0 if segment.iscrowd else 1
            report.crowd[name] = report.crowd.get(name, 0) + sum(s.iscrowd for s in segments)
            report.void_pixels[name] = report.void_pixels.get(name, 0) + void
            empty += [f"{Path(sample.annotation).name}: {unused}"] if unused else []
        if empty:
            report.warnings.append(f"{len(empty)} annotations list segments without pixels ({'; '.join(empty[:5])})")
        report.segments[name] = counts
        report.crowd.setdefault(name, 0)
        report.void_pixels.setdefault(name, 0)
        if name == "train" and not counts.sum():
            crowd = report.crowd[name]
            held = f"only {crowd} crowd segment(s), which are not training targets" if crowd else "no segments"
            raise DataError(
                f"the training split has no segments to learn from: its {len(split)} images hold {held} "
                f"({split.source})"
            )
        absent = [c.name for c, n in zip(split.categories.categories, counts, strict=True) if n == 0]
        if absent and len(split) and split.palette is None:
            report.warnings.append(f"{len(absent)} categories have no {name} segment: {', '.join(absent[:10])}")
    return report


def _check_sample(sample: PanopticSample, split: UniversalSplit) -> tuple[tuple[SegmentInfo, ...], int, list[int]]:
    """(segments, VOID pixels, listed segment ids without pixels) of one sample after decoding and checking it.

    Raises:
        UnreadableFileError: the image or its annotation does not decode; DataError: they disagree.
    """
    width, height = load_image_rgb(sample.image).size
    ids, segments = load_annotation(sample, split)
    annotation = sample.annotation
    if ids.shape != (height, width):
        raise DataError(
            f"annotation {annotation} is {ids.shape[1]}x{ids.shape[0]} but its image {sample.image} is "
            f"{width}x{height} (W x H); they must have the same size"
        )
    present, counts = np.unique(ids, return_counts=True)
    listed = {s.id for s in segments}
    unknown = [(int(i), int(n)) for i, n in zip(present, counts, strict=True) if i != VOID and i not in listed]
    if unknown:
        shown = ", ".join(f"{i} ({n} px)" for i, n in unknown[:5])
        raise DataError(
            f"panoptic PNG {annotation}: segment id(s) {shown} are not in segments_info of image {sample.image_id} "
            f"(listed: {sorted(listed)[:20]}); every non-zero PNG id must be listed"
        )
    void = int(counts[present == VOID].sum()) if (present == VOID).any() else 0
    return segments, void, sorted(listed - set(present.tolist()))


class UniversalDataset(EpochSeededDataset):
    """Images with per-task targets (training) or full-resolution ground truth (evaluation).

    Training items are augmented jointly with their segment-id map (:class:`~vfmkit.data.dense_augment.JointAugment`,
    crop padding is VOID), seeded by ``(seed, epoch, index)``; the task is drawn from its own stream of the same
    seed. Evaluation items are resized to ``size`` (bilinear antialiased, like ``predict``) with the ground truth kept
    at the image's resolution (metrics on original pixels).

    Args:
        split: the split.
        size: training crop / evaluation side (or (H, W)).
        train: training items (augmented, with targets).
        augment: the joint augmentation options (``dataset.augment``); required when ``train``.
        seed: the run seed.
        task_prob: {semantic, instance, panoptic} probabilities of the training task (sum 1; default panoptic).
        num_texts: contrastive texts per item (OneFormer: ``num_object_queries - n_ctx``; 0: none).
        task_seq_len: tokens of the task prompt (the model's ``task_seq_len``, 77).
        text_context_length: tokens per contrastive text (the model's ``text_context_length``, 77).
    """

    def __init__(
        self,
        split: UniversalSplit,
        size: int | tuple[int, int],
        train: bool = False,
        augment=None,
        seed: int = 0,
        task_prob: Mapping[str, float] | None = None,
        num_texts: int = 0,
        task_seq_len: int = 77,
        text_context_length: int = 77,
    ) -> None:
        if train and augment is None:
            raise ValueError("training items need the augmentation options")
        self.split, self.size, self.train, self.seed = split, size, bool(train), int(seed)
        self.thresholds = resolve_task_prob(task_prob or {"panoptic": 1.0})
        self.num_texts, self.task_seq_len, self.text_length = (
            int(num_texts),
            int(task_seq_len),
            int(text_context_length),
        )
        self.augment = JointAugment(size, augment, ignore_index=VOID) if self.train else None
        super().__init__()

    def __getitem__(self, index: int) -> dict:
        """Training: ``image`` float32 (3, S, S) in [0, 1], ``task`` str, ``labels`` int64 (T,), ``masks`` bool
        (T, S, S), ``task_tokens`` int64 (77,), ``text_tokens`` int64 (num_texts, 77) (when num_texts > 0),
        ``index``. Evaluation: ``image`` resized to ``size``, ``ids`` int64 (H, W) segment ids, ``segments``,
        ``semantic`` int64 (H, W) (``IGNORE`` on VOID), ``image_id``, ``index`` and, for COCO-instances data,
        ``objects`` (the image's COCO annotations: mask AP's ground truth).

        Raises:
            DataError: an unreadable file or an annotation of another size than its image.
        """
        index = int(index)
        sample = self.split.samples[index]
        image = pil_to_tensor(load_image_rgb(sample.image))
        ids, segments = load_annotation(sample, self.split)
        if tuple(ids.shape) != tuple(image.shape[-2:]):
            raise DataError(
                f"annotation {sample.annotation} is {tuple(ids.shape)} but image "
                f"{sample.image} is {tuple(image.shape[-2:])} (H, W); they must have the same size"
            )
        if not self.train:
            resized, _ = eval_transform([image], None, self.size)
            semantic = torch.from_numpy(semantic_map(ids, segments))
            return {
                "image": resized[0],
                "ids": torch.from_numpy(ids),
                "segments": segments,
                "semantic": semantic,
                "image_id": sample.image_id,
                "index": index,
                **({"objects": [annotation_dict(a) for a in sample.instances]} if sample.size is not None else {}),
            }
        seed = sample_seed(self.seed, self.epoch, index)
        images, id_map = self.augment([image], torch.from_numpy(ids), seed)
        task = draw_task(self.thresholds, sample_seed(self.seed, self.epoch, index, stream="task"))
        labels, masks = task_targets(id_map, segments, self.split.categories.isthing, task)
        item = {
            "image": images[0],
            "task": task,
            "labels": labels,
            "masks": masks,
            "index": index,
            "task_tokens": task_tokens([task], self.task_seq_len)[0],
        }
        if self.num_texts:
            texts = target_texts(labels.tolist(), self.split.categories.names, task, self.num_texts)
            item["text_tokens"] = tokenize_texts(texts, self.text_length)
        return item


def collate_universal(items: Sequence[dict]) -> dict:
    """Batch dataset items: ``images`` (B, 3, S, S) stacked, ``task_tokens`` / ``text_tokens`` stacked,
    ``targets`` a list of ``{"labels", "masks"}`` (training), every other key a list."""
    out: dict = {"images": torch.stack([item["image"] for item in items])}
    for key in ("task_tokens", "text_tokens"):
        if key in items[0]:
            out[key] = torch.stack([item[key] for item in items])
    if "labels" in items[0]:
        out["targets"] = [{"labels": item["labels"], "masks": item["masks"]} for item in items]
    for key in items[0]:
        if key not in ("image", "task_tokens", "text_tokens", "labels", "masks"):
            out[key if key != "index" else "indices"] = [item[key] for item in items]
    return out
