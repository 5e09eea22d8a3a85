"""Lightning modules of change-detection training: the segment variant (five weighted CE outputs, change F1) and
the classify variant (weighted CE or contrastive loss, accuracy / defect accuracy / false alarms / misses / AUC).

Both put the RNG states into checkpoints (exact resume, :class:`~vfmkit.tasks.base_module.TaskModule`) and build
layer-decayed optimizer groups with :func:`vfmkit.tasks.optim.task_optimizers`: the backbone (when trained) at
``lr * backbone_lr_scale`` with layer decay, the neck's own layers and the head at ``lr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkit.models.heads.changenet import contrastive_loss, multi_output_loss
from vfmkit.models.necks.common import resize_to
from vfmkit.spec.change import ChangeSpec
from vfmkit.tasks.base_module import TaskModule
from vfmkit.tasks.change.model import ChangeModel, backbone_in_checkpoint, class_names
from vfmkit.tasks.dense_metrics import ChangeClassifyMeter, ChangeSegMeter
from vfmkit.tasks.optim import task_optimizers

BACKBONE_PREFIX = "neck.backbone."
SEGMENT_LOGGED = ("change_f1", "change_iou", "change_precision", "change_recall", "overall_accuracy", "miou")
CLASSIFY_LOGGED = ("accuracy", "defect_accuracy", "false_alarm_rate", "miss_rate", "auc")


class _ChangeModule(TaskModule):
    """Shared parts: hyper-parameters (spec and class names), optimizer groups, checkpoint contents."""

    def __init__(self, model: ChangeModel, spec: ChangeSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.save_hyperparameters({"spec": spec.model_dump(mode="json"), "classes": list(class_names(spec))})
        # frozen published backbones are left out of checkpoints and rebuilt from their source
        self.frozen_prefix = None if backbone_in_checkpoint(spec) else "model." + BACKBONE_PREFIX
        self.register_buffer("class_weights", torch.tensor(spec.model.class_weights), persistent=False)
        self.last_val: dict | None = None

    def configure_optimizers(self):
        head = [(n, p) for n, p in self.model.named_parameters() if not n.startswith(BACKBONE_PREFIX)]
        return task_optimizers(self.spec.train, head, self.model.neck.backbone, self.trainer.estimated_stepping_batches)

    def _log_metrics(self, metrics: dict, keys: tuple[str, ...], monitor: str) -> None:
        """Log rates in percent, like every task's epoch metrics (the AUC stays in [0, 1])."""
        for key in keys:
            scale = 1.0 if key == "auc" else 100.0
            self.log(f"val/{key}", scale * float(metrics[key]), prog_bar=key == monitor)


class ChangeSegModule(_ChangeModule):
    """Trains a :class:`~vfmkit.models.heads.changenet.ChangeSegmenter`.

    Batches are ``(image_a, image_b, mask, index)``: images float32 (B, 3, R, R) in [0, 1], mask int64 (B, R, R)
    in {0, 1, ignore_index}. Logs ``train/loss`` and ``val/change_f1`` (monitored), ``val/change_iou``,
    ``val/change_precision``, ``val/change_recall``, ``val/overall_accuracy``, ``val/miou``, ``val/loss``.
    """

    def __init__(self, model: ChangeModel, spec: ChangeSpec):
        super().__init__(model, spec)
        self.ignore_index = spec.dataset.ignore_index
        self.val_meter = ChangeSegMeter(self.ignore_index)
        self._val_loss = [0.0, 0]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        image_a, image_b, mask, _ = batch
        outputs = self.model.forward_all(image_a, image_b)
        loss = multi_output_loss(outputs, mask, self.spec.model.aux_weights, self.class_weights, self.ignore_index)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(mask))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_meter.reset()
        self._val_loss = [0.0, 0]

    def validation_step(self, batch, batch_idx: int) -> None:
        image_a, image_b, mask, _ = batch
        logits = resize_to(self.model(image_a, image_b), tuple(mask.shape[-2:]))
        loss = F.cross_entropy(logits, mask, weight=self.class_weights, ignore_index=self.ignore_index)
        self._val_loss[0] += float(loss) * len(mask)
        self._val_loss[1] += len(mask)
        self.val_meter.update(logits, mask)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.world_size > 1:
            self.val_meter.confusion = self.all_gather(self.val_meter.confusion).sum(0).cpu()
        metrics = self.val_meter.compute()
        self.last_val = metrics
        self._log_metrics(metrics, SEGMENT_LOGGED, "change_f1")
        self.log("val/loss", self._val_loss[0] / max(1, self._val_loss[1]), sync_dist=True)


class ChangeClassifyModule(_ChangeModule):
    """Trains a golden-vs-test classifier (learnable: weighted CE on logits; euclidean: contrastive loss).

    Batches are ``(test, golden, label, index)``: test float32 (B, 3L, R, R), golden (B, 3L, R, R) or
    (B, N, 3L, R, R) in [0, 1], label int64 (B,) 0 PASS / 1 FAIL. Logs ``train/loss``, ``val/accuracy``
    (monitored), ``val/defect_accuracy``, ``val/false_alarm_rate``, ``val/miss_rate``, ``val/auc``, ``val/loss``.
    """

    def __init__(self, model: ChangeModel, spec: ChangeSpec):
        super().__init__(model, spec)
        self.euclidean = spec.model.difference == "euclidean"
        self.val_meter = ChangeClassifyMeter(spec.threshold)
        self._val_loss = [0.0, 0]

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
        self._val_loss = [0.0, 0]

    def validation_step(self, batch, batch_idx: int) -> None:
        test, golden, labels, _ = batch
        loss, score = self._loss_and_score(test, golden, labels)
        self._val_loss[0] += float(loss) * len(labels)
        self._val_loss[1] += len(labels)
        self.val_meter.update(score, labels)

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_meter.compute()
        self.last_val = metrics
        self._log_metrics(metrics, CLASSIFY_LOGGED, "accuracy")
        self.log("val/loss", self._val_loss[0] / max(1, self._val_loss[1]), sync_dist=True)


def make_module(model: ChangeModel, spec: ChangeSpec) -> _ChangeModule:
    """The module of the spec's variant."""
    return ChangeSegModule(model, spec) if spec.task_type == "segment" else ChangeClassifyModule(model, spec)
