"""Teacher-feature standardisation for distillation: PHI-S, global (one mean vector, one scale) and none.

PHI-S (PCA-Hadamard isotropic standardisation, arXiv 2410.01680), clean-room from the paper's maths. For teacher
vectors ``x`` (C,) with mean ``mu`` and covariance ``Sigma = U diag(lambda) U^T``:

    y = alpha * H @ U^T @ (x - mu),     alpha = (mean_k lambda_k) ** -0.5,

with ``H`` a normalised Hadamard matrix (:mod:`vfmkit.models.losses.hadamard`). ``Cov(y) = alpha^2 H diag(lambda)
H^T`` has ``alpha^2 * mean(lambda) = 1`` on every diagonal entry: every channel gets variance 1 with one rotation and
one scalar, without the per-direction division of whitening that blows up near-null directions. The inverse is
``x = mu + alpha^-1 U H^T y``.

``global`` is the same with no rotation: ``y = alpha (x - mu)`` (same ``alpha``; for rotation-invariant losses such as
MSE it is PHI-S up to a reparametrisation of the head's last layer). ``none`` is the identity.

Statistics are running sums in float64 (count, mean, centred second moment; batches merged with the parallel
update of Chan et al.); under ``torch.distributed`` every update sums the batch statistics of all ranks first. The
projection is recomputed from the statistics on the first update, every ``update_period`` updates and on the last
one; after ``freeze_after`` updates the statistics stop changing (PHI-S eigenvectors move between refreshes, so a
frozen target space is what the student's heads can settle into). Everything lives in buffers, so a state dict
(and so a training checkpoint) holds it.

The maps work on any tensor whose last dimension is C (summaries (B, C), tokens (B, N, C)).
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn

from vfmkit.models.losses.hadamard import rotation_matrix

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("phi_s", "global", "none")


class FeatureStandardizer(nn.Module):
    """Base of the standardisers: ``forward`` maps teacher space to the standardised space, ``inverse`` back.

    Buffers: ``projection`` (C, C) float64 ``A`` and ``center`` (C,) float64 ``mu`` with ``y = A (x - mu)``;
    ``updates`` (int64 scalar) counts statistic updates.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("projection", torch.eye(dim, dtype=torch.float64))
        self.register_buffer("center", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @property
    def frozen(self) -> bool:
        """True once the statistics no longer change."""
        return True

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of teacher vectors (..., C) to the statistics (no-op for fixed maps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) teacher-space -> (..., C) standardised, in ``x``'s dtype (never lowered by autocast)."""
        self._check(x)
        with torch.autocast(x.device.type, enabled=False):
            return (x - self.center.to(x.dtype)) @ self.projection.to(x.dtype).T

    def inverse_matrix(self) -> torch.Tensor:
        """(C, C) float64 ``A^-1`` (orthogonal maps times a scalar invert exactly)."""
        return torch.linalg.inv(self.projection)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """(..., C) standardised -> (..., C) teacher space, in ``y``'s dtype."""
        self._check(y)
        with torch.autocast(y.device.type, enabled=False):
            return y @ self.inverse_matrix().to(y.dtype).T + self.center.to(y.dtype)

    def fold_inverse_into_linear(self, linear: nn.Linear) -> nn.Linear:
        """A new Linear whose outputs are the teacher-space version of ``linear``'s standardised outputs.

        ``W' = A^-1 W`` and ``b' = A^-1 b + mu`` (computed in float64), so ``linear'(h) = inverse(linear(h))``.

        Raises:
            ValueError: ``linear.out_features`` is not C.
        """
        if linear.out_features != self.dim:
            raise ValueError(
                f"cannot fold a {self.dim}-d standardisation into a Linear with {linear.out_features} outputs"
            )
        inv = self.inverse_matrix()
        weight = inv @ linear.weight.detach().double()
        bias = linear.bias.detach().double() if linear.bias is not None else torch.zeros(self.dim, dtype=torch.float64)
        folded = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device)
        with torch.no_grad():
            folded.weight.copy_(weight.to(linear.weight.dtype))
            folded.bias.copy_((inv @ bias + self.center).to(linear.weight.dtype))
        return folded

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected vectors of width {self.dim} in the last dimension, got shape {tuple(x.shape)}")


class IdentityStandardizer(FeatureStandardizer):
    """``none``: teacher features are used as they are."""


