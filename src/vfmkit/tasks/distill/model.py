"""The distillation objective: a student with one head pair per teacher, frozen teachers, teacher standardisers and
per-teacher losses, and the builders that make them from a :class:`~vfmkit.tasks.distill.spec.DistillSpec`.

One training step is ``losses = model(batch)`` on a :func:`~vfmkit.tasks.distill.data.collate_distill` batch:

1. teacher targets: cached rows from the batch, the other rows by running each teacher on its own view (and, with a
   cache, storing them);
2. in training mode, each teacher's summary / feature standardiser takes the raw batch into its statistics (until
   frozen);
3. the student runs once; each head's outputs meet their teacher's standardised targets (feature grids averaged to
   the coarser one first: the standardisation is affine per token, so the order does not change the result);
4. ``losses["loss"] = sum_t loss_lambda_t * L_t / #teachers``.

Checkpoints hold the student, its heads and the standardisers' statistics, never the teachers: they are rebuilt
from the spec (``state_dict`` leaves ``teachers.*`` out and ``load_state_dict`` keeps the teachers it has). What
they hold instead is each teacher's weights fingerprint (``teacher_fingerprints``, sha256 bytes per teacher):
:meth:`DistillModel.check_teachers` refuses a reloaded model whose rebuilt teacher has other weights (the file at its
source was replaced); evaluation, prediction, export and resuming call it (``train.init_from`` may change teachers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vfmkit.errors import VfmError, WeightsError
from vfmkit.models.backbones.adapted import attach_adaptors, set_summary_slots
from vfmkit.models.backbones.base import Backbone, nearest_supported_resolution
from vfmkit.models.backbones.radio.config import AdaptorConfig
from vfmkit.models.factory import load_backbone
from vfmkit.models.losses.distill import TeacherLoss, match_token_grids
from vfmkit.models.losses.phi_s import FeatureStandardizer, build_standardizer
from vfmkit.tasks.distill.heads import head_config, resolve_token_slot, set_trainable_blocks
from vfmkit.tasks.distill.spec import DistillSpec, TeacherSpec
from vfmkit.tasks.distill.teachers import FrozenTeacher, TeacherCache, TeacherTargets
from vfmkit.utils.tensor_cache import CacheStats
from vfmkit.weights.rule import loader_arguments

TEACHER_PREFIX = "teachers."


class DistillModel(nn.Module):
    """Student + heads, frozen teachers, standardisers and losses.

    Args:
        student: the student with one head per teacher attached (``student.adaptors[name]``).
        teachers: the frozen teachers (names = head names).
        losses: head name -> :class:`TeacherLoss`.
        standardizers: head name -> ``{"summary": ..., "features": ...}`` (the kinds the teacher's mode uses).
        cache: teacher-output cache (None: teachers always run).
    """

    def __init__(
        self,
        student: Backbone,
        teachers: list[FrozenTeacher],
        losses: Mapping[str, TeacherLoss],
        standardizers: Mapping[str, Mapping[str, FeatureStandardizer]],
        cache: TeacherCache | None = None,
    ):
        super().__init__()
        self.student = student
        self.teachers = nn.ModuleDict({t.name: t for t in teachers})
        self.losses = nn.ModuleDict(dict(losses))
        self.standardizers = nn.ModuleDict({name: nn.ModuleDict(dict(kinds)) for name, kinds in standardizers.items()})
        self.cache = cache
        self.cache_stats = CacheStats()
        self.register_buffer("teacher_fingerprints", torch.zeros(len(teachers), 32, dtype=torch.uint8))

    @property
    def cache_hits(self) -> int:
        """Teacher targets read from the cache (every batch so far)."""
        return self.cache_stats.hits

    @property
    def cache_misses(self) -> int:
        """Teacher targets computed (absent or damaged entries)."""
        return self.cache_stats.misses

    def state_dict(self, *args: Any, destination=None, prefix: str = "", keep_vars: bool = False):
        """The state without the teachers' tensors, with their fingerprints (see the module docstring)."""
        for row, teacher in enumerate(self.teachers.values()):
            fingerprint = torch.frombuffer(bytearray.fromhex(teacher.fingerprint), dtype=torch.uint8)
            self.teacher_fingerprints[row] = fingerprint.to(self.teacher_fingerprints.device)
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in state if k.startswith(prefix + TEACHER_PREFIX)]:
            del state[key]
        return state

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # a saved state has no teacher tensors: the teachers loaded from the spec stay as they are
        for key, value in self.teachers.state_dict(prefix=prefix + TEACHER_PREFIX, keep_vars=True).items():
            state_dict.setdefault(key, value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def check_teachers(self, saved: torch.Tensor | None = None) -> None:
        """Refuse teachers whose weights differ from those a state was trained with.

        Args:
            saved: (T, 32) uint8 fingerprints of a saved state (default: the loaded ``teacher_fingerprints``); an
                all-zero row (never saved) is not checked.

        Raises:
            WeightsError: naming the teacher, its source and both fingerprints.
        """
        saved = self.teacher_fingerprints if saved is None else saved
        for row, (name, teacher) in enumerate(self.teachers.items()):
            expected = bytes(saved[row].cpu().tolist()).hex()
            if expected != "00" * 32 and expected != teacher.fingerprint:
                source = getattr(teacher.backbone, "weights_source", None) or getattr(
                    teacher.backbone, "model_id", name
                )
                raise WeightsError(
                    f"teacher {name!r} ({source}): this checkpoint was trained with other teacher weights (sha256 "
                    f"{expected[:16]}..., now {teacher.fingerprint[:16]}...); restore the teacher's weights or train "
                    "again"
                )

    def teacher_targets(self, batch: dict[str, Any]) -> dict[str, TeacherTargets]:
        """Raw (teacher-space) float32 targets of every teacher for the batch, on the student's device."""
        device = batch["student"].device
        size = batch["student"].shape[0]
        targets = {}
        for name, teacher in self.teachers.items():
            part = batch["teachers"][name]
            summary = features = None
            grid = part["grid"]
            if len(part["run_rows"]):
                run = teacher(part["images"].to(device))
                grid = run.grid
                self._store(batch, name, part["run_rows"], run)
            else:
                run = None
            if teacher.uses_summary:
                summary = self._assemble(size, part, "summary", None if run is None else run.summary, device)
            if teacher.uses_features:
                features = self._assemble(size, part, "features", None if run is None else run.features, device)
            if self.cache is not None:
                hits, misses = len(part["cached_rows"]), len(part["run_rows"])
                self.cache_stats.add(hits, misses, part.get("damaged", 0), part.get("damage"))
            targets[name] = TeacherTargets(summary, features, tuple(grid))
        return targets

    @staticmethod
    def _assemble(size: int, part: dict, key: str, computed: torch.Tensor | None, device) -> torch.Tensor:
        cached = part["cached"].get(key)
        if computed is not None and cached is None:
            return computed
        if computed is None:
            return cached.to(device)
        out = torch.empty((size, *computed.shape[1:]), dtype=computed.dtype, device=device)
        out[part["run_rows"].to(device)] = computed
        out[part["cached_rows"].to(device)] = cached.to(device, computed.dtype)
        return out

    def _store(self, batch: dict[str, Any], name: str, rows: torch.Tensor, run: TeacherTargets) -> None:
        if self.cache is None:
            return
        for position, row in enumerate(rows.tolist()):
            summary = run.summary[position] if run.summary is not None else None
            features = run.features[position] if run.features is not None else None
            self.cache.save(name, batch["file_keys"][row], summary, features, run.grid)

    def update_standardizers(self, name: str, targets: TeacherTargets) -> None:
        """Add raw teacher outputs (every token at the teacher's own grid) to teacher ``name``'s statistics."""
        for kind, standardizer in self.standardizers[name].items():
            standardizer.update(getattr(targets, kind))

    def standardize(self, name: str, targets: TeacherTargets) -> TeacherTargets:
        """Targets of teacher ``name`` in its standardised space."""
        kinds = self.standardizers[name]
        out = {
            kind: kinds[kind](getattr(targets, kind)) if getattr(targets, kind) is not None else None for kind in kinds
        }
        return TeacherTargets(out.get("summary"), out.get("features"), targets.grid)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The losses of a batch: ``loss`` (what to minimise) and ``<teacher>/summary``, ``<teacher>/features``."""
        targets = self.teacher_targets(batch)
        out = self.student(batch["student"])
        losses: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, raw in targets.items():
            if self.training:
                self.update_standardizers(name, raw)
            head = out.adaptors[name]
            student_features = teacher_tokens = None
            if raw.features is not None:  # pool first: the standardisation is affine, so it commutes with averaging
                student_features, teacher_tokens, _ = match_token_grids(
                    head.features, head.grid, raw.features, raw.grid
                )
            target = self.standardize(name, TeacherTargets(raw.summary, teacher_tokens, raw.grid))
            terms = self.losses[name](head.summary, target.summary, student_features, target.features)
            for key, value in terms.items():
                if key != "total":
                    losses[f"{name}/{key}"] = value.detach()
            total = total + terms["total"]
        losses["loss"] = total / len(targets)
        return losses

    def teacher_sizes(self) -> dict[str, tuple[int, int]]:
        """Teacher name -> (H, W) of its input view (what :class:`~vfmkit.tasks.distill.data.DistillImages` needs)."""
        return {name: tuple(teacher.resolution) for name, teacher in self.teachers.items()}

    def frozen_standardizers(self) -> bool:
        """True once every standardiser's statistics are frozen."""
        return all(s.frozen for kinds in self.standardizers.values() for s in kinds.values())


# ----------------------------------------------------------------------------------------------- builders from a spec


def student_resolution(student: Backbone, resolution: int | None) -> tuple[int, int]:
    """(H, W) of the student's input: ``resolution`` squared (rounded to the student's step) or its preferred one."""
    prep = student.preprocessing
    if resolution is None:
        return tuple(prep.preferred_resolution)
    return nearest_supported_resolution(resolution, resolution, prep.resolution_step)


TEACHER_SEED = 1729
"""Seed of a randomly initialised teacher (``pretrained: false``, tests): teachers are never saved in checkpoints,
so one rebuilt from the spec must come out identical."""


def build_student(spec: DistillSpec, pretrained: bool = True) -> Backbone:
    """The student backbone (no heads yet), float32 on the CPU. ``pretrained`` True loads its weights as the spec
    says (``model.pretrained``; a path loads its file), False loads none (a checkpoint holding them follows)."""
    m = spec.model
    load_pretrained, _ = loader_arguments(m.backbone, m.pretrained, None, pretrained)
    return load_backbone(m.backbone, pretrained=load_pretrained)


def on_meta_device() -> bool:
    """True inside ``with torch.device("meta")`` (a dry build: nothing is loaded)."""
    return torch.empty(0).device.type == "meta"


def build_teacher(
    teacher: TeacherSpec, student_size: tuple[int, int], backbone: Backbone | None = None, index: int = 0
) -> FrozenTeacher:
    """A frozen teacher from its spec (``backbone`` given: use that module instead of loading one).

    Teachers are never part of a checkpoint, so they load their weights as the spec says (``pretrained``,
    ``pretrained_teacher_model_path``) whenever they are built, except in a dry build on the meta device; a random
    one is initialised from ``TEACHER_SEED + index``, without touching the global random stream (a registry test
    variant is always its own seeded random init).
    """
    if backbone is None:
        load = not on_meta_device()
        pretrained, checkpoint = loader_arguments(
            teacher.backbone, teacher.pretrained, teacher.pretrained_teacher_model_path, load
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TEACHER_SEED + index)
            backbone = load_backbone(
                teacher.backbone,
                adaptors=[teacher.adaptor] if teacher.adaptor else None,
                pretrained=pretrained,
                checkpoint=checkpoint,
            )
    size = student_size if teacher.match_student_resolution else None
    if size is None and teacher.input_size is not None:
        size = (teacher.input_size, teacher.input_size)
    return FrozenTeacher(backbone, teacher.head_name, teacher.mode, teacher.adaptor, size)


def build_distill_model(
    spec: DistillSpec,
    student: Backbone | None = None,
    teacher_backbones: Mapping[str, Backbone] | None = None,
    cache_dir: str | Path | None = None,
    pretrained: bool = True,
) -> DistillModel:
    """Everything a run trains with, from the spec.

    The student carries its heads in an :class:`~vfmkit.models.backbones.adapted.AdaptedBackbone` wrapper
    (``model.student.backbone`` is the plain student, ``model.student.adaptors`` the heads).

    Args:
        spec: the distill spec.
        student: use this student instead of loading ``model.backbone`` (tests, warm starts).
        teacher_backbones: head name -> backbone to use instead of loading that teacher's ``backbone``.
        cache_dir: teacher-output cache folder when ``distill.cache_teacher_outputs`` (default
            ``distill.cache_dir``; one of them is required then).
        pretrained: False builds the student without loading weights (they come from a checkpoint).

    Raises:
        VfmError: a cache without a folder, or heads that do not fit the student (cls slots, names).
    """
    student = student if student is not None else build_student(spec, pretrained)
    size = student_resolution(student, spec.model.resolution)
    distill = spec.distill
    given = teacher_backbones or {}
    teachers = [build_teacher(t, size, given.get(t.head_name), i) for i, t in enumerate(distill.teacher)]
    pairs = list(zip(distill.teacher, teachers, strict=True))
    configs = [_head_config(t, teacher, student, index) for index, (t, teacher) in enumerate(pairs)]
    losses = {teacher.name: _teacher_loss(t, teacher) for t, teacher in pairs}
    standardizers = {t.name: _standardizers(t, distill.feature_normalization, distill.phi_s) for t in teachers}
    student = attach_adaptors(student, configs, wrap=True)
    if spec.model.summary_from_teachers:
        set_summary_slots(student, sorted({c.token_slot for c in configs if c.summary_mlp is not None}))
    set_trainable_blocks(student, spec.model.trainable_blocks)
    cache = None
    if distill.cache_teacher_outputs:
        root = cache_dir or distill.cache_dir
        if root is None:
            raise VfmError("distill.cache_teacher_outputs is true but no cache folder is set (distill.cache_dir)")
        cache = TeacherCache.for_teachers(root, teachers, distill.cache_dtype)
    return DistillModel(student, teachers, losses, standardizers, cache)


def _head_config(spec: TeacherSpec, teacher: FrozenTeacher, student: Backbone, index: int) -> AdaptorConfig:
    slot = resolve_token_slot(student, spec.summary_token_idx, index)
    dims = (teacher.summary_dim, teacher.feature_dim)
    return head_config(
        teacher.name,
        student,
        spec.mode,
        *dims,
        slot,
        spec.spatial_mlp_version,
        spec.mlp_hidden_size,
        spec.mlp_num_inner,
    )


def _teacher_loss(spec: TeacherSpec, teacher: FrozenTeacher) -> TeacherLoss:
    return TeacherLoss(
        spec.mode,
        teacher.summary_dim,
        spec.loss_type,
        spec.summary_loss_type,
        spec.loss_lambda,
        spec.summary_loss_weight,
        spec.fd_loss_weight,
    )


def _standardizers(teacher: FrozenTeacher, kind: str, phi_s) -> dict[str, FeatureStandardizer]:
    out = {}
    if teacher.uses_summary:
        out["summary"] = build_standardizer(kind, teacher.summary_dim, phi_s.freeze_after, phi_s.update_period)
    if teacher.uses_features:
        out["features"] = build_standardizer(kind, teacher.feature_dim, phi_s.freeze_after, phi_s.update_period)
    return out


def teacher_metadata(spec: DistillSpec, model: DistillModel) -> dict[str, dict[str, Any]]:
    """Per head, what the export manifest records about its teacher."""
    info = {}
    for teacher_spec in spec.distill.teacher:
        teacher = model.teachers[teacher_spec.head_name]
        info[teacher.name] = {
            "backbone": teacher_spec.backbone,
            "adaptor": teacher_spec.adaptor,
            "mode": teacher_spec.mode,
            "input_size": list(teacher.resolution),
            "summary_dim": teacher.summary_dim,
            "feature_dim": teacher.feature_dim,
            "feature_normalization": spec.distill.feature_normalization,
        }
    return info
