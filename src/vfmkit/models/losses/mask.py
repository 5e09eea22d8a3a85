"""Set losses of mask-classification models (Mask2Former, OneFormer): point-sampled mask losses, Hungarian matching on
mask costs and the set criterion.

Masks are never compared at full resolution: both the predicted mask logits (at stride 4) and the target masks (at the
input size) are read at the same normalised points with ``grid_sample`` (bilinear, ``align_corners=False``), so their
resolutions need not match (PointRend's ``point_sample``). Matching uses ``train_num_points`` uniformly random points
shared by every prediction and target of an image; the losses use, per matched mask, points chosen by uncertainty:
``oversample_ratio`` x as many random points are drawn, the ``importance_sample_ratio`` share with the most uncertain
predictions (logit closest to 0) is kept and the rest is drawn uniformly again (Mask2Former's ``criterion.py``).

Targets are per image ``{"labels": int64 (T,), "masks": (T, H, W) float or bool in {0, 1}}`` at the input size;
``labels`` are contiguous class indices 0..K-1 (K = no object).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.losses.matcher import hungarian_match, permutation_indices

logger = logging.getLogger(__name__)

Target = dict[str, torch.Tensor]


def point_sample(inputs: torch.Tensor, coords: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinear samples of maps at normalised points.

    Args:
        inputs: float (N, C, H, W).
        coords: (N, P, 2) points (x, y) in [0, 1] x [0, 1] (0 = left/top edge, 1 = right/bottom edge).
        align_corners: ``grid_sample``'s flag (False, as the reference).

    Returns:
        float (N, C, P).
    """
    grid = 2.0 * coords.to(inputs.dtype) - 1.0
    return F.grid_sample(inputs, grid.unsqueeze(2), mode="bilinear", align_corners=align_corners).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's uncertainty of mask logits: ``-|logit|`` (highest where the prediction is closest to 0.5)."""
    return -logits.abs()


