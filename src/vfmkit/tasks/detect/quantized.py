"""``export.int8=true`` for detectors: the exported fp32 graph quantized for onnxruntime on the CPU (dynamic int8
weights of every MatMul/Gemm, :func:`vfmkit.export.quantize.quantize_int8`), written beside it as
``<name>_int8.onnx``, and compared with the fp32 graph:

- on the verification images (those the fp32 export was verified on): each of fp32's top detections per image is
  matched to the int8 detection of the same class with the highest IoU (greedy, one to one); reported: the mean IoU
  of those pairs and the mean absolute score difference. The int8 graph is refused (nothing written) when the mean
  IoU is below ``export.int8_min_iou``;
- on the val split (when the dataset has one): COCO AP50 of both graphs and the change.

The comparison figures are printed and written to ``<name>_int8.json``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torchvision.ops import box_iou

from vfmkit.engine.runs import make_eval_loader
from vfmkit.errors import DataError, VfmError
from vfmkit.export.onnx import _move_into_place
from vfmkit.export.quantize import quantize_int8
from vfmkit.metrics.coco import evaluate_coco
from vfmkit.tasks.detect.data import DetectionDataset, collate_detection, load_detection_data
from vfmkit.tasks.detect.infer import Detections, DetectRunner
from vfmkit.tasks.detect.postprocess import to_coco_results
from vfmkit.tasks.detect.spec import DetectSpec
from vfmkit.utils.atomic import atomic_write_text

TOP_DETECTIONS = 20
"""fp32 detections per image compared with the int8 graph's."""


@dataclass
class Int8Comparison:
    """int8 vs fp32 figures of a detector export.

    Attributes:
        images: verification images compared.
        mean_iou: mean IoU of fp32's top detections with their matched int8 detections (same class; 0 when none).
        mean_score_diff: mean |score fp32 - score int8| over those pairs.
        ap50_fp32, ap50_int8: COCO AP50 on the val split (None without a val split or with export.verify=false).
        ap50_change: ap50_int8 - ap50_fp32 (None likewise).
    """

    images: int
    mean_iou: float
    mean_score_diff: float
    ap50_fp32: float | None = None
    ap50_int8: float | None = None
    ap50_change: float | None = None

    def lines(self) -> list[str]:
        first = (
            f"int8 vs fp32 on {self.images} verification images: mean IoU of matched boxes {self.mean_iou:.4f} (top "
            f"{TOP_DETECTIONS} per image), mean score difference {self.mean_score_diff:.4f}"
        )
        if self.ap50_change is None:
            return [first, "int8 vs fp32 AP50 on the val split: not measured (no val split)"]
        ap = f"AP50 on the val split: fp32 {self.ap50_fp32:.4f}, int8 {self.ap50_int8:.4f} ({self.ap50_change:+.4f})"
        return [first, ap]


def match_detections(reference: Detections, other: Detections, top: int = TOP_DETECTIONS) -> tuple[float, float]:
    """Mean IoU and mean absolute score difference of ``reference``'s top detections matched to ``other``'s.

    Args:
        reference, other: ``boxes`` (B, K, 4) xyxy, ``scores`` (B, K) descending, ``labels`` (B, K) of two runs of
            the same images.
        top: reference detections per image compared.

    Returns:
        (mean IoU, mean |score difference|); an unmatched reference detection (no same-class detection left) counts
        IoU 0 and its whole score.
    """
    ious, diffs = [], []
    for b in range(len(reference[0])):
        ref_boxes, ref_scores, ref_labels = (t[b][:top] for t in reference)
        boxes, scores, labels = (t[b] for t in other)
        overlap = box_iou(ref_boxes.float(), boxes.float())
        overlap[ref_labels[:, None] != labels[None, :]] = -1.0
        for row in range(len(ref_boxes)):
            best = int(overlap[row].argmax())
            if overlap[row, best] < 0:
                ious.append(0.0)
                diffs.append(float(ref_scores[row]))
                continue
            ious.append(float(overlap[row, best]))
            diffs.append(abs(float(ref_scores[row]) - float(scores[best])))
            overlap[:, best] = -1.0  # one to one
    count = max(len(ious), 1)
    return sum(ious) / count, sum(diffs) / count


def val_ap50(runner: DetectRunner, spec: DetectSpec) -> float | None:
    """COCO AP50 of ``runner`` on the val split of ``spec.dataset`` (None when there is no val split)."""
    try:
        data = load_detection_data(spec.dataset, ("val",), check_images=False)
    except DataError:
        return None
    split = data.split("val")
    if split is None or not len(split):
        return None
    dataset = DetectionDataset(split, runner.resolution)
    results = []
    for images, targets in make_eval_loader(dataset, spec.evaluate.batch_size, collate_detection):
        orig_sizes = torch.stack([t["orig_size"] for t in targets])
        results += to_coco_results(*runner.detect(images, orig_sizes), [int(t["image_id"]) for t in targets])
    return evaluate_coco(split.ground_truth(), results).summary()["ap50"]


def export_int8(
    fp32: Path, spec: DetectSpec, verify: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[Path, Int8Comparison | None]:
    """Quantize ``fp32`` to ``<stem>_int8.onnx`` beside it and compare (see the module docstring).

    Args:
        fp32: the verified fp32 detector graph.
        spec: the export spec (dataset for the val split, ``export.int8_min_iou``).
        verify: verification images (N, 3, R, R) and their (height, width) (N, 2); None: no comparison
            (``export.verify=false``).

    Returns:
        The int8 graph's path and the comparison (None without ``verify``).

    Raises:
        VfmError: quantization failed, or the int8 detections are too far from fp32 (nothing written).
    """
    out = fp32.with_name(f"{fp32.stem}_int8{fp32.suffix}")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = quantize_int8(fp32, Path(tmp) / out.name)
        comparison = None
        if verify is not None:
            reference, quantized = DetectRunner.from_onnx(fp32), DetectRunner.from_onnx(staged)
            images, sizes = verify
            mean_iou, score_diff = match_detections(reference.detect(images, sizes), quantized.detect(images, sizes))
            comparison = Int8Comparison(len(images), mean_iou, score_diff)
            if mean_iou < spec.export.int8_min_iou:
                raise VfmError(
                    f"int8 graph refused: mean IoU of its boxes with fp32's is {mean_iou:.4f} on {len(images)} "
                    f"verification images, below export.int8_min_iou {spec.export.int8_min_iou}; keep the fp32 graph "
                    f"{fp32} (or lower export.int8_min_iou)"
                )
            fp32_ap, int8_ap = val_ap50(reference, spec), val_ap50(quantized, spec)
            if fp32_ap is not None and int8_ap is not None:
                comparison.ap50_fp32, comparison.ap50_int8, comparison.ap50_change = fp32_ap, int8_ap, int8_ap - fp32_ap
        _move_into_place(staged, out)
    if comparison is not None:
        atomic_write_text(out.with_suffix(".json"), json.dumps(asdict(comparison), indent=1))
    return out, comparison


def check_int8_options(spec: DetectSpec) -> None:
    """``export.int8`` is an onnxruntime graph: refused with ``export.format=tensorrt``."""
    if spec.export.int8 and spec.export.format == "tensorrt":
        raise VfmError(
            "export.int8=true writes an onnxruntime int8 graph; a TensorRT int8 engine is export.precision=int8 "
            "(set export.int8=false with export.format=tensorrt)"
        )
