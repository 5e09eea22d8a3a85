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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vfmkit.data.augment import EpochSeededDataset, TrainAugment, sample_seed
from vfmkit.data.images import is_image_file, iter_files, list_subfolders, load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.errors import DataError
from vfmkit.tasks.classify.spec import AugmentSpec, ClassifyDataSpec

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
        split_dir = split_folder(spec, "train")
        if not split_dir.is_dir():
            raise DataError(f"training split folder {split_dir} does not exist (dataset.root / dataset.train_split)")
        names = [path.name for path in list_subfolders(split_dir)]
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


def split_folder(spec: ClassifyDataSpec, split: str) -> Path:
    if spec.root is None:
        raise DataError("dataset.root is required for format 'folders'")
    return Path(spec.root) / getattr(spec, f"{split}_split")


def _load_folder_split(spec: ClassifyDataSpec, split: str, classes: list[str]) -> ClassificationSplit | None:
    split_dir = split_folder(spec, split)
    if not split_dir.is_dir():
        if split == "train":
            raise DataError(f"training split folder {split_dir} does not exist (dataset.root / dataset.train_split)")
        return None
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    loose = [path for path in iter_files(split_dir, recursive=False) if is_image_file(path)]
    if loose:
        raise DataError(f"image {loose[0]} lies directly in the split folder; expected {split_dir}/<class>/<image>")
    for entry in list_subfolders(split_dir):
        if entry.name not in index:
            raise DataError(f"class folder {entry} is not a known class (classes: {preview(classes)})")
        found = sorted(p for p in iter_files(entry) if is_image_file(p))  # symlinked folders followed once
        files.extend(found)
        labels.extend([index[entry.name]] * len(found))
    return ClassificationSplit(split, files, np.asarray(labels, dtype=np.int64), list(classes), split_dir)


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
                f"{csv_file}:{line}: label {label!r} is not a known class (expected one of {preview(classes)}, "
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


def preview(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class ClassificationDataset(EpochSeededDataset):
    """Decoded, resized (and in training, augmented) images of a split.

    Evaluation items are exactly ``preprocess_images([path], ..., resolution=R)[0]`` (bilinear antialiased resize
    to R x R), so training-time validation, feature caching, ONNX verification and ``predict`` agree. Training items
    go through :class:`~vfmkit.data.augment.TrainAugment` seeded by ``(seed, epoch, index)``: reproducible whatever
    the number of workers. The epoch lives in shared memory, so :meth:`set_epoch` reaches persistent workers.

    Args:
        split: the split to serve.
        resolution: output side R in pixels.
        train: apply the random augmentation.
        augment: the augmentation spec (default ``AugmentSpec()``); ignored when ``train`` is false.
        seed: the run seed.
    """

    def __init__(
        self,
        split: ClassificationSplit,
        resolution: int,
        train: bool = False,
        augment: AugmentSpec | None = None,
        seed: int = 0,
    ) -> None:
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.split = split
        self.resolution = int(resolution)
        self.train = bool(train)
        self.seed = int(seed)
        self.augment = TrainAugment(self.resolution, augment or AugmentSpec()) if self.train else None
        super().__init__()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Returns ``(image float32 (3, R, R) in [0, 1], label int64 scalar tensor, index)``.

        Raises:
            DataError: the image cannot be decoded (the message names the file).
        """
        index = int(index)
        image = pil_to_tensor(load_image_rgb(self.split.files[index]))
        if self.augment is None:
            image = resize(image, (self.resolution, self.resolution))
        else:
            image = self.augment(image, sample_seed(self.seed, self.epoch, index))
        return image, torch.tensor(self.split.labels[index], dtype=torch.int64), index


class FeatureDataset(Dataset):
    """Cached backbone features with their labels.

    Args:
        features: float (N, C) tensor.
        labels: int (N,) array of class indices.
    """

    def __init__(self, features: torch.Tensor, labels: np.ndarray) -> None:
        if features.ndim != 2:
            raise ValueError(f"features must be (N, C), got shape {tuple(features.shape)}")
        labels = np.asarray(labels)
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {labels.shape}")
        self.features = features
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Returns ``(feature (C,), label int64 scalar tensor, index)``."""
        index = int(index)
        return self.features[index], self.labels[index], index
