"""Image-classification data: class lists, splits (class folders or CSV lists), a preflight check and datasets.

Two layouts (``dataset.format``):

- ``folders``: ``root/<split>/<class>/**/<image>``; every sub-folder of the split folder is a class, images are
  found recursively inside it (image suffixes only, hidden files and folders skipped, sorted by path).
- ``csv``: one ``path,label`` row per image (an optional ``path,label`` header). Relative paths resolve against
  ``dataset.root`` when set, else against the CSV's folder. Labels are class names, or 0-based class indices when
  every label of the file is an integer in range and not every label is a class name.

The class order comes from ``dataset.classes_file`` (one name per line, blank lines and ``#`` comments ignored) or
else from the sorted class names of the training split (numerically sorted when all are integers). Nothing is ever
written into the dataset folder (it may be a read-only mount).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vfmkit.data.images import is_image_file
from vfmkit.data.sampling import ClassificationDataset, EpochSeededSampler, FeatureDataset
from vfmkit.errors import DataError
from vfmkit.spec.classify import ClassifyDataSpec

__all__ = [
    "ClassificationDataset",
    "ClassificationSplit",
    "EpochSeededSampler",
    "FeatureDataset",
    "PreflightReport",
    "SPLITS",
    "UnreadableImage",
    "load_split",
    "preflight",
    "resolve_classes",
]

SPLITS = ("train", "val", "test")
_HEADER = ("path", "label")


@dataclass
class ClassificationSplit:
    """The labelled images of one split.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        files: image paths, N of them.
        labels: int64 (N,) contiguous class indices into ``classes``.
        classes: the class names, index order.
        source: the split folder or CSV file the split was read from (for messages).
    """

    name: str
    files: list[Path]
    labels: np.ndarray
    classes: list[str]
    source: Path | None = None

    def __post_init__(self) -> None:
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.files) != len(self.labels):
            raise ValueError(f"{len(self.files)} files but {len(self.labels)} labels in split {self.name!r}")

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> np.ndarray:
        """int64 (num_classes,) number of images per class."""
        return np.bincount(self.labels, minlength=len(self.classes)).astype(np.int64)

    def subset(self, keep: np.ndarray) -> ClassificationSplit:
        """A new split with only the samples where the bool (N,) mask ``keep`` is true."""
        keep = np.asarray(keep, dtype=bool)
        files = [file for file, kept in zip(self.files, keep, strict=True) if kept]
        return ClassificationSplit(self.name, files, self.labels[keep], list(self.classes), self.source)


def resolve_classes(spec: ClassifyDataSpec) -> list[str]:
    """The class names in index order.

    Args:
        spec: the ``dataset`` spec (absolute paths).

    Returns:
        From ``spec.classes_file`` when set, else the sorted class names of the training split (folders: its
        sub-folder names; csv: the unique labels of ``train_csv``, sorted numerically when all are integers).

    Raises:
        DataError: an unreadable or empty classes file, a duplicate name in it, or a missing/empty training split.
    """
    if spec.classes_file is not None:
        return _read_classes_file(Path(spec.classes_file))
    if spec.format == "folders":
        split_dir = _split_dir(spec, "train")
        if not split_dir.is_dir():
            raise DataError(f"training split folder {split_dir} does not exist (dataset.root / dataset.train_split)")
        names = sorted(path.name for path in split_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
        where = f"sub-folders of {split_dir} (expected {split_dir}/<class>/<image>)"
    else:
        csv_file = _csv_file(spec, "train")
        labels = {label for _, label, _ in _read_csv_rows(csv_file)}
        names = sorted(labels, key=int) if all(_is_int(x) for x in labels) else sorted(labels)
        where = f"labels in {csv_file}"
    if not names:
        raise DataError(f"no classes found: no {where}")
    return names


def _read_classes_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read dataset.classes_file {path}: {exc} (expected one class name per line)") from exc
    names: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in first_line:
            raise DataError(
                f"{path}:{number}: duplicate class name {name!r} (first on line {first_line[name]}) in "
                "dataset.classes_file; every class must be listed once"
            )
        first_line[name] = number
        names.append(name)
    if not names:
        raise DataError(f"dataset.classes_file {path} lists no class names (expected one name per line)")
    return names


def load_split(spec: ClassifyDataSpec, split: str, classes: list[str]) -> ClassificationSplit | None:
    """Read the labelled image list of one split (no image is opened).

    Args:
        spec: the ``dataset`` spec (absolute paths).
        split: ``"train"``, ``"val"`` or ``"test"``.
        classes: class names in index order (see :func:`resolve_classes`).

    Returns:
        The split, or ``None`` when a val/test split does not exist (folders: no such sub-folder; csv: no CSV set).

    Raises:
        DataError: a missing training split, an explicitly set CSV that does not exist, a class folder or label not
            in ``classes`` (naming the folder, or the CSV file and line), images lying directly in the split folder,
            or a malformed CSV row.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if spec.format == "folders":
        return _load_folder_split(spec, split, classes)
    return _load_csv_split(spec, split, classes)


def _split_dir(spec: ClassifyDataSpec, split: str) -> Path:
    if spec.root is None:
        raise DataError("dataset.root is required for format 'folders'")
    return Path(spec.root) / getattr(spec, f"{split}_split")


