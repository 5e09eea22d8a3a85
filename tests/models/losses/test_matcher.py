"""The shared Hungarian matcher: optimal, identity on perfect costs, permutation-equivariant, NaN-safe."""

from __future__ import annotations

import itertools

import pytest
import torch

from vfmkit.errors import VfmError
from vfmkit.models.losses.matcher import (
    NonFiniteCostError,
    assignment_cost,
    hungarian_match,
    permutation_indices,
    split_batched_cost,
)


def _brute_force_min(cost: torch.Tensor) -> float:
    q, t = cost.shape
    best = float("inf")
    for rows in itertools.permutations(range(q), t):
        best = min(best, float(sum(cost[r, c] for c, r in enumerate(rows))))
    return best


def test_identity_on_a_perfect_cost() -> None:
    cost = 1.0 - torch.eye(5)
    ((pred, target),) = hungarian_match([cost])
    assert pred.tolist() == target.tolist() == list(range(5))


def test_optimal_against_brute_force() -> None:
    generator = torch.Generator().manual_seed(0)
    for q, t in [(4, 4), (6, 3), (5, 1)]:
        cost = torch.rand(q, t, generator=generator)
        ((pred, target),) = hungarian_match([cost])
        assert len(pred) == min(q, t)
        assert len(set(pred.tolist())) == len(pred) and len(set(target.tolist())) == len(target)
        assert assignment_cost(cost, pred, target) == pytest.approx(_brute_force_min(cost), abs=1e-6)


def test_permutation_equivariant() -> None:
    generator = torch.Generator().manual_seed(1)
    cost = torch.rand(7, 4, generator=generator)
    order = torch.randperm(7, generator=generator)
    ((pred, target),) = hungarian_match([cost])
    ((pred_p, target_p),) = hungarian_match([cost[order]])
    original = {int(p): int(t) for p, t in zip(pred, target, strict=True)}
    permuted = {int(order[p]): int(t) for p, t in zip(pred_p, target_p, strict=True)}
    assert original == permuted


def test_empty_targets_and_batched_split() -> None:
    cost = torch.rand(2, 5, 3)
    per_image = split_batched_cost(cost, [0, 3])
    assert per_image[0].shape == (5, 0) and per_image[1].shape == (5, 3)
    matches = hungarian_match(per_image)
    assert len(matches[0][0]) == 0 and len(matches[1][0]) == 3
    batch, pred = permutation_indices(matches)
    assert batch.tolist() == [1, 1, 1] and pred.tolist() == matches[1][0].tolist()
    with pytest.raises(ValueError, match="sizes add up"):
        split_batched_cost(cost, [1, 1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_cost_is_a_clear_error_naming_the_step(bad: float) -> None:
    cost = torch.rand(3, 2)
    cost[1, 1] = bad
    with pytest.raises(NonFiniteCostError, match=r"decoder layer 2.*3x2 cost matrix of image 1") as info:
        hungarian_match([torch.rand(3, 2), cost], step="decoder layer 2")
    assert isinstance(info.value, VfmError)
    assert "lower train.optimizer.lr" in str(info.value)
