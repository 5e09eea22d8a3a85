"""The DETR set criterion: matching (identity on perfect predictions, permutation-equivariant, NaN named), losses
near zero at perfect predictions, the varifocal / focal forms, box ops against torchvision, denoising matches."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from vfmkit.models.losses.detr import (
    DetrCriterion,
    HungarianBoxMatcher,
    cxcywh_to_xyxy,
    denoising_matches,
    focal_class_cost,
    varifocal_loss,
)
from vfmkit.models.losses.matcher import NonFiniteCostError

CLASSES = 4


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "labels": torch.tensor([0, 3, 1]),
            "boxes": torch.tensor([[0.2, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.4], [0.8, 0.2, 0.1, 0.1]]),
        },
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.6, 0.5]])},
    ]


def _perfect(targets, queries: int = 6, order: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Predictions where query order[b][k] is exactly target k (logit +30 for its class, -30 elsewhere); the other
    queries predict nothing (-30) at a far-away box."""
    logits = torch.full((len(targets), queries, CLASSES), -30.0)
    boxes = torch.tensor([0.05, 0.95, 0.02, 0.02]).repeat(len(targets), queries, 1)
    for b, target in enumerate(targets):
        slots = order[b] if order else list(range(len(target["labels"])))
        for k, slot in enumerate(slots):
            logits[b, slot, target["labels"][k]] = 30.0
            boxes[b, slot] = target["boxes"][k]
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_matcher_is_the_identity_on_perfect_predictions():
    targets = _targets()
    matches = HungarianBoxMatcher()(_perfect(targets), targets, "decoder layer 6")
    for (pred, tgt), target in zip(matches, targets, strict=True):
        count = len(target["labels"])
        assert pred.tolist() == list(range(count)) and tgt.tolist() == list(range(count))


def test_matcher_is_permutation_equivariant():
    torch.manual_seed(0)
    targets = _targets()
    outputs = {"pred_logits": torch.randn(3, 6, CLASSES), "pred_boxes": torch.rand(3, 6, 4) * 0.5 + 0.25}
    matcher = HungarianBoxMatcher()
    base = matcher(outputs, targets)
    perm = torch.randperm(6)
    permuted = {k: v[:, perm] for k, v in outputs.items()}
    moved = matcher(permuted, targets)
    for (pred, tgt), (pred_p, tgt_p) in zip(base, moved, strict=True):
        # query q of the permuted set is query perm[q] of the original: the same targets go to the same queries
        assert dict(zip(perm[pred_p].tolist(), tgt_p.tolist(), strict=True)) == dict(
            zip(pred.tolist(), tgt.tolist(), strict=True)
        )


def test_matcher_names_the_step_on_nan():
    targets = _targets()
    outputs = _perfect(targets)
    outputs["pred_boxes"][0, 2, 1] = float("nan")
    with pytest.raises(NonFiniteCostError, match=r"decoder layer 3.*image 0"):
        HungarianBoxMatcher()(outputs, targets, "decoder layer 3")


def test_focal_class_cost_matches_its_formula():
    logits, labels = torch.randn(5, CLASSES), torch.tensor([2, 0])
    p = logits.sigmoid()
    expected = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8) - 0.75 * p**2 * -torch.log(1 - p + 1e-8)
    torch.testing.assert_close(focal_class_cost(logits, labels), expected[:, labels])


