"""Image-caption pairs: readers for four layouts, a preflight check, a dataset and a collate function.

Layouts (``dataset.<split>.type``):

- ``custom`` (TAO): ``image_dir`` with images (jpg/jpeg/png, or those listed in ``image_list_file``) and
  ``caption_dir/<image stem><caption_suffix>``; every non-empty line of a caption file is one caption.
- ``csv``: a header with ``image`` and ``caption`` columns (others ignored); ``jsonl``: one object per line with
  ``image`` and ``caption`` (a string or a list of strings). Several rows of one image give it several captions;
  relative image paths resolve against ``root`` when given, else the file's folder.
- ``coco``: a COCO captions JSON (``images`` with ``id``/``file_name``, ``annotations`` with ``image_id``/``caption``;
  several captions per image) with images in ``root``.
- ``wds``: WebDataset ``.tar`` shards (a folder of shards, a glob, a list file or one shard): members sharing a key
  (``<key>.jpg|jpeg|png|webp`` and ``<key>.txt|text``) form a pair; images are read in place from the shard. As in
  WebDataset, the key is the member's folder plus its file name up to the first dot (``./00000.png`` and
  ``v1.0/00000.txt`` have the keys ``./00000`` and ``v1.0/00000``).

Text files are read as UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one).

Readers never raise for content problems: they collect them (missing caption file, empty caption, missing image,
duplicate image-caption pair, each naming the file and line) and :func:`preflight` raises one
:class:`~vfmkit.errors.DataError` that lists them; it then decodes every image once (the shared preflight) and
leaves the unreadable ones out with their captions, listed and recorded.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vfmkit.data.augment import EpochSeededDataset, TrainAugment, sample_seed
from vfmkit.data.images import glob_files, iter_files
from vfmkit.data.json_reader import JsonReader, read_json
from vfmkit.data.preflight import check_samples
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.data.webdataset import WDS_IMAGE_SUFFIXES, ImageRef, split_member
from vfmkit.errors import DataError
from vfmkit.models.text.tokenizers import TextTokenizer
from vfmkit.tasks.classify.spec import AugmentSpec

PAIR_TYPES = ("custom", "csv", "jsonl", "coco", "wds")
SOURCE_KEYS = {
    "custom": ("image_dir", "caption_dir"),
    "csv": ("file",),
    "jsonl": ("file",),
    "coco": ("file", "root"),
    "wds": ("shards",),
}
"""The paths each layout needs."""
CUSTOM_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
WDS_TEXT_SUFFIXES = ("txt", "text")


@dataclass
class CaptionPairs:
    """Images and their captions.

    Attributes:
        images: the N_img images, in order of first appearance.
        captions: the N_txt captions.
        caption_image: int64 (N_txt,) the image index of each caption.
        source: the file or folder read, for messages.
        problems: content problems found while reading (one line each, naming the file).
    """

    images: list[ImageRef]
    captions: list[str]
    caption_image: np.ndarray
    source: str
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def relevance(self) -> np.ndarray:
        """bool (N_img, N_txt): image i and caption j belong together."""
        relevance = np.zeros((len(self.images), len(self.captions)), dtype=bool)
        relevance[self.caption_image, np.arange(len(self.captions))] = True
        return relevance

    def subset(self, keep: Sequence[bool]) -> CaptionPairs:
        """The pairs of the images where ``keep`` (one bool per image) is True, with their captions."""
        keep = np.asarray(keep, dtype=bool)
        new_index = np.cumsum(keep) - 1
        kept_captions = keep[self.caption_image]
        return CaptionPairs(
            [image for image, kept in zip(self.images, keep, strict=True) if kept],
            [caption for caption, kept in zip(self.captions, kept_captions, strict=True) if kept],
            new_index[self.caption_image[kept_captions]].astype(np.int64),
            self.source,
            list(self.problems),
        )

    def captions_of(self) -> list[list[int]]:
        """For each image, the indices of its captions (in file order)."""
        owners: list[list[int]] = [[] for _ in self.images]
        for caption, image in enumerate(self.caption_image.tolist()):
            owners[image].append(caption)
        return owners


class _PairBuilder:
    """Collects (image, caption, origin) rows into :class:`CaptionPairs`, noting empty and duplicate captions."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.images: list[ImageRef] = []
        self.index: dict[ImageRef, int] = {}
        self.captions: list[str] = []
        self.owners: list[int] = []
        self.seen: dict[tuple[int, str], str] = {}
        self.problems: list[str] = []

    def add(self, image: ImageRef, caption: object, origin: str) -> None:
        if caption is not None and not isinstance(caption, str):
            self.problems.append(f"{origin}: the caption of image {image} is not a string: {caption!r}")
            return
        text = " ".join(caption.split()) if caption is not None else ""
        if not text:
            self.problems.append(f"{origin}: {'empty' if caption is not None else 'no'} caption for image {image}")
            return
        if image not in self.index:
            self.index[image] = len(self.images)
            self.images.append(image)
        key = (self.index[image], text)
        if key in self.seen:
            self.problems.append(f"{origin}: duplicate of {self.seen[key]} (image {image}, caption {text!r})")
            return
        self.seen[key] = origin
        self.captions.append(text)
        self.owners.append(self.index[image])

    def build(self) -> CaptionPairs:
        if not self.images and not self.problems:
            self.problems.append(f"{self.source}: no image-caption pairs found")
        owners = np.asarray(self.owners, dtype=np.int64)
        return CaptionPairs(self.images, self.captions, owners, self.source, self.problems)


