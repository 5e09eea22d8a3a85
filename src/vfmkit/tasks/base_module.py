"""What every task's LightningModule shares: exact-resume RNG state in checkpoints, and checkpoints without the
weights of a frozen backbone (rebuilt from its source instead)."""

from __future__ import annotations

import lightning.pytorch as pl

from vfmkit.tasks.rng import rng_state, set_rng_state


class TaskModule(pl.LightningModule):
    """Base LightningModule of the vfmkit tasks.

    Set ``self.frozen_prefix`` (e.g. ``"model.backbone."``) when those weights are frozen pretrained weights: they are
    left out of checkpoints, and loading tolerates their absence.
    """

    frozen_prefix: str | None = None

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self.frozen_prefix:
            prefix = kwargs.get("prefix", "") + self.frozen_prefix
            state = type(state)((k, v) for k, v in state.items() if not k.startswith(prefix))
        return state

    @property
    def strict_loading(self) -> bool:
        return not self.frozen_prefix

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:  # Lightning assigns it in __init__; the prefix decides
        pass

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("rng"):
            set_rng_state(checkpoint["rng"])
