"""The distill task definition: domain adaptation of a student backbone from unlabeled images, with frozen teachers.

- train: unlabeled images (``dataset.train_nolabel.folder_path``); validation every epoch is k-NN top-1 of the
  student's summary on ``dataset.knn_validation`` (the monitored ``val/knn_top1``) and ``dataset.control``, plus
  per-teacher fidelity. A finished run is itself an adapted backbone: ``<run>/vfmkit_backbone.json`` +
  ``<run>/model.safetensors`` (best checkpoint, heads in teacher space), so ``load_backbone(run_dir)`` and
  ``--model runs/distill/exp`` load it.
- evaluate: the same metrics plus k-NN of the student before distillation (``*_before``) on the domain and control
  sets.
- predict: embeddings (summary + each head's teacher-space summary) of every image of ``predict.source``, written
  as ``vfm embed`` writes them (``embeddings.safetensors`` + index).
- export: ONNX of the student with its teacher-space heads, and the adapted-backbone folder beside it
  (``<export>/backbone/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vfmkit.data.images import list_image_files
from vfmkit.data.preflight import check_samples
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.engine.runs import make_eval_loader, make_loader
from vfmkit.engine.taskdef import ExportPlan, PredictResult, TaskData, TaskDef, Trained, format_metric
from vfmkit.engine.train import require_multiple_of_step
from vfmkit.errors import DataError, VfmError
from vfmkit.models.registry import find_entry
from vfmkit.tasks.distill.data import DistillImages, collate_distill
from vfmkit.tasks.distill.export import ExportableStudent, export_adapted_student
from vfmkit.tasks.distill.heads import teacher_space_student
from vfmkit.tasks.distill.metrics import MEMORY, DistillMeter, KnnImages, KnnSet, collate_knn
from vfmkit.tasks.distill.model import (
    DistillModel,
    build_distill_model,
    build_student,
    student_resolution,
    teacher_metadata,
)
from vfmkit.tasks.distill.module import MONITOR, DistillModule
from vfmkit.tasks.distill.spec import DistillSpec
from vfmkit.weights.rule import WeightsRequest

HEADLINE = ("knn_top1", "knn_top1_before", "control_knn_top1", "control_knn_top1_before")
BEFORE_SEED = 0
"""Seed of a randomly initialised student rebuilt as it was before distillation (so ``*_before`` is reproducible)."""


class DistillTask(TaskDef):
    """Distillation of one or many frozen teachers into a student backbone, on unlabeled domain images."""

    name = "distill"
    spec_class = DistillSpec
    monitor = MONITOR
    headline = HEADLINE
    backbone_path = "student.backbone"
    metric_notes = {
        "knn_top1": "no dataset.knn_validation",
        "knn_top1_before": "no dataset.knn_validation",
        "control_knn_top1": "no dataset.control set",
        "control_knn_top1_before": "no dataset.control set",
    }

    def resolution(self, spec: DistillSpec) -> int:
        if spec.model.resolution is not None:
            return int(spec.model.resolution)
        entry = find_entry(spec.model.backbone)
        if entry is None:
            raise VfmError(
                f"model.resolution: set it for the student {spec.model.backbone} (only registry backbones have a "
                "known preferred resolution)"
            )
        return int(entry.preferred_resolution)

    def weight_requests(self, spec: DistillSpec) -> list[WeightsRequest]:
        """The student (role ``backbone``) and every teacher (``teacher:<name>``, with its
        ``pretrained_teacher_model_path``)."""
        requests = super().weight_requests(spec)
        for index, teacher in enumerate(spec.distill.teacher):
            key = f"distill.teacher[{index}]"
            requests.append(
                WeightsRequest(
                    f"teacher:{teacher.head_name}",
                    teacher.backbone,
                    teacher.pretrained,
                    teacher.pretrained_teacher_model_path,
                    f"{key}.backbone",
                    f"{key}.pretrained",
                    f"{key}.pretrained_teacher_model_path",
                    f"teachers.{teacher.head_name}.backbone",
                )
            )
        return requests

    # --- training --------------------------------------------------------------------------------------------------

    def prepare(self, spec: DistillSpec, splits) -> TaskData:
        """The unlabeled images (``train``, every one decoded once: unreadable ones left out and listed), the k-NN
        sets of the val queries (``val``) and, when ``test`` is asked for and ``<knn_validation.root>/<test_split>``
        exists, of the held-out test queries (``test``)."""
        source = spec.dataset.train_nolabel.folder_path
        listed = list_image_files(source)
        files = [f for f, kept in zip(listed, check_samples(listed, "train").keep, strict=True) if kept]
        if not files:
            raise DataError(f"dataset.train_nolabel.folder_path {source}: no readable image (see above)")
        print(f"unlabeled images: {len(files)} ({spec.dataset.train_nolabel.folder_path})")
        found: dict[str, Any] = {"train": files}
        for split in ("val", "test"):
            found[split] = knn_sets(spec, split) if split in splits and _has_queries(spec, split) else None
            for knn_set in found[split] or []:
                memory = knn_set.roles.count(MEMORY)
                print(
                    f"k-NN {knn_set.name} ({split}): {len(knn_set.classes)} classes, {memory} memory, "
                    f"{len(knn_set) - memory} query"
                )
        if found["val"] is None:
            print("no dataset.knn_validation: the best checkpoint is the one with the lowest training loss")
        summary = {"unlabeled images": len(files), "teachers": ", ".join(t.head_name for t in spec.distill.teacher)}
        for split in ("val", "test"):
            if found[split]:
                summary[f"k-NN sets ({split})"] = {s.name: len(s) for s in found[split]}
        meta = {"teachers": [t.head_name for t in spec.distill.teacher]}
        return TaskData(found, meta, summary)

    def build_model(self, spec: DistillSpec, meta: dict[str, Any], pretrained: bool) -> DistillModel:
        cache_dir = spec.distill.cache_dir or Path(spec.results_dir) / ".cache" / "distill"
        return build_distill_model(spec, cache_dir=cache_dir, pretrained=pretrained)

    def check_model(self, spec: DistillSpec, model: DistillModel) -> None:
        """A teacher ``input_size`` must be a multiple of the teacher's step (patch size), as ``model.resolution``
        must be of the student's (``match_student_resolution`` rounds the student's size to it, as documented).

        Raises:
            ConfigurationError: naming ``distill.teacher[i].input_size``, the step and the nearest valid values.
        """
        for index, teacher in enumerate(spec.distill.teacher):
            if teacher.input_size is None or teacher.match_student_resolution:
                continue
            step = model.teachers[teacher.head_name].backbone.preprocessing.resolution_step
            key = f"distill.teacher[{index}].input_size"
            require_multiple_of_step(key, teacher.input_size, step, teacher.backbone)

    def loaders(self, spec: DistillSpec, data: TaskData, model: DistillModel) -> tuple[DataLoader, DataLoader | None]:
        size = student_resolution(model.student, spec.model.resolution)
        batch, workers, seed = spec.train.batch_size, spec.train.num_workers, spec.train.seed
        train_set = DistillImages(
            data.split("train"),
            size,
            model.teacher_sizes(),
            cache=model.cache,
            color_jitter=spec.dataset.augment.color_jitter,
            seed=seed,
        )
        sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
        train_loader = make_loader(train_set, batch, workers, sampler, seed=seed, collate_fn=collate_distill)
        sets = data.split("val")
        if not sets:
            return train_loader, None
        val_set = KnnImages(sets, size, model.teacher_sizes())
        return train_loader, make_loader(val_set, batch, workers, seed=seed, collate_fn=collate_knn)

    def lightning_module(self, spec: DistillSpec, model: DistillModel, meta: dict[str, Any]) -> DistillModule:
        return DistillModule(model, spec, meta, self)

    def after_train(self, run_dir: Path, best: Path, trained: Trained | None) -> None:
        """The run folder becomes an adapted-backbone folder of its best checkpoint."""
        if trained is None:
            from vfmkit.engine.trained import load_trained

            _, trained = load_trained(TASK, best)
        manifest = export_adapted(trained, run_dir)
        print(f"adapted backbone: {manifest} (load it with --model {run_dir})")
        for split in ("test", "val"):  # the held-out figure when there is one
            metrics_file = run_dir / "evaluate" / split / "metrics.json"
            if metrics_file.is_file() and (run_dir / "MODEL_CARD.md").is_file():
                card = (run_dir / "MODEL_CARD.md").read_text()
                table = before_after_table(json.loads(metrics_file.read_text()), trained, split)
                atomic_write_text(run_dir / "MODEL_CARD.md", card.rstrip("\n") + "\n\n" + table)
                break

    # --- evaluation ------------------------------------------------------------------------------------------------

    def check_compatible(self, spec: DistillSpec, trained: Trained) -> None:
        trained.model.check_teachers()  # the teachers rebuilt from the checkpoint's spec are the ones it learned from

    def eval_split(self, spec: DistillSpec, trained: Trained, split: str) -> list[KnnSet]:
        if spec.dataset.knn_validation is None:
            raise DataError("dataset.knn_validation.root is required to evaluate (labelled class folders)")
        return knn_sets(spec, split)

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split: list[KnnSet], spec: DistillSpec) -> dict:
        model = trained.model.eval()
        size = student_resolution(model.student, trained.spec.model.resolution)
        loader = make_eval_loader(KnnImages(split, size, model.teacher_sizes()), spec.evaluate.batch_size, collate_knn)
        distill = trained.spec.distill
        after = DistillMeter(split, list(model.teachers), distill.knn_k, distill.knn_temperature)
        before = DistillMeter(split, [], distill.knn_k, distill.knn_temperature)
        original = student_before(trained.spec).eval()
        for batch in loader:
            after.update(model, batch)
            before.index.append(batch["index"])
            before.summaries.append(original(batch["student"]).summary.float())
        metrics = after.compute()
        for key, value in before.compute().items():
            metrics[f"{key}_before"] = value
        return metrics

    def metric_lines(self, split_name: str, metrics: dict, trained: Trained) -> list[str]:
        def pair(key: str) -> str:
            return f"{format_metric(key, metrics.get(key))} (before {format_metric(key, metrics.get(key + '_before'))})"

        lines = [f"{split_name}: k-NN top-1 domain {pair('knn_top1')}  control {pair('control_knn_top1')}"]
        for name in trained.model.teachers:
            scores = [
                f"{kind} {metrics[f'{name}/{kind}']:.4f}"
                for kind in ("summary_cosine", "feature_cosine")
                if f"{name}/{kind}" in metrics
            ]
            lines.append(f"  teacher {name}: " + "  ".join(scores))
        return lines

    # --- prediction and export -------------------------------------------------------------------------------------

    def predictor(self, trained: Trained) -> tuple[Any, int]:
        student = teacher_space_student(trained.model.student, trained.model.standardizers)
        student.model_id = str(trained.checkpoint)
        return student, self.resolution(trained.spec)

    def predict(self, spec: DistillSpec, predictor, out: Path | None, default_out: Path) -> PredictResult:
        from vfmkit.features.embed import embed_source

        if spec.predict.source is None:
            raise VfmError("predict.source (image folder, glob pattern or list file) is required")
        student, resolution = predictor
        target = Path(out or default_out)
        target = target if target.suffix == ".safetensors" else target / "embeddings.safetensors"
        result = embed_source(spec.predict.source, student, target, resolution, spec.predict.batch_size, progress=False)
        skipped = [f"{item.path}: {item.error}" for item in result.embeddings.skipped]
        print(f"embeddings of {len(result.embeddings.files)} images: {result.out}")
        return PredictResult(result.out, len(result.embeddings.files), skipped)

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        module = ExportableStudent(teacher_space_student(trained.model.student, trained.model.standardizers)).eval()
        metadata = {
            "input": f"image: float32 (batch, 3, {resolution}, {resolution}) RGB in [0, 1], resized (bilinear, "
            "antialiased); mean/std are applied inside the model",
            "outputs": json.dumps(module.output_names),
            "teachers": json.dumps(teacher_metadata(trained.spec, trained.model)),
        }
        example = (torch.rand(2, 3, resolution, resolution),)
        return ExportPlan(module, example, ["image"], module.output_names, metadata)

    def after_export(self, trained: Trained, files: list[Path]) -> None:
        manifest = export_adapted(trained, files[0].parent / "backbone")
        print(f"adapted backbone: {manifest}")

    def verification_inputs(self, spec: DistillSpec, trained: Trained, resolution: int, count: int = 4):
        files = list_image_files(spec.dataset.train_nolabel.folder_path)[:count]
        dataset = DistillImages(files, (resolution, resolution), {})
        return (torch.stack([dataset[i]["student"] for i in range(len(dataset))]),)

    def card_notes(self, spec: DistillSpec, meta: dict[str, Any]) -> list[str]:
        return [
            f"a {spec.model.backbone} student adapted to the unlabeled images above by distilling "
            f"{', '.join(meta['teachers'])}; the run folder loads as a backbone (--model <run>), with one adaptor "
            "head per teacher in the teacher's space",
            "knn_top1 / control_knn_top1: k-NN top-1 of the summary on the domain / control set after distillation; "
            "*_before: the same for the student before distillation",
        ]


def knn_sets(spec: DistillSpec, split: str) -> list[KnnSet]:
    """The domain k-NN set (queries from ``split``: ``val`` -> ``knn_validation.val_split``, ``test`` ->
    ``knn_validation.test_split``) and the control set when ``dataset.control`` is given (its test queries, or its
    val queries when it has no test folder: the control set never picks the checkpoint).

    Raises:
        DataError: ``split`` = train (k-NN needs a memory and separate queries), or a missing/empty folder.
    """
    if split == "train":
        raise DataError("evaluate.split=train: distill evaluates k-NN queries (val or test) against the train split")
    sets = []
    for name, labelled, key in (
        ("domain", spec.dataset.knn_validation, "dataset.knn_validation.root"),
        ("control", spec.dataset.control, "dataset.control.root"),
    ):
        if labelled is not None:
            queries = labelled.test_split if split == "test" else labelled.val_split
            if name == "control" and not (Path(labelled.root) / queries).is_dir():
                queries = labelled.val_split
            knn_set = KnnSet.from_folders(name, labelled.root, labelled.train_split, queries, key)
            sets.append(knn_set.readable(split, key))
    return sets


def _has_queries(spec: DistillSpec, split: str) -> bool:
    """Whether the domain k-NN set has ``split`` queries: val whenever it is given, test when its folder exists."""
    labelled = spec.dataset.knn_validation
    if labelled is None:
        return False
    return split == "val" or (Path(labelled.root) / labelled.test_split).is_dir()


def student_before(spec: DistillSpec):
    """The student as it was before distillation (published weights, or a seeded random initialisation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BEFORE_SEED)
        return build_student(spec)


