"""One-to-one assignment of predictions to targets (the Hungarian step of DETR-style set losses).

The cost matrices come from the task (detection: class + L1 + GIoU; universal segmentation: class + mask BCE +
dice); this module only checks them and solves the assignment with ``scipy.optimize.linear_sum_assignment``, which
crashes with an unhelpful message on NaN / inf entries. Here a non-finite cost stops with an error that names the
step it happened in and what usually causes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from vfmkit.errors import VfmError


class NonFiniteCostError(VfmError):
    """A cost matrix of the matching step holds NaN or inf (the predictions diverged)."""


def check_finite_cost(cost: torch.Tensor, step: str, image: int | None = None) -> None:
    """Raise :class:`NonFiniteCostError` when ``cost`` (any shape) holds NaN or inf.

    Args:
        cost: the cost matrix.
        step: what was being matched (e.g. ``"decoder layer 3"``, ``"encoder proposals"``), named in the error.
        image: index of the image in the batch, named in the error when given.
    """
    finite = torch.isfinite(cost)
    if bool(finite.all()):
        return
    nan, inf = int(torch.isnan(cost).sum()), int(torch.isinf(cost).sum())
    where = f" of image {image}" if image is not None else ""
    shape = "x".join(str(s) for s in cost.shape)
    raise NonFiniteCostError(
        f"Hungarian matching ({step}): the {shape} cost matrix{where} holds {nan} NaN and {inf} inf entries; the "
        "predictions diverged (usually a learning rate that is too high: lower train.optimizer.lr, or set "
        "train.grad_clip)"
    )


@torch.no_grad()
def hungarian_match(costs: Sequence[torch.Tensor], step: str = "matching") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Minimum-cost one-to-one assignment per image.

    Args:
        costs: per image a float cost matrix (Q, T): Q predictions (rows) x T targets (columns); T may be 0.
        step: name of the matching step, used in errors.

    Returns:
        Per image ``(pred_idx, target_idx)``: int64 tensors of length min(Q, T) on the CPU, ``pred_idx`` ascending;
        prediction ``pred_idx[k]`` is assigned target ``target_idx[k]``.

    Raises:
        NonFiniteCostError: a cost matrix holds NaN or inf.
    """
    matches = []
    for image, cost in enumerate(costs):
        if cost.ndim != 2:
            raise ValueError(f"cost matrix {image} must be 2-D (Q, T), got shape {tuple(cost.shape)}")
        if cost.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            matches.append((empty, empty.clone()))
            continue
        check_finite_cost(cost, step, image)
        rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return matches


def split_batched_cost(cost: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Split a batched cost (B, Q, sum(T_b)) computed against every target of the batch into per-image (Q, T_b).

    Image b's matrix keeps only the columns of its own targets (the DETR trick of one cost evaluation per batch).
    """
    if cost.shape[-1] != sum(sizes):
        raise ValueError(f"cost has {cost.shape[-1]} target columns, sizes add up to {sum(sizes)}")
    chunks = cost.split(list(sizes), dim=-1)
    return [chunk[b] for b, chunk in enumerate(chunks)]


def permutation_indices(matches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch_idx, pred_idx) of every matched prediction, to index a (B, Q, ...) tensor: ``x[batch_idx, pred_idx]``."""
    batch = [torch.full_like(pred, b) for b, (pred, _) in enumerate(matches)]
    preds = [pred for pred, _ in matches]
    if not preds:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty.clone()
    return torch.cat(batch), torch.cat(preds)


def assignment_cost(cost: np.ndarray | torch.Tensor, pred_idx: torch.Tensor, target_idx: torch.Tensor) -> float:
    """Total cost of an assignment (for tests and diagnostics)."""
    cost = torch.as_tensor(cost)
    return float(cost[pred_idx, target_idx].sum()) if len(pred_idx) else 0.0