def sample_uncertain_points(
    mask_logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75
) -> torch.Tensor:
    """Points where the masks are most uncertain, plus uniform ones (PointRend's
    ``get_uncertain_point_coords_with_randomness``).

    Args:
        mask_logits: float (R, 1, H, W).
        num_points: P points per mask.
        oversample_ratio: k >= 1; k * P uniform candidates are scored.
        importance_sample_ratio: share of P taken from the most uncertain candidates, in [0, 1]; the rest uniform.

    Returns:
        (R, P, 2) points (x, y) in [0, 1], the uncertain ones first.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"need oversample_ratio >= 1 and importance_sample_ratio in [0, 1], got "
            f"{oversample_ratio}, {importance_sample_ratio}"
        )
    count = mask_logits.shape[0]
    sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(count, sampled, 2, device=mask_logits.device)
    scores = uncertainty(point_sample(mask_logits, candidates))[:, 0]  # (R, kP)
    num_uncertain = int(importance_sample_ratio * num_points)
    top = scores.topk(num_uncertain, dim=1).indices
    points = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    if num_points - num_uncertain > 0:
        uniform = torch.rand(count, num_points - num_uncertain, 2, device=mask_logits.device)
        points = torch.cat([points, uniform], dim=1)
    return points


def sigmoid_ce_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy of (R, P) point logits vs (R, P) labels in [0, 1]: mean over points, sum over masks,
    divided by ``num_masks``."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``1 - (2 |p y| + 1) / (|p| + |y| + 1)`` per mask of (R, P) point logits (p = sigmoid), summed over masks,
    divided by ``num_masks``."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def pairwise_sigmoid_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean point BCE of every prediction against every target: logits (Q, P), labels (T, P) -> (Q, T)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ labels.T + neg @ (1 - labels).T) / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target: logits (Q, P), labels (T, P) -> (Q, T)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ labels.T
    denominator = probs.sum(-1)[:, None] + labels.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def mask_matching_costs(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    targets: Sequence[Target],
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    num_points: int = 12544,
) -> list[torch.Tensor]:
    """Per image the (Q, T) cost ``class_weight * -p(class) + mask_weight * BCE + dice_weight * dice``, the mask terms
    on ``num_points`` uniformly random points shared by predictions and targets (computed in float32).

    Args:
        pred_logits: (B, Q, K + 1) class logits.
        pred_masks: (B, Q, h, w) mask logits.
        targets: B target dicts (see the module docstring).
    """
    costs = []
    for b, target in enumerate(targets):
        labels = target["labels"]
        probs = pred_logits[b].float().softmax(-1)
        if labels.numel() == 0:
            costs.append(probs.new_zeros(probs.shape[0], 0))
            continue
        points = torch.rand(1, num_points, 2, device=pred_masks.device)
        tgt = point_sample(target["masks"][:, None].to(pred_masks), points.expand(len(labels), -1, -1))[:, 0]
        out = point_sample(pred_masks[b][:, None], points.expand(pred_masks.shape[1], -1, -1))[:, 0]
        out, tgt = out.float(), tgt.float()
        cost = (
            class_weight * -probs[:, labels]
            + mask_weight * pairwise_sigmoid_ce(out, tgt)
            + dice_weight * pairwise_dice(out, tgt)
        )
        costs.append(cost)
    return costs


def contrastive_loss(
    queries: torch.Tensor,
    texts: torch.Tensor,
    logit_scale: torch.Tensor,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rank: int = 0,
) -> torch.Tensor:
    """OneFormer's query-text contrastive loss: a symmetric CLIP loss between each image's flattened query set and its
    flattened text-query set.

    Args:
        queries: (B, N, C) object queries (``contrastive_logits``).
        texts: (B, N, C) text queries.
        logit_scale: scalar; the similarity scale is ``min(exp(logit_scale), 100)``.
        gather: multi-device: maps a local (B, D) tensor to the (world * B, D) rows of every device, in rank order;
            None = this device only.
        rank: this device's rank (its rows start at ``rank * B`` in the gathered batch).

    Returns:
        Scalar ``CE(image -> text) + CE(text -> image)``; 0 when only one image takes part (no negative).
    """
    if queries.shape != texts.shape:
        raise ValueError(
            f"{tuple(texts.shape)} text queries for {tuple(queries.shape)} object queries; the texts per image "
            "must be num_object_queries - n_ctx"
        )
    image_x = F.normalize(queries.float().flatten(1), dim=-1)
    text_x = F.normalize(texts.float().flatten(1), dim=-1)
    all_images, all_texts = (image_x, text_x) if gather is None else (gather(image_x), gather(text_x))
    labels = torch.arange(image_x.shape[0], device=image_x.device) + rank * image_x.shape[0]
    scale = logit_scale.exp().clamp(max=100)
    loss_img = F.cross_entropy(image_x @ all_texts.T * scale, labels)
    loss_text = F.cross_entropy(text_x @ all_images.T * scale, labels)
    return loss_img + loss_text


class MaskSetCriterion(nn.Module):
    """Mask2Former / OneFormer set criterion: Hungarian matching per prediction layer, then class cross-entropy
    (no-object weight), point-sampled mask BCE and dice, and (OneFormer) the query-text contrastive term.

    Args:
        num_classes: K (class logits are K + 1, the last = no object).
        class_weight: weight of the class loss and of the class cost in matching.
        mask_weight: weight of the mask BCE loss and cost.
        dice_weight: weight of the dice loss and cost.
        no_object_weight: cross-entropy weight of the no-object class.
        contrastive_weight: weight of the contrastive term (used when the outputs hold ``texts``); it needs >= 2
            images per step: with one it is 0 and a warning is logged once.
        train_num_points: points per mask for the costs and the losses.
        oversample_ratio: candidates per kept point in importance sampling.
        importance_sample_ratio: share of the points taken where the prediction is most uncertain.
        deep_supervision: also match and supervise every ``aux_outputs`` layer (the contrastive term only once).
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        contrastive_weight: float = 0.5,
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = True,
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.contrastive_weight = contrastive_weight
        self.num_points, self.oversample_ratio = train_num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        self._warned_single_image = False

    def forward(
        self,
        outputs: dict,
        targets: Sequence[Target],
        num_masks: float | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        rank: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Losses of one batch.

        Args:
            outputs: the model's training outputs: ``pred_logits`` (B, N, K + 1), ``pred_masks`` (B, N, h, w),
                optional ``aux_outputs``, and for OneFormer ``contrastive_logits``, ``texts``, ``logit_scale``.
            targets: B target dicts (``labels`` (T,), ``masks`` (T, H, W)).
            num_masks: the normaliser of the mask losses (default: the targets of this batch, at least 1; pass the
                mean over devices when training on several).
            gather, rank: multi-device contrastive negatives (see :func:`contrastive_loss`).

        Returns:
            Unweighted terms ``loss_ce``, ``loss_mask``, ``loss_dice`` (``_{i}`` suffixed for aux layer i), optional
            ``loss_contrastive``, and ``loss``: their weighted sum (the value to back-propagate).
        """
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]} images")
        if num_masks is None:
            num_masks = float(sum(len(t["labels"]) for t in targets))
        num_masks = max(float(num_masks), 1.0)
        dtype = outputs["pred_masks"].dtype  # bool masks -> float once, not once per layer
        targets = [{**t, "masks": t["masks"].to(dtype)} for t in targets]
        losses = self.layer_losses(outputs, targets, num_masks, "final layer")
        total = sum(self.weights[name] * value for name, value in losses.items())
        if self.deep_supervision:
            for index, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_losses = self.layer_losses(aux, targets, num_masks, f"decoder layer {index}")
                total = total + sum(self.weights[name] * value for name, value in aux_losses.items())
                losses.update({f"{name}_{index}": value for name, value in aux_losses.items()})
        if "texts" in outputs:
            if outputs["texts"].shape[0] < 2 and gather is None:
                self._warn_single_image()
            losses["loss_contrastive"] = contrastive_loss(
                outputs["contrastive_logits"], outputs["texts"], outputs["logit_scale"], gather, rank
            )
            total = total + self.contrastive_weight * losses["loss_contrastive"]
        losses["loss"] = total
        return losses

    def layer_losses(self, outputs: dict, targets: Sequence[Target], num_masks: float, step: str) -> dict:
        """Match one layer's predictions and return its ``loss_ce``, ``loss_mask``, ``loss_dice``."""
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        weights = self.weights
        costs = mask_matching_costs(
            pred_logits,
            pred_masks,
            targets,
            weights["loss_ce"],
            weights["loss_mask"],
            weights["loss_dice"],
            self.num_points,
        )
        matches = hungarian_match(costs, step)
        return {
            "loss_ce": self.class_loss(pred_logits, targets, matches),
            **self.mask_losses(pred_masks, targets, matches, num_masks),
        }

    def class_loss(self, pred_logits: torch.Tensor, targets: Sequence[Target], matches) -> torch.Tensor:
        """Cross-entropy over K + 1 classes; unmatched queries are no-object (weight ``no_object_weight``)."""
        batch_idx, pred_idx = permutation_indices(matches)
        target_classes = torch.full(
            pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        matched = [t["labels"][j] for t, (_, j) in zip(targets, matches, strict=True)]
        if matched:
            target_classes[batch_idx, pred_idx] = torch.cat(matched).to(pred_logits.device)
        weight = self.empty_weight.to(pred_logits.dtype)
        return F.cross_entropy(pred_logits.transpose(1, 2), target_classes, weight)

    def mask_losses(
        self, pred_masks: torch.Tensor, targets: Sequence[Target], matches, num_masks: float
    ) -> dict[str, torch.Tensor]:
        """Point-sampled BCE and dice of the matched masks (importance-sampled points)."""
        batch_idx, pred_idx = permutation_indices(matches)
        if len(pred_idx) == 0:
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        src = pred_masks[batch_idx, pred_idx][:, None]
        tgt = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, matches, strict=True)])[:, None].to(src)
        with torch.no_grad():
            points = sample_uncertain_points(src, self.num_points, self.oversample_ratio, self.importance_sample_ratio)
            labels = point_sample(tgt, points)[:, 0]
        logits = point_sample(src, points)[:, 0]
        return {
            "loss_mask": sigmoid_ce_loss(logits, labels, num_masks),
            "loss_dice": dice_loss(logits, labels, num_masks),
        }

    def _warn_single_image(self) -> None:
        if not self._warned_single_image:
            logger.warning(
                "the query-text contrastive loss is inactive in a step with 1 image: it needs at least 2 images per "
                "step (set train.batch_size >= 2; with 1 the loss is 0 and the text branch does not learn; a last "
                "partial batch of 1 image also skips it)"
            )
            self._warned_single_image = True