def _resolve(path: str, base: Path) -> Path:
    file = Path(path).expanduser()
    return file if file.is_absolute() else base / file


def read_caption_folders(
    image_dir: Path, caption_dir: Path, caption_suffix: str = ".txt", image_list_file: Path | None = None
) -> CaptionPairs:
    """TAO's custom layout: ``image_dir`` + ``caption_dir/<stem><caption_suffix>`` (one caption per line)."""
    image_dir, caption_dir = Path(image_dir), Path(caption_dir)
    for folder, key in ((image_dir, "image_dir"), (caption_dir, "caption_dir")):
        if not folder.is_dir():
            raise DataError(f"dataset {key} {folder} is not a folder")
    if image_list_file is not None:
        names = [ln.strip() for ln in _read_text(Path(image_list_file)).splitlines() if ln.strip()]
        files = [_resolve(n, image_dir) for n in names]
    else:
        files = [p for p in iter_files(image_dir, recursive=False) if p.suffix.lower() in CUSTOM_IMAGE_SUFFIXES]
    builder = _PairBuilder(str(image_dir))
    for file in files:
        caption_file = caption_dir / f"{file.stem}{caption_suffix}"
        if not file.is_file():
            builder.problems.append(f"{image_list_file}: image {file} does not exist")
        elif not caption_file.is_file():
            builder.problems.append(f"{file}: no caption file {caption_file}")
        else:
            lines = [ln for ln in _read_text(caption_file).splitlines() if ln.strip()] or [""]
            for number, line in enumerate(lines, start=1):
                builder.add(ImageRef(file), line, f"{caption_file}:{number}")
    return builder.build()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err} (expected a UTF-8 text file)") from None


def _add_row(builder: _PairBuilder, image: object, caption: object, base: Path, origin: str) -> None:
    if not isinstance(image, str) or not image.strip():
        builder.problems.append(f"{origin}: no image path")
        return
    file = _resolve(image.strip(), base)
    if not file.is_file():
        builder.problems.append(f"{origin}: image {file} does not exist")
        return
    for text in caption if isinstance(caption, list) else [caption]:
        builder.add(ImageRef(file), text, origin)


def read_csv_pairs(file: Path, root: Path | None = None) -> CaptionPairs:
    """``image,caption`` rows (a header naming both columns is required)."""
    file = Path(file)
    base = Path(root) if root is not None else file.parent
    reader = csv.DictReader(io.StringIO(_read_text(file)))
    if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
        raise DataError(f"{file}: the header must name the columns 'image' and 'caption', got {reader.fieldnames}")
    builder = _PairBuilder(str(file))
    for number, row in enumerate(reader, start=2):
        _add_row(builder, row["image"], row["caption"], base, f"{file}:{number}")
    return builder.build()


