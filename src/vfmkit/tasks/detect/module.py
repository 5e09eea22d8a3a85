"""The Lightning module of detection training: the DETR set criterion (matching, classification, L1, GIoU, per
decoder layer, encoder proposals and denoising groups), and COCO AP of the val split after every validation epoch
(fractions, detections gathered from every process)."""

from __future__ import annotations

from typing import Any

import torch

from vfmkit.engine.module import TaskModule
from vfmkit.engine.taskdef import TaskDef
from vfmkit.metrics.coco import evaluate_coco
from vfmkit.models.heads.detr import DETRDetector
from vfmkit.tasks.detect.model import build_task_criterion
from vfmkit.tasks.detect.postprocess import pack_results, postprocess_detections, to_coco_results, unpack_results
from vfmkit.tasks.detect.spec import DetectSpec

VAL_KEYS = ("ap", "ap50", "ap75", "ar100")
"""COCO numbers logged after every validation epoch (``val/<key>``)."""


class DetectModule(TaskModule):
    """Trains a :class:`DETRDetector`.

    Batches are ``(images (B, 3, R, R) float in [0, 1], targets)`` with per image ``boxes`` (T, 4) cxcywh
    normalised, ``labels`` (T,) contiguous, ``image_id``, ``orig_size`` (height, width) (see
    :class:`~vfmkit.tasks.detect.data.DetectionDataset`). Logs ``train/loss`` (the weighted total) and its last-layer
    terms ``train/loss_{cls,bbox,giou}``; ``val/ap`` (monitored), ``val/ap50``, ``val/ap75``, ``val/ar100`` from
    faster-coco-eval on the whole val split.
    """

    def __init__(self, model: DETRDetector, spec: DetectSpec, meta: dict[str, Any], taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.criterion = build_task_criterion(spec.model, len(meta["classes"]))
        self.register_buffer("category_ids", torch.tensor(meta["category_ids"], dtype=torch.int64), persistent=False)
        self.val_results: list[dict[str, Any]] = []
        self.monitor = taskdef.monitor

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.criterion(self.model(images, targets), targets)
        size = len(images)
        self.log(
            "train/loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True
        )
        for term in ("loss_cls", "loss_bbox", "loss_giou"):
            self.log(f"train/{term}", losses[term], on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        self.val_results = []

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        out = self.model(images)
        orig_sizes = torch.stack([t["orig_size"] for t in targets])
        detections = postprocess_detections(
            out["pred_logits"], out["pred_boxes"], orig_sizes, self.model.config.num_select, self.category_ids
        )
        self.val_results += to_coco_results(*detections, [int(t["image_id"]) for t in targets])

    def on_validation_epoch_end(self) -> None:
        results = unpack_results(self.gather_cat(pack_results(self.val_results)))
        ground_truth = self.trainer.val_dataloaders.dataset.split.ground_truth()
        metrics = evaluate_coco(ground_truth, results).summary()
        self.log_metrics(metrics, VAL_KEYS, monitor=self.monitor)
        self.val_results = []
