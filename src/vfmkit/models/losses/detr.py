"""The DETR set criterion for detection: Hungarian matching on class + L1 + GIoU costs, then focal or varifocal
classification and L1 + GIoU box losses for the last decoder layer, every earlier layer, the encoder proposals and
the denoising groups (matched by construction).

Conventions: boxes are cxcywh normalised to [0, 1]; logits are raw sigmoid logits (B, Q, C) with no background
class; targets are per image ``labels`` (T,) int64 in [0, C) and ``boxes`` (T, 4). The defaults are TAO's RT-DETR
(varifocal alpha 0.75 gamma 2; class / L1 / GIoU weights 1 / 5 / 2; matching costs 2 / 5 / 2 with the focal-form
class cost at alpha 0.25). Every loss is summed and divided by the number of target boxes in the batch (averaged
over processes when ``torch.distributed`` is initialised), as DETR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from vfmkit.models.losses.matcher import hungarian_match, permutation_indices, split_batched_cost

Match = tuple[torch.Tensor, torch.Tensor]
Targets = Sequence[dict[str, torch.Tensor]]


def varifocal_loss(
    logits: torch.Tensor, target_scores: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0
) -> torch.Tensor:
    """Varifocal loss (Zhang et al., VarifocalNet 2021; RT-DETR's form), element-wise.

    Positives (``target_scores`` > 0, the IoU of the matched box) are weighted by their target score, negatives by
    ``alpha * p**gamma`` (p the detached predicted probability).

    Args:
        logits: raw logits, any shape.
        target_scores: same shape, in [0, 1]: the IoU-aware target of positives, 0 elsewhere.

    Returns:
        The unreduced loss, same shape.
    """
    probs = logits.sigmoid().detach()
    positive = (target_scores > 0).to(logits.dtype)
    weight = alpha * probs.pow(gamma) * (1 - positive) + target_scores
    return F.binary_cross_entropy_with_logits(logits, target_scores, weight=weight, reduction="none")


def ia_bce_loss(logits: torch.Tensor, target_scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """IoU-aware classification loss (LW-DETR's IA-BCE), element-wise: BCE towards ``target_scores`` on positives
    (weight 1) and towards 0 on negatives weighted by ``p**2`` (p the detached predicted probability).

    Args:
        logits: raw logits, any shape.
        target_scores: same shape: the positives' target ``p**alpha * IoU**(1 - alpha)``, 0 elsewhere.
        positive: same shape, bool: the matched (query, class) entries.

    Returns:
        The unreduced loss, same shape.
    """
    probs = logits.sigmoid().detach()
    weight = torch.where(positive, torch.ones_like(probs), probs.pow(2))
    return F.binary_cross_entropy_with_logits(logits, target_scores, weight=weight, reduction="none")


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """Focal-form classification cost (Deformable DETR): cost of predicting each target's class.

    Args:
        logits: (N, C) raw logits; labels: (T,) int64 classes.

    Returns:
        (N, T) float: positive focal term minus negative focal term of the target class.
    """
    probs = logits.sigmoid()
    negative = (1 - alpha) * probs.pow(gamma) * -(1 - probs + 1e-8).log()
    positive = alpha * (1 - probs).pow(gamma) * -(probs + 1e-8).log()
    return positive[:, labels] - negative[:, labels]


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy (torchvision ``box_convert``)."""
    return box_convert(boxes, "cxcywh", "xyxy")


class HungarianBoxMatcher:
    """One-to-one assignment of predictions to targets minimising
    ``cost_class * focal class cost + cost_bbox * L1 + cost_giou * (-GIoU)``.

    Args:
        cost_class, cost_bbox, cost_giou: the weights (TAO: 2, 5, 2).
        alpha, gamma: of the focal-form class cost.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ):
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def cost(self, logits: torch.Tensor, boxes: torch.Tensor, targets: Targets) -> torch.Tensor:
        """Batched cost (B, Q, sum T_b) of every prediction against every target of the batch (float32)."""
        batch, queries = logits.shape[:2]
        labels = torch.cat([t["labels"] for t in targets]).to(logits.device)
        target_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes.device, torch.float32)
        flat_logits, flat_boxes = logits.flatten(0, 1).float(), boxes.flatten(0, 1).float()
        cost = (
            self.cost_class * focal_class_cost(flat_logits, labels, self.alpha, self.gamma)
            + self.cost_bbox * torch.cdist(flat_boxes, target_boxes, p=1)
            - self.cost_giou * generalized_box_iou(cxcywh_to_xyxy(flat_boxes), cxcywh_to_xyxy(target_boxes))
        )
        return cost.view(batch, queries, -1)

    def __call__(self, outputs: dict[str, torch.Tensor], targets: Targets, step: str = "matching") -> list[Match]:
        """Per image ``(pred_idx, target_idx)`` int64 CPU tensors (see :func:`hungarian_match`).

        Raises:
            NonFiniteCostError: NaN or inf in a cost matrix; the message names ``step`` and the image.
        """
        sizes = [len(t["labels"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return [(empty, empty.clone()) for _ in sizes]
        cost = self.cost(outputs["pred_logits"], outputs["pred_boxes"], targets).cpu()
        return hungarian_match(split_batched_cost(cost, sizes), step)


def denoising_matches(dn_meta: dict[str, Any], targets: Targets) -> list[Match]:
    """The by-construction matches of the positive denoising queries: group g's copy of target k."""
    groups = int(dn_meta["dn_num_group"])
    matches = []
    for target, positive in zip(targets, dn_meta["dn_positive_idx"], strict=True):
        count = len(target["labels"])
        matches.append((positive.cpu(), torch.arange(count, dtype=torch.int64).repeat(groups)))
    return matches


class DetrCriterion(nn.Module):
    """Set criterion of the DETR family.

    Args:
        num_classes: C.
        cls_loss: ``vfl`` (varifocal, RT-DETR), ``focal`` (DINO) or ``ia_bce`` (IoU-aware BCE, LW-DETR; its
            ``focal_alpha`` is the exponent of the score in the target, ``focal_gamma`` is unused).
        focal_alpha, focal_gamma: of the classification loss.
        cls_loss_coef, bbox_loss_coef, giou_loss_coef: loss weights.
        set_cost_class, set_cost_bbox, set_cost_giou: matching cost weights.
    """

    def __init__(
        self,
        num_classes: int,
        cls_loss: str = "vfl",
        focal_alpha: float = 0.75,
        focal_gamma: float = 2.0,
        cls_loss_coef: float = 1.0,
        bbox_loss_coef: float = 5.0,
        giou_loss_coef: float = 2.0,
        set_cost_class: float = 2.0,
        set_cost_bbox: float = 5.0,
        set_cost_giou: float = 2.0,
    ):
        super().__init__()
        if cls_loss not in ("vfl", "focal", "ia_bce"):
            raise ValueError(f"cls_loss must be vfl, focal or ia_bce, got {cls_loss!r}")
        self.num_classes = num_classes
        self.cls_loss, self.focal_alpha, self.focal_gamma = cls_loss, focal_alpha, focal_gamma
        self.weights = {"loss_cls": cls_loss_coef, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
        self.matcher = HungarianBoxMatcher(set_cost_class, set_cost_bbox, set_cost_giou)

    def forward(self, outputs: dict[str, Any], targets: Targets) -> dict[str, torch.Tensor]:
        """All losses of one batch.

        Args:
            outputs: the detector's training output (``pred_logits``, ``pred_boxes`` and optionally
                ``aux_outputs``, ``enc_outputs``, ``dn_outputs`` + ``dn_meta``, ``query_groups``: G Group-DETR groups
                of equal size along the query axis, each matched one-to-one on its own; the loss of those sets is
                divided by G times the number of boxes).
            targets: per image ``labels`` (T,) int64 and ``boxes`` (T, 4) cxcywh normalised.

        Returns:
            ``loss`` (the weighted total, a scalar to backpropagate) and every unweighted term:
            ``loss_{cls,bbox,giou}`` (last layer), ``..._aux_{i}`` (decoder layer i + 1), ``..._enc`` (encoder
            proposals), ``..._dn_{i}`` (denoising, decoder layer i + 1).
        """
        num_boxes = self._num_boxes(targets, outputs["pred_logits"].device)
        groups = int(outputs.get("query_groups", 1))
        aux = outputs.get("aux_outputs", [])
        sets = [("", outputs, f"decoder layer {len(aux) + 1}")]
        sets += [(f"_aux_{i}", layer, f"decoder layer {i + 1}") for i, layer in enumerate(aux)]
        if "enc_outputs" in outputs:
            sets.append(("_enc", outputs["enc_outputs"], "encoder proposals"))
        losses: dict[str, torch.Tensor] = {}
        for suffix, preds, step in sets:
            matches = self.group_matches(preds, targets, groups, step)
            losses.update(self.set_losses(preds, targets, matches, num_boxes * groups, suffix))
        if outputs.get("dn_meta") is not None:
            matches = denoising_matches(outputs["dn_meta"], targets)
            dn_boxes = num_boxes * outputs["dn_meta"]["dn_num_group"]
            for i, layer in enumerate(outputs["dn_outputs"]):
                losses.update(self.set_losses(layer, targets, matches, dn_boxes, f"_dn_{i}"))
        losses["loss"] = sum(self.weights["_".join(key.split("_")[:2])] * value for key, value in losses.items())
        return losses

    def group_matches(self, preds: dict[str, torch.Tensor], targets: Targets, groups: int, step: str) -> list[Match]:
        """Hungarian matches of each of ``groups`` equal query groups on its own, as indices into all the queries."""
        if groups == 1:
            return self.matcher(preds, targets, step)
        per_group = preds["pred_logits"].shape[1] // groups
        found: list[list[Match]] = []
        for g in range(groups):
            part = {key: preds[key][:, g * per_group : (g + 1) * per_group] for key in ("pred_logits", "pred_boxes")}
            found.append([(i + g * per_group, j) for i, j in self.matcher(part, targets, f"{step}, query group {g}")])
        return [(torch.cat([m[b][0] for m in found]), torch.cat([m[b][1] for m in found])) for b in range(len(targets))]

    def set_losses(
        self, preds: dict[str, torch.Tensor], targets: Targets, matches: list[Match], num_boxes: float, suffix: str = ""
    ) -> dict[str, torch.Tensor]:
        """Classification, L1 and GIoU losses of one prediction set under ``matches``, each divided by ``num_boxes``."""
        logits, boxes = preds["pred_logits"], preds["pred_boxes"]
        device = logits.device
        batch_idx, pred_idx = (i.to(device) for i in permutation_indices(matches))
        labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, matches, strict=True)])
        target_boxes = torch.cat(
            [t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, matches, strict=True)]
        )
        labels, target_boxes = labels.to(device), target_boxes.to(device, boxes.dtype)
        matched = boxes[batch_idx, pred_idx]
        if self.cls_loss == "vfl":
            with torch.no_grad():
                ious = box_iou(cxcywh_to_xyxy(matched), cxcywh_to_xyxy(target_boxes)).diagonal()
            scores = torch.zeros_like(logits)
            scores[batch_idx, pred_idx, labels] = ious.to(logits.dtype)
            cls = varifocal_loss(logits, scores, self.focal_alpha, self.focal_gamma)
        elif self.cls_loss == "ia_bce":
            cls = self._ia_bce(logits, matched, target_boxes, (batch_idx, pred_idx, labels))
        else:
            onehot = torch.zeros_like(logits)
            onehot[batch_idx, pred_idx, labels] = 1.0
            cls = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma, reduction="none")
        return {
            f"loss_cls{suffix}": cls.sum() / num_boxes,
            f"loss_bbox{suffix}": F.l1_loss(matched, target_boxes, reduction="sum") / num_boxes,
            f"loss_giou{suffix}": generalized_box_iou_loss(
                cxcywh_to_xyxy(matched), cxcywh_to_xyxy(target_boxes), reduction="sum"
            )
            / num_boxes,
        }

    def _ia_bce(self, logits, matched, target_boxes, index) -> torch.Tensor:
        """IA-BCE of ``logits`` (B, Q, C) with the matched entries ``index`` = (batch, query, class) indices."""
        with torch.no_grad():
            ious = box_iou(cxcywh_to_xyxy(matched), cxcywh_to_xyxy(target_boxes)).diagonal().clamp(min=0.0)
            probs = logits.detach().sigmoid()[index]
            scores = torch.zeros_like(logits)
            scores[index] = (probs.pow(self.focal_alpha) * ious.pow(1 - self.focal_alpha)).to(logits.dtype)
        positive = torch.zeros_like(logits, dtype=torch.bool)
        positive[index] = True
        return ia_bce_loss(logits, scores, positive)

    @staticmethod
    def _num_boxes(targets: Targets, device: torch.device) -> float:
        """Target boxes per process (averaged over processes when distributed), at least 1."""
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
            count = count / torch.distributed.get_world_size()
        return max(float(count), 1.0)