def read_jsonl_pairs(file: Path, root: Path | None = None) -> CaptionPairs:
    """One ``{"image": ..., "caption": str | [str, ...]}`` object per line."""
    file = Path(file)
    base = Path(root) if root is not None else file.parent
    builder = _PairBuilder(str(file))
    for number, line in enumerate(_read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{file}:{number}: not a JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{file}:{number}: expected an object with 'image' and 'caption'")
        _add_row(builder, row.get("image"), row.get("caption"), base, f"{file}:{number}")
    return builder.build()


def read_coco_captions(file: Path, root: Path) -> CaptionPairs:
    """A COCO captions JSON (``images``: id, file_name; ``annotations``: image_id, caption) with images in ``root``,
    read through the shared :class:`~vfmkit.data.json_reader.JsonReader` (a malformed file is refused naming the
    list, index and key)."""
    file = Path(file)
    reader = JsonReader(file)
    data = read_json(file, "COCO captions file")
    expected = "an object with 'images' (id, file_name) and 'annotations' (image_id, caption)"
    images: dict[int, str] = {}
    seen: dict[int, str] = {}
    for index, item in enumerate(reader.list_of(data, "images", expected=expected)):
        where = f"images[{index}]"
        image_id = reader.get(item, where, "id", int)
        reader.unique_id(seen, image_id, where, "image id")
        images[image_id] = reader.get(item, where, "file_name", str)
    builder = _PairBuilder(str(file))
    for index, item in enumerate(reader.list_of(data, "annotations", expected=expected)):
        where = f"annotations[{index}]"
        image_id = reader.get(item, where, "image_id", int)
        origin = f"{file} annotation {reader.get(item, where, 'id', (int, str), index)}"
        if image_id not in images:
            builder.problems.append(f"{origin}: image_id {image_id} is not in 'images'")
            continue
        _add_row(builder, images[image_id], item.get("caption"), Path(root), origin)
    return builder.build()


def list_shards(shards: Path) -> list[Path]:
    """``.tar`` shards of a folder (sorted), a glob pattern, a text file listing shards, or one shard."""
    text = str(shards)
    path = Path(text).expanduser()
    if path.is_dir():
        found = [p for p in iter_files(path, recursive=False) if p.suffix == ".tar"]
    elif path.is_file() and path.suffix == ".tar":
        found = [path]
    elif path.is_file():
        found = [_resolve(ln.strip(), path.parent) for ln in _read_text(path).splitlines() if ln.strip()]
    else:
        found = [p for p in glob_files(text) if p.suffix == ".tar"]
    if not found:
        raise DataError(f"no .tar shards found at {text} (expected a folder, a glob, a list file or a shard)")
    return found


def read_webdataset(shards: Path) -> CaptionPairs:
    """Pairs from WebDataset shards: members ``<key>.<image ext>`` + ``<key>.<txt|text>`` of one shard."""
    builder = _PairBuilder(str(shards))
    for shard in list_shards(shards):
        try:
            with tarfile.open(shard, "r:") as tar:
                _read_shard(tar, Path(shard), builder)
        except (OSError, tarfile.TarError) as err:
            raise DataError(f"cannot read shard {shard}: {err} (expected an uncompressed .tar)") from None
    return builder.build()


def _read_shard(tar: tarfile.TarFile, shard: Path, builder: _PairBuilder) -> None:
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    for member in tar.getmembers():
        if member.isfile():
            key, ext = split_member(member.name)
            samples.setdefault(key, {})[ext] = member
    for key, parts in samples.items():
        image = next((parts[e] for e in WDS_IMAGE_SUFFIXES if e in parts), None)
        text = next((parts[e] for e in WDS_TEXT_SUFFIXES if e in parts), None)
        if image is None:
            continue
        if text is None:
            builder.problems.append(f"{shard}: sample {key!r} has no .txt caption")
            continue
        ref = ImageRef(shard, image.name, image.offset_data, image.size)
        caption = tar.extractfile(text).read().decode("utf-8", errors="replace")
        for line in [ln for ln in caption.splitlines() if ln.strip()] or [""]:
            builder.add(ref, line, f"{shard}/{text.name}")


def read_pairs(
    kind: str,
    *,
    image_dir: Path | None = None,
    caption_dir: Path | None = None,
    caption_suffix: str = ".txt",
    image_list_file: Path | None = None,
    file: Path | None = None,
    root: Path | None = None,
    shards: Path | None = None,
) -> CaptionPairs:
    """Read one pair source of layout ``kind`` (see the module docstring for which arguments each needs).

    Raises:
        DataError: an unknown layout or a missing required path (naming the spec key).
    """
    if kind not in SOURCE_KEYS:
        raise DataError(f"dataset type {kind!r} is not one of {', '.join(PAIR_TYPES)}")
    given = {"image_dir": image_dir, "caption_dir": caption_dir, "file": file, "root": root, "shards": shards}
    missing = [k for k in SOURCE_KEYS[kind] if given[k] is None]
    if missing:
        raise DataError(f"dataset type {kind!r} needs {' and '.join(missing)}")
    if kind == "custom":
        return read_caption_folders(image_dir, caption_dir, caption_suffix, image_list_file)
    if kind == "csv":
        return read_csv_pairs(file, root)
    if kind == "jsonl":
        return read_jsonl_pairs(file, root)
    if kind == "coco":
        return read_coco_captions(file, root)
    return read_webdataset(shards)


def read_source(source, key: str) -> CaptionPairs | None:
    """The pairs of a ``dataset.<key>`` spec section (``type`` and its paths), None when it names no path.

    Raises:
        DataError: a path the layout needs is missing (naming ``dataset.<key>.<path>``), or the reader's errors.
    """
    paths = {name: getattr(source, name) for name in ("image_dir", "caption_dir", "file", "root", "shards")}
    if all(value is None for value in paths.values()):
        return None
    missing = [name for name in SOURCE_KEYS[source.type] if paths[name] is None]
    if missing:
        keys = " and ".join(f"dataset.{key}.{name}" for name in missing)
        raise DataError(f"dataset.{key}.type {source.type!r} needs {keys}")
    return read_pairs(
        source.type, **paths, caption_suffix=source.caption_suffix, image_list_file=source.image_list_file
    )


def preflight(
    pairs: CaptionPairs, split: str, check_images: bool = True, workers: int = 4
) -> tuple[CaptionPairs, dict[str, int]]:
    """Check a pair source: reading problems are refused; every image is decoded once by the shared preflight
    (:func:`vfmkit.data.preflight.check_samples`) when asked, and the unreadable ones are left out with their
    captions (listed and recorded).

    Returns:
        The pairs without the left-out images, and ``{"images": N_img, "captions": N_txt}`` of them.

    Raises:
        DataError: one message listing the number of reading problems and the first five, each naming its file;
            or no readable image left.
    """
    problems = list(pairs.problems)
    if problems:
        listed = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"{len(problems)} problem(s) in {pairs.source}: {listed}{more}")
    if check_images:
        checked = check_samples(pairs.images, split, lambda image: image.load().size, workers=workers)
        if checked.left_out:
            pairs = pairs.subset(checked.keep)
            if not len(pairs):
                raise DataError(f"{pairs.source}: no readable image left in the {split} pairs (see above)")
    return pairs, {"images": len(pairs.images), "captions": len(pairs.captions)}


