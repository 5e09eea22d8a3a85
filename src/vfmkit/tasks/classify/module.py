"""The Lightning module of classification training: cross-entropy on images (fine-tuning) or on cached
summaries (linear probe), top-1/top-k validation metrics, layer-decayed optimizer groups, exact resume state."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkit.spec.classify import ClassifySpec
from vfmkit.tasks.base_module import TaskModule
from vfmkit.tasks.classify.metrics import MetricAccumulator
from vfmkit.tasks.classify.model import Classifier
from vfmkit.tasks.optim import task_optimizers


class ClassifyModule(TaskModule):
    """Trains a :class:`Classifier`.

    Batches are ``(inputs, labels, indices)``: inputs are images (B, 3, R, R) in [0, 1], or (B, C) cached summaries
    when ``on_features`` (linear probe: the backbone never runs during training).

    Args:
        classifier: the model.
        spec: the resolved spec (saved in checkpoints as plain data).
        classes: class names in label order.
        on_features: train the head on cached summaries.
    """

    def __init__(self, classifier: Classifier, spec: ClassifySpec, classes: list[str], on_features: bool):
        super().__init__()
        self.classifier = classifier
        self.spec = spec
        self.classes = list(classes)
        self.on_features = on_features
        self.save_hyperparameters({"spec": spec.model_dump(mode="json"), "classes": self.classes})
        self.val_metrics = MetricAccumulator(len(classes), spec.top_k)
        self.last_val = None
        # linear probe checkpoints hold the head only; the frozen backbone is rebuilt from its source
        self.frozen_prefix = "classifier.backbone." if on_features else None

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier.classify_features(inputs) if self.on_features else self.classifier(inputs)

    def on_train_epoch_start(self) -> None:
        if self.spec.model.mode == "linear_probe":
            self.classifier.backbone.eval()  # frozen: no dropout, eval position embeddings

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs, labels, _ = batch
        loss = F.cross_entropy(self._logits(inputs), labels, label_smoothing=self.spec.model.label_smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, labels, _ = batch
        logits = self._logits(inputs)
        self.val_metrics.update(logits, labels)

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        if self.trainer.world_size > 1:
            confusion = self.all_gather(torch.from_numpy(metrics.confusion)).sum(0).cpu().numpy()
            metrics.confusion = confusion
        self.last_val = metrics
        self.log("val/loss", metrics.loss, sync_dist=True)
        self.log("val/top1", metrics.top1, prog_bar=True)
        self.log(f"val/top{metrics.k}", metrics.topk, sync_dist=True)

    def configure_optimizers(self):
        return task_optimizers(
            self.spec.train,
            self.classifier.head.named_parameters(),
            self.classifier.backbone,
            self.trainer.estimated_stepping_batches,
        )
