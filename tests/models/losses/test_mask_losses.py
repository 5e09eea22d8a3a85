"""Point sampling, importance sampling, mask costs with the shared Hungarian matcher, and the set criterion."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from vfmkit.models.losses.mask import (
    MaskSetCriterion,
    contrastive_loss,
    dice_loss,
    mask_matching_costs,
    pairwise_dice,
    pairwise_sigmoid_ce,
    point_sample,
    sample_uncertain_points,
    sigmoid_ce_loss,
)
from vfmkit.models.losses.matcher import NonFiniteCostError, hungarian_match


def blocks(count: int, size: int = 32) -> torch.Tensor:
    """``count`` disjoint binary masks (count, size, size): vertical stripes."""
    masks = torch.zeros(count, size, size)
    width = size // count
    for k in range(count):
        masks[k, :, k * width : (k + 1) * width] = 1
    return masks


def perfect_outputs(labels: torch.Tensor, masks: torch.Tensor, queries: int, num_classes: int) -> dict:
    """Class and mask logits that reproduce the targets with the first T queries; the rest say no object."""
    logits = torch.full((1, queries, num_classes + 1), -20.0)
    logits[0, :, -1] = 20.0
    logits[0, torch.arange(len(labels)), labels] = 20.0
    logits[0, torch.arange(len(labels)), -1] = -20.0
    mask_logits = torch.full((1, queries, *masks.shape[-2:]), -20.0)
    mask_logits[0, : len(labels)] = masks * 40 - 20
    return {"pred_logits": logits, "pred_masks": mask_logits}


def test_point_sample_reads_pixel_centres_exactly():
    image = torch.arange(12.0).view(1, 1, 3, 4)
    centres = torch.tensor([[[0.125, 1 / 6], [0.875, 5 / 6], [0.375, 0.5]]])  # (x, y) of pixels (0,0) (2,3) (1,1)
    out = point_sample(image, centres)
    assert out.shape == (1, 1, 3)
    assert out[0, 0].tolist() == pytest.approx([0.0, 11.0, 5.0], abs=1e-5)
    between = point_sample(image, torch.tensor([[[0.25, 1 / 6]]]))  # halfway between pixels 0 and 1
    assert float(between) == pytest.approx(0.5)


def test_point_sample_shapes_with_channels():
    out = point_sample(torch.rand(5, 3, 8, 8), torch.rand(5, 17, 2))
    assert out.shape == (5, 3, 17)


def test_importance_sampling_takes_the_uncertain_points():
    torch.manual_seed(0)
    logits = torch.full((2, 1, 32, 32), 10.0)
    logits[:, :, :, 12:20] = 0.0  # an uncertain band in the middle
    points = sample_uncertain_points(logits, num_points=64, oversample_ratio=4.0, importance_sample_ratio=0.75)
    assert points.shape == (2, 64, 2)
    assert float(points.min()) >= 0.0 and float(points.max()) <= 1.0
    uncertain = point_sample(logits, points)[:, 0]
    assert bool((uncertain[:, :48].abs() < 5).all())  # the 48 importance-sampled points are in the band
    assert float((uncertain[:, 48:].abs() > 5).float().mean()) > 0.5  # the 16 uniform points mostly are not
    everywhere = sample_uncertain_points(logits, 64, oversample_ratio=1.0, importance_sample_ratio=0.0)
    assert everywhere.shape == (2, 64, 2)
    with pytest.raises(ValueError):
        sample_uncertain_points(logits, 64, oversample_ratio=0.5)


def test_pairwise_costs_equal_the_per_pair_losses():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 50), (torch.rand(3, 50) > 0.5).float()
    bce, dice = pairwise_sigmoid_ce(logits, labels), pairwise_dice(logits, labels)
    assert bce.shape == dice.shape == (4, 3)
    for q in range(4):
        for t in range(3):
            expected = F.binary_cross_entropy_with_logits(logits[q], labels[t])
            assert float(bce[q, t]) == pytest.approx(float(expected), rel=1e-5)
            assert float(dice[q, t]) == pytest.approx(
                float(dice_loss(logits[q : q + 1], labels[t : t + 1], 1)), rel=1e-5
            )
    assert float(sigmoid_ce_loss(logits[:3], labels, 3)) == pytest.approx(float(bce.diagonal().mean()), rel=1e-5)


def test_matching_on_mask_costs_is_the_identity_on_perfect_predictions():
    torch.manual_seed(0)
    masks, labels = blocks(4), torch.tensor([2, 0, 1, 2])
    outputs = perfect_outputs(labels, masks, queries=6, num_classes=3)
    costs = mask_matching_costs(outputs["pred_logits"], outputs["pred_masks"], [{"labels": labels, "masks": masks}])
    assert costs[0].shape == (6, 4)
    ((pred, target),) = hungarian_match(costs, "test")
    assert pred.tolist() == target.tolist() == [0, 1, 2, 3]


def test_matching_is_permutation_equivariant():
    torch.manual_seed(1)
    masks, labels = blocks(4), torch.tensor([2, 0, 1, 2])
    outputs = perfect_outputs(labels, masks, queries=6, num_classes=3)
    outputs["pred_masks"] = outputs["pred_masks"] + torch.randn_like(outputs["pred_masks"])  # imperfect
    order = torch.tensor([3, 5, 0, 4, 1, 2])
    shuffled = {key: value[:, order] for key, value in outputs.items()}
    target = [{"labels": labels, "masks": masks}]
    torch.manual_seed(7)
    ((pred_a, tgt_a),) = hungarian_match(mask_matching_costs(**_args(outputs), targets=target))
    torch.manual_seed(7)  # the same random points
    ((pred_b, tgt_b),) = hungarian_match(mask_matching_costs(**_args(shuffled), targets=target))
    assigned_a = dict(zip(tgt_a.tolist(), pred_a.tolist(), strict=True))
    assigned_b = dict(zip(tgt_b.tolist(), order[pred_b].tolist(), strict=True))
    assert assigned_a == assigned_b


def _args(outputs: dict) -> dict:
    return {"pred_logits": outputs["pred_logits"], "pred_masks": outputs["pred_masks"]}


def test_losses_are_near_zero_at_perfect_predictions_only():
    torch.manual_seed(0)
    masks, labels = blocks(4, size=64), torch.tensor([2, 0, 1, 2])
    targets = [{"labels": labels, "masks": masks.bool()}]
    criterion = MaskSetCriterion(3, train_num_points=1024, importance_sample_ratio=0.0, oversample_ratio=1.0)
    perfect = perfect_outputs(labels, masks, queries=6, num_classes=3)
    perfect["aux_outputs"] = [dict(perfect)]
    losses = criterion(perfect, targets)
    assert set(losses) >= {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0", "loss"}
    assert float(losses["loss_ce"]) < 1e-6 and float(losses["loss_dice"]) < 0.02
    # the only error: bilinear reads across the stripe edges and into the zero padding at the image border
    assert float(losses["loss_mask"]) < 0.1
    weights = {"loss_ce": 2, "loss_mask": 5, "loss_dice": 5}
    weighted = sum(w * float(losses[k]) + w * float(losses[f"{k}_0"]) for k, w in weights.items())
    assert float(losses["loss"]) == pytest.approx(weighted, rel=1e-5)
    noisy = {"pred_logits": torch.randn(1, 6, 4), "pred_masks": torch.randn(1, 6, 16, 16)}
    final_layer = sum(w * float(losses[k]) for k, w in weights.items())
    assert float(criterion(noisy, targets)["loss"]) > 10 * final_layer


def test_no_object_weight_and_empty_targets():
    criterion = MaskSetCriterion(3, no_object_weight=0.1, train_num_points=64)
    outputs = {"pred_logits": torch.zeros(2, 5, 4, requires_grad=True), "pred_masks": torch.zeros(2, 5, 8, 8)}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32)}
    losses = criterion(outputs, [empty, empty])
    assert float(losses["loss_ce"].detach()) == pytest.approx(float(torch.log(torch.tensor(4.0))))  # uniform
    assert float(losses["loss_mask"]) == 0.0 and float(losses["loss_dice"]) == 0.0
    losses["loss"].backward()
    assert outputs["pred_logits"].grad is not None


def test_contrastive_term_needs_two_images_and_warns_once(caplog):
    torch.manual_seed(0)
    criterion = MaskSetCriterion(3, train_num_points=64)
    target = {"labels": torch.tensor([1]), "masks": blocks(1, 16)}
    queries = torch.randn(2, 6, 8)

    def outputs(batch, texts):
        return {
            "pred_logits": torch.randn(batch, 6, 4),
            "pred_masks": torch.randn(batch, 6, 8, 8),
            "contrastive_logits": queries[:batch],
            "texts": texts[:batch],
            "logit_scale": torch.tensor(2.0),
        }

    with caplog.at_level(logging.WARNING, logger="vfmkit.models.losses.mask"):
        single = criterion(outputs(1, queries), [target])
        criterion(outputs(1, queries), [target])
    assert float(single["loss_contrastive"]) == pytest.approx(0.0, abs=1e-6)
    warnings = [r for r in caplog.records if "contrastive" in r.message]
    assert len(warnings) == 1 and "batch_size >= 2" in warnings[0].message
    aligned = criterion(outputs(2, queries), [target, target])["loss_contrastive"]
    swapped = criterion(outputs(2, queries.flip(0)), [target, target])["loss_contrastive"]
    assert float(aligned) < float(swapped)
    with pytest.raises(ValueError, match="num_object_queries - n_ctx"):
        contrastive_loss(queries, queries[:, :4], torch.tensor(1.0))


def test_diverged_predictions_name_the_layer():
    criterion = MaskSetCriterion(3, train_num_points=32)
    target = {"labels": torch.tensor([0]), "masks": blocks(1, 16)}
    good = {"pred_logits": torch.zeros(1, 4, 4), "pred_masks": torch.zeros(1, 4, 8, 8)}
    bad = {"pred_logits": torch.full((1, 4, 4), float("nan")), "pred_masks": torch.zeros(1, 4, 8, 8)}
    with pytest.raises(NonFiniteCostError, match="decoder layer 0"):
        criterion({**good, "aux_outputs": [bad]}, [target])
