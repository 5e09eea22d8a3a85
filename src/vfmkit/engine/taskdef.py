"""The TaskDef protocol: exactly what one task differs in. The engine's skeletons (``engine/train.py``,
``evaluate.py``, ``predict.py``, ``export.py``) run any task through it, so a new task is one folder under
``vfmkit/tasks/`` with a ``hooks.py`` defining a :class:`TaskDef` subclass, plus one line in the task registry.

A *task family* is what the registry returns for a task name: it knows the spec schema and picks the
:class:`TaskDef` of a resolved spec (``change`` picks its ``segment`` or ``classify`` variant from ``task_type``). A
plain :class:`TaskDef` is its own family.

Units: every metric a TaskDef returns is a fraction in [0, 1] (or another natural unit such as a loss or a rank),
never a percent; an undefined metric is ``None``. Percent appears only in printed lines, always with a ``%``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import lightning.pytorch as pl
import torch
from pydantic import BaseModel
from torch import nn
from torch.utils.data import DataLoader

from vfmkit.errors import VfmError
from vfmkit.weights.rule import WeightsRequest


@dataclass
class TaskData:
    """What a task's preflight found, ready for training or evaluation.

    Attributes:
        splits: split name -> the task's split object (``None`` when the split does not exist).
        meta: JSON-able facts the model is built from and checkpoints keep (class names, palette ...).
        summary: lines for the model card's data section (name -> value).
    """

    splits: dict[str, Any]
    meta: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Any:
        """The split ``name`` or ``None``."""
        return self.splits.get(name)


@dataclass
class Trained:
    """A trained model rebuilt from a checkpoint (eval mode) with the spec it was trained with.

    Attributes:
        model: the task's model.
        spec: the training spec.
        meta: the task facts saved with it (class names ...).
        checkpoint: the file it came from; None for a pre-trained model built from a spec
            (:meth:`TaskDef.pretrained_model`).
    """

    model: nn.Module
    spec: BaseModel
    meta: dict[str, Any]
    checkpoint: Path | None


@dataclass
class ExportPlan:
    """What to export: the module, example inputs (only shapes and dtypes matter), names and task metadata.

    The engine adds the common metadata (task, variant, resolution, backbone, mean/std, vfmkit version). A task that
    exports several graphs (e.g. separate image and text encoders) returns one plan per graph, each with a file-name
    ``suffix`` (``model.onnx`` -> ``model_text.onnx``) and its own ``verify_inputs`` (real preprocessed inputs).
    """

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    suffix: str = ""
    verify_inputs: tuple[torch.Tensor, ...] | None = None


@dataclass
class TrainResult:
    """Where a run went and the final evaluation of its best checkpoint on the val split (None without one) and on
    the test split (None without one).

    ``val`` and ``test`` hold fractions, exactly what ``evaluate`` writes to ``<run>/evaluate/<split>/metrics.json``.
    Val picked the checkpoint (``monitor``); test did not, so it is the unbiased figure.
    """

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    monitor: str
    val: dict | None
    test: dict | None = None


@dataclass
class EvalResult:
    """Metrics of a checkpoint (None: the pre-trained model) on a split (fractions; None where undefined) and where
    they were written."""

    metrics: dict
    split: str
    out_dir: Path
    checkpoint: Path | None


@dataclass
class PredictResult:
    """Where predictions went: ``written`` results (one per readable input), the inputs ``skipped`` with why."""

    out: Path
    written: int
    skipped: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    """Exported ONNX file(s) and their verification (``max_abs_diff``: the largest difference over every file,
    None when ``export.verify`` is off). ``path``, ``input_names`` and ``output_names`` are those of the first file."""

    path: Path
    input_names: list[str]
    output_names: list[str]
    opset: int
    max_abs_diff: float | None
    tolerance: float
    verified_samples: int
    files: list[Path] = field(default_factory=list)


class TaskFamily(Protocol):
    """What the task registry returns for a name."""

    name: str
    spec_class: type[BaseModel]

    def select(self, spec: BaseModel) -> TaskDef: ...


class TaskDef:
    """Base of every task definition. Subclasses set the class attributes and implement the hooks.

    Class attributes:
        name: the task name (``vfm <name> ...``).
        variant: the variant name when a task has several (``change``: ``segment`` / ``classify``).
        spec_class: the spec schema.
        monitor: the validation metric that picks the best checkpoint (e.g. ``val/top1``), logged as a fraction.
        monitor_mode: ``max`` or ``min``.
        headline: metric keys shown in printed summaries and the model card, most important first.
        backbone_path: dotted attribute path of the backbone inside the task's model (the frozen-backbone rule and
            the optimizer groups use it).
        frozen_paths: every backbone the frozen-backbone rule applies to (default: just ``backbone_path``; e.g. a
            detector adds its frozen foundation model).
        metric_notes: why a headline metric can be undefined (shown in the model card when it is).
        splits: the splits ``train`` has :meth:`prepare` read: a ``test`` split the preflight finds (non-empty) is
            checked before training and evaluated with the best checkpoint after it, as the figure no checkpoint
            selection saw. A task without test data leaves ``test`` out.
    """

    name: ClassVar[str]
    variant: ClassVar[str | None] = None
    spec_class: ClassVar[type[BaseModel]]
    monitor: ClassVar[str]
    monitor_mode: ClassVar[str] = "max"
    headline: ClassVar[tuple[str, ...]] = ()
    backbone_path: ClassVar[str] = "backbone"
    frozen_paths: ClassVar[tuple[str, ...]] = ()
    metric_notes: ClassVar[dict[str, str]] = {}
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def select(self, spec: BaseModel) -> TaskDef:
        """A single-variant task is its own family."""
        return self

    def headline_keys(self, spec: BaseModel) -> tuple[str, ...]:
        """The headline metric keys for ``spec`` (default: :attr:`headline`)."""
        return self.headline

    def backbone_paths(self, model: nn.Module) -> tuple[str, ...]:
        """The backbones of ``model`` the frozen-backbone rule applies to (paths that exist in this model)."""
        from vfmkit.engine.frozen import has_submodule

        return tuple(p for p in (self.backbone_path, *self.frozen_paths) if has_submodule(model, p))

    def backbone_id(self, spec: BaseModel) -> str:
        """The backbone a spec names (model card, export metadata); default ``spec.model.backbone``."""
        return str(spec.model.backbone)

    def pretrained(self, spec: BaseModel) -> bool:
        """Whether a spec asks for published weights; default ``spec.model.pretrained``."""
        return bool(spec.model.pretrained)

    def resolution(self, spec: BaseModel) -> int:
        """The input side a spec trains at (the default export resolution); default ``spec.model.resolution``."""
        return int(spec.model.resolution)

    def weight_requests(self, spec: BaseModel) -> list[WeightsRequest]:
        """Every backbone the spec's model loads, with the spec keys that set where its weights come from and its
        path in the built model. The engine decides each one's source by the weights rule
        (:func:`vfmkit.weights.rule.decide_source`) before the data preflight, so a contradiction fails before any
        run folder exists, and records every source in ``weights.json`` and the model card. Default: the task
        backbone (``model.backbone`` / ``model.pretrained``, at :attr:`backbone_path`); a task that loads more
        (a checkpoint key, a frozen side branch, teachers, a text tower) lists them all."""
        return [
            WeightsRequest(
                "backbone",
                self.backbone_id(spec),
                bool(spec.model.pretrained),
                model_key="model.backbone",
                pretrained_key="model.pretrained",
                module_path=self.backbone_path,
            )
        ]

    # --- training --------------------------------------------------------------------------------------------------

    def prepare(self, spec: BaseModel, splits: Sequence[str]) -> TaskData:
        """Preflight the dataset (print the report) and load the splits. Raises DataError on unusable data."""
        raise NotImplementedError

    def build_model(self, spec: BaseModel, meta: dict[str, Any], pretrained: bool) -> nn.Module:
        """The task's model from the spec. ``pretrained`` True loads every backbone's weights as the spec says
        (published weights, checkpoint files, local paths: see :meth:`weight_requests`); False loads none (a
        checkpoint holding them is loaded next, or a dry build on the meta device), so no checkpoint file is passed
        (:func:`vfmkit.weights.rule.loader_arguments`)."""
        raise NotImplementedError

    def loaders(self, spec: BaseModel, data: TaskData, model: nn.Module) -> tuple[DataLoader, DataLoader | None]:
        """Training and validation loaders (validation None without a usable val split)."""
        raise NotImplementedError

    def check_model(self, spec: BaseModel, model: nn.Module) -> None:
        """Refuse, before any run folder exists, spec settings the built model cannot take (beyond
        ``model.resolution``, which the engine checks against the backbone's step). Default: nothing."""

    def lightning_module(self, spec: BaseModel, model: nn.Module, meta: dict[str, Any]) -> pl.LightningModule:
        """The LightningModule (a :class:`~vfmkit.engine.module.TaskModule`) that trains ``model``."""
        raise NotImplementedError

    def check_init_from(self, spec: BaseModel, trained: Trained, meta: dict[str, Any]) -> None:
        """Refuse ``train.init_from`` weights that cannot start this run (different variant, classes ...)."""
        if trained.spec.model_dump().get("task_type") != spec.model_dump().get("task_type"):
            raise VfmError(f"train.init_from {trained.checkpoint}: it holds another variant of the {self.name} task")

    def after_train(self, run_dir: Path, best: Path, trained: Trained | None) -> None:
        """Write what a finished run offers besides its checkpoints (e.g. the backbone a distillation made), from
        the best checkpoint ``best``; ``trained`` is that checkpoint already reloaded (None when the run had neither
        validation nor test, so nothing reloaded it). Runs on rank 0 only, after ``MODEL_CARD.md`` and
        ``evaluate/<val|test>/metrics.json`` are written (a task may add a section to the card). Default: nothing."""

    # --- evaluation ------------------------------------------------------------------------------------------------

    def pretrained_model(self, spec: BaseModel) -> Trained | None:
        """The model ``evaluate``, ``predict`` and ``export`` use when no checkpoint is given: a task whose published
        model is usable untrained (CLIP: zero-shot, retrieval, embeddings) returns it built from ``spec`` alone (eval
        mode, ``checkpoint`` None); None, the default, makes ``<action>.checkpoint`` required."""
        return None

    def check_compatible(self, spec: BaseModel, trained: Trained) -> None:
        """Refuse a checkpoint this spec cannot evaluate, predict with or export (e.g. another variant)."""

    def eval_split(self, spec: BaseModel, trained: Trained, split: str) -> Any:
        """The split ``split`` of this spec's dataset, laid out as the model was trained. Raises DataError if empty."""
        raise NotImplementedError

    def evaluate_split(self, trained: Trained, split: Any, spec: BaseModel) -> dict:
        """Metrics of ``trained`` on ``split`` (fractions; None where undefined), computed by the standard tool."""
        raise NotImplementedError

    def write_plots(self, out_dir: Path, metrics: dict, trained: Trained, title: str) -> list[Path]:
        """PNG plots of an evaluation next to its metrics.json."""
        return []

    def metric_lines(self, split_name: str, metrics: dict, trained: Trained) -> list[str]:
        """The printed summary of an evaluation (percent with ``%`` where a rate is shown)."""
        return [f"{split_name}: " + headline_text(metrics, self.headline_keys(trained.spec))]

    # --- prediction and export -------------------------------------------------------------------------------------

    def predictor(self, trained: Trained) -> Any:
        """What :meth:`predict` runs: by default the trained model itself."""
        return trained

    def onnx_predictor(self, path: Path) -> Any:
        """What :meth:`predict` runs for an exported .onnx file (tasks that accept one override this)."""
        raise VfmError(f"predict.checkpoint {path}: `vfm {self.name} predict` takes a run folder or a .ckpt file")

    def predict(self, spec: BaseModel, predictor: Any, out: Path | None, default_out: Path) -> PredictResult:
        """Predict every input of ``spec.predict.source``, writing into ``out`` (or ``default_out``)."""
        raise NotImplementedError

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        """The graph to export at ``resolution``."""
        raise NotImplementedError

    def export_plans(self, trained: Trained, resolution: int, spec: BaseModel) -> list[ExportPlan]:
        """Every graph to export (default: the one of :meth:`export_plan`)."""
        return [self.export_plan(trained, resolution)]

    def after_export(self, trained: Trained, files: list[Path]) -> None:
        """Write what the exported files need beside them (e.g. tokenizer files)."""

    def verification_inputs(self, spec: BaseModel, trained: Trained, resolution: int) -> tuple[torch.Tensor, ...]:
        """Real preprocessed inputs from the dataset to compare onnxruntime with PyTorch on."""
        raise NotImplementedError

    def check_export_resolution(self, trained: Trained, resolution: int) -> None:
        """Refuse an ``export.resolution`` the model cannot take (the backbone's step is checked by the engine)."""

    # --- the model card --------------------------------------------------------------------------------------------

    def card_notes(self, spec: BaseModel, meta: dict[str, Any]) -> list[str]:
        """Intended-use lines of the model card."""
        return []


def headline_text(metrics: dict, keys: Sequence[str]) -> str:
    """``top1 98.75%  top5 100.00%`` style text: rates as percent, other values plain, undefined ones as ``-``."""
    parts = []
    for key in keys:
        value = metrics.get(key)
        parts.append(f"{key} {format_metric(key, value)}")
    return "  ".join(parts)


def format_metric(key: str, value: Any) -> str:
    """A metric for people: fractions of rate-like metrics in percent with ``%``; losses, AUC and ranks plain."""
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: undefined
        return "-"
    if not isinstance(value, (int, float)):
        return str(value)
    if is_rate(key):
        return f"{100.0 * value:.2f}%"
    return f"{value:.4g}"


def is_rate(key: str) -> bool:
    """Whether a metric is a rate shown in percent (accuracy, IoU, F1, AP, recall ...); losses, AUC, ranks and
    counts are not."""
    plain = ("loss", "auc", "rank", "images", "samples", "threshold", "count", "scale")
    return not any(word in key for word in plain)
