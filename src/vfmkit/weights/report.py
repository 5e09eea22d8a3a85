"""The load report: what happened to every key of a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vfmkit.errors import WeightsError


@dataclass
class LoadReport:
    """Keys of a checkpoint load, in the model's naming.

    Attributes:
        source: where the weights came from.
        loaded: keys copied into the model.
        missing: model keys the checkpoint lacked (an error for backbone keys).
        unexpected: checkpoint keys that matched nothing.
        ignored: checkpoint keys deliberately skipped (unused reg tokens, adaptors not asked for, training state).
        converted: keys materialised from training form (spectral parametrizations, ``grandma`` LayerScale).
        resized: keys whose tensors were resized to fit (e.g. position grids).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line with the counts."""
        return (
            f"{self.source}: {len(self.loaded)} loaded, {len(self.missing)} missing, {len(self.unexpected)} "
            f"unexpected, {len(self.ignored)} ignored, {len(self.converted)} converted, {len(self.resized)} resized"
        )

    def load_exact(self, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """``module.load_state_dict(state, strict=True)``, every key recorded here first.

        Raises:
            WeightsError: a shape mismatch (naming the key), or missing / unexpected keys (:meth:`raise_on_problems`).
        """
        expected = module.state_dict()
        for key, value in state.items():
            if key not in expected:
                self.unexpected.append(key)
            elif expected[key].shape != value.shape:
                raise WeightsError(
                    f"{self.source}: {key} has shape {tuple(value.shape)}, the architecture expects "
                    f"{tuple(expected[key].shape)}"
                )
            else:
                self.loaded.append(key)
        self.missing.extend(k for k in expected if k not in state)
        self.raise_on_problems()
        module.load_state_dict(state, strict=True)

    def raise_on_problems(self) -> None:
        """Raise when any model key is missing or any checkpoint key is unexpected.

        Raises:
            WeightsError: naming up to 8 keys of each kind.
        """
        problems = []
        if self.missing:
            problems.append(f"missing {len(self.missing)} key(s): {', '.join(self.missing[:8])}")
        if self.unexpected:
            problems.append(f"unexpected {len(self.unexpected)} key(s): {', '.join(self.unexpected[:8])}")
        if problems:
            raise WeightsError(f"{self.source} does not match the architecture: " + "; ".join(problems))
