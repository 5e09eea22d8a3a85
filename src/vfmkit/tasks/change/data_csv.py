"""Change-detection data, classify variant: golden vs test samples from a 4-column CSV.

Each data row is ``input_path,golden_path,label,object_name`` (an optional header row with exactly these names;
blank lines and ``#`` lines skipped). ``input_path`` and ``golden_path`` are folders relative to
``dataset.image_root`` (default: the CSV's folder). For every lighting condition suffix ``s`` of
``dataset.light_conditions`` the test image is ``<image_root>/<input_path>/<object_name><s><image_ext>`` and the
golden ``<image_root>/<golden_path>/<object_name><s><image_ext>``; the conditions are concatenated along channels in
list order (3 channels each: RGB of condition 0, RGB of condition 1, ...). ``label`` is ``PASS`` -> 0 or ``FAIL`` ->
1 (case-insensitive), or ``0`` / ``1``; anything else is a DataError with ``file:line`` (unlike TAO, where every
non-PASS label counts as FAIL).

Multi-golden (``num_golden`` N > 1): golden 0 is the row's own object in ``golden_path``; the other N - 1 are other
objects of the same golden folder that have every lighting condition: drawn at random per (seed, epoch, index) in
training, the first N - 1 in sorted order in evaluation.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vfmkit.data.augment import EpochSeededDataset, sample_seed
from vfmkit.data.dense_augment import JointAugment, as_size
from vfmkit.data.images import iter_files, load_image_rgb
from vfmkit.data.preflight import check_samples
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.errors import DataError
from vfmkit.spec.dense import DenseAugmentSpec
from vfmkit.tasks.change.data import ChangePreflightReport
from vfmkit.tasks.change.spec import ChangeAugmentSpec, ChangeDataSpec

COLUMNS = ("input_path", "golden_path", "label", "object_name")
LABELS = {"pass": 0, "fail": 1, "0": 0, "1": 1}
SPLITS = ("train", "val", "test")


@dataclass
class ChangeClassifySplit:
    """The golden-vs-test samples of one CSV.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        inputs: (N,) numpy str array of absolute test-image folders.
        goldens: (N,) numpy str array of absolute golden folders.
        labels: int64 (N,): 0 = PASS, 1 = FAIL.
        objects: (N,) numpy str array of object names.
        lines: int64 (N,) CSV line of each sample (for messages).
        light_conditions: file-name suffixes, one per lighting condition.
        image_ext: file extension with the dot.
        num_golden: goldens per sample.
        source: the CSV file.
        golden_pool: golden folder -> sorted object names that have every condition there (multi-golden only).
    """

    name: str
    inputs: np.ndarray
    goldens: np.ndarray
    labels: np.ndarray
    objects: np.ndarray
    lines: np.ndarray
    light_conditions: list[str]
    image_ext: str = ".png"
    num_golden: int = 1
    source: Path | None = None
    golden_pool: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inputs, self.goldens, self.objects = (
            np.asarray(x, dtype=np.str_).reshape(-1) for x in (self.inputs, self.goldens, self.objects)
        )
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.lines = np.asarray(self.lines, dtype=np.int64).reshape(-1)
        if not len(self.inputs) == len(self.goldens) == len(self.labels) == len(self.objects) == len(self.lines):
            raise ValueError(f"split {self.name!r}: column arrays differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: np.ndarray) -> ChangeClassifySplit:
        """The samples where the bool (N,) ``keep`` is True (the golden pool is kept)."""
        columns = (self.inputs[keep], self.goldens[keep], self.labels[keep], self.objects[keep], self.lines[keep])
        return ChangeClassifySplit(
            self.name, *columns, self.light_conditions, self.image_ext, self.num_golden, self.source, self.golden_pool
        )

    def counts(self) -> np.ndarray:
        """int64 (2,): number of PASS and FAIL samples."""
        return np.bincount(self.labels, minlength=2).astype(np.int64)

    def files(self, folder: str | Path, obj: str) -> list[Path]:
        """The files of object ``obj`` in ``folder``, one per lighting condition."""
        return [Path(folder) / f"{obj}{suffix}{self.image_ext}" for suffix in self.light_conditions]

    def test_files(self, index: int) -> list[Path]:
        """The test image files of sample ``index``, one per lighting condition."""
        return self.files(str(self.inputs[index]), str(self.objects[index]))

    def golden_objects(self, index: int, rng: torch.Generator | None = None) -> list[str]:
        """The ``num_golden`` golden object names of sample ``index`` (own object first; see module docstring)."""
        own = str(self.objects[index])
        if self.num_golden == 1:
            return [own]
        others = [o for o in self.golden_pool.get(str(self.goldens[index]), []) if o != own]
        if rng is not None:
            order = torch.randperm(len(others), generator=rng).tolist()
            others = [others[i] for i in order]
        return [own, *others[: self.num_golden - 1]]


def _numbered_rows(reader: Iterable[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number of the row's first line, row)`` from a ``csv.reader``."""
    line = 1
    for row in reader:
        yield line, row
        line = reader.line_num + 1


