"""The Lightning module of classification training: cross-entropy on images (fine-tuning) or on cached
summaries (linear probe), top-1/top-k validation metrics (fractions, summed over every process)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkit.engine.module import TaskModule
from vfmkit.engine.taskdef import TaskDef
from vfmkit.tasks.classify.metrics import MetricAccumulator
from vfmkit.tasks.classify.model import Classifier
from vfmkit.tasks.classify.spec import ClassifySpec


class ClassifyModule(TaskModule):
    """Trains a :class:`Classifier`.

    Batches are ``(inputs, labels, indices)``: inputs are images (B, 3, R, R) in [0, 1], or (B, C) cached summaries
    in linear-probe mode (the backbone never runs during training). Logs ``train/loss``, ``val/top1`` (monitored),
    ``val/top<k>`` and ``val/loss``.
    """

    def __init__(self, model: Classifier, spec: ClassifySpec, meta: dict, taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.on_features = spec.model.mode == "linear_probe"
        self.val_metrics = MetricAccumulator(len(meta["classes"]), spec.top_k)

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.classify_features(inputs) if self.on_features else self.model(inputs)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs, labels, _ = batch
        loss = F.cross_entropy(self._logits(inputs), labels, label_smoothing=self.spec.model.label_smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, labels, _ = batch
        self.val_metrics.update(self._logits(inputs), labels)

    def on_validation_epoch_end(self) -> None:
        accumulator = self.val_metrics
        accumulator.confusion = self.gather_sum(accumulator.confusion)
        totals = self.gather_sum(torch.tensor([float(accumulator.hits), accumulator.loss_sum], dtype=torch.float64))
        accumulator.hits, accumulator.loss_sum = int(totals[0]), float(totals[1])
        metrics = accumulator.compute()
        self.log_metrics(
            {"top1": metrics.top1, f"top{metrics.k}": metrics.topk, "loss": metrics.loss},
            ("top1", f"top{metrics.k}", "loss"),
            monitor="val/top1",
        )
