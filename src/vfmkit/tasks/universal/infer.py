"""Running a universal segmenter on a batch: per-task outputs (OneFormer: one pass per task token; Mask2Former: one
pass serves every task), the evaluation step shared by training validation and ``evaluate``, and the tasks each data
format can score."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vfmkit.models.heads.mask2former import UniversalSegmenter, task_tokens
from vfmkit.tasks.universal.categories import CategoryTable
from vfmkit.tasks.universal.metrics import UniversalEvaluator
from vfmkit.tasks.universal.spec import UniversalTestSpec

EVALUABLE: dict[str, tuple[str, ...]] = {
    "coco_panoptic": ("panoptic", "semantic", "instance"),
    "semantic_masks": ("panoptic", "semantic"),
    "coco_instances": ("instance",),
}
"""The tasks each data format has ground truth for: semantic masks have no instances (PQ over stuff only);
COCO instances have no stuff and leave most pixels unannotated (neither PQ nor mIoU would be meaningful)."""

NOT_EVALUABLE = {
    "coco_instances": "COCO-instances data has no stuff and unannotated pixels: only mask AP is defined",
    "semantic_masks": "semantic-mask data has no instances: mask AP and PQ (things) are undefined",
}


def evaluated_tasks(requested: Sequence[str], data_format: str) -> tuple[str, ...]:
    """The requested tasks (``evaluate.tasks``) that ``data_format`` can score, in the order requested."""
    return tuple(task for task in requested if task in EVALUABLE[data_format])


def task_outputs(model: UniversalSegmenter, images: torch.Tensor, tasks: Sequence[str]) -> dict[str, dict]:
    """The model's outputs (``pred_logits`` (B, Q, K + 1), ``pred_masks`` (B, Q, h, w)) for each task: OneFormer
    runs once per task with that task's token; Mask2Former runs once and serves every task."""
    if not model.needs_task:
        out = model(images)
        return {task: out for task in tasks}
    outputs = {}
    for task in tasks:
        tokens = task_tokens([task] * len(images), model.config.task_seq_len).to(images.device)
        outputs[task] = model(images, tokens)
    return outputs


def make_evaluator(categories: CategoryTable, test: UniversalTestSpec) -> UniversalEvaluator:
    """An evaluator with the spec's inference thresholds (``model.test``)."""
    return UniversalEvaluator(categories, test.object_mask_threshold, test.overlap_threshold, test.test_topk_per_image)


@torch.no_grad()
def evaluate_batch(model: UniversalSegmenter, batch: dict, evaluator: UniversalEvaluator, tasks: Sequence[str]):
    """Run ``model`` on an evaluation batch (:func:`~vfmkit.tasks.universal.data.collate_universal` of evaluation
    items) for ``tasks`` and add every image to ``evaluator`` (at the ground truth's resolution)."""
    outputs = task_outputs(model, batch["images"], tasks)
    for b in range(len(batch["images"])):
        ids, segments, image_id = batch["ids"][b], batch["segments"][b], batch["image_id"][b]
        pick = {task: (out["pred_logits"][b], out["pred_masks"][b]) for task, out in outputs.items()}
        if "panoptic" in pick:
            evaluator.update_panoptic(*pick["panoptic"], ids, segments, image_id)
        if "semantic" in pick:
            evaluator.update_semantic(*pick["semantic"], batch["semantic"][b])
        if "instance" in pick:
            objects = batch["objects"][b] if "objects" in batch else None
            evaluator.update_instance(*pick["instance"], image_id, ids, segments, objects)
