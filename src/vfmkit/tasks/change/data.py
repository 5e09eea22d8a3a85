"""Change-detection data, segment variant: the LEVIR-CD layout, its preflight and the pair dataset.

Layout (``dataset.format: levir``)::

    root/A/<name>        first-time (reference) image
    root/B/<name>        second-time image
    root/label/<name>    binary change mask: 0 = unchanged, 255 (or 1) = changed
    root/list/<split>.txt  one <name> per line (blank lines and '#' comments skipped)

A listed name is looked up as ``<folder>/<name>``; when that file does not exist, by stem with any image extension
(so a list may omit extensions and labels may be ``.png`` while images are ``.jpg``). Labels decode to int64 (H, W)
0/1 (values {0, 255} or {0, 1}; anything else is a DataError naming the file). The classify variant (golden vs test
CSV) lives in :mod:`vfmkit.tasks.change.data_csv`; :func:`preflight_change` checks either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmkit.data.augment import EpochSeededDataset, sample_seed
from vfmkit.data.dense_augment import JointAugment, MaskSize, eval_transform
from vfmkit.data.images import IMAGE_EXTENSIONS, index_by_stem, load_image_rgb
from vfmkit.data.preflight import check_samples
from vfmkit.data.preprocess import pil_to_tensor
from vfmkit.errors import DataError, UnreadableFileError
from vfmkit.spec.dense import DenseAugmentSpec
from vfmkit.tasks.change.spec import ChangeAugmentSpec, ChangeDataSpec, ChangeSpec

SPLITS = ("train", "val", "test")


@dataclass
class ChangeSegSplit:
    """The (A, B, label) triples of one LEVIR-style split, in list order.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        a: (N,) numpy str array of first-time image paths.
        b: (N,) numpy str array of second-time image paths.
        labels: (N,) numpy str array of change-mask paths.
        source: the list file.
    """

    name: str
    a: np.ndarray
    b: np.ndarray
    labels: np.ndarray
    source: Path | None = None

    def __post_init__(self) -> None:
        self.a, self.b, self.labels = (np.asarray(x, dtype=np.str_).reshape(-1) for x in (self.a, self.b, self.labels))
        if not len(self.a) == len(self.b) == len(self.labels):
            raise ValueError(f"split {self.name!r}: A, B and label lists differ in length")

    def __len__(self) -> int:
        return len(self.a)

    def paths(self, index: int) -> tuple[Path, Path, Path]:
        """``(A, B, label)`` files of sample ``index``."""
        return Path(str(self.a[index])), Path(str(self.b[index])), Path(str(self.labels[index]))

    def subset(self, keep: np.ndarray) -> ChangeSegSplit:
        """The triples where the bool (N,) ``keep`` is True."""
        return ChangeSegSplit(self.name, self.a[keep], self.b[keep], self.labels[keep], self.source)


def _read_list(list_file: Path) -> list[tuple[str, int]]:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read list file {list_file}: {exc} (expected one file name per line)") from exc
    return [(line.strip(), n) for n, line in enumerate(lines, 1) if line.strip() and not line.strip().startswith("#")]


class _Finder:
    """Finds ``<folder>/<name>``, else a file with the same stem and any image extension."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._index: dict[str, Path] | None = None

    def find(self, name: str) -> Path | None:
        exact = self.folder / name
        if exact.is_file():
            return exact
        if self._index is None:
            self._index = index_by_stem(self.folder) if self.folder.is_dir() else {}
        key = Path(name)
        if key.suffix.lower() in IMAGE_EXTENSIONS:
            key = key.with_suffix("")
        return self._index.get(key.as_posix())


