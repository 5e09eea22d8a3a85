"""The ``distill`` task spec: adapt a student backbone to a domain from unlabeled images, with one or many teachers.

Teacher keys follow TAO's ``radio distill`` names (``mode``, ``loss_type``, ``loss_lambda``, ``summary_loss_type``,
``fd_loss_weight``, ``summary_token_idx``, ``spatial_mlp_version``, ``input_size``, ``match_student_resolution``,
``pretrained_teacher_model_path``); data keys follow TAO's ``dataset.train_nolabel.folder_path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vfmkit.spec.base import EvaluateSpec, ExportSpec, PredictSpec, RunSpec, Section, SpecPath, TrainSpec

_HEAD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def default_head_name(backbone: str, adaptor: str | None) -> str:
    """The head name a teacher gets when ``name`` is not set: its adaptor, else its backbone's last path part, with
    every character outside ``[A-Za-z0-9_-]`` replaced by ``_`` (``radio-v2.5-b`` -> ``radio-v2_5-b``)."""
    base = adaptor or Path(str(backbone).rstrip("/")).name or str(backbone)
    return re.sub(r"[^A-Za-z0-9_-]", "_", base)


class TeacherSpec(Section):
    name: str | None = Field(
        None, description="head name on the student and adaptor name of the result (null: the adaptor or backbone id)"
    )
    backbone: str = Field(
        min_length=1,
        description="teacher: registry id/alias (`vfm models`), hf-hub:<repo>, a path or an adapted folder",
    )
    pretrained: bool = Field(True, description="load the teacher's published weights (False: random init, tests only)")
    pretrained_teacher_model_path: SpecPath | None = Field(
        None,
        description="local weights file for a registry teacher, loaded instead of its published source (needs "
        "pretrained: true)",
    )
    adaptor: str | None = Field(
        None, description="distill this adaptor head of the teacher (e.g. siglip2-g of C-RADIO), not its backbone"
    )
    mode: Literal["summary", "spatial", "combo"] = Field(
        "combo", description="match the teacher's summary, its patch features, or both"
    )
    loss_type: Literal["cosine", "smooth_l1", "mse", "balanced"] = Field(
        "balanced", description="feature loss; balanced = 0.9 (1 - cos) + 0.1 smooth-L1 (beta 2)"
    )
    summary_loss_type: Literal["cosine", "angle", "smooth_l1", "mse", "balanced"] = Field(
        "cosine", description="summary loss; angle = acos(cos)^2 over the teacher's running angular spread"
    )
    loss_lambda: float = Field(1.0, ge=0, description="weight of this teacher (the total is divided by #teachers)")
    summary_loss_weight: float = Field(1.0, ge=0, description="weight of the summary term (summary, combo)")
    fd_loss_weight: float = Field(1.0, ge=0, description="weight of the feature term (spatial, combo)")
    summary_token_idx: int | None = Field(
        None,
        ge=0,
        description="cls slot of a RADIO student that learns this teacher's summary (null: teacher i takes slot i "
        "when the student has that many, else 0; non-RADIO students have one summary: 0)",
    )
    spatial_mlp_version: Literal["v2", "attn"] = Field(
        "v2", description="feature head: v2 = residual MLP, attn = 2 ViT blocks + MLP (C-RADIOv4 style)"
    )
    mlp_hidden_size: int | None = Field(None, ge=1, description="hidden width of the heads (null: the student's width)")
    mlp_num_inner: int = Field(1, ge=0, description="residual blocks inside the heads' MLPs")
    input_size: int | None = Field(
        None, ge=16, description="teacher input side in pixels (null: the teacher's preferred resolution)"
    )
    match_student_resolution: bool = Field(
        False, description="run the teacher at the student's resolution (nearest multiple of its step)"
    )

    @property
    def head_name(self) -> str:
        """``name`` or :func:`default_head_name`."""
        return self.name or default_head_name(self.backbone, self.adaptor)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEAD_NAME.match(value):
            raise ValueError(f"name {value!r} must use only letters, digits, '_' and '-'")
        return value


class PhiSSpec(Section):
    freeze_after: int = Field(
        300, ge=1, description="batches of teacher outputs after which the standardisation (phi_s or global) is frozen"
    )
    update_period: int = Field(10, ge=1, description="recompute the standardisation every N batches until frozen")


class DistillSection(Section):
    teacher: list[TeacherSpec] = Field(min_length=1, description="one teacher or a list of teachers")
    feature_normalization: Literal["phi_s", "global", "none"] = Field(
        "phi_s", description="teacher standardisation: phi_s (rotation + one scale), global (one scale), none"
    )
    phi_s: PhiSSpec = Field(default_factory=PhiSSpec)
    cache_teacher_outputs: bool = Field(
        False, description="store teacher outputs on disk so later epochs and students do not run the teachers"
    )
    cache_dir: SpecPath | None = Field(
        None, description="teacher-output cache folder (null: <results_dir>/.cache/distill)"
    )
    cache_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="dtype of cached teacher outputs"
    )
    knn_k: int = Field(20, ge=1, description="neighbours of the k-NN validation")
    knn_temperature: float = Field(0.07, gt=0, description="vote temperature of the k-NN validation")

    @field_validator("teacher", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _unique_heads(self) -> DistillSection:
        names = [t.head_name for t in self.teacher]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"distill.teacher: teachers share the head name(s) {duplicates}: set a distinct name for each"
            )
        return self


class DistillModelSpec(Section):
    backbone: str = Field(
        "c-radio-v3-b", min_length=1, description="student: registry id/alias (`vfm models`), hf-hub:<repo> or a path"
    )
    pretrained: bool = Field(True, description="start from the student's published weights (False: random init)")
    trainable_blocks: int | None = Field(
        None,
        ge=0,
        description="train only the last N blocks (and everything after them); 0: the student stays frozen and only "
        "its heads train; null: the whole student",
    )
    resolution: int | None = Field(
        None,
        ge=16,
        description="student input side in pixels (null: a registry student's preferred resolution; required for a "
        "student given as a path or hub id)",
    )
    summary_from_teachers: bool = Field(
        True,
        description="RADIO students: the summary becomes the cls slots the teachers' summaries are distilled into "
        "(false: keep the student's own summary slots)",
    )


class ImageFolderSpec(Section):
    folder_path: SpecPath = Field(description="folder (recursive), glob pattern or list file of unlabeled images")


class LabelledSetSpec(Section):
    root: SpecPath = Field(description="class folders: <root>/<train_split>/<class>/* and <root>/<val_split>/<class>/*")
    train_split: str = Field("train", description="sub-folder of the k-NN memory images")
    val_split: str = Field("val", description="sub-folder of the k-NN query images")
    test_split: str = Field(
        "test",
        description="sub-folder of held-out query images: when it exists, train also reports the k-NN before/after "
        "on it (val picks the checkpoint, so its figure is optimistic)",
    )


class DistillAugmentSpec(Section):
    color_jitter: float = Field(
        0.0, ge=0, le=1, description="photometric jitter of the student's view only (teacher targets stay clean)"
    )


class DistillDataSpec(Section):
    train_nolabel: ImageFolderSpec
    knn_validation: LabelledSetSpec | None = Field(None, description="labelled domain images for k-NN validation")
    control: LabelledSetSpec | None = Field(None, description="labelled general images: k-NN shows any forgetting")
    augment: DistillAugmentSpec = Field(default_factory=DistillAugmentSpec)


class DistillSpec(RunSpec):
    """Spec of ``vfm distill train|evaluate|predict|export`` (predict: embeddings of the adapted student)."""

    task: Literal["distill"] = Field("distill", description="the task this spec is for")

    example: ClassVar[dict] = {
        "dataset": {"train_nolabel": {"folder_path": "unlabeled"}, "knn_validation": {"root": "labelled"}},
        "distill": {"teacher": [{"backbone": "c-radio-v3-h", "adaptor": "siglip2-g"}]},
    }
    """Values ``vfm spec init`` writes for the required keys."""

    model: DistillModelSpec = Field(default_factory=DistillModelSpec)
    distill: DistillSection
    dataset: DistillDataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    predict: PredictSpec = Field(default_factory=PredictSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
