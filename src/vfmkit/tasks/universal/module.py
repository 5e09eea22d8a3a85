"""The Lightning module of universal-segmentation training: Mask2Former's set criterion (+ OneFormer's query-text
contrastive term) on per-task targets; validation runs the evaluation of ``evaluate`` (PQ / mIoU / mask AP as
fractions), gathered over every process before it is computed."""

from __future__ import annotations

import torch
import torch.distributed as dist

from vfmkit.engine.module import TaskModule
from vfmkit.engine.taskdef import TaskDef
from vfmkit.models.heads.mask2former import UniversalSegmenter
from vfmkit.tasks.universal.categories import CategoryTable
from vfmkit.tasks.universal.infer import evaluate_batch, evaluated_tasks, make_evaluator
from vfmkit.tasks.universal.metrics import MASK_AP_KEYS
from vfmkit.tasks.universal.model import build_criterion
from vfmkit.tasks.universal.spec import UniversalSpec

LOGGED = ("pq", "pq_things", "pq_stuff", "sq", "rq", "miou", "pixel_accuracy", *MASK_AP_KEYS)


class UniversalModule(TaskModule):
    """Trains a :class:`~vfmkit.models.heads.mask2former.UniversalSegmenter`.

    Training batches are :func:`~vfmkit.tasks.universal.data.collate_universal` dicts: ``images`` float32
    (B, 3, S, S) in [0, 1], ``targets`` (per image ``labels`` int64 (T,), ``masks`` bool (T, S, S)) and, for
    OneFormer, ``task_tokens`` int64 (B, 77) and ``text_tokens`` int64 (B, num_texts, L). Logs ``train/loss`` (and
    its main terms) and the validation metrics ``val/<key>`` of :data:`LOGGED` (``monitor`` of the task definition).

    Args:
        model: the segmenter.
        spec: the run spec.
        meta: ``{"categories": CategoryTable.as_meta(), "format": dataset format}``.
        taskdef: the task definition (its ``monitor``).
    """

    def __init__(self, model: UniversalSegmenter, spec: UniversalSpec, meta: dict, taskdef: TaskDef):
        super().__init__(model, spec, meta, taskdef)
        self.monitor = taskdef.monitor
        categories = CategoryTable.from_meta(meta["categories"])
        self.criterion = build_criterion(spec.model, len(categories))
        # the evaluated tasks, and always the monitored one (it picks the best checkpoint)
        requested = dict.fromkeys([*spec.evaluate.tasks, getattr(taskdef, "monitor_task", "panoptic")])
        self.tasks = evaluated_tasks(list(requested), spec.dataset.format)
        self.evaluator = make_evaluator(categories, spec.model.test)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, targets = batch["images"], batch["targets"]
        if self.model.needs_task:
            outputs = self.model(images, batch["task_tokens"], batch.get("text_tokens"))
        else:
            outputs = self.model(images)
        world = self.trainer.world_size
        num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=self.device)
        gather = None
        if world > 1:  # the mean number of masks over devices, and every device's queries as contrastive negatives
            num_masks = self.trainer.strategy.reduce(num_masks, reduce_op="mean")
            gather = self._gather_with_grad
        losses = self.criterion(outputs, targets, float(num_masks), gather, self.global_rank)
        batch_size = len(images)
        loss = losses["loss"]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        for name in ("loss_ce", "loss_mask", "loss_dice", "loss_contrastive"):
            if name in losses:
                self.log(f"train/{name}", losses[name].detach(), on_epoch=True, batch_size=batch_size, sync_dist=True)
        return loss

    def _gather_with_grad(self, local: torch.Tensor) -> torch.Tensor:
        """(B, D) on each device -> (world * B, D) in rank order, gradients flowing back to this device's rows."""
        return self.all_gather(local, sync_grads=True).flatten(0, 1)

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        evaluate_batch(self.model, batch, self.evaluator, self.tasks)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.world_size > 1:
            self.evaluator.gather(self.gather_sum, _gather_lists)
        self.log_metrics(self.evaluator.compute(), LOGGED, monitor=self.monitor)


def _gather_lists(items: list) -> list:
    """The concatenation of every process's list (in rank order)."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