def load_levir_split(spec: ChangeDataSpec, split: str) -> ChangeSegSplit | None:
    """Read ``root/list/<split>.txt`` and find every name's A, B and label files (none is opened).

    Returns:
        The split, or ``None`` when a val/test list file does not exist.

    Raises:
        DataError: a missing training list file, a missing A/B/label folder, or listed names without their files
            (``list file:line``, the name and which files are missing).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(spec.root)
    list_file = root / spec.list_dir / f"{getattr(spec, f'{split}_split')}.txt"
    if not list_file.is_file():
        if split == "train":
            raise DataError(f"training list file {list_file} does not exist (expected root/list/train.txt)")
        return None
    folders = {kind: root / getattr(spec, f"{kind}_dir") for kind in ("a", "b", "label")}
    for kind, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"folder {folder} does not exist (dataset.{kind}_dir under dataset.root)")
    finders = {kind: _Finder(folder) for kind, folder in folders.items()}
    found: dict[str, list[str]] = {kind: [] for kind in folders}
    problems: list[str] = []
    for name, line in _read_list(list_file):
        paths = {kind: finder.find(name) for kind, finder in finders.items()}
        missing = [f"{folders[k].name}/{name}" for k, p in paths.items() if p is None]
        if missing:
            problems.append(f"{list_file}:{line}: {name!r}: missing {', '.join(missing)}")
            continue
        for kind, path in paths.items():
            found[kind].append(str(path))
    if problems:
        more = f" ... ({len(problems)} names in all)" if len(problems) > 10 else ""
        raise DataError("listed names without their files: " + "; ".join(problems[:10]) + more)
    return ChangeSegSplit(split, found["a"], found["b"], found["label"], list_file)


def load_change_label(path: str | Path) -> np.ndarray:
    """A binary change mask file -> int64 (H, W) with 0 = unchanged, 1 = changed.

    Accepts single-channel (L, P raw indices, 1, I;16) or gray RGB files holding {0, 255} or {0, 1}.

    Raises:
        DataError: unreadable file, a colour RGB mask, or other values (naming the file and the values).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "1":
                image = image.convert("L")
            values = np.asarray(image.convert("RGB") if image.mode == "RGBA" else image).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableFileError(f"cannot read change label {path}: {' '.join(str(exc).split())}") from exc
    if values.ndim == 3:
        if not (np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 0], values[..., 2])):
            raise DataError(f"change label {path} is a colour image; expected a binary mask (0 and 255, or 0 and 1)")
        values = values[..., 0]
    present = set(np.unique(values).tolist())
    if present <= {0, 255}:
        return (values == 255).astype(np.int64)
    if present <= {0, 1}:
        return values
    raise DataError(
        f"change label {path} holds values {sorted(present)[:10]}; expected a binary mask of 0 (unchanged) and "
        "255 (changed), or 0 and 1"
    )


@dataclass
class ChangePreflightReport:
    """What :func:`preflight_change` found.

    Attributes:
        kind: ``"levir"`` or ``"csv"`` (the dataset format).
        splits: split name -> split (``None`` when absent).
        stats: split name -> counts: levir ``{"pairs", "changed_pixels", "pixels"}``; csv ``{"PASS", "FAIL"}``.
        warnings: human-readable lines.
    """

    kind: str
    splits: dict[str, object | None]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str):
        """The split ``name``, or ``None``."""
        return self.splits.get(name)

    def format(self) -> str:
        """A text report, one line per split, then the warnings."""
        lines = []
        for name, stats in self.stats.items():
            if self.kind == "levir":
                ratio = stats["changed_pixels"] / max(stats["pixels"], 1)
                lines.append(f"{name}: {stats['pairs']} pairs, {100 * ratio:.2f}% changed pixels")
            else:
                passed, failed = stats["PASS"], stats["FAIL"]
                lines.append(f"{name}: {passed + failed} samples, PASS {passed}, FAIL {failed}")
        if self.warnings:
            lines += ["warnings:", *(f"  - {w}" for w in self.warnings)]
        return "\n".join(lines)


def preflight_change(spec: ChangeDataSpec, splits: Iterable[str] = ("train", "val"), workers: int = 8):
    """Check a change-detection dataset (either format) before training.

    levir: every listed name has A, B and label files; every triple is decoded once by the shared preflight
    (unreadable ones left out, listed and recorded); A/B/label sizes agree, labels are binary; changed-pixel share
    per split. csv: see :func:`vfmkit.tasks.change.data_csv.preflight_change_csv`.

    Returns:
        A :class:`ChangePreflightReport`.

    Raises:
        DataError: the first problem found, naming the file (and line for list/CSV files).
    """
    if spec.format == "csv":
        from vfmkit.tasks.change.data_csv import preflight_change_csv

        return preflight_change_csv(spec, splits)
    loaded = {name: load_levir_split(spec, name) for name in dict.fromkeys(splits)}
    if "test" in loaded and loaded["test"] is None:
        del loaded["test"]  # optional (train evaluates it when given): an absent one is not reported
    report = ChangePreflightReport("levir", dict(loaded))
    for name, split in loaded.items():
        if split is None:
            report.warnings.append(f"no {name} split (list file {name} not found)")
            continue
        if not len(split):
            if name == "train":
                raise DataError(f"the training list {split.source} names no pairs")
            report.warnings.append(f"the {name} list {split.source} names no pairs")
        checked = check_samples(
            range(len(split)),
            name,
            lambda i, s=split: _triple_counts(s, i),
            path_of=lambda i, s=split: s.paths(i)[0],
            workers=workers,
            what="A/B/label triples",
        )
        split = report.splits[name] = split.subset(checked.keep)
        if name == "train" and not len(split):
            raise DataError(f"the training list {split.source} holds no readable triples (see above)")
        counts = checked.kept_values
        changed, pixels = (int(sum(c[k] for c in counts)) for k in (0, 1))
        report.stats[name] = {"pairs": len(split), "changed_pixels": changed, "pixels": pixels}
        if len(split) and changed == 0:
            report.warnings.append(f"the {name} split has no changed pixels: change precision/recall/F1 are undefined")
    return report