def pick_caption(captions: Sequence[int], seed: int, epoch: int, index: int, train: bool) -> int:
    """The caption of an image for one epoch: seeded by (seed, epoch, image index) in training, the first otherwise."""
    if not train or len(captions) == 1:
        return captions[0]
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, index, stream="caption"))
    return captions[int(torch.randint(len(captions), (1,), generator=generator))]


class PairDataset(EpochSeededDataset):
    """One item per image: the image (augmented in training) and one of its captions.

    Args:
        pairs: the pairs.
        resolution: output side R.
        train: random resized crop / colour jitter, and a random caption per (seed, epoch, image).
        crop_scale: area scale range of the random resized crop (TAO ``augmentation.scale``; None: plain resize).
        color_jitter: brightness/contrast/saturation strength (0: off). No horizontal flip (captions say left/right).
        seed: the run seed.
    """

    def __init__(
        self,
        pairs: CaptionPairs,
        resolution: int,
        train: bool = False,
        crop_scale: tuple[float, float] | None = (0.4, 1.0),
        color_jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.pairs = pairs
        self.split = pairs.images
        self.resolution = int(resolution)
        self.train = bool(train)
        self.seed = int(seed)
        self.owners = pairs.captions_of()
        spec = AugmentSpec(random_resized_crop=crop_scale, hflip=0.0, color_jitter=color_jitter)
        self.augment = TrainAugment(self.resolution, spec) if self.train else None
        super().__init__()

    def __len__(self) -> int:
        return len(self.pairs.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        """``(image float32 (3, R, R) in [0, 1], caption index, image index)``."""
        index = int(index)
        image = pil_to_tensor(self.pairs.images[index].load())
        if self.augment is None:
            image = resize(image, (self.resolution, self.resolution))
        else:
            image = self.augment(image, sample_seed(self.seed, self.epoch, index))
        return image, pick_caption(self.owners[index], self.seed, self.epoch, index, self.train), index


def expected_dropped_fraction(pairs: CaptionPairs, batch_size: int) -> float:
    """The share of training samples :class:`PairCollate` is expected to drop as repeated captions, in [0, 1).

    Each image shows one of its captions per epoch (uniformly), and a batch holds B of the N images. Treating each
    image as in the batch with probability B / N, caption text t is absent from a batch with probability
    ``prod over images i of (1 - B / N * p_i(t))``, p_i(t) the share of image i's captions that are t; the share
    dropped is ``1 - E[distinct texts in a batch] / B``: exactly 0 for unique captions, ``1 - 1 / B`` (to within
    ``(1 - B / N)^N / B``) for one caption shared by every image, within a few percent otherwise.
    """
    count = len(pairs.images)
    size = min(batch_size, count)
    if size < 2:
        return 0.0
    _, text = np.unique(np.asarray(pairs.captions, dtype=object).astype(str), return_inverse=True)
    per_image = np.bincount(pairs.caption_image, minlength=count)[pairs.caption_image]
    with np.errstate(divide="ignore"):  # a caption in every batch: log(0) = -inf, exp(-inf) = 0 as intended
        log_absent = np.bincount(text, weights=np.log1p(-(size / count) / per_image))
    return float(max(0.0, 1.0 - (1.0 - np.exp(log_absent)).sum() / size))


class PairCollate:
    """Stacks ``(image or cached embedding, caption index, image index)`` items and tokenizes their captions.

    Samples whose caption text already appears earlier in the batch are dropped: identical captions would be
    contrastive negatives of each other (false negatives) although their embeddings are equal. Training logs the
    share dropped per epoch as ``train/dropped_fraction``; the preflight warns when it is expected to be large
    (:func:`expected_dropped_fraction`).

    Returns a dict: ``images`` float (B, ...) (images or cached embeddings), ``input_ids`` int64
    (B, context_length), ``caption_index`` / ``image_index`` int64 (B,), ``dropped`` (samples removed).
    """

    def __init__(self, tokenizer: TextTokenizer | Callable, captions: Sequence[str], drop_duplicates: bool = True):
        self.tokenizer = tokenizer
        self.captions = list(captions)
        self.drop_duplicates = drop_duplicates

    def __call__(self, items: Sequence[tuple[torch.Tensor, int, int]]) -> dict[str, torch.Tensor]:
        kept, seen = [], set()
        for item in items:
            text = self.captions[item[1]]
            if self.drop_duplicates and text in seen:
                continue
            seen.add(text)
            kept.append(item)
        return {
            "images": torch.stack([item[0] for item in kept]),
            "input_ids": self.tokenizer([self.captions[item[1]] for item in kept]),
            "caption_index": torch.tensor([item[1] for item in kept], dtype=torch.int64),
            "image_index": torch.tensor([item[2] for item in kept], dtype=torch.int64),
            "dropped": torch.tensor(len(items) - len(kept)),
        }
