"""What every task's LightningModule shares: the hyper-parameters checkpoints carry (task, variant, spec, meta), the
frozen-backbone rule, exact-resume RNG state, optimizer groups, and metric logging in fractions."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from pydantic import BaseModel
from torch import nn

from vfmkit import __version__
from vfmkit.engine.frozen import (
    CHECKPOINT_KEY,
    FrozenBackboneRecord,
    check_backbone_weights,
    omitted_backbone,
    submodule,
)
from vfmkit.engine.optim import task_optimizers
from vfmkit.engine.rng import rng_state, set_rng_state
from vfmkit.engine.taskdef import TaskDef


class TaskModule(pl.LightningModule):
    """Base LightningModule of the vfmkit tasks; subclasses implement ``training_step`` and validation.

    Args:
        model: the task's model (saved under ``model.`` in checkpoints).
        spec: the resolved spec (saved as plain data).
        meta: JSON-able task facts (class names ...), saved with the spec.
        taskdef: the task definition (name, variant, backbone path).
    """

    def __init__(self, model: nn.Module, spec: BaseModel, meta: dict[str, Any], taskdef: TaskDef):
        super().__init__()
        self.model = model
        self.spec = spec
        self.meta = dict(meta)
        self.backbone_path = taskdef.backbone_path
        self.save_hyperparameters(
            {
                "task": taskdef.name,
                "variant": taskdef.variant,
                "spec": spec.model_dump(mode="json"),
                "meta": self.meta,
                "vfmkit": __version__,
            }
        )
        self.frozen_record: FrozenBackboneRecord | None = omitted_backbone(model, taskdef.backbone_path)

    @property
    def backbone(self) -> nn.Module:
        return submodule(self.model, self.backbone_path)

    @property
    def _frozen_prefix(self) -> str | None:
        return f"model.{self.frozen_record.model_path}." if self.frozen_record else None

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self._frozen_prefix:
            prefix = kwargs.get("prefix", "") + self._frozen_prefix
            state = type(state)((k, v) for k, v in state.items() if not k.startswith(prefix))
        return state

    @property
    def strict_loading(self) -> bool:
        return self.frozen_record is None

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:  # Lightning assigns it in __init__; the frozen rule decides
        pass

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = rng_state()
        if self.frozen_record is not None:
            checkpoint[CHECKPOINT_KEY] = self.frozen_record.as_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("rng"):
            set_rng_state(checkpoint["rng"])
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is not None and self.frozen_record != FrozenBackboneRecord.from_dict(saved):
            # resuming: the backbone rebuilt from its source must be the one the run was trained on
            check_backbone_weights(self.model, FrozenBackboneRecord.from_dict(saved), "train.resume checkpoint")

    def configure_optimizers(self):
        prefix = self.backbone_path + "."
        head = [(n, p) for n, p in self.model.named_parameters() if not n.startswith(prefix)]
        return task_optimizers(self.spec.train, head, self.backbone, self.trainer.estimated_stepping_batches)

    def log_metrics(self, metrics: dict, keys: tuple[str, ...], monitor: str | None = None) -> None:
        """Log ``val/<key>`` for each key as a fraction (None -> NaN, written as an empty cell in metrics.csv)."""
        for key in keys:
            value = metrics.get(key)
            value = math.nan if value is None else float(value)
            self.log(f"val/{key}", value, prog_bar=f"val/{key}" == monitor)

    def gather_cat(self, values: torch.Tensor) -> torch.Tensor:
        """Concatenation of a per-process 1-D tensor of any length over every process (itself on one device)."""
        if self.trainer.world_size <= 1:
            return values
        lengths = self.all_gather(torch.tensor([len(values)], device=self.device)).reshape(-1).tolist()
        padded = torch.zeros(max(lengths), dtype=values.dtype, device=self.device)
        padded[: len(values)] = values.to(self.device)
        gathered = self.all_gather(padded).reshape(len(lengths), -1).cpu()
        return torch.cat([row[:n] for row, n in zip(gathered, lengths, strict=True)])

    def gather_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of a per-process tensor over every process (itself when training on one device)."""
        if self.trainer.world_size > 1:
            return self.all_gather(tensor.to(self.device)).sum(0).cpu()
        return tensor
