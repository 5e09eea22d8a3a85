"""Detection reports: the COCO metrics table, per-class precision-recall curves and a grid of images with predicted
and true boxes. Figures are written atomically (temporary file in the same folder, then ``os.replace``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import patches  # noqa: E402

from vfmkit.metrics.coco import CocoMetrics  # noqa: E402
from vfmkit.utils.atomic import save_figure_atomically

_LABELS = {
    "ap": "AP @[.50:.95]",
    "ap50": "AP50",
    "ap75": "AP75",
    "ap_small": "AP small",
    "ap_medium": "AP medium",
    "ap_large": "AP large",
    "ar1": "AR @1",
    "ar10": "AR @10",
    "ar100": "AR @100",
}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}%"


def format_metrics_table(metrics: dict[str, Any]) -> list[str]:
    """The COCO numbers and the per-class AP of :meth:`CocoMetrics.as_dict` as aligned lines, rates in percent
    ("-" where undefined)."""
    lines = [
        f"COCO {metrics['iou_type']} ({metrics['num_images']} images, {metrics['num_objects']} objects, "
        f"{metrics['num_detections']} detections)"
    ]
    lines += [f"  {label:<14} {_percent(metrics.get(key)):>8}" for key, label in _LABELS.items()]
    per_class = metrics.get("per_class") or {}
    if per_class:
        width = max(len(str(row["name"])) for row in per_class.values())
        lines.append(f"  {'class':<{width}}  {'id':>5}  {'AP':>8}  {'AP50':>8}")
        for cid, row in per_class.items():
            lines.append(f"  {row['name']:<{width}}  {cid:>5}  {_percent(row['ap']):>8}  {_percent(row['ap50']):>8}")
    return lines


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` as ``path`` atomically and close it."""
    try:
        return save_figure_atomically(fig, path, dpi)
    finally:
        plt.close(fig)


def plot_pr_curves(metrics: CocoMetrics, path: str | Path, title: str = "") -> Path:
    """Precision-recall curves at IoU 0.50 (all areas, 100 detections), one per class with objects, AP50 in the
    legend."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for cid, curve in metrics.pr_curves.items():
        if curve is None:
            continue
        name = metrics.category_names.get(cid, str(cid))
        ax.plot(
            metrics.recall_thresholds, np.clip(curve, 0, 1), label=f"{name} (AP50 {_fmt(metrics.per_class_ap50[cid])})"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or f"precision-recall @ IoU 0.50 (AP50 {_fmt(metrics.ap50)})")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_detection_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    class_names: Sequence[str],
    path: str | Path,
    conf_threshold: float = 0.5,
    columns: int = 4,
) -> Path:
    """A grid of images with true boxes (white, dashed) and predicted boxes (class colour, score).

    Args:
        images: N float (3, H, W) RGB in [0, 1].
        predictions: per image ``boxes`` (K, 4) xyxy pixels of that image, ``scores`` (K,), ``labels`` (K,)
            contiguous labels; those below ``conf_threshold`` are not drawn.
        targets: per image ``boxes`` (T, 4) xyxy pixels and ``labels`` (T,) contiguous labels.
        class_names: name per label.
        path: the PNG to write.
    """
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, target in zip(axes.flat, images, predictions, targets, strict=False):
        ax.imshow(image.detach().float().permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            ax.add_patch(_rectangle(box, "white", "--"))
            ax.text(box[0], box[3], class_names[int(label)], color="white", fontsize=6, va="top")
        keep = pred["scores"] >= conf_threshold
        for box, score, label in zip(
            pred["boxes"][keep].tolist(), pred["scores"][keep].tolist(), pred["labels"][keep].tolist(), strict=True
        ):
            colour = colours(int(label) % 10)
            ax.add_patch(_rectangle(box, colour, "-"))
            ax.text(
                box[0],
                box[1],
                f"{class_names[int(label)]} {score:.2f}",
                color="white",
                fontsize=6,
                bbox={"facecolor": colour, "alpha": 0.7, "pad": 1, "linewidth": 0},
            )
    fig.tight_layout()
    return save_figure(fig, path)


def _rectangle(box: Sequence[float], colour, style: str) -> patches.Rectangle:
    x0, y0, x1, y1 = box
    return patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linestyle=style, linewidth=1.2)
