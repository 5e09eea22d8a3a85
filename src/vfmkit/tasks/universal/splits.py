"""The splits of a universal-segmentation dataset in its three formats, and each sample's annotation as a segment-id
map.

- COCO panoptic (cocodataset/panopticapi): a JSON with ``images`` ({id, file_name, width, height}), ``annotations``
  ({image_id, file_name of the PNG, segments_info [{id, category_id, iscrowd, area, bbox}]}) and ``categories``
  ({id, name, isthing}); one PNG per image whose pixels hold segment ids ``R + 256 G + 256^2 B`` (0 = VOID).
  Categories keep the order of the file.
- COCO instances: read by :func:`vfmkit.data.coco.read_coco` (its checks, and its category map: contiguous indices
  in ascending id order); every category is a thing; ``segmentation`` polygons or RLE are rasterised into a
  segment-id map for training (crowd regions first, then the objects from the largest to the smallest, so a small
  object overlapping a large one stays visible). Unannotated pixels are VOID. Mask AP is computed on the original
  annotations, overlaps included.
- Semantic masks (the segment task's folders and palette): class-index masks become one stuff segment per class
  present (ignored pixels are VOID); the original id of a class is its palette ``id`` (its index for RGB palettes).

Category ids are kept as in the files (any sparse ids); the model uses contiguous indices 0..K-1
(:class:`~vfmkit.tasks.universal.categories.CategoryTable`), and results are written back with the original ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vfmkit.data.coco import CocoAnnotation, read_coco
from vfmkit.data.coco_masks import segmentation_to_mask
from vfmkit.data.coco_panoptic import read_coco_panoptic
from vfmkit.data.palette import Palette
from vfmkit.errors import DataError, UnreadableFileError
from vfmkit.metrics.panoptic import VOID, read_panoptic_png
from vfmkit.tasks.segment.data import load_segment_split
from vfmkit.tasks.universal.categories import Category, CategoryTable, SegmentInfo
from vfmkit.tasks.universal.spec import UniversalDataSpec


@dataclass(frozen=True)
class PanopticSample:
    """One image and its annotation: a panoptic PNG + segments, COCO instances, or a class mask.

    Attributes:
        image: the image file.
        image_id: the id in the annotation file (the file stem for semantic masks).
        panoptic: COCO panoptic: the PNG of segment ids.
        segments: COCO panoptic: its ``segments_info`` (contiguous categories).
        mask: semantic masks: the class mask.
        instances: COCO instances: the image's annotations (raw ``segmentation``).
        size: COCO instances: (height, width) of the image in the JSON.
    """

    image: str
    image_id: int | str
    panoptic: str | None = None
    segments: tuple[SegmentInfo, ...] = ()
    mask: str | None = None
    instances: tuple[CocoAnnotation, ...] = ()
    size: tuple[int, int] | None = None

    @property
    def annotation(self) -> str:
        """The annotation file (for messages)."""
        return str(self.panoptic or self.mask or self.image)


@dataclass
class UniversalSplit:
    """The samples of one split and the category table.

    Attributes:
        name: ``train`` / ``val`` / ``test``.
        categories: the categories (contiguous order).
        samples: the samples.
        source: where they came from (for messages).
        palette: semantic-mask splits: the palette decoding the masks.
    """

    name: str
    categories: CategoryTable
    samples: list[PanopticSample]
    source: Path
    palette: Palette | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, keep: Sequence[bool]) -> UniversalSplit:
        """The split with the samples where ``keep`` is True."""
        samples = [sample for sample, kept in zip(self.samples, keep, strict=True) if kept]
        return UniversalSplit(self.name, self.categories, samples, self.source, self.palette)

    def missing_files(self) -> list[str]:
        """The image and annotation files the split names that do not exist (an annotation error, not a file to
        leave out)."""
        named = [(s.image, s.panoptic or s.mask) for s in self.samples]
        return [f for pair in named for f in pair if f is not None and not Path(f).is_file()]


def load_universal_split(spec: UniversalDataSpec, name: str) -> UniversalSplit | None:
    """The split ``name`` of a ``dataset`` section (None when the spec or the folders have none).

    Raises:
        DataError: unreadable or inconsistent annotation files (see the loaders).
    """
    if spec.format == "semantic_masks":
        # the universal task reads the segment task's mask folders: its layout and pairing rules are the same
        pairs = load_segment_split(spec.semantic, name)
        if pairs is None:
            return None
        palette = Palette.from_spec(spec.semantic)
        return semantic_mask_split(name, pairs.images.tolist(), pairs.masks.tolist(), palette, pairs.source)
    section = getattr(spec, name)
    if section is None:
        return None
    if spec.format == "coco_instances":
        return load_coco_instances_split(name, section.images, section.annotations)
    return load_coco_panoptic_split(name, section.images, section.annotations, section.panoptic)


def load_coco_panoptic_split(
    name: str, images_dir: str | Path, json_file: str | Path, panoptic_dir: str | Path | None = None
) -> UniversalSplit:
    """Read a COCO panoptic JSON (no image or PNG is opened).

    Args:
        name: the split name.
        images_dir: folder of the images (``images[].file_name`` relative to it).
        json_file: the ``panoptic_*.json``.
        panoptic_dir: folder of the PNGs (default: ``json_file`` without ``.json``, the COCO layout).

    Returns:
        The split; images without annotation are left out (an annotation without image is an error).

    Raises:
        DataError: what :func:`~vfmkit.data.coco_panoptic.read_coco_panoptic` refuses (naming the file, the list,
            the index and the key).
    """
    json_file = Path(json_file)
    panoptic_dir = Path(panoptic_dir) if panoptic_dir is not None else json_file.with_suffix("")
    panoptic = read_coco_panoptic(json_file)
    categories = CategoryTable(
        [Category(c.id, c.name, c.isthing, c.color) for c in panoptic.categories]
    )  # ids and names are unique: read_coco_panoptic checked them
    samples = [
        PanopticSample(
            str(Path(images_dir) / ann.file_name),
            ann.image_id,
            str(panoptic_dir / ann.png_name),
            tuple(SegmentInfo(s.id, categories.index(s.category_id), s.iscrowd, s.area) for s in ann.segments),
        )
        for ann in panoptic.annotations
    ]
    split = UniversalSplit(name, categories, samples, json_file)
    _refuse_missing_files(split, f"{json_file} (images in {images_dir}, PNGs in {panoptic_dir})")
    return split


def _refuse_missing_files(split: UniversalSplit, where: str) -> None:
    missing = split.missing_files()
    if missing:
        raise DataError(f"{where}: {len(missing)} file(s) named by the annotations do not exist, e.g. {missing[0]}")


def load_coco_instances_split(name: str, images_dir: str | Path, json_file: str | Path) -> UniversalSplit:
    """Read a COCO instances JSON with :func:`~vfmkit.data.coco.read_coco` (every image, negatives included).

    Raises:
        DataError: what ``read_coco`` refuses, or an annotation without ``segmentation`` (naming the file and id).
    """
    coco = read_coco(json_file, images_dir)
    table = CategoryTable([Category(c.id, c.name, True) for c in coco.categories])  # label order = read_coco's
    samples = []
    for image in coco.images:
        annotations = tuple(coco.annotations.get(image.id, ()))
        for ann in annotations:
            if ann.segmentation is None:
                raise DataError(
                    f"{coco.json_file}: annotation {ann.id} (image {image.id}) has no 'segmentation'; the universal "
                    "task needs polygons or RLE masks (boxes alone are a detection dataset)"
                )
        samples.append(
            PanopticSample(str(image.path), image.id, instances=annotations, size=(image.height, image.width))
        )
    return UniversalSplit(name, table, samples, coco.json_file)


def semantic_mask_split(
    name: str, images: Sequence[str | Path], masks: Sequence[str | Path], palette: Palette, source: str | Path
) -> UniversalSplit:
    """A split of image / class-mask pairs (already paired); every palette class is a stuff category whose original
    id is its palette id (its index for RGB palettes)."""
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    colors = palette.colors.tolist()
    ids = palette.ids.tolist() if palette.ids is not None else list(range(len(palette)))
    table = CategoryTable(
        [Category(int(i), n, False, tuple(c)) for i, n, c in zip(ids, palette.names, colors, strict=True)]
    )
    samples = [PanopticSample(str(i), Path(i).stem, mask=str(m)) for i, m in zip(images, masks, strict=True)]
    return UniversalSplit(name, table, samples, Path(source), palette)


def load_annotation(sample: PanopticSample, split: UniversalSplit) -> tuple[np.ndarray, tuple[SegmentInfo, ...]]:
    """The segment-id map int64 (H, W) (0 = VOID) and the segments of a sample.

    Raises:
        DataError: an unreadable PNG / mask, unknown mask values, or a malformed instance ``segmentation``.
    """
    if sample.panoptic is not None:
        return read_panoptic_png(sample.panoptic), sample.segments
    if sample.size is not None:
        return instance_id_map(sample, split.source)
    if split.palette is None or sample.mask is None:
        raise ValueError(f"sample {sample.image} has neither a panoptic PNG, instances nor a class mask")
    try:
        with Image.open(sample.mask) as mask:
            mask.load()
            classes = split.palette.encode(mask, sample.mask)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableFileError(f"cannot read mask {sample.mask}: {' '.join(str(exc).split())}") from exc
    valid = (classes >= 0) & (classes < len(split.palette))
    ids = np.where(valid, classes + 1, VOID).astype(np.int64)
    present = np.unique(classes[valid]).tolist()
    return ids, tuple(SegmentInfo(int(k) + 1, int(k)) for k in present)


def instance_id_map(sample: PanopticSample, source: Path | str) -> tuple[np.ndarray, tuple[SegmentInfo, ...]]:
    """COCO instances of one image as a segment-id map int64 (H, W): segment ``k + 1`` is ``sample.instances[k]``;
    crowd regions are painted first, then the objects from the largest to the smallest (unannotated pixels: VOID)."""
    height, width = sample.size
    ids = np.full((height, width), VOID, dtype=np.int64)
    order = sorted(range(len(sample.instances)), key=lambda k: (not sample.instances[k].iscrowd, -_area(sample, k)))
    for k in order:
        ann = sample.instances[k]
        where = f"{source}: annotation {ann.id} (image {sample.image_id})"
        ids[segmentation_to_mask(ann.segmentation, height, width, where)] = k + 1
    segments = tuple(SegmentInfo(k + 1, ann.label, ann.iscrowd) for k, ann in enumerate(sample.instances))
    return ids, segments


def _area(sample: PanopticSample, k: int) -> float:
    return float(sample.instances[k].area)
