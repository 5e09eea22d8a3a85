"""The Lightning module of distillation: the teachers' standardised targets meet the student's heads (no labels);
validation is k-NN on labelled images and per-teacher fidelity (:mod:`vfmkit.tasks.distill.metrics`)."""

from __future__ import annotations

import torch

from vfmkit.engine.module import TaskModule
from vfmkit.engine.taskdef import TaskDef
from vfmkit.tasks.distill.metrics import DistillMeter
from vfmkit.tasks.distill.model import DistillModel
from vfmkit.tasks.distill.spec import DistillSpec
from vfmkit.utils.tensor_cache import CacheStats

MONITOR = "val/knn_top1"


class DistillModule(TaskModule):
    """Trains a :class:`~vfmkit.tasks.distill.model.DistillModel`.

    Training batches are :func:`~vfmkit.tasks.distill.data.collate_distill` batches; validation batches are
    :func:`~vfmkit.tasks.distill.metrics.collate_knn` batches of the labelled k-NN sets. Logs ``train/loss``,
    ``train/<teacher>/<summary|features>_loss``, ``train/teacher_cache_hit_rate`` (with the teacher cache: the
    fraction of teacher targets read from it), and the fractions ``val/knn_top1`` (monitored),
    ``val/control_knn_top1`` and the fidelity ``val/<teacher>/<summary|feature>_cosine``. With the teacher cache,
    an epoch that computed or rebuilt entries ends with one line of counts (``teacher cache: 60 hits, 4 computed,
    1 damaged entry rebuilt (e.g. ...)``).

    The validation meter is made from the validation loader's :class:`~vfmkit.tasks.distill.metrics.KnnImages`.
    """

    def __init__(self, model: DistillModel, spec: DistillSpec, meta: dict, taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.meter: DistillMeter | None = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("state_dict", {}).get("model.teacher_fingerprints")
        if saved is not None:  # resuming: the teachers rebuilt from the spec must be the ones trained with
            self.model.check_teachers(saved)

    def on_train_epoch_start(self) -> None:
        self.model.cache_stats = CacheStats()  # counted per epoch

    def on_train_epoch_end(self) -> None:
        stats = self.model.cache_stats
        if self.model.cache is not None and stats.misses and self.trainer.is_global_zero:
            print(stats.describe("teacher cache"))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        before = (self.model.cache_hits, self.model.cache_misses)
        losses = self.model(batch)
        size = batch["student"].shape[0]
        if self.model.cache is not None:  # epoch mean weighted by targets: the epoch's hit fraction
            hits, misses = self.model.cache_hits - before[0], self.model.cache_misses - before[1]
            rate = hits / max(hits + misses, 1)
            self.log(
                "train/teacher_cache_hit_rate",
                rate,
                on_step=False,
                on_epoch=True,
                batch_size=hits + misses,
                sync_dist=True,
            )
        self.log(
            "train/loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True
        )
        for key, value in losses.items():
            if key != "loss":
                self.log(f"train/{key}_loss", value, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        if self.meter is None:
            sets = self.trainer.val_dataloaders.dataset.sets
            distill = self.spec.distill
            self.meter = DistillMeter(sets, list(self.model.teachers), distill.knn_k, distill.knn_temperature)
        self.meter.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self.meter.update(self.model, batch)

    def on_validation_epoch_end(self) -> None:
        meter = self.meter
        index, summaries = meter.gathered()
        width = self.model.student.summary_dim
        index = self.gather_cat(index)
        summaries = self.gather_cat(summaries.flatten()).view(-1, width)
        meter.fidelity = self.gather_sum(meter.fidelity)
        metrics = meter.compute(index, summaries)
        self.log_metrics(metrics, tuple(metrics), monitor=MONITOR)
