"""Test helpers of the universal-segmentation tests: a tiny model, a plain PyTorch training loop, evaluation."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torch.utils.data import DataLoader

from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.mask2former import UniversalHeadConfig, UniversalSegmenter, task_tokens
from vfmkit.models.losses.mask import MaskSetCriterion
from vfmkit.models.necks import build_neck
from vfmkit.spec.dense import DenseAugmentSpec
from vfmkit.tasks.universal.data import UniversalDataset, UniversalSplit, collate_universal
from vfmkit.tasks.universal.metrics import UniversalEvaluator
from vfmkit.tasks.universal.postprocess import instance_inference, resize_mask_logits

TINY = {
    "num_object_queries": 12,
    "hidden_dim": 48,
    "nheads": 4,
    "dim_feedforward": 96,
    "dec_layers": 4,
    "conv_dim": 48,
    "mask_dim": 48,
    "transformer_enc_layers": 1,
    "pixel_decoder_dim_feedforward": 96,
    "text_width": 32,
    "text_num_layers": 1,
    "text_context_length": 16,
    "n_ctx": 4,
}
"""Head sizes of the test model (test-radio-v2-tiny + simple pyramid at 64 px)."""

NO_AUGMENT = DenseAugmentSpec(scale_range=None, hflip=0.0)


def tiny_model(head: str, num_classes: int, seed: int = 0, **overrides) -> UniversalSegmenter:
    """test-radio-v2-tiny -> simple pyramid (48 ch) -> the head with :data:`TINY` sizes."""
    torch.manual_seed(seed)
    neck = build_neck("simple_pyramid", load_backbone("test-radio-v2-tiny"), out_channels=48)
    return UniversalSegmenter(neck, num_classes, UniversalHeadConfig(head=head, **{**TINY, **overrides}))


def tiny_criterion(num_classes: int, points: int = 256) -> MaskSetCriterion:
    return MaskSetCriterion(num_classes, train_num_points=points)


def train(
    model: UniversalSegmenter,
    split: UniversalSplit,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-3,
    task_prob: dict | None = None,
    size: int = 64,
    seed: int = 0,
    augment: DenseAugmentSpec = NO_AUGMENT,
) -> list[float]:
    """A plain AdamW loop (one-cycle lr, gradient clipping) over ``split``; tasks drawn per sample; returns the
    losses."""
    torch.manual_seed(seed)
    config = model.config
    texts = {"num_texts": config.num_texts, "text_context_length": config.text_context_length}
    dataset = UniversalDataset(split, size, True, augment, seed, task_prob, **texts)
    loader = DataLoader(dataset, batch_size, shuffle=True, collate_fn=collate_universal, drop_last=True)
    criterion = tiny_criterion(model.num_classes)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses, step = [], 0
    while step < steps:
        dataset.set_epoch(step)
        for batch in loader:
            tokens = (batch["task_tokens"], batch.get("text_tokens")) if model.needs_task else (None, None)
            outputs = model(batch["images"], *tokens)
            loss = criterion(outputs, batch["targets"])["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if step == steps:
                break
    return losses


@torch.no_grad()
def evaluate(model: UniversalSegmenter, split: UniversalSplit, size: int = 64) -> dict:
    """Every task at inference, at full resolution: PQ (panoptic), mIoU (semantic) and ``mask_ap50`` (instance: COCO
    segm AP at IoU 0.5 by pycocotools, crowd regions as COCO handles them). OneFormer runs once per task with that
    task's token; Mask2Former once."""
    model.eval()
    evaluator = UniversalEvaluator(split.categories)
    ground_truth, detections = [], []
    loader = DataLoader(UniversalDataset(split, size), 8, collate_fn=collate_universal)
    for batch in loader:
        images = batch["images"]
        outputs = {}
        for task in ("panoptic", "semantic", "instance"):
            tokens = task_tokens([task] * len(images)) if model.needs_task else None
            outputs[task] = outputs["panoptic"] if outputs and not model.needs_task else model(images, tokens)
        for b, index in enumerate(batch["indices"]):
            logits = {task: (out["pred_logits"][b], out["pred_masks"][b]) for task, out in outputs.items()}
            ids, segments = batch["ids"][b], batch["segments"][b]
            evaluator.update_panoptic(*logits["panoptic"], ids, segments)
            evaluator.update_semantic(*logits["semantic"], batch["semantic"][b])
            masks = resize_mask_logits(logits["instance"][1], tuple(ids.shape))
            result = instance_inference(logits["instance"][0], masks, isthing=split.categories.isthing)
            things = [s for s in segments if split.categories.isthing[s.category]]
            ground_truth += [(index, s.category, ids == s.id, s.iscrowd) for s in things]
            detections += [
                (index, int(c), m, float(p)) for m, c, p in zip(result.masks, result.labels, result.scores, strict=True)
            ]
    metrics = evaluator.compute()
    metrics["mask_ap50"] = mask_ap50(ground_truth, detections, len(split), len(split.categories))
    return metrics


def _rle(mask: torch.Tensor) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def mask_ap50(ground_truth: list, detections: list, num_images: int, num_classes: int) -> float:
    """COCO segm AP at IoU 0.5 (pycocotools) of (image, class, mask[, iscrowd | score]) tuples."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    height, width = ground_truth[0][2].shape
    annotations = [
        {
            "id": k + 1,
            "image_id": i,
            "category_id": c,
            "segmentation": _rle(m),
            "area": float(m.sum()),
            "iscrowd": int(crowd),
            "bbox": [0, 0, width, height],
        }
        for k, (i, c, m, crowd) in enumerate(ground_truth)
    ]
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": width, "height": height} for i in range(num_images)],
        "categories": [{"id": c} for c in range(num_classes)],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        results = coco.loadRes(
            [{"image_id": i, "category_id": c, "segmentation": _rle(m), "score": p} for i, c, m, p in detections]
        )
        evaluation = COCOeval(coco, results, "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])