def test_varifocal_loss_matches_its_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, CLASSES)
    target = torch.zeros_like(logits)
    target[0, 1, 2], target[1, 4, 0] = 0.7, 0.3
    p = logits.sigmoid()
    weight = 0.75 * p**2 * (target == 0) + target
    expected = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)) * weight
    torch.testing.assert_close(varifocal_loss(logits, target), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls_loss", ["vfl", "focal"])
def test_losses_are_near_zero_at_perfect_predictions(cls_loss):
    targets = _targets()
    perfect = _perfect(targets)
    outputs = {
        **perfect,
        "aux_outputs": [_perfect(targets)],
        "enc_outputs": _perfect(targets),
        "dn_outputs": [_perfect(targets, order=[[0, 1, 2], [], [0]])],
        "dn_meta": {
            "dn_positive_idx": [torch.tensor([0, 1, 2]), torch.zeros(0, dtype=torch.int64), torch.tensor([0])],
            "dn_num_group": 1,
            "dn_num_split": [6, 6],
        },
    }
    losses = DetrCriterion(CLASSES, cls_loss=cls_loss)(outputs, targets)
    expected = {f"loss_{k}{s}" for k in ("cls", "bbox", "giou") for s in ("", "_aux_0", "_enc", "_dn_0")} | {"loss"}
    assert set(losses) == expected
    assert float(losses["loss"]) < 1e-4, losses  # GIoU keeps its 1e-7 eps


def test_losses_grow_with_errors_and_ignore_prediction_order():
    torch.manual_seed(0)
    targets = _targets()
    criterion = DetrCriterion(CLASSES)
    perfect = float(criterion(_perfect(targets), targets)["loss"])
    noisy = _perfect(targets)
    noisy["pred_boxes"] = (noisy["pred_boxes"] + 0.05 * torch.randn_like(noisy["pred_boxes"])).clamp(0.01, 0.99)
    wrong = float(criterion(noisy, targets)["loss"])
    perm = torch.randperm(6)
    shuffled = float(criterion({k: v[:, perm] for k, v in noisy.items()}, targets)["loss"])
    assert wrong > perfect + 0.1
    assert shuffled == pytest.approx(wrong, rel=1e-5)


def test_focal_loss_term_is_torchvisions():
    torch.manual_seed(0)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    outputs = {
        "pred_logits": torch.randn(1, 3, CLASSES),
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]]]),
    }
    losses = DetrCriterion(CLASSES, cls_loss="focal", focal_alpha=0.25)(outputs, targets)
    onehot = torch.zeros(1, 3, CLASSES)
    onehot[0, 0, 1] = 1
    expected = sigmoid_focal_loss(outputs["pred_logits"], onehot, 0.25, 2.0, reduction="sum")
    torch.testing.assert_close(losses["loss_cls"], expected)


def test_box_ops_agree_with_torchvision():
    boxes = torch.rand(7, 4) * 0.5 + 0.1
    torch.testing.assert_close(cxcywh_to_xyxy(boxes), box_convert(boxes, "cxcywh", "xyxy"))
    a, b = cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(boxes.flip(0))
    torch.testing.assert_close(generalized_box_iou_loss(a, b), 1 - generalized_box_iou(a, b).diagonal())
    manual = torch.stack(
        [
            boxes[:, 0] - boxes[:, 2] / 2,
            boxes[:, 1] - boxes[:, 3] / 2,
            boxes[:, 0] + boxes[:, 2] / 2,
            boxes[:, 1] + boxes[:, 3] / 2,
        ],
        dim=-1,
    )
    torch.testing.assert_close(cxcywh_to_xyxy(boxes), manual)


def test_denoising_matches_pair_each_group_copy_with_its_target():
    targets = [{"labels": torch.tensor([0, 1])}, {"labels": torch.tensor([2])}]
    meta = {"dn_positive_idx": [torch.tensor([0, 1, 4, 5]), torch.tensor([0, 4])], "dn_num_group": 2}
    (pred0, tgt0), (pred1, tgt1) = denoising_matches(meta, targets)
    assert pred0.tolist() == [0, 1, 4, 5] and tgt0.tolist() == [0, 1, 0, 1]
    assert pred1.tolist() == [0, 4] and tgt1.tolist() == [0, 0]


def test_images_without_targets_only_train_the_background():
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    logits = torch.zeros(1, 4, CLASSES, requires_grad=True)
    losses = DetrCriterion(CLASSES)({"pred_logits": logits, "pred_boxes": torch.rand(1, 4, 4)}, targets)
    assert float(losses["loss_bbox"]) == 0 and float(losses["loss_giou"]) == 0
    losses["loss"].backward()
    assert (logits.grad > 0).all()  # every score is pushed down