class RunningStandardizer(FeatureStandardizer):
    """A standardiser estimated from running float64 statistics (see the module docstring).

    Args:
        dim: C.
        freeze_after: statistic updates after which the estimate is frozen (>= 1).
        update_period: recompute the projection every this many updates (>= 1).
    """

    def __init__(self, dim: int, freeze_after: int = 100, update_period: int = 10):
        super().__init__(dim)
        if freeze_after < 1 or update_period < 1:
            raise ValueError(f"freeze_after and update_period must be >= 1, got {freeze_after}, {update_period}")
        self.freeze_after = freeze_after
        self.update_period = update_period
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dim, dtype=torch.float64))
        self.register_buffer("alpha", torch.ones((), dtype=torch.float64))

    @property
    def frozen(self) -> bool:
        return int(self.updates) >= self.freeze_after

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch (..., C) into the statistics and refresh the projection when due; no-op once frozen."""
        if self.frozen:
            return
        self._check(x)
        rows = x.detach().reshape(-1, self.dim).to(torch.float64)
        count, total, outer = self._shifted_sums(rows)
        if count == 0:
            return
        batch_mean = self.mean + total / count
        centred_outer = outer - torch.outer(total, total) / count  # sum of (x - batch_mean)(x - batch_mean)^T
        delta = batch_mean - self.mean
        merged = self.count + count
        self.m2 += centred_outer + torch.outer(delta, delta) * (self.count * count / merged)
        self.mean += delta * (count / merged)
        self.count.fill_(merged)
        self.updates += 1
        step = int(self.updates)
        if step == 1 or step % self.update_period == 0 or step == self.freeze_after:
            self.refresh()

    def _shifted_sums(self, rows: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """(count, sum of (x - mean), sum of (x - mean)(x - mean)^T) over the batch of every rank.

        Shifting by the running mean (identical on every rank) keeps the float64 sums well conditioned.
        """
        shifted = rows - self.mean
        stats = torch.tensor([float(rows.shape[0])], dtype=torch.float64, device=rows.device)
        total, outer = shifted.sum(0), shifted.T @ shifted
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            packed = torch.cat([stats, total, outer.flatten()])
            dist.all_reduce(packed)
            stats, total, outer = packed[:1], packed[1 : 1 + self.dim], packed[1 + self.dim :].view(self.dim, -1)
        return float(stats[0]), total, outer

    def covariance(self) -> torch.Tensor:
        """(C, C) float64 covariance of everything seen so far (population normalisation)."""
        return self.m2 / self.count.clamp_min(1.0)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute ``projection``, ``center`` and ``alpha`` from the current statistics."""
        cov = self.covariance()
        mean_eigenvalue = float(torch.diagonal(cov).mean())
        if mean_eigenvalue <= 0.0:
            logger.warning("feature standardisation: teacher features have zero variance; using scale 1")
            mean_eigenvalue = 1.0
        self.alpha.fill_(mean_eigenvalue**-0.5)
        self.center.copy_(self.mean)
        self.projection.copy_(self.alpha * self._rotation(cov))

    def inverse_matrix(self) -> torch.Tensor:
        """``A^-1 = A^T / alpha^2`` (the projection is alpha times an orthogonal matrix; PHI-S: ``alpha^-1 U H^T``)."""
        return self.projection.T / self.alpha**2

    def _rotation(self, cov: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class GlobalStandardizer(RunningStandardizer):
    """``global``: ``y = alpha (x - mu)``, one mean vector and one scale for all channels."""

    def _rotation(self, cov: torch.Tensor) -> torch.Tensor:
        return torch.eye(self.dim, dtype=torch.float64, device=cov.device)


class PhiStandardizer(RunningStandardizer):
    """``phi_s``: ``y = alpha H U^T (x - mu)``; every standardised channel has variance 1.

    The rotation ``H`` is an exact normalised Hadamard matrix for every order that has one here; otherwise a seeded
    random orthogonal matrix (logged once at construction). ``hadamard_exact`` tells which.
    """

    def __init__(self, dim: int, freeze_after: int = 100, update_period: int = 10):
        super().__init__(dim, freeze_after, update_period)
        rotation, exact = rotation_matrix(dim)
        self.hadamard_exact = exact
        self.register_buffer("hadamard", rotation, persistent=False)  # deterministic: rebuilt, not saved

    def _rotation(self, cov: torch.Tensor) -> torch.Tensor:
        scale = float(torch.diagonal(cov).median().clamp_min(1e-30))  # conditioning only: eigenvectors unchanged
        _, eigenvectors = torch.linalg.eigh(cov / scale)
        return self.hadamard.to(cov.device) @ eigenvectors.T


def build_standardizer(kind: str, dim: int, freeze_after: int = 100, update_period: int = 10) -> FeatureStandardizer:
    """A standardiser by name: ``phi_s``, ``global`` or ``none``.

    Raises:
        ValueError: an unknown name.
    """
    if kind == "phi_s":
        return PhiStandardizer(dim, freeze_after, update_period)
    if kind == "global":
        return GlobalStandardizer(dim, freeze_after, update_period)
    if kind == "none":
        return IdentityStandardizer(dim)
    raise ValueError(f"unknown feature normalization {kind!r} (expected one of {', '.join(NORMALIZATIONS)})")
