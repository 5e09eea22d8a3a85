"""Optimizers and learning-rate schedules for fine-tuning: parameter groups with no decay on norms/biases/tokens,
layer-wise lr decay for ViT blocks, AdamW/SGD, and warmup + cosine/step/linear/constant schedules (per step)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

import torch
from torch import nn

from vfmkit.spec.base import OptimizerSpec, SchedulerSpec, TrainSpec

_BLOCK_PATTERN = re.compile(r"(?:^|\.)(?:blocks|resblocks|layers)\.(\d+)\.")
_EMBED_PATTERN = re.compile(r"patch_generator|patch_embed|pos_embed|cls_token|reg_token|conv1|class_embedding")


def layer_id(name: str, num_blocks: int) -> int:
    """Depth of a backbone parameter: 0 for embeddings, i + 1 for block i, num_blocks + 1 for everything after."""
    match = _BLOCK_PATTERN.search(name)
    if match:
        return int(match.group(1)) + 1
    if _EMBED_PATTERN.search(name):
        return 0
    return num_blocks + 1


def _no_decay(name: str, param: nn.Parameter, skip: set[str]) -> bool:
    return param.ndim <= 1 or name in skip or name.endswith(".bias")


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    num_blocks: int | None = None,
    no_weight_decay: set[str] | None = None,
) -> list[dict]:
    """Trainable parameters grouped by (layer, decay).

    Args:
        named_params: (name, parameter) pairs; frozen ones are skipped.
        lr: learning rate of the top layer.
        weight_decay: applied to weight matrices only (not norms, biases, tokens, position embeddings).
        layer_decay: lr of layer l is ``lr * layer_decay ** (num_blocks + 1 - l)`` when ``num_blocks`` is given.
        num_blocks: depth of the ViT the names belong to (None: no layer decay).
        no_weight_decay: extra parameter names without decay (e.g. the backbone's ``no_weight_decay()``).

    Returns:
        Groups for ``torch.optim`` with an extra ``lr_scale`` key used by the scheduler.
    """
    groups: dict[tuple[int, bool], dict] = {}
    skip = no_weight_decay or set()
    for name, param in named_params:
        if not param.requires_grad:
            continue
        layer = layer_id(name, num_blocks) if num_blocks is not None else 0
        scale = layer_decay ** (num_blocks + 1 - layer) if num_blocks is not None else 1.0
        no_decay = _no_decay(name, param, skip)
        decay = 0.0 if no_decay else weight_decay
        group = groups.setdefault(
            (layer, no_decay), {"params": [], "names": [], "lr": lr * scale, "lr_scale": scale, "weight_decay": decay}
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(groups: list[dict], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum, Nesterov off) over ``groups``."""
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if spec.type == "adamw":
        return torch.optim.AdamW(clean, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.SGD(clean, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def lr_lambda(spec: SchedulerSpec, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``step``: linear warmup, then the chosen schedule."""
    warmup = int(round(spec.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if spec.type == "cosine":
            return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if spec.type == "linear":
            return 1.0 - (1 - spec.min_lr_ratio) * progress
        if spec.type == "step":
            return spec.gamma ** ((step // max(1, steps_per_epoch)) // spec.step_epochs)
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: SchedulerSpec, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR implementing :func:`lr_lambda` (the same factor for every group)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, steps_per_epoch, steps_per_epoch * epochs))


def task_optimizers(
    spec: TrainSpec,
    head_params: Iterable[tuple[str, nn.Parameter]],
    backbone: nn.Module,
    total_steps: int,
    backbone_prefix: str = "",
) -> dict:
    """Lightning ``configure_optimizers`` output for a head (and neck) on a backbone.

    The head gets ``optimizer.lr``; trainable backbone parameters get ``lr * backbone_lr_scale`` with layer-wise
    decay over the backbone's blocks; the schedule steps per optimizer step over ``total_steps``.
    """
    opt = spec.optimizer
    head = param_groups(head_params, opt.lr, opt.weight_decay)
    skip = {backbone_prefix + n for n in backbone.no_weight_decay()} if hasattr(backbone, "no_weight_decay") else set()
    body = param_groups(
        ((backbone_prefix + n, p) for n, p in backbone.named_parameters()),
        opt.lr * opt.backbone_lr_scale,
        opt.weight_decay,
        layer_decay=opt.layer_decay,
        num_blocks=getattr(backbone, "num_blocks", None),
        no_weight_decay=skip,
    )
    optimizer = build_optimizer(head + body, opt)
    steps_per_epoch = max(1, int(total_steps) // spec.epochs)
    scheduler = build_scheduler(optimizer, spec.scheduler, steps_per_epoch, spec.epochs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
