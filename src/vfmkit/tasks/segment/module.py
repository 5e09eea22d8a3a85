"""The Lightning module of segmentation training: cross-entropy (ignore index) + optional dice on upsampled logits,
mIoU / pixel accuracy validation (fractions, confusion summed over every process)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkit.engine.module import TaskModule
from vfmkit.engine.taskdef import TaskDef
from vfmkit.metrics.dense import SegmentationMeter
from vfmkit.tasks.segment.model import Segmenter, upsample_logits
from vfmkit.tasks.segment.spec import SegmentSpec


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """1 - mean soft dice over classes present in the batch; logits (B, K, H, W), target (B, H, W)."""
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1) / (total + 1)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


class SegmentModule(TaskModule):
    """Trains a :class:`Segmenter`. Batches are ``(images (B, 3, R, R) in [0, 1], masks int64 (B, R, R), indices)``.

    Logs ``train/loss``, ``val/loss``, ``val/miou`` (monitored) and ``val/pixel_accuracy``.
    """

    def __init__(self, model: Segmenter, spec: SegmentSpec, meta: dict, taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.ignore_index = spec.dataset.ignore_index
        self.meter = SegmentationMeter(len(meta["classes"]), self.ignore_index)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = upsample_logits(logits, masks.shape[-2:])
        loss = F.cross_entropy(logits, masks, ignore_index=self.ignore_index)
        if self.spec.model.dice_weight > 0:
            loss = loss + self.spec.model.dice_weight * dice_loss(logits, masks, self.ignore_index)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks, _ = batch
        loss = self._loss(self.model(images), masks)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.meter.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        images, masks, _ = batch
        logits = self.model(images)
        self.log("val/loss", self._loss(logits, masks), on_epoch=True, batch_size=len(images), sync_dist=True)
        self.meter.update(upsample_logits(logits, masks.shape[-2:]), masks)

    def on_validation_epoch_end(self) -> None:
        self.meter.confusion = self.gather_sum(self.meter.confusion)
        self.log_metrics(self.meter.compute(), ("miou", "pixel_accuracy"), monitor="val/miou")
