"""The clip task definition: contrastive fine-tuning of CLIP models (SigLIP or CLIP loss), bidirectional retrieval
and zero-shot evaluation, image/text embeddings and ONNX export, through the engine's skeletons.

Without a checkpoint ``evaluate``, ``predict`` and ``export`` use the pre-trained model of ``model.type``
(:meth:`ClipTask.pretrained_model`): a published CLIP model is useful untrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vfmkit.cli.docs_links import page_url
from vfmkit.data.sampling import EpochSeededSampler
from vfmkit.engine.runs import make_loader
from vfmkit.engine.taskdef import ExportPlan, PredictResult, TaskData, TaskDef, Trained, format_metric
from vfmkit.engine.trained import load_trained
from vfmkit.errors import DataError, VfmError
from vfmkit.models.clip import ClipModel
from vfmkit.models.clip_zoo import load_clip_model
from vfmkit.tasks.clip.data import (
    CaptionPairs,
    PairCollate,
    PairDataset,
    expected_dropped_fraction,
    preflight,
    read_source,
)
from vfmkit.tasks.clip.embeddings import CachedPairDataset, cached_image_features, evaluate_retrieval
from vfmkit.tasks.clip.export import export_plans, save_tokenizer_beside
from vfmkit.tasks.clip.model import (
    build_for_training,
    build_pretrained,
    model_facts,
    spec_resolution,
    weight_requests,
)
from vfmkit.tasks.clip.module import ClipModule
from vfmkit.tasks.clip.predict import predict_embeddings
from vfmkit.tasks.clip.spec import ClipSpec, ZeroShotSpec
from vfmkit.tasks.clip.zeroshot import folder_class_names, zeroshot_source
from vfmkit.utils.tensor_cache import CacheStats
from vfmkit.weights.rule import WeightsRequest

RETRIEVAL_HEADLINE = ("i2t_R@1_any", "t2i_R@1_any", "i2t_R@5_any", "t2i_R@5_any", "t2i_mAP")
ZEROSHOT_KEYS = ("top1", "top5", "mean_per_class_recall", "images")


class ClipTask(TaskDef):
    """CLIP: image and text towers in one embedding space (OpenCLIP / NV-CLIP, SigLIP2, RADIO-CLIP)."""

    name = "clip"
    spec_class = ClipSpec
    monitor = "val/t2i_mAP"
    backbone_path = "visual.backbone"
    splits = ("train", "val")  # image-caption pairs come as train and val only
    metric_notes = {
        "zeroshot_top5": "fewer than 5 classes",
        "control_top5": "fewer than 5 classes",
    }

    def backbone_id(self, spec: ClipSpec) -> str:
        return str(spec.model.backbone or spec.model.type)

    def pretrained(self, spec: ClipSpec) -> bool:
        return bool(spec.model.pretrained)

    def resolution(self, spec: ClipSpec) -> int:
        return spec_resolution(spec)

    def weight_requests(self, spec: ClipSpec) -> list[WeightsRequest]:
        """The image tower and the text tower, with ``model.checkpoint`` / ``model.text_checkpoint``."""
        return weight_requests(spec)

    def headline_keys(self, spec: ClipSpec) -> tuple[str, ...]:
        keys = RETRIEVAL_HEADLINE
        if spec.evaluate.zeroshot.source is not None:
            keys += ("zeroshot_top1",)
        if spec.evaluate.control.source is not None:
            keys += ("control_top1", "control_top1_before")
        return keys

    # --- training --------------------------------------------------------------------------------------------------

    def prepare(self, spec: ClipSpec, splits) -> TaskData:
        found: dict[str, CaptionPairs | None] = {}
        for name in splits:
            pairs = read_source(getattr(spec.dataset, name), name)
            if pairs is None and name == "train":
                raise DataError(
                    "dataset.train names no pairs: set dataset.train.type and its paths (the layouts: "
                    f"{page_url('tasks/clip.md')}#data)"
                )
            if pairs is not None:
                pairs, counts = preflight(pairs, name, spec.dataset.check_images)
                print(f"{name}: {counts['images']} images, {counts['captions']} captions ({pairs.source})")
            if pairs is not None and name == "train":
                _warn_repeated_captions(pairs, spec.train.batch_size)
            found[name] = pairs
        summary = {
            "pairs per split": {name: len(p) for name, p in found.items() if p is not None},
            "model": spec.model.type + (f" with backbone {spec.model.backbone}" if spec.model.backbone else ""),
            "loss": spec.train.loss_type,
            "frozen": ", ".join(t for t, f in self._frozen(spec).items() if f) or "nothing",
        }
        return TaskData(found, {}, summary)

    @staticmethod
    def _frozen(spec: ClipSpec) -> dict[str, bool]:
        return {"image backbone": spec.model.freeze_vision_encoder, "text tower": spec.model.freeze_text_encoder}

    def build_model(self, spec: ClipSpec, meta: dict[str, Any], pretrained: bool):
        return build_for_training(spec, pretrained, meta)

    def loaders(self, spec: ClipSpec, data: TaskData, model) -> tuple[DataLoader, DataLoader | None]:
        train, val = data.split("train"), data.split("val")
        batch, workers, seed = spec.train.batch_size, spec.train.num_workers, spec.train.seed
        res = self.resolution(spec)
        collate = PairCollate(model.tokenizer, train.captions)
        if spec.model.freeze_vision_encoder:
            cache, stats = spec.results_dir / ".cache" / "features", CacheStats()
            train_set = CachedPairDataset(self._features(model, train, res, cache, spec, stats), train, seed)
            val_set = None
            if val:
                val_set = CachedPairDataset(self._features(model, val, res, cache, spec, stats), val, train=False)
            if stats.damaged:
                print(stats.describe("feature cache"))
            workers = 0  # features in memory: nothing to decode
        else:
            aug = spec.dataset.augmentation
            train_set = PairDataset(
                train, res, train=True, crop_scale=aug.scale, color_jitter=aug.color_jitter, seed=seed
            )
            val_set = PairDataset(val, res) if val else None
        sampler = EpochSeededSampler(len(train_set), seed, dataset=train_set)
        train_loader = make_loader(train_set, batch, workers, sampler, seed, collate)
        val_loader = make_loader(val_set, spec.evaluate.batch_size, workers, seed=seed) if val_set else None
        return train_loader, val_loader

    @staticmethod
    def _features(model, pairs: CaptionPairs, res: int, cache: Path, spec: ClipSpec, stats: CacheStats) -> torch.Tensor:
        batch = spec.evaluate.batch_size
        features, hit = cached_image_features(model, pairs, res, cache, batch_size=batch, stats=stats)
        print(f"{len(pairs)} image features {'from the cache' if hit else 'computed'} ({pairs.source})")
        return features

    def lightning_module(self, spec: ClipSpec, model, meta: dict[str, Any]) -> ClipModule:
        meta.update(model_facts(model))
        control = spec.evaluate.control
        if control.source is not None:  # the pre-trained model's zero-shot accuracy, to compare with after training
            before = _zeroshot(model, control, self.resolution(spec), spec.evaluate.batch_size)
            meta["control_before"] = {"source": str(control.source), "top1": before["top1"]}
            print(f"control set {control.source}: zero-shot top-1 {format_metric('top1', before['top1'])} before")
        return ClipModule(model, spec, meta, self, on_features=spec.model.freeze_vision_encoder)

    # --- evaluation ------------------------------------------------------------------------------------------------

    def pretrained_model(self, spec: ClipSpec) -> Trained:
        model = build_pretrained(spec)
        weights = "pre-trained" if spec.model.pretrained else "randomly initialised"
        print(f"no checkpoint given: the {weights} model {model.model_id}")
        return Trained(model.eval(), spec, {}, None)

    def eval_split(self, spec: ClipSpec, trained: Trained, split: str) -> CaptionPairs:
        if split == "test":
            raise DataError("evaluate.split 'test': the clip dataset has train and val pairs; use val or train")
        pairs = read_source(getattr(spec.dataset, split), split)
        if pairs is None or not len(pairs):
            raise DataError(f"dataset.{split} names no image-caption pairs (evaluate.split {split!r})")
        pairs, _ = preflight(pairs, split, spec.dataset.check_images)
        return pairs

    @torch.inference_mode()
    def evaluate_split(self, trained: Trained, split: CaptionPairs, spec: ClipSpec) -> dict:
        """Bidirectional retrieval on the pairs (both recall conventions, mAP, ranks, NDCG); zero-shot accuracy on
        ``evaluate.zeroshot`` and ``evaluate.control`` when given (``control_top1_before``: the pre-trained model's,
        recorded when training started on the same control set)."""
        model, res, batch = trained.model.eval(), self.resolution(trained.spec), spec.evaluate.batch_size
        metrics = evaluate_retrieval(model, split, res, batch, ks=spec.evaluate.recall_k)
        for prefix in ("zeroshot", "control"):
            section = getattr(spec.evaluate, prefix)
            if section.source is not None:
                found = _zeroshot(model, section, res, batch)
                metrics.update({f"{prefix}_{key}": found[key] for key in ZEROSHOT_KEYS})
        before = trained.meta.get("control_before")
        if (
            before
            and spec.evaluate.control.source is not None
            and before["source"] == str(spec.evaluate.control.source)
        ):
            metrics["control_top1_before"] = before["top1"]
        return metrics

    def metric_lines(self, split_name: str, metrics: dict, trained: Trained) -> list[str]:
        ks = sorted({int(k.split("@")[1].split("_")[0]) for k in metrics if "@" in k})
        lines = [f"{split_name}: {int(metrics['images'])} images, {int(metrics['captions'])} distinct captions"]
        for direction, label in (("i2t", "image->text"), ("t2i", "text->image")):
            for convention, what in (("any", "any of the captions"), ("1cap", "first caption only")):
                recalls = "  ".join(
                    f"R@{k} {format_metric('recall', metrics.get(f'{direction}_R@{k}_{convention}'))}" for k in ks
                )
                lines.append(f"  {label} ({what}): {recalls}")
            lines.append(
                f"  {label}: mAP {format_metric('mAP', metrics[f'{direction}_mAP'])}  NDCG "
                f"{format_metric('NDCG', metrics[f'{direction}_NDCG'])}  median rank "
                f"{format_metric('rank', metrics[f'{direction}_median_rank'])}  mean rank "
                f"{format_metric('rank', metrics[f'{direction}_mean_rank'])}"
            )
        for prefix, label in (("zeroshot", "zero-shot"), ("control", "control zero-shot")):
            if f"{prefix}_top1" in metrics:
                line = (
                    f"  {label}: {int(metrics[f'{prefix}_images'])} images  top-1 "
                    f"{format_metric('top1', metrics[f'{prefix}_top1'])}  top-5 "
                    f"{format_metric('top5', metrics[f'{prefix}_top5'])}  mean per-class recall "
                    f"{format_metric('recall', metrics[f'{prefix}_mean_per_class_recall'])}"
                )
                if prefix == "control" and "control_top1_before" in metrics:
                    line += f"  (top-1 before fine-tuning {format_metric('top1', metrics['control_top1_before'])})"
                lines.append(line)
        return lines

    # --- prediction and export -------------------------------------------------------------------------------------

    def predict(self, spec: ClipSpec, trained: Trained, out: Path | None, default_out: Path) -> PredictResult:
        return predict_embeddings(
            trained,
            spec.predict.source,
            spec.predict.text_file,
            Path(out or default_out),
            self.resolution(trained.spec),
            spec.predict.batch_size,
        )

    def export_plan(self, trained: Trained, resolution: int) -> ExportPlan:
        """The combined graph (image, input_ids, attention_mask), with random example inputs."""
        images = torch.rand(2, 3, resolution, resolution)
        return export_plans(trained.model, "combined", images, ["a photo", "a diagram"], verify=False)[0]

    def export_plans(self, trained: Trained, resolution: int, spec: ClipSpec) -> list[ExportPlan]:
        verify = spec.export.verify
        images, texts = _real_pairs(spec, resolution) if verify else (torch.rand(2, 3, resolution, resolution), [])
        return export_plans(trained.model, spec.export.encoder_type, images, texts or ["a photo", "a diagram"], verify)

    def after_export(self, trained: Trained, files: list[Path]) -> None:
        print(f"tokenizer saved to {save_tokenizer_beside(trained.model, files)}")

    def verification_inputs(self, spec: ClipSpec, trained: Trained, resolution: int, count: int = 4):
        """The combined graph's inputs: up to ``count`` real images of the val (else train) pairs, resized to
        ``resolution``, and their first captions as token ids and attention mask."""
        images, texts = _real_pairs(spec, resolution, count)
        tokens = trained.model.tokenizer.encode(texts)
        return images, tokens.input_ids, tokens.attention_mask

    def card_notes(self, spec: ClipSpec, meta: dict[str, Any]) -> list[str]:
        frozen = ", ".join(t for t, f in self._frozen(spec).items() if f) or "nothing"
        notes = [
            f"image-text embeddings ({spec.model.type}), fine-tuned with the {spec.train.loss_type} loss at "
            f"{self.resolution(spec)}px; frozen: {frozen}",
            "zero-shot classification and retrieval: compare L2-normalised image and text embeddings (cosine)",
        ]
        if spec.train.wise_ft.alpha < 1:
            notes.append(f"weights: WiSE-FT, alpha {spec.train.wise_ft.alpha:g} of the fine-tuned weights")
        return notes


def _real_pairs(spec: ClipSpec, resolution: int, count: int = 4) -> tuple[torch.Tensor, list[str]]:
    """Up to ``count`` images (float (B, 3, R, R) in [0, 1]) of the val (else train) pairs and their first captions.

    Raises:
        VfmError: neither split names readable pairs.
    """
    for name in ("val", "train"):
        try:
            pairs = read_source(getattr(spec.dataset, name), name)
        except DataError as err:
            raise VfmError(f"export verification needs real images: {err}; fix it or set export.verify=false") from None
        if pairs is not None and len(pairs):
            dataset = PairDataset(pairs, resolution)
            items = [dataset[i] for i in range(min(count, len(dataset)))]
            return torch.stack([item[0] for item in items]), [pairs.captions[item[1]] for item in items]
    raise VfmError("export verification needs real images: set dataset.val (or dataset.train), or export.verify=false")


DROPPED_WARNING = 0.05
"""The expected share of training samples dropped as repeated captions above which the preflight warns."""


def _warn_repeated_captions(pairs: CaptionPairs, batch_size: int) -> None:
    """Print a warning when repeated captions would drop more than :data:`DROPPED_WARNING` of the samples."""
    dropped = expected_dropped_fraction(pairs, batch_size)
    if dropped <= DROPPED_WARNING:
        return
    distinct = len(set(pairs.captions))
    print(
        f"warning: train: {distinct} distinct caption(s) among {len(pairs.captions)} of {len(pairs.images)} images: "
        "identical captions in a batch would be false negatives of each other in the contrastive loss, so all but "
        f"one are dropped: about {100 * dropped:.0f}% of the samples of each batch of {batch_size} "
        "(train/dropped_fraction in metrics.csv); more specific captions keep them"
    )


def _zeroshot(model, section: ZeroShotSpec, resolution: int, batch_size: int) -> dict[str, float]:
    """Zero-shot metrics of a class-folder set (classes from ``classes_file`` or the folder names)."""
    classes = section.classes_file or folder_class_names(section.source)
    result = zeroshot_source(section.source, model, classes, section.templates, None, batch_size, resolution)
    if result.metrics is None:
        why = f" ({result.no_accuracy})" if result.no_accuracy else ""
        raise DataError(f"{section.source}: zero-shot accuracy needs class folders named like the classes{why}")
    return result.metrics


TASK = ClipTask()


def load_for_inference(model: str | Path) -> tuple[ClipModel, int]:
    """A CLIP model and its input side from a CLIP registry id/alias (published weights) or a ``vfm clip train`` run
    folder or ``.ckpt`` file (the trained weights).

    Raises:
        ModelNotFoundError: an unknown id; WeightsError: an unusable checkpoint.
    """
    path = Path(model).expanduser()
    if path.suffix == ".ckpt" or (path / "checkpoints").is_dir():
        _, trained = load_trained(TASK, path)
        return trained.model, TASK.resolution(trained.spec)
    clip = load_clip_model(str(model))
    return clip, clip.preprocessing.preferred_resolution[0]
