"""The classification preflight: images per class and split, unreadable files left out, warnings, clear errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vfmkit.data.preflight import check_samples
from vfmkit.errors import DataError
from vfmkit.tasks.classify.data import ClassificationSplit, load_split, preview, resolve_classes, split_folder
from vfmkit.tasks.classify.spec import ClassifyDataSpec


@dataclass(frozen=True)
class UnreadableImage:
    """An image file of a split that does not open (listed by :func:`preflight`, then left out)."""

    split: str
    path: Path
    reason: str


@dataclass
class PreflightReport:
    """What :func:`preflight` found; its splits are the cleaned ones training should use.

    Attributes:
        classes: class names in index order.
        splits: split name -> the split without its unreadable files, or ``None`` when that split does not exist.
        unreadable: the files left out, with the reason.
        warnings: human-readable lines (a class absent from val, a missing or empty val split...).
    """

    classes: list[str]
    splits: dict[str, ClassificationSplit | None]
    unreadable: list[UnreadableImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> ClassificationSplit | None:
        """The cleaned split ``name``, or ``None`` when it does not exist or was not checked."""
        return self.splits.get(name)

    def format(self, max_classes: int = 50) -> str:
        """A text report: images per class and split (a table), the number of files left out and warnings.

        Args:
            max_classes: rows of the table shown before summarising the rest.
        """
        lines = ["images per class and split:", *self._table(max_classes)]
        if self.unreadable:  # each listed by the decoding preflight as it was found
            lines.append(f"left out (unreadable): {len(self.unreadable)} file(s), listed above")
        if self.warnings:
            lines.append("warnings:")
            lines += [f"  - {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def _table(self, max_classes: int) -> list[str]:
        names = list(self.splits)
        counts = {n: s.counts() if s is not None else None for n, s in self.splits.items()}
        rows = [["class", *names]]
        for i, name in enumerate(self.classes[:max_classes]):
            rows.append([name, *("-" if counts[n] is None else str(counts[n][i]) for n in names)])
        hidden = len(self.classes) - max_classes
        if hidden > 0:
            rows.append([f"({hidden} more classes)", *("" for _ in names)])
        rows.append(["total", *("-" if counts[n] is None else str(int(counts[n].sum())) for n in names)])
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        return ["  " + _table_row(row, widths) for row in rows]


def _table_row(cells: list[str], widths: list[int]) -> str:
    """The first cell left-aligned, the others right-aligned, two spaces apart."""
    padded = [cells[0].ljust(widths[0])] + [
        cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
    ]
    return "  ".join(padded).rstrip()


def preflight(
    spec: ClassifyDataSpec,
    splits: Iterable[str] = ("train", "val"),
    check_images: bool = True,
    workers: int = 8,
    classes: list[str] | None = None,
) -> PreflightReport:
    """Check a classification dataset before training and return its cleaned splits.

    Lists every split, counts images per class, optionally decodes every image fully (in parallel threads, with a
    progress bar on a terminal) and leaves the unreadable ones out, and collects warnings. Nothing is written into
    the dataset folder.

    Args:
        spec: the ``dataset`` spec (absolute paths).
        splits: the splits to check, among ``"train"``, ``"val"``, ``"test"``.
        check_images: decode every image and leave out those that fail.
        workers: threads used for the image check.
        classes: the class names to use (e.g. a checkpoint's, when evaluating); default :func:`resolve_classes`.

    Returns:
        The report: classes, cleaned splits (``None`` for a missing val/test split), unreadable files, warnings.

    Raises:
        DataError: no classes, a missing training split, an empty training split (after leaving out unreadable
            files), a class without training images, or any error of :func:`resolve_classes` / :func:`load_split`.
    """
    classes = resolve_classes(spec) if classes is None else list(classes)
    if not classes:
        raise DataError("the dataset has no classes")
    loaded = {name: load_split(spec, name, classes) for name in dict.fromkeys(splits)}
    if "test" in loaded and loaded["test"] is None:
        del loaded["test"]  # optional (train evaluates it when given): an absent one is not reported
    unreadable: list[UnreadableImage] = []
    if check_images:
        for name, split in loaded.items():
            if split is not None and len(split):
                loaded[name], bad = _drop_unreadable(split, workers)
                unreadable += bad
    if "train" in loaded:
        _check_training(loaded["train"], classes, unreadable)
    warnings: list[str] = []
    for name, split in loaded.items():
        if name != "train":
            warnings += _split_warnings(spec, name, split)
    return PreflightReport(classes, loaded, unreadable, warnings)


def _drop_unreadable(split: ClassificationSplit, workers: int) -> tuple[ClassificationSplit, list[UnreadableImage]]:
    """Decode every image of the split once through the shared preflight (a truncated JPEG fails here, not
    mid-epoch); the unreadable ones are left out, listed and recorded."""
    checked = check_samples(list(split.files), split.name, workers=workers)
    bad = [UnreadableImage(item.split, Path(item.path), item.reason) for item in checked.left_out]
    if not bad:
        return split, []
    return split.subset(checked.keep), bad


def _check_training(train: ClassificationSplit | None, classes: list[str], unreadable: list[UnreadableImage]) -> None:
    if train is None:
        raise DataError("the dataset has no training split")
    if not len(train):
        left_out = sum(item.split == "train" for item in unreadable)
        why = f" ({left_out} unreadable files left out)" if left_out else ""
        raise DataError(f"the training split {train.source} holds no readable images{why}")
    empty = [name for name, count in zip(classes, train.counts(), strict=True) if count == 0]
    if empty:
        raise DataError(
            f"{len(empty)} class(es) have no training images in {train.source}: {preview(empty)} (add images for "
            "them, or remove them from dataset.classes_file)"
        )


def _split_warnings(spec: ClassifyDataSpec, name: str, split: ClassificationSplit | None) -> list[str]:
    if split is None:
        where = f"dataset.{name}_csv is not set" if spec.format == "csv" else f"{split_folder(spec, name)} not found"
        return [f"no {name} split ({where})"]
    if not len(split):
        return [f"the {name} split {split.source} holds no readable images"]
    absent = [c for c, count in zip(split.classes, split.counts(), strict=True) if count == 0]
    if not absent:
        return []
    return [
        f"{len(absent)} class(es) have no {name} images, so their {name} accuracy is not measured: {preview(absent)}"
    ]
