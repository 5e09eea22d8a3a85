"""COCO ``segmentation`` <-> binary masks, through faster-coco-eval's mask codec (the pycocotools C code).

A COCO ``segmentation`` is a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` (pixel coordinates), an uncompressed
RLE ``{"size": [h, w], "counts": [int, ...]}`` (crowd regions) or a compressed RLE ``{"size", "counts": str}``.
Results files hold compressed RLE with ``counts`` as text (:func:`mask_to_rle`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vfmkit.errors import DataError


def segmentation_to_mask(segmentation: Any, height: int, width: int, where: str = "segmentation") -> np.ndarray:
    """Rasterise a COCO ``segmentation`` (polygons, uncompressed or compressed RLE) to a bool (H, W) mask.

    Args:
        segmentation: the annotation's ``segmentation``.
        height, width: the image size (an RLE must have this ``size``).
        where: what to name in errors (file and annotation).

    Raises:
        DataError: an empty or malformed segmentation, a polygon with fewer than 3 points, or an RLE of another size.
    """
    from faster_coco_eval.core import mask as codec

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list)]
        if not polygons or len(polygons) != len(segmentation):
            raise DataError(f"{where}: polygons must be a non-empty list of [x0, y0, x1, y1, ...] lists")
        if any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise DataError(f"{where}: every polygon needs at least 3 (x, y) points, as an even-length list")
        rle = codec.merge(codec.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise DataError(f"{where}: RLE size {size} differs from the image's [height, width] [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = codec.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str | bytes):
            rle = {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}
        else:
            raise DataError(f"{where}: RLE counts must be a list (uncompressed) or a string (compressed)")
    else:
        raise DataError(f"{where}: expected polygons or an RLE dict with 'size' and 'counts', got {segmentation!r:.80}")
    try:
        return codec.decode(rle).astype(bool)
    except Exception as err:  # the C decoder raises plain exceptions on corrupt counts
        raise DataError(f"{where}: cannot decode the RLE ({err})") from None


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A bool (H, W) mask as a compressed COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    from faster_coco_eval.core import mask as codec

    rle = codec.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode() if isinstance(counts, bytes) else counts}
