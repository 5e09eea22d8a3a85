"""Test helpers of the universal-segmentation tests: a tiny model, a plain PyTorch training loop, evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.mask2former import UniversalHeadConfig, UniversalSegmenter, task_tokens
from vfmkit.models.losses.mask import MaskSetCriterion
from vfmkit.models.necks import build_neck
from vfmkit.spec.dense import DenseAugmentSpec
from vfmkit.tasks.universal.data import UniversalDataset, UniversalSplit, collate_universal
from vfmkit.tasks.universal.metrics import UniversalEvaluator

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
) -> list[float]:
    """A plain AdamW loop over ``split`` (no augmentation; tasks drawn per sample); returns the losses."""
    torch.manual_seed(seed)
    config = model.config
    dataset = UniversalDataset(
        split,
        size,
        True,
        NO_AUGMENT,
        seed,
        task_prob,
        config.num_texts,
        config.task_seq_len,
        config.text_context_length,
    )
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
            losses.append(float(loss))
            step += 1
            if step == steps:
                break
    return losses


@torch.no_grad()
def evaluate(model: UniversalSegmenter, split: UniversalSplit, size: int = 64, **thresholds) -> dict:
    """PQ (panoptic task) and mIoU (semantic task) of ``model`` on ``split`` at full resolution."""
    model.eval()
    dataset = UniversalDataset(split, size)
    evaluator = UniversalEvaluator(split.categories, **thresholds)
    loader = DataLoader(dataset, 8, collate_fn=collate_universal)
    for batch in loader:
        images = batch["images"]
        for task in ("panoptic", "semantic"):
            tokens = task_tokens([task] * len(images)) if model.needs_task else None
            out = model(images, tokens)
            for b in range(len(images)):
                if task == "panoptic":
                    evaluator.update_panoptic(
                        out["pred_logits"][b], out["pred_masks"][b], batch["ids"][b], batch["segments"][b]
                    )
                else:
                    evaluator.update_semantic(out["pred_logits"][b], out["pred_masks"][b], batch["semantic"][b])
    return evaluator.compute()
