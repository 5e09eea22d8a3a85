"""Distillation losses: values, the balanced mix, the angle loss's normalisation, per-teacher weighting, grids."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vfmkit.models.losses.distill import (
    SummaryAngleLoss,
    TeacherLoss,
    balanced_loss,
    cosine_loss,
    feature_loss,
    match_token_grids,
    mse_loss,
    smooth_l1_loss,
)


def test_elementwise_losses_on_hand_built_values():
    pred = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert cosine_loss(pred, target) == pytest.approx(0.5)  # cos 0 and cos 1
    assert mse_loss(pred, target) == pytest.approx((1 + 1 + 0 + 4) / 4)
    # smooth L1 with beta 2: |d| < 2 -> d^2 / 4, else |d| - 1
    assert smooth_l1_loss(pred, target, beta=2.0) == pytest.approx((0.25 + 0.25 + 0 + 1.0) / 4)
    assert balanced_loss(pred, target) == pytest.approx(0.9 * 0.5 + 0.1 * (1.5 / 4))
    assert feature_loss("balanced") is balanced_loss
    with pytest.raises(ValueError, match="unknown distillation loss"):
        feature_loss("l3")


def test_angle_loss_is_normalised_by_the_teachers_angular_spread():
    generator = torch.Generator().manual_seed(0)
    direction = F.normalize(torch.randn(8, generator=generator), dim=0)
    losses = {}
    for name, spread in (("tight", 0.05), ("wide", 0.5)):
        target = direction + spread * torch.randn(256, 8, generator=generator)
        loss = SummaryAngleLoss(8)
        loss(target, target)  # first training call: estimates the spread
        pred = target + 0.3 * spread * torch.randn(target.shape, generator=generator)  # errors relative to the spread
        raw = torch.acos(F.cosine_similarity(pred, target, dim=-1).clamp(-1, 1)).pow(2).mean()
        losses[name] = float(loss.eval()(pred, target))
        assert losses[name] == pytest.approx(float(raw / loss.angle_sq), rel=1e-4)
    # relative errors of the same size weigh about the same whatever the teacher's spread
    assert 0.3 < losses["tight"] / losses["wide"] < 3.0


def test_teacher_loss_combines_terms_by_mode_and_weights():
    generator = torch.Generator().manual_seed(0)
    s_pred, s_tgt = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    f_pred, f_tgt = torch.randn(4, 9, 5, generator=generator), torch.randn(4, 9, 5, generator=generator)
    combo = TeacherLoss("combo", 6, "mse", "cosine", loss_lambda=2.0, summary_loss_weight=0.5, fd_loss_weight=3.0)
    terms = combo(s_pred, s_tgt, f_pred, f_tgt)
    assert terms["summary"] == pytest.approx(float(cosine_loss(s_pred, s_tgt)))
    assert terms["features"] == pytest.approx(float(mse_loss(f_pred, f_tgt)))
    assert terms["total"] == pytest.approx(2.0 * (0.5 * float(terms["summary"]) + 3.0 * float(terms["features"])))
    summary_only = TeacherLoss("summary", 6)(s_pred, s_tgt)
    assert set(summary_only) == {"summary", "total"}
    spatial = TeacherLoss("spatial", 6, loss_type="balanced")(None, None, f_pred, f_tgt)
    assert set(spatial) == {"features", "total"} and spatial["total"] == pytest.approx(
        float(balanced_loss(f_pred, f_tgt))
    )
    with pytest.raises(ValueError, match="unknown distillation mode"):
        TeacherLoss("logits", 6)


def test_token_grids_are_resized_to_the_coarser_one():
    fine = torch.arange(16.0).view(1, 16, 1).repeat(2, 1, 3)  # 4x4 grid
    coarse = torch.zeros(2, 4, 3)  # 2x2 grid
    a, b, grid = match_token_grids(fine, (4, 4), coarse, (2, 2))
    assert grid == (2, 2) and a.shape == b.shape == (2, 4, 3)
    assert b is coarse  # the coarser side is not touched
    expected = torch.tensor([(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4])
    torch.testing.assert_close(a[0, :, 0], expected)  # halving = 2x2 means
    _, _, mixed = match_token_grids(torch.zeros(1, 12, 1), (3, 4), torch.zeros(1, 10, 1), (5, 2))
    assert mixed == (3, 2)


def test_cosine_loss_is_scale_invariant_and_mse_is_not():
    pred, target = torch.randn(3, 4), torch.randn(3, 4)
    assert cosine_loss(1e3 * pred, 1e3 * target) == pytest.approx(float(cosine_loss(pred, target)), rel=1e-5)
    assert float(mse_loss(1e3 * pred, 1e3 * target)) == pytest.approx(1e6 * float(mse_loss(pred, target)), rel=1e-5)
    assert not math.isnan(float(cosine_loss(torch.zeros(2, 3), torch.ones(2, 3))))