def _triple_counts(split: ChangeSegSplit, index: int) -> tuple[int, int]:
    """Changed and total pixels of one triple, after decoding A, B and the label fully.

    Raises:
        UnreadableFileError: a file does not decode (the triple is left out); DataError: sizes or label values wrong.
    """
    a, b, label = split.paths(index)
    sizes = {a: load_image_rgb(a).size, b: load_image_rgb(b).size}
    mask = load_change_label(label)
    sizes[label] = (mask.shape[1], mask.shape[0])
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{p} is {w}x{h}" for p, (w, h) in sizes.items())
        raise DataError(f"image pair and label differ in size: {listed} (W x H); they must match")
    return int(mask.sum()), int(mask.size)


class ChangeSegDataset(EpochSeededDataset):
    """LEVIR-style (A, B, change mask) samples; both images and the mask go through ONE joint transform.

    Training: :class:`~vfmkit.data.dense_augment.JointAugment` seeded by ``(seed, epoch, index)`` (same scale,
    crop, flips and colour jitter for A and B; crop padding is ``ignore_index`` in the mask). Evaluation: resize
    both images to ``size`` (or keep their size with ``None``); the mask at full resolution or nearest-resized
    (``mask_size``).

    Args:
        split: the split to serve.
        size: output side or (H, W) (training crop unless ``augment.crop_size``; evaluation resize target).
        train: apply the random joint augmentation.
        augment: the augmentation spec (default ``ChangeAugmentSpec()``); ignored when ``train`` is false.
        seed: the run seed.
        ignore_index: mask value of padded pixels.
        mask_size: ``"full"`` or ``"resized"`` (evaluation only).
    """

    def __init__(
        self,
        split: ChangeSegSplit,
        size: int | tuple[int, int] | None,
        train: bool = False,
        augment: DenseAugmentSpec | None = None,
        seed: int = 0,
        ignore_index: int = 255,
        mask_size: MaskSize = "full",
    ) -> None:
        augment = augment or ChangeAugmentSpec()
        if train and size is None and augment.crop_size is None:
            raise ValueError("training needs a size (or augment.crop_size)")
        self.split, self.size, self.train, self.seed, self.mask_size = split, size, bool(train), int(seed), mask_size
        self.augment = JointAugment(size or augment.crop_size, augment, ignore_index) if self.train else None
        super().__init__()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Returns ``(image_a, image_b float32 (3, h, w) in [0, 1], mask int64 (h', w') 0/1 or ignore, index)``.

        Raises:
            DataError: an unreadable file, a non-binary label, or A/B/label of different sizes.
        """
        index = int(index)
        paths = self.split.paths(index)
        image_a, image_b = (pil_to_tensor(load_image_rgb(p)) for p in paths[:2])
        mask = torch.from_numpy(load_change_label(paths[2]))
        shapes = [tuple(image_a.shape[-2:]), tuple(image_b.shape[-2:]), tuple(mask.shape)]
        if len(set(shapes)) != 1:
            listed = ", ".join(f"{p} is {s}" for p, s in zip(paths, shapes, strict=True))
            raise DataError(f"image pair and label differ in size: {listed} (H, W); they must match")
        if self.augment is not None:
            (image_a, image_b), mask = self.augment([image_a, image_b], mask, sample_seed(self.seed, self.epoch, index))
        else:
            (image_a, image_b), mask = eval_transform([image_a, image_b], mask, self.size, self.mask_size)
        return image_a, image_b, mask, index


def make_dataset(spec: ChangeSpec, split, train: bool, resolution: int | None = None, full_masks: bool = False):
    """The pair dataset of a split: :class:`ChangeSegDataset` (segment) or
    :class:`~vfmkit.tasks.change.data_csv.ChangeClassifyDataset` (classify), at ``resolution`` (default the
    model's); ``full_masks`` keeps segment masks at their original size (metrics on original pixels)."""
    from vfmkit.tasks.change.data_csv import ChangeClassifyDataset

    res = resolution or spec.model.resolution
    augment, seed = spec.dataset.augment, spec.train.seed
    if spec.task_type == "segment":
        return ChangeSegDataset(
            split,
            res,
            train=train,
            augment=augment,
            seed=seed,
            ignore_index=spec.dataset.ignore_index,
            mask_size="full" if full_masks else "resized",
        )
    return ChangeClassifyDataset(split, res, train=train, augment=augment, seed=seed)


def trained_layout(spec: ChangeSpec, trained, **update) -> ChangeDataSpec:
    """This spec's data locations with the input layout ``trained`` (a :class:`~vfmkit.engine.taskdef.Trained`)
    was trained on: lighting conditions, image extension, number of goldens."""
    layout = {k: getattr(trained.spec.dataset, k) for k in ("light_conditions", "image_ext", "num_golden")}
    return spec.dataset.model_copy(update={**layout, **update})