def _load_folder_split(spec: ClassifyDataSpec, split: str, classes: list[str]) -> ClassificationSplit | None:
    split_dir = _split_dir(spec, split)
    if not split_dir.is_dir():
        if split == "train":
            raise DataError(f"training split folder {split_dir} does not exist (dataset.root / dataset.train_split)")
        return None
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if is_image_file(entry):
                raise DataError(
                    f"image {entry} lies directly in the split folder; expected {split_dir}/<class>/<image>"
                )
            continue
        if entry.name not in index:
            raise DataError(f"class folder {entry} is not a known class (classes: {_preview(classes)})")
        found = sorted(p for p in entry.rglob("*") if is_image_file(p) and not _hidden(p.relative_to(entry)))
        files.extend(found)
        labels.extend([index[entry.name]] * len(found))
    return ClassificationSplit(split, files, np.asarray(labels, dtype=np.int64), list(classes), split_dir)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _csv_file(spec: ClassifyDataSpec, split: str) -> Path:
    value = getattr(spec, f"{split}_csv")
    if value is None:
        raise DataError(f"dataset.{split}_csv is required for format 'csv'")
    path = Path(value)
    if not path.is_file():
        raise DataError(f"dataset.{split}_csv {path} does not exist (expected a CSV file of path,label rows)")
    return path


def _load_csv_split(spec: ClassifyDataSpec, split: str, classes: list[str]) -> ClassificationSplit | None:
    if split != "train" and getattr(spec, f"{split}_csv") is None:
        return None
    csv_file = _csv_file(spec, split)
    rows = _read_csv_rows(csv_file)
    base = Path(spec.root) if spec.root is not None else csv_file.parent
    index = {name: i for i, name in enumerate(classes)}
    by_name = all(label in index for _, label, _ in rows)
    by_int = not by_name and all(_is_int(label) and 0 <= int(label) < len(classes) for _, label, _ in rows)
    files: list[Path] = []
    labels = np.empty(len(rows), dtype=np.int64)
    for i, (raw_path, label, line) in enumerate(rows):
        if by_name:
            labels[i] = index[label]
        elif by_int:
            labels[i] = int(label)
        elif label not in index:
            raise DataError(
                f"{csv_file}:{line}: label {label!r} is not a known class (expected one of {_preview(classes)}, "
                f"or a class index 0..{len(classes) - 1} on every row)"
            )
        path = Path(raw_path).expanduser()
        files.append(path if path.is_absolute() else base / path)
    return ClassificationSplit(split, files, labels, list(classes), csv_file)


def _read_csv_rows(csv_file: Path) -> list[tuple[str, str, int]]:
    """``(path, label, line number)`` of every data row; a ``path,label`` header, blank and ``#`` lines skipped."""
    try:
        with csv_file.open(newline="", encoding="utf-8-sig") as handle:
            records = list(_numbered_rows(csv.reader(handle)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV {csv_file}: {exc} (expected UTF-8 path,label rows)") from exc
    rows: list[tuple[str, str, int]] = []
    for line, row in records:
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not rows and tuple(cell.lower() for cell in cells) == _HEADER:
            continue
        if len(cells) != 2:
            raise DataError(f"{csv_file}:{line}: expected 2 columns 'path,label', got {len(cells)}: {row!r}")
        if not cells[0] or not cells[1]:
            field_name = "path" if not cells[0] else "label"
            raise DataError(f"{csv_file}:{line}: empty {field_name} (expected 'path,label')")
        rows.append((cells[0], cells[1], line))
    return rows


def _numbered_rows(reader: Iterable[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number of the row's first line, row)`` from a ``csv.reader``."""
    line = 1
    for row in reader:
        yield line, row
        line = reader.line_num + 1


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _preview(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


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

    def format(self, max_classes: int = 50, max_unreadable: int = 20) -> str:
        """A text report: images per class and split (a table), unreadable files and warnings.

        Args:
            max_classes: rows of the table shown before summarising the rest.
            max_unreadable: unreadable files listed before summarising the rest.
        """
        lines = ["images per class and split:", *self._table(max_classes)]
        if self.unreadable:
            lines.append(f"unreadable files, left out: {len(self.unreadable)}")
            lines += [f"  {item.split}: {item.path}: {item.reason}" for item in self.unreadable[:max_unreadable]]
            if len(self.unreadable) > max_unreadable:
                lines.append(f"  ... and {len(self.unreadable) - max_unreadable} more")
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

    Lists every split, counts images per class, optionally opens every image with a cheap header/structure check
    (``PIL.Image.verify``: no full decode) and leaves the unreadable ones out, and collects warnings. Nothing is
    written into the dataset folder.

    Args:
        spec: the ``dataset`` spec (absolute paths).
        splits: the splits to check, among ``"train"``, ``"val"``, ``"test"``.
        check_images: open every image (cheap check) and leave out those that fail.
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
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(pool.map(_image_problem, split.files))
    pairs = zip(split.files, reasons, strict=True)
    bad = [UnreadableImage(split.name, file, reason) for file, reason in pairs if reason is not None]
    if not bad:
        return split, []
    return split.subset(np.array([reason is None for reason in reasons], dtype=bool)), bad


def _image_problem(path: Path) -> str | None:
    """``None`` when ``path`` opens as an image (header and structure check, no decode), else the reason."""
    if not path.is_file():
        return "no such file"
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # any failure means "unreadable"; the reason is reported
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


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
            f"{len(empty)} class(es) have no training images in {train.source}: {_preview(empty)} (add images for "
            "them, or remove them from dataset.classes_file)"
        )


def _split_warnings(spec: ClassifyDataSpec, name: str, split: ClassificationSplit | None) -> list[str]:
    if split is None:
        where = f"dataset.{name}_csv is not set" if spec.format == "csv" else f"{_split_dir(spec, name)} not found"
        return [f"no {name} split ({where})"]
    if not len(split):
        return [f"the {name} split {split.source} holds no readable images"]
    absent = [c for c, count in zip(split.classes, split.counts(), strict=True) if count == 0]
    if not absent:
        return []
    return [
        f"{len(absent)} class(es) have no {name} images, so their {name} accuracy is not measured: {_preview(absent)}"
    ]
