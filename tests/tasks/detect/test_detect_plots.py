"""Detection reports: the COCO table and the figures (PR curves per class, predicted vs true boxes), written
atomically."""

from __future__ import annotations

import torch
from PIL import Image

from vfmkit.metrics.coco import evaluate_coco
from vfmkit.tasks.detect.metrics import format_metrics_table, plot_detection_grid, plot_pr_curves

GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 7, "name": "triangle"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [50, 40, 40, 50], "area": 2000, "iscrowd": 0},
    ],
}
RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": [12, 10, 30, 30], "score": 0.9},
    {"image_id": 2, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.8},
    {"image_id": 2, "category_id": 3, "bbox": [50, 40, 40, 50], "score": 0.7},
]


def test_table_lists_every_metric_and_class():
    lines = format_metrics_table(evaluate_coco(GT, RESULTS).as_dict())
    table = "\n".join(lines)
    assert "COCO bbox (2 images, 2 objects, 3 detections)" in table and "AP @[.50:.95]" in table and "AR @100" in table
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["AP50"][-1] == "75.00%"  # circle 1.0; square 0.5 (its false positive outscores the hit)
    assert rows["triangle"] == ["triangle", "7", "-", "-"] and rows["square"][1] == "3"


def test_figures_are_written_atomically(tmp_path):
    metrics = evaluate_coco(GT, RESULTS)
    curve = plot_pr_curves(metrics, tmp_path / "plots" / "pr_curves.png")
    images = torch.rand(3, 3, 64, 64)
    predictions = [
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "scores": torch.tensor([0.2]), "labels": torch.tensor([0])},
    ]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 31.0, 29.0]]), "labels": torch.tensor([1])}] * 3
    grid = plot_detection_grid(
        images, predictions, targets, ["circle", "square", "triangle"], tmp_path / "plots" / "val.png"
    )
    for path in (curve, grid):
        assert Image.open(path).size[0] > 100
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["pr_curves.png", "val.png"]