def before_after_table(metrics: dict, trained: Trained, split: str = "val") -> str:
    """The model card's before/after section: k-NN top-1 on the domain and control sets of ``split``, and teacher
    fidelity; it says whether the split picked the checkpoint (val: the "after" figure is optimistic)."""
    distill = trained.spec.distill
    if split == "val":
        why = (
            "the val queries also picked the checkpoint, so the domain's 'after' figure is optimistic; held-out "
            "queries in <knn_validation.root>/test/<class>/ give an unbiased one"
        )
    else:
        why = f"held-out {split} queries, not used to pick the checkpoint"
    lines = [
        f"## Before / after distillation ({split}, k-NN top-1, k={distill.knn_k}, T={distill.knn_temperature:g})",
        "",
        f"On {why}.",
        "",
        "| set | before | after |",
        "|---|---|---|",
    ]
    for label, key in (
        ("domain (dataset.knn_validation)", "knn_top1"),
        ("control (dataset.control)", "control_knn_top1"),
    ):
        before, after = metrics.get(f"{key}_before"), metrics.get(key)
        lines.append(f"| {label} | {format_metric(key, before)} | {format_metric(key, after)} |")
    lines += ["", "| teacher | summary cosine | feature cosine |", "|---|---|---|"]
    for name in trained.model.teachers:
        cosines = [metrics.get(f"{name}/{kind}") for kind in ("summary_cosine", "feature_cosine")]
        lines.append(f"| {name} | " + " | ".join("-" if c is None else f"{c:.4f}" for c in cosines) + " |")
    return "\n".join(lines) + "\n"


def export_adapted(trained: Trained, folder: Path) -> Path:
    """Write the trained student (heads in teacher space) as an adapted-backbone folder; the manifest path."""
    model = trained.model
    return export_adapted_student(folder, model.student, model.standardizers, teacher_metadata(trained.spec, model))


TASK = DistillTask()
