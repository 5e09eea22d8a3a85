"""A plain PyTorch training loop for the detection learning tests (model + criterion + AdamW), and train-set AP
through the task's post-processing and metrics/coco.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from tests.tasks.detect.detect_data import make_detection_dataset

from vfmkit.metrics.coco import CocoMetrics, evaluate_coco
from vfmkit.tasks.detect.data import DetectionData, DetectionDataset, collate_detection, load_detection_data
from vfmkit.tasks.detect.postprocess import postprocess_detections, to_coco_results
from vfmkit.tasks.detect.spec import DetectDataSpec

TINY_HEAD = {
    "hidden_dim": 64,
    "nheads": 4,
    "num_queries": 20,
    "num_select": 20,
    "dec_layers": 2,
    "enc_layers": 1,
    "dim_feedforward": 128,
    "csp_blocks": 1,
    "dec_n_points": 2,
    "enc_n_points": 2,
    "dn_number": 12,
}
"""A tiny head for CPU tests (the presets' structure at a fraction of the width and depth)."""


def fixed_set(root: Path, num_images: int = 8, size: int = 64, seed: int = 0, negatives: int = 2):
    """Generate a COCO set, load it through the task's data code; return (data, images (N, 3, S, S), targets)."""
    image_dir, json_file = make_detection_dataset(
        root, num_images=num_images, size=size, seed=seed, negatives=negatives
    )
    spec = DetectDataSpec(train_data_sources=[{"image_dir": image_dir, "json_file": json_file}])
    data = load_detection_data(spec)
    dataset = DetectionDataset(data.split("train"), resolution=size)
    images, targets = collate_detection([dataset[i] for i in range(len(dataset))])
    return data, images, targets


def train(
    model, criterion, batch_at: Callable[[int], tuple], steps: int, lr: float = 2e-3, seed: int = 0
) -> list[float]:
    """AdamW steps on ``batch_at(step) -> (images, targets)`` with a linear warmup (10%) and cosine decay, gradient
    norm clipped to 1; returns the losses."""
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    losses = []
    for step in range(steps):
        images, targets = batch_at(step)
        loss = criterion(model(images, targets), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


def overfit(model, criterion, images, targets, steps: int = 60, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Full-batch training on a fixed set (see :func:`train`)."""
    return train(model, criterion, lambda _: (images, targets), steps, lr, seed)


@torch.no_grad()
def coco_ap(model, data: DetectionData, images, targets, split: str = "train") -> CocoMetrics:
    """COCO metrics of the model's predictions on ``images`` against the split's ground truth."""
    model.eval()
    out = model(images)
    orig_sizes = torch.stack([t["orig_size"] for t in targets])
    category_ids = torch.tensor(data.category_ids)
    boxes, scores, labels = postprocess_detections(
        out["pred_logits"], out["pred_boxes"], orig_sizes, model.config.num_select, category_ids
    )
    results = to_coco_results(boxes, scores, labels, [int(t["image_id"]) for t in targets])
    return evaluate_coco(data.ground_truth(split), results)
