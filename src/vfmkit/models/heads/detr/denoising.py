"""Contrastive denoising queries (DINO, Zhang et al. 2022; RT-DETR's form) and their self-attention mask.

During training, every ground-truth box is fed to the decoder ``num_group`` times as a *positive* query (label
flipped with probability ``label_noise_ratio / 2``, corners moved by less than ``box_noise_scale`` x half the box
size) and as a *negative* query (corners moved by 1-2 x that), which the decoder must reconstruct or reject. The
groups are matched to their targets by construction. The attention mask keeps the matching queries from seeing any
denoising query (they would read the answers) and every denoising group from seeing the other groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.ops import box_convert

from vfmkit.models.heads.detr.common import inverse_sigmoid


@dataclass
class DenoisingQueries:
    """The denoising part of the decoder input.

    Attributes:
        content: (B, N_dn, D) float, label embeddings of the noised labels (padding slots: the zero padding embedding).
        reference: (B, N_dn, 4) float, inverse-sigmoid of the noised boxes (cxcywh normalised).
        attn_mask: (N_dn + Q + extra, N_dn + Q + extra) bool, True = may not attend (``nn.MultiheadAttention``).
        meta: ``dn_positive_idx`` (per image the int64 indices of its positive queries, group-major: group g holds
            target k at ``g * 2 * max_gt + k``), ``dn_num_group`` (int), ``dn_num_split`` ([N_dn, Q]).
    """

    content: torch.Tensor
    reference: torch.Tensor
    attn_mask: torch.Tensor
    meta: dict[str, Any]


def denoising_attn_mask(
    num_denoising: int, group_size: int, num_queries: int, extra: int = 0, query_groups: int = 1
) -> torch.Tensor:
    """The self-attention mask of [denoising groups | matching queries | extra queries].

    Matching queries may not see denoising queries; a denoising group (``group_size`` rows) sees only itself and the
    matching and extra queries; with ``query_groups`` > 1 (Group DETR) the matching queries form that many equal
    groups that do not see each other; extra queries (the frozen-FM image query) see and are seen by everything.

    Returns:
        (N, N) bool, N = num_denoising + num_queries + extra, True where attention is blocked.
    """
    size = num_denoising + num_queries + extra
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[num_denoising : num_denoising + num_queries, :num_denoising] = True
    for start in range(0, num_denoising, group_size):
        end = start + group_size
        mask[start:end, :start] = True
        mask[start:end, end:num_denoising] = True
    if query_groups > 1:
        per_group = num_queries // query_groups
        for start in range(num_denoising, num_denoising + num_queries, per_group):
            end = start + per_group
            mask[start:end, num_denoising:start] = True
            mask[start:end, end : num_denoising + num_queries] = True
    return mask


def build_denoising_queries(
    targets: Sequence[dict[str, torch.Tensor]],
    num_classes: int,
    num_queries: int,
    label_embed: nn.Embedding,
    dn_number: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
    extra_queries: int = 0,
    query_groups: int = 1,
) -> DenoisingQueries | None:
    """Noised positive/negative copies of every target, ``dn_number // max_gt`` groups (at least one).

    Args:
        targets: per image ``labels`` (T,) int64 in [0, C) and ``boxes`` (T, 4) float cxcywh normalised to [0, 1].
        num_classes: C; ``label_embed`` has C + 1 rows, the last (padding) one unused by real labels.
        num_queries: Q matching queries that follow the denoising ones.
        label_embed: the label embedding (C + 1, D) of the content queries.
        dn_number: denoising queries per image (before rounding to whole groups).
        label_noise_ratio: labels are replaced by a random class with probability ``label_noise_ratio / 2``.
        box_noise_scale: corner noise relative to half the width / height (0: no box noise).
        extra_queries: queries appended after the matching ones (the frozen-FM image query), unmasked.
        query_groups: the matching queries are this many Group-DETR groups hidden from each other.

    Returns:
        The queries, or None when ``dn_number`` is 0 or no image has a target.
    """
    counts = [len(t["labels"]) for t in targets]
    max_gt = max(counts, default=0)
    if dn_number <= 0 or max_gt == 0:
        return None
    device = label_embed.weight.device
    num_group = max(dn_number // max_gt, 1)
    batch = len(targets)
    labels = torch.full((batch, max_gt), num_classes, dtype=torch.int64, device=device)
    boxes = torch.zeros(batch, max_gt, 4, device=device)
    real = torch.zeros(batch, max_gt, dtype=torch.bool, device=device)
    for b, (target, count) in enumerate(zip(targets, counts, strict=True)):
        labels[b, :count] = target["labels"].to(device)
        boxes[b, :count] = target["boxes"].to(device, torch.float32)
        real[b, :count] = True
    labels, real = labels.tile(1, 2 * num_group), real.tile(1, 2 * num_group)
    boxes = boxes.tile(1, 2 * num_group, 1)
    negative = torch.zeros(batch, 2 * max_gt, 1, device=device)
    negative[:, max_gt:] = 1.0
    negative = negative.tile(1, num_group, 1)
    positive = (negative[..., 0] == 0) & real
    positive_idx = torch.nonzero(positive)[:, 1].split([c * num_group for c in counts])
    if label_noise_ratio > 0:
        flip = (torch.rand(labels.shape, device=device) < label_noise_ratio * 0.5) & real
        labels = torch.where(flip, torch.randint_like(labels, 0, num_classes), labels)
    if box_noise_scale > 0:
        corners = box_convert(boxes, "cxcywh", "xyxy")
        diff = boxes[..., 2:].tile(1, 1, 2) * 0.5 * box_noise_scale
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        part = torch.rand_like(boxes)
        part = ((part + 1.0) * negative + part * (1.0 - negative)) * sign
        boxes = box_convert((corners + part * diff).clamp(0.0, 1.0), "xyxy", "cxcywh")
    num_denoising = 2 * max_gt * num_group
    return DenoisingQueries(
        content=label_embed(labels),
        reference=inverse_sigmoid(boxes),
        attn_mask=denoising_attn_mask(num_denoising, 2 * max_gt, num_queries, extra_queries, query_groups).to(device),
        meta={
            "dn_positive_idx": list(positive_idx),
            "dn_num_group": num_group,
            "dn_num_split": [num_denoising, num_queries],
        },
    )
