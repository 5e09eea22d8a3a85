"""Spec sections shared by every task: the model, the training run, evaluation, prediction and export.

Every section forbids unknown keys, so a typo fails with the dotted path and a suggestion (see ``loader.py``).
Fields typed :data:`SpecPath` are resolved against the spec file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PathMarker:
    """Marks a field as a filesystem path resolved relative to the spec file."""


SpecPath = Annotated[Path, PathMarker()]


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OptimizerSpec(Section):
    type: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (head; the backbone gets lr * backbone_lr_scale)")
    backbone_lr_scale: float = Field(0.1, ge=0, le=1, description="backbone lr relative to the head's (finetune)")
    weight_decay: float = Field(0.05, ge=0, description="decoupled weight decay (not on norms, biases, tokens)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    layer_decay: float = Field(0.75, gt=0, le=1, description="layer-wise lr decay for ViT blocks (1 = off)")


class SchedulerSpec(Section):
    type: Literal["cosine", "step", "linear", "constant"] = Field("cosine", description="lr schedule after warmup")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warmup length in epochs (fractions allowed)")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="final lr / peak lr for cosine and linear")
    step_epochs: int = Field(30, ge=1, description="step schedule: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")


class EmaSpec(Section):
    enabled: bool = Field(False, description="keep an exponential moving average of the weights for eval")
    decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per step")


class TrainSpec(Section):
    epochs: int = Field(10, ge=1, description="number of epochs")
    batch_size: int = Field(32, ge=1, description="images per device per step")
    num_workers: int = Field(2, ge=0, description="data loader worker processes")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    ema: EmaSpec = Field(default_factory=EmaSpec)
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field("32", description="16-mixed needs a GPU")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: object) -> object:
        """``train.precision=32`` (YAML reads an int) means the string ``"32"``."""
        return str(value) if type(value) is int else value

    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="where to train")
    devices: int | str = Field("auto", description="devices per node (int or 'auto')")
    num_nodes: int = Field(1, ge=1, description="machines")
    strategy: Literal["auto", "ddp", "fsdp"] = Field("auto", description="multi-device strategy")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    activation_checkpointing: bool = Field(False, description="recompute backbone activations to save memory")
    seed: int = Field(1234, description="seed for weights init, data order and augmentation")
    deterministic: bool = Field(False, description="deterministic kernels (slower)")
    resume: SpecPath | None = Field(None, description="run folder or checkpoint to continue exactly")
    init_from: SpecPath | None = Field(
        None, description="weights to start a NEW schedule from (a checkpoint of an earlier run)"
    )
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    loggers: list[Literal["csv", "tensorboard", "wandb", "mlflow"]] = Field(
        ["csv"],
        description="experiment trackers: csv (metrics.csv, always written) and tensorboard / wandb / mlflow "
        "(pip install 'vfmkit[<name>]'; offline, inside the run folder by default)",
    )


class EvaluateSpec(Section):
    checkpoint: SpecPath | None = Field(None, description="checkpoint or run folder (default: this run's best)")
    split: Literal["train", "val", "test"] = Field("val", description="dataset split to evaluate")
    batch_size: int = Field(64, ge=1, description="images per step")
    out: SpecPath | None = Field(
        None,
        description="folder for metrics.json and the plots (default: <run>/evaluate/<split>; set it to evaluate a "
        "run on read-only storage)",
    )


class PredictSpec(Section):
    checkpoint: SpecPath | None = Field(None, description="checkpoint, run folder or exported .onnx file")
    source: SpecPath | None = Field(None, description="image folder, glob pattern or list file")
    out: SpecPath | None = Field(None, description="output file/folder (default: inside the run folder)")
    batch_size: int = Field(64, ge=1, description="images per step")


class ExportSpec(Section):
    checkpoint: SpecPath | None = Field(None, description="checkpoint or run folder to export")
    out: SpecPath | None = Field(None, description="output .onnx path (default: <run>/export/model.onnx)")
    opset: int = Field(17, ge=17, description="ONNX opset")
    resolution: int | None = Field(None, ge=16, description="export input size (default: the training size)")
    verify: bool = Field(True, description="compare onnxruntime with PyTorch on real preprocessed images")
    tolerance: float = Field(1e-4, gt=0, description="max abs difference allowed in verification (fp32)")
    format: Literal["onnx", "tensorrt"] = Field(
        "onnx", description="onnx, or tensorrt: also a TensorRT engine beside each graph (needs tensorrt and a GPU)"
    )
    precision: Literal["fp32", "fp16", "int8"] = Field("fp16", description="TensorRT engine precision")
    calibration: SpecPath | None = Field(None, description="TensorRT int8: a folder of calibration images")
    max_batch: int = Field(32, ge=1, description="TensorRT: largest batch of the optimisation profile")


class RunSpec(Section):
    results_dir: SpecPath = Field(Path("runs"), description="runs go to <results_dir>/<task>/<name>N")
    name: str = Field("exp", min_length=1, description="run name; a number is appended, never overwritten")
    exist_ok: bool = Field(False, description="reuse <name> instead of creating <name>2, <name>3, ...")
