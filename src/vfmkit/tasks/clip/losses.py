"""Contrastive losses (a thin adapter over open_clip's) and the logit scale / bias they train.

- ``siglip``: open_clip's ``SigLipLoss``, the pairwise sigmoid loss (every image-text pair is a binary problem, +1 on
  the diagonal, -1 elsewhere); init log scale ln 10, bias -10 (Zhai et al., 2023).
- ``clip``: open_clip's ``ClipLoss``, the symmetric softmax cross-entropy (InfoNCE); init log scale ln(1/0.07), bias 0
  (frozen: a constant shift cannot change a softmax, and an unused parameter trips DDP, open_clip #1076).

Both gather features across ranks when ``world_size > 1`` (open_clip does it: ``gather_with_grad`` and
``local_loss`` for ClipLoss, neighbour exchange for SigLipLoss). The log scale is clamped after every optimizer step
to [0, max(ln 100, its initial value)]: open_clip's trainer clamps at ln 100, which would cut a pre-trained SigLIP's
(about ln 118) on the first step.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from vfmkit.models.clip import ClipModel

LossType = Literal["siglip", "clip"]
LOSS_TYPES = ("siglip", "clip")
INIT_LOGIT_PARAMS: dict[str, tuple[float, float]] = {
    "siglip": (math.log(10.0), -10.0),
    "clip": (math.log(1 / 0.07), 0.0),
}
"""loss type -> (initial log scale, initial bias)."""
LOGIT_SCALE_CEILING = math.log(100.0)


class ContrastiveLoss(nn.Module):
    """open_clip's ``SigLipLoss`` or ``ClipLoss`` behind one call.

    Args:
        loss_type: ``siglip`` or ``clip``.
        rank, world_size: this process's rank and the number of processes (features are gathered across them).
        local_loss, gather_with_grad: ClipLoss options (memory-linear distributed loss; see open_clip's README).
    """

    def __init__(
        self,
        loss_type: LossType,
        rank: int = 0,
        world_size: int = 1,
        local_loss: bool = False,
        gather_with_grad: bool = False,
    ) -> None:
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
        self.loss_type = loss_type
        if loss_type == "siglip":
            self.loss = SigLipLoss(cache_labels=True, rank=rank, world_size=world_size)
        else:
            self.loss = ClipLoss(
                local_loss=local_loss,
                gather_with_grad=gather_with_grad,
                cache_labels=True,
                rank=rank,
                world_size=world_size,
            )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar loss of a batch of matching pairs.

        Args:
            image_embeddings: float (B, D) L2-normalised; row i matches text row i.
            text_embeddings: float (B, D) L2-normalised.
            logit_scale: the LOG scale (a 0-d parameter); it is exponentiated here.
            logit_bias: 0-d bias (required for ``siglip``; ignored by ``clip``, where it cannot change the softmax).
        """
        scale = logit_scale.exp()
        if self.loss_type == "siglip":
            if logit_bias is None:
                raise ValueError("the siglip loss needs a logit bias (the model has none: call prepare_logit_params)")
            return self.loss(image_embeddings, text_embeddings, scale, logit_bias)
        return self.loss(image_embeddings, text_embeddings, scale)


def prepare_logit_params(
    model: ClipModel,
    loss_type: LossType,
    init_logit_scale: float | None = None,
    init_logit_bias: float | None = None,
) -> None:
    """Set the model's logit scale and bias for training with ``loss_type``.

    Explicit ``init_*`` values win. Otherwise a model whose pre-training matches the loss (a bias for ``siglip``,
    none for ``clip``) keeps its pre-trained values, and any other starts from the loss type's init
    (:data:`INIT_LOGIT_PARAMS`). With ``clip`` the bias is 0 and frozen; with ``siglip`` it is created if missing.

    Works on the meta device (a dry build); the clamp ceiling is :func:`logit_scale_ceiling` of the result.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    default_scale, default_bias = INIT_LOGIT_PARAMS[loss_type]
    matches = (model.logit_bias is not None) == (loss_type == "siglip")
    scale = init_logit_scale if init_logit_scale is not None else (None if matches else default_scale)
    bias = init_logit_bias if init_logit_bias is not None else (None if matches else default_bias)
    with torch.no_grad():
        if scale is not None:
            model.logit_scale.fill_(float(scale))
        if model.logit_bias is None:
            model.logit_bias = nn.Parameter(model.logit_scale.new_tensor(0.0 if bias is None else float(bias)))
        elif bias is not None:
            model.logit_bias.fill_(float(bias))
        if loss_type == "clip":
            model.logit_bias.zero_()
    model.logit_bias.requires_grad_(loss_type == "siglip")


def logit_scale_ceiling(model: ClipModel) -> float:
    """The clamp ceiling of a model about to be trained: max(ln 100, its current (initial) log scale)."""
    return max(LOGIT_SCALE_CEILING, float(model.logit_scale.detach()))


@torch.no_grad()
def clamp_logit_scale(model: ClipModel, ceiling: float = LOGIT_SCALE_CEILING) -> None:
    """Clamp the log scale to [0, ceiling] in place (call after every optimizer step)."""
    model.logit_scale.clamp_(0.0, ceiling)