def _read_rows(csv_file: Path) -> list[tuple[list[str], int]]:
    try:
        with csv_file.open(newline="", encoding="utf-8-sig") as handle:
            records = list(_numbered_rows(csv.reader(handle)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV {csv_file}: {exc} (expected UTF-8 rows of {','.join(COLUMNS)})") from exc
    rows: list[tuple[list[str], int]] = []
    for line, row in records:
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not rows and tuple(c.lower() for c in cells) == COLUMNS:
            continue
        if len(cells) != len(COLUMNS):
            raise DataError(f"{csv_file}:{line}: expected 4 columns '{','.join(COLUMNS)}', got {len(cells)}: {row!r}")
        empty = [name for name, cell in zip(COLUMNS, cells, strict=True) if not cell]
        if empty:
            raise DataError(f"{csv_file}:{line}: empty {', '.join(empty)} (expected '{','.join(COLUMNS)}')")
        if cells[2].lower() not in LABELS:
            raise DataError(f"{csv_file}:{line}: unknown label {cells[2]!r}; expected PASS or FAIL (or 0 / 1)")
        rows.append((cells, line))
    return rows


def load_change_csv_split(spec: ChangeDataSpec, split: str) -> ChangeClassifySplit | None:
    """Read one CSV split (no image is opened; multi-golden lists the golden folders).

    Returns:
        The split, or ``None`` when ``dataset.<split>_csv`` is unset (val/test).

    Raises:
        DataError: a missing CSV file, a row without 4 columns, an empty cell or an unknown label (``file:line``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    value = getattr(spec, f"{split}_csv")
    if value is None:
        if split == "train":
            raise DataError("dataset.train_csv is required for format 'csv'")
        return None
    csv_file = Path(value)
    if not csv_file.is_file():
        raise DataError(f"dataset.{split}_csv {csv_file} does not exist (expected a CSV of {','.join(COLUMNS)})")
    base = Path(spec.image_root) if spec.image_root is not None else csv_file.parent
    rows = _read_rows(csv_file)
    columns = list(zip(*(cells for cells, _ in rows), strict=True)) if rows else [(), (), (), ()]
    result = ChangeClassifySplit(
        split,
        inputs=[str(base / p) for p in columns[0]],
        goldens=[str(base / p) for p in columns[1]],
        labels=[LABELS[label.lower()] for label in columns[2]],
        objects=list(columns[3]),
        lines=[line for _, line in rows],
        light_conditions=list(spec.light_conditions),
        image_ext=spec.image_ext,
        num_golden=spec.num_golden,
        source=csv_file,
    )
    if spec.num_golden > 1:
        result.golden_pool = {folder: _objects_in(result, folder) for folder in sorted(set(result.goldens.tolist()))}
    return result


def _objects_in(split: ChangeClassifySplit, folder: str) -> list[str]:
    """Sorted object names with a file for every lighting condition in ``folder``."""
    ending = f"{split.light_conditions[0]}{split.image_ext}"
    directory = Path(folder)
    if not directory.is_dir():
        return []
    names = sorted(p.name[: -len(ending)] for p in iter_files(directory, recursive=False) if p.name.endswith(ending))
    return [name for name in names if name and all(f.is_file() for f in split.files(directory, name))]


def preflight_change_csv(spec: ChangeDataSpec, splits: Iterable[str] = ("train", "val")) -> ChangePreflightReport:
    """Check golden-vs-test CSV splits: every test and golden file exists, enough goldens, both classes in train.

    Raises:
        DataError: missing files (listed with ``CSV:line`` and the path), a golden folder with fewer than
            ``num_golden`` objects, a training split without PASS or without FAIL samples (a loss weighted per
            class and the defect metrics need both), or any error of :func:`load_change_csv_split`.
    """
    loaded = {name: load_change_csv_split(spec, name) for name in dict.fromkeys(splits)}
    if "test" in loaded and loaded["test"] is None:
        del loaded["test"]  # optional (train evaluates it when given): an absent one is not reported
    report = ChangePreflightReport("csv", dict(loaded))
    for name, split in loaded.items():
        if split is None:
            report.warnings.append(f"no {name} split (dataset.{name}_csv is not set)")
            continue
        _check_files(split)  # missing files are refused (the CSV is wrong), unreadable ones left out
        split = report.splits[name] = _drop_unreadable(split)
        _check_files(split)  # the multi-golden pools may have lost objects
        if name == "train" and not len(split):
            raise DataError(f"the training CSV {split.source} holds no readable samples (see above)")
        passed, failed = (int(c) for c in split.counts())
        report.stats[name] = {"PASS": passed, "FAIL": failed}
        absent = [label for label, count in (("PASS", passed), ("FAIL", failed)) if count == 0]
        if absent and name == "train":
            missing = " and no ".join(absent)
            raise DataError(f"the training CSV {split.source} has no {missing} samples; both classes are needed")
        if absent:
            report.warnings.append(f"the {name} CSV {split.source} has no {'/'.join(absent)} samples")
    return report


def _drop_unreadable(split: ChangeClassifySplit) -> ChangeClassifySplit:
    """Decode every file the split reads once (test images, the rows' goldens and the multi-golden pool) through the
    shared preflight: an unreadable file is listed and recorded; a row that reads it, and a pool object with it, are
    left out."""
    rows = [split.test_files(i) + split.files(str(split.goldens[i]), str(split.objects[i])) for i in range(len(split))]
    pool = [(folder, obj) for folder, objects in split.golden_pool.items() for obj in objects]
    files = sorted({f for group in [*rows, *(split.files(*item) for item in pool)] for f in group})
    checked = check_samples(files, split.name, what="image files")
    if not checked.left_out:
        return split
    bad = {Path(item.path) for item in checked.left_out}
    keep = np.array([not bad.intersection(group) for group in rows], dtype=bool)
    if not keep.all():
        print(f"left out of {split.name}: {int((~keep).sum())} CSV row(s) that read the files above")
    split.golden_pool = {
        folder: [obj for obj in objects if not bad.intersection(split.files(folder, obj))]
        for folder, objects in split.golden_pool.items()
    }
    return split.subset(keep)


def _check_files(split: ChangeClassifySplit) -> None:
    problems: list[str] = []
    for i in range(len(split)):
        wanted = split.test_files(i) + split.files(str(split.goldens[i]), str(split.objects[i]))
        missing = [str(p) for p in wanted if not p.is_file()]
        if missing:
            problems.append(f"{split.source}:{split.lines[i]}: missing {', '.join(missing)}")
        elif len(split.golden_objects(i)) < split.num_golden:
            available = len(split.golden_pool.get(str(split.goldens[i]), []))
            problems.append(
                f"{split.source}:{split.lines[i]}: golden folder {split.goldens[i]} holds {available} object(s) "
                f"with every lighting condition; num_golden {split.num_golden} needs {split.num_golden}"
            )
    if problems:
        more = f" ... ({len(problems)} rows in all)" if len(problems) > 10 else ""
        raise DataError("; ".join(problems[:10]) + more)


class ChangeClassifyDataset(EpochSeededDataset):
    """Golden-vs-test samples: every image of a sample (all lighting conditions of the test image and of every
    golden) is resized to ``size`` (bilinear antialiased, aspect ratio not kept), then, in training, goes through
    ONE :class:`~vfmkit.data.dense_augment.JointAugment` call seeded by ``(seed, epoch, index)`` so flips, crops and
    colour jitter match across test and goldens.

    Args:
        split: the split to serve.
        size: output side or (H, W).
        train: apply the random joint augmentation (and random extra goldens for multi-golden).
        augment: the augmentation spec (default ``ChangeAugmentSpec()``); ignored when ``train`` is false.
            Its ``crop_size`` is ignored: the output size is always ``size``.
        seed: the run seed.
    """

    def __init__(
        self,
        split: ChangeClassifySplit,
        size: int | tuple[int, int],
        train: bool = False,
        augment: DenseAugmentSpec | None = None,
        seed: int = 0,
    ) -> None:
        self.split, self.size, self.train, self.seed = split, as_size(size), bool(train), int(seed)
        augment = (augment or ChangeAugmentSpec()).model_copy(update={"crop_size": None})
        self.augment = JointAugment(self.size, augment) if self.train else None
        super().__init__()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Returns ``(test, golden, label, index)``.

        ``test`` is float32 (3L, H, W) in [0, 1] for L lighting conditions; ``golden`` is float32 (3L, H, W) when
        ``num_golden`` is 1, else (N, 3L, H, W); ``label`` is an int64 scalar tensor (0 PASS, 1 FAIL).

        Raises:
            DataError: a missing or unreadable image file (named).
        """
        index = int(index)
        split, seed = self.split, sample_seed(self.seed, self.epoch, index)
        rng = torch.Generator().manual_seed(seed ^ 0x601D) if self.train else None
        golden_objects = split.golden_objects(index, rng)
        if len(golden_objects) < split.num_golden:
            raise DataError(f"{split.source}:{split.lines[index]}: fewer than {split.num_golden} golden objects")
        files = split.test_files(index)
        for obj in golden_objects:
            files += split.files(str(split.goldens[index]), obj)
        images = [resize(pil_to_tensor(load_image_rgb(f)), self.size) for f in files]
        if self.augment is not None:
            images, _ = self.augment(images, None, seed)
        lights = len(split.light_conditions)
        groups = [torch.cat(images[i : i + lights]) for i in range(0, len(images), lights)]
        golden = groups[1] if split.num_golden == 1 else torch.stack(groups[1:])
        return groups[0], golden, torch.tensor(split.labels[index], dtype=torch.int64), index
