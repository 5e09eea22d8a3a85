"""Lightning modules of change-detection training: the segment variant (five weighted CE outputs, change F1) and
the classify variant (weighted CE or contrastive loss, accuracy / defect accuracy / false alarms / misses / AUC).
Metrics are fractions, gathered over every process before they are computed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkit.engine.module import TaskModule
from vfmkit.engine.taskdef import TaskDef
from vfmkit.metrics.dense import ChangeClassifyMeter, ChangeSegMeter
from vfmkit.models.heads.changenet import contrastive_loss, multi_output_loss
from vfmkit.models.necks.common import resize_to
from vfmkit.tasks.change.model import ChangeModel
from vfmkit.tasks.change.spec import ChangeSpec

SEGMENT_LOGGED = ("change_f1", "change_iou", "change_precision", "change_recall", "overall_accuracy", "miou")
CLASSIFY_LOGGED = ("accuracy", "defect_accuracy", "false_alarm_rate", "miss_rate", "auc")


class _ChangeModule(TaskModule):
    """Shared parts: class weights, the running validation loss."""

    def __init__(self, model: ChangeModel, spec: ChangeSpec, meta: dict, taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.register_buffer("class_weights", torch.tensor(spec.model.class_weights), persistent=False)
        self._val_loss = torch.zeros(2, dtype=torch.float64)

    def _add_val_loss(self, loss: torch.Tensor, count: int) -> None:
        self._val_loss += torch.tensor([float(loss) * count, count], dtype=torch.float64)

    def _log_val_loss(self) -> None:
        total, count = self.gather_sum(self._val_loss).tolist()
        self.log("val/loss", total / count if count else float("nan"))


class ChangeSegModule(_ChangeModule):
    """Trains a :class:`~vfmkit.models.heads.changenet.ChangeSegmenter`.

    Batches are ``(image_a, image_b, mask, index)``: images float32 (B, 3, R, R) in [0, 1], mask int64 (B, R, R)
    in {0, 1, ignore_index}. Logs ``train/loss`` and ``val/change_f1`` (monitored), ``val/change_iou``,
    ``val/change_precision``, ``val/change_recall``, ``val/overall_accuracy``, ``val/miou``, ``val/loss``.
    """

    def __init__(self, model: ChangeModel, spec: ChangeSpec, meta: dict, taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.ignore_index = spec.dataset.ignore_index
        self.val_meter = ChangeSegMeter(self.ignore_index)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        image_a, image_b, mask, _ = batch
        outputs = self.model.forward_all(image_a, image_b)
        loss = multi_output_loss(outputs, mask, self.spec.model.aux_weights, self.class_weights, self.ignore_index)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(mask))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_meter.reset()
        self._val_loss.zero_()

    def validation_step(self, batch, batch_idx: int) -> None:
        image_a, image_b, mask, _ = batch
        logits = resize_to(self.model(image_a, image_b), tuple(mask.shape[-2:]))
        loss = F.cross_entropy(logits, mask, weight=self.class_weights, ignore_index=self.ignore_index)
        self._add_val_loss(loss, len(mask))
        self.val_meter.update(logits, mask)

    def on_validation_epoch_end(self) -> None:
        self.val_meter.confusion = self.gather_sum(self.val_meter.confusion)
        self.log_metrics(self.val_meter.compute(), SEGMENT_LOGGED, monitor="val/change_f1")
        self._log_val_loss()


class ChangeClassifyModule(_ChangeModule):
    """Trains a golden-vs-test classifier (learnable: weighted CE on logits; euclidean: contrastive loss).

    Batches are ``(test, golden, label, index)``: test float32 (B, 3L, R, R), golden (B, 3L, R, R) or
    (B, N, 3L, R, R) in [0, 1], label int64 (B,) 0 PASS / 1 FAIL. Logs ``train/loss``, ``val/accuracy``
    (monitored), ``val/defect_accuracy``, ``val/false_alarm_rate``, ``val/miss_rate``, ``val/auc``, ``val/loss``.
    """

    def __init__(self, model: ChangeModel, spec: ChangeSpec, meta: dict, taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.euclidean = spec.model.difference == "euclidean"
        self.val_meter = ChangeClassifyMeter(spec.threshold)

    def _loss_and_score(self, test, golden, labels) -> tuple[torch.Tensor, torch.Tensor]:
        if self.euclidean:
            distance = self.model(test, golden)
            return contrastive_loss(distance, labels, self.spec.model.margin), distance
        logits = self.model(test, golden)
        return F.cross_entropy(logits, labels, weight=self.class_weights), logits.softmax(-1)[:, 1]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        test, golden, labels, _ = batch
        loss, _ = self._loss_and_score(test, golden, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_meter.reset()
        self._val_loss.zero_()

    def validation_step(self, batch, batch_idx: int) -> None:
        test, golden, labels, _ = batch
        loss, score = self._loss_and_score(test, golden, labels)
        self._add_val_loss(loss, len(labels))
        self.val_meter.update(score, labels)

    def on_validation_epoch_end(self) -> None:
        meter = self.val_meter
        local = meter.compute()
        scores, labels = torch.from_numpy(local["scores"]), torch.from_numpy(local["labels"]).to(torch.float64)
        meter.reset()  # every process's samples, so each process computes the metrics of the whole val split
        meter.update(self.gather_cat(scores), self.gather_cat(labels).to(torch.int64))
        self.log_metrics(meter.compute(), CLASSIFY_LOGGED, monitor="val/accuracy")
        self._log_val_loss()
