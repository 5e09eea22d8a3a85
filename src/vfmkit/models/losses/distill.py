"""Feature-distillation losses: student predictions against (standardised) teacher targets.

All losses take ``pred`` and ``target`` of the same shape (..., C) (summaries (B, C) or tokens (B, N, C)), compare
along the last dimension and return a scalar mean over every other position.

- ``cosine``: ``1 - cos(pred, target)``;
- ``smooth_l1``: Huber-style smooth L1 with ``beta`` (mean over elements);
- ``mse``: mean squared error over elements;
- ``balanced``: ``0.9 * cosine + 0.1 * smooth_l1(beta=2)`` (RADIO / TAO "balanced" feature loss);
- ``angle`` (summaries): ``acos(cos)^2`` divided by a running estimate of the teachers' own angular spread (the mean
  squared angle of teacher vectors to their mean direction), so teachers with tight and wide summary distributions
  weigh alike (:class:`SummaryAngleLoss`).

:class:`TeacherLoss` combines one teacher's summary and feature terms by its ``mode`` and weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vfmkit.models.backbones.base import tokens_to_nchw

FEATURE_LOSSES = ("cosine", "smooth_l1", "mse", "balanced")
SUMMARY_LOSSES = ("cosine", "angle", "smooth_l1", "mse", "balanced")
MODES = ("summary", "spatial", "combo")


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos`` along the last dimension."""
    return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Element-wise smooth L1 (quadratic below ``beta``, linear above), averaged."""
    return F.smooth_l1_loss(pred, target, beta=beta)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise squared error, averaged."""
    return F.mse_loss(pred, target)


def balanced_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.9 * (1 - cos) + 0.1 * smooth_l1(beta=2)``."""
    return 0.9 * cosine_loss(pred, target) + 0.1 * smooth_l1_loss(pred, target, beta=2.0)


_ELEMENTWISE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": cosine_loss,
    "smooth_l1": smooth_l1_loss,
    "mse": mse_loss,
    "balanced": balanced_loss,
}


def feature_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called ``kind`` (one of :data:`FEATURE_LOSSES`).

    Raises:
        ValueError: an unknown name.
    """
    if kind not in _ELEMENTWISE:
        raise ValueError(f"unknown distillation loss {kind!r} (expected one of {', '.join(FEATURE_LOSSES)})")
    return _ELEMENTWISE[kind]


class SummaryAngleLoss(nn.Module):
    """``acos(cos(pred, target))^2`` normalised by the teachers' running mean squared angle to their mean direction.

    In training mode each call first updates (without gradient) a running mean of the unit teacher vectors and an
    exponential average (``momentum``) of their squared angle to it. Buffers: ``direction_sum`` (C,) float64,
    ``count`` and ``angle_sq`` (scalars, float64).
    """

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-6):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("direction_sum", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("angle_sq", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def _update(self, target: torch.Tensor) -> None:
        unit = F.normalize(target.reshape(-1, target.shape[-1]).double(), dim=-1)
        self.direction_sum += unit.sum(0)
        self.count += unit.shape[0]
        mean_direction = F.normalize(self.direction_sum, dim=0)
        spread = torch.acos((unit @ mean_direction).clamp(-1.0, 1.0)).pow(2).mean()
        first = bool(self.angle_sq == 0)
        self.angle_sq.copy_(spread if first else (1 - self.momentum) * self.angle_sq + self.momentum * spread)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._update(target)
        cos = F.cosine_similarity(pred, target, dim=-1).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        scale = self.angle_sq.clamp_min(self.eps).to(pred.dtype)
        return (torch.acos(cos).pow(2) / scale).mean()


class TeacherLoss(nn.Module):
    """One teacher's distillation loss.

    ``total = loss_lambda * (summary_loss_weight * L_summary [summary, combo] + fd_loss_weight * L_features
    [spatial, combo])``.

    Args:
        mode: ``summary``, ``spatial`` or ``combo``.
        summary_dim: C of the teacher summary (for the ``angle`` loss's running state).
        loss_type: feature loss, one of :data:`FEATURE_LOSSES`.
        summary_loss_type: summary loss, one of :data:`SUMMARY_LOSSES`.
        loss_lambda: weight of this teacher in the total.
        summary_loss_weight: weight of the summary term.
        fd_loss_weight: weight of the feature term.
    """

    def __init__(
        self,
        mode: str = "combo",
        summary_dim: int = 0,
        loss_type: str = "balanced",
        summary_loss_type: str = "cosine",
        loss_lambda: float = 1.0,
        summary_loss_weight: float = 1.0,
        fd_loss_weight: float = 1.0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown distillation mode {mode!r} (expected one of {', '.join(MODES)})")
        if summary_loss_type not in SUMMARY_LOSSES:
            expected = ", ".join(SUMMARY_LOSSES)
            raise ValueError(f"unknown summary loss {summary_loss_type!r} (expected one of {expected})")
        self.mode = mode
        self.uses_summary = mode in ("summary", "combo")
        self.uses_features = mode in ("spatial", "combo")
        self.feature_fn = feature_loss(loss_type)
        self.summary_angle = SummaryAngleLoss(summary_dim) if summary_loss_type == "angle" else None
        self.summary_fn = None if self.summary_angle is not None else feature_loss(summary_loss_type)
        self.loss_lambda = loss_lambda
        self.summary_loss_weight = summary_loss_weight
        self.fd_loss_weight = fd_loss_weight

    def forward(
        self,
        student_summary: torch.Tensor | None = None,
        teacher_summary: torch.Tensor | None = None,
        student_features: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms; features must already be on the same grid (see :func:`match_token_grids`).

        Args:
            student_summary, teacher_summary: (B, C_s) projected student summary and teacher target.
            student_features, teacher_features: (B, N, C_f) projected student tokens and teacher tokens.

        Returns:
            ``{"summary": ..., "features": ..., "total": ...}`` (only the terms the mode uses, plus ``total``,
            which includes ``loss_lambda`` and the term weights).
        """
        terms: dict[str, torch.Tensor] = {}
        total = None
        if self.uses_summary:
            if self.summary_angle is not None:
                terms["summary"] = self.summary_angle(student_summary, teacher_summary)
            else:
                terms["summary"] = self.summary_fn(student_summary, teacher_summary)
            total = self.summary_loss_weight * terms["summary"]
        if self.uses_features:
            terms["features"] = self.feature_fn(student_features, teacher_features)
            weighted = self.fd_loss_weight * terms["features"]
            total = weighted if total is None else total + weighted
        terms["total"] = self.loss_lambda * total
        return terms


def match_token_grids(
    a: torch.Tensor, grid_a: tuple[int, int], b: torch.Tensor, grid_b: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Resize two token maps to their common coarser grid.

    Args:
        a: (B, ha*wa, C) raster-order tokens on ``grid_a``; b: (B, hb*wb, C) on ``grid_b``.

    Returns:
        ``a'`` and ``b'`` as (B, h*w, C) on ``(h, w) = (min(ha, hb), min(wa, wb))`` (area averaging: each coarse token
        is the mean of the fine tokens it covers; an unchanged grid is returned as is), and that grid.
    """
    grid = (min(grid_a[0], grid_b[0]), min(grid_a[1], grid_b[1]))
    return _resize_tokens(a, grid_a, grid), _resize_tokens(b, grid_b, grid), grid


def _resize_tokens(tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    if tuple(grid) == tuple(size):
        return tokens
    return F.adaptive_avg_pool2d(tokens_to_nchw(tokens, grid), size).flatten(2).transpose(1, 2)
