"""The ``clip`` task spec: model, dataset, train, evaluate, predict, export (TAO's key names where TAO has them)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vfmkit.spec.base import (
    EvaluateSpec,
    ExportSpec,
    OptimizerSpec,
    PredictSpec,
    RunSpec,
    Section,
    SpecPath,
    TrainSpec,
)


class ClipModelSpec(Section):
    type: str = Field(
        "siglip2-so400m-patch16-256",
        description="CLIP registry id/alias (`vfm clip models`; TAO names: c-radio_v3-h, ViT-H-14-SigLIP-CLIPA-224)",
    )
    backbone: str | None = Field(
        None,
        description="image backbone instead of the type's own: a backbone registry id, hf-hub:<repo> or a local "
        "checkpoint (e.g. your RADIO .pth.tar); the text tower stays the type's",
    )
    projection: Literal["native", "linear"] = Field(
        "native",
        description="native: image features are in the joint space (the tower's projection; RADIO: the adaptor head, "
        "which the backbone must carry); linear: a new trained projection of the backbone's summary (backbones "
        "without a pre-aligned head)",
    )
    adaptor_name: str | None = Field(
        None, description="RADIO-CLIP: adaptor head siglip2-g | siglip | clip (default: the best the checkpoint has)"
    )
    pretrained: bool = Field(True, description="load the published weights (False: random init)")
    checkpoint: SpecPath | None = Field(
        None,
        description="local weights instead of the published ones (NV-CLIP: the NGC file; RADIO: the image backbone); "
        "needs model.pretrained: true",
    )
    text_checkpoint: SpecPath | None = Field(
        None, description="RADIO-CLIP: local CLIP checkpoint of the text tower (needs model.pretrained: true)"
    )
    tokenizer_dir: SpecPath | None = Field(None, description="local folder with tokenizer.json (SigLIP, offline)")
    freeze_vision_encoder: bool = Field(
        False,
        description="no training of the image backbone (trains on cached image features; a linear projection "
        "still trains)",
    )
    freeze_text_encoder: bool = Field(False, description="no training of the text tower")
    image_size: int | None = Field(None, ge=16, description="input side in pixels (default: the model's preferred)")
    init_logit_scale: float | None = Field(
        None, description="initial log scale (default: pre-trained, or ln 10 for siglip / ln(1/0.07) for clip)"
    )
    init_logit_bias: float | None = Field(
        None, description="initial logit bias (default: pre-trained, or -10 for siglip / 0 for clip)"
    )
    canonicalize_text: bool | None = Field(
        None, description="canonical text cleaning (null: the tokenizer's own, on for SigLIP towers)"
    )


class PairSourceSpec(Section):
    type: Literal["custom", "csv", "jsonl", "coco", "wds"] = Field(
        "custom", description="custom: image_dir + caption_dir; csv/jsonl: file; coco: file + root; wds: shards"
    )
    image_dir: SpecPath | None = Field(None, description="custom: folder of images (jpg/jpeg/png)")
    caption_dir: SpecPath | None = Field(None, description="custom: folder of <image stem><caption_suffix> files")
    caption_suffix: str = Field(".txt", description="custom: caption file suffix (TAO caption_file_suffix)")
    image_list_file: SpecPath | None = Field(None, description="custom: only these images (one name per line)")
    file: SpecPath | None = Field(None, description="csv/jsonl: the pairs file; coco: the captions JSON")
    root: SpecPath | None = Field(None, description="base folder of relative image paths (coco: the image folder)")
    shards: SpecPath | None = Field(None, description="wds: folder of .tar shards, a glob, a list file or a shard")


class ClipAugmentSpec(Section):
    scale: tuple[float, float] | None = Field(
        (0.4, 1.0), description="random resized crop area range in training (TAO augmentation.scale; null: resize)"
    )
    color_jitter: float = Field(0.0, ge=0, le=1, description="brightness/contrast/saturation jitter strength")


class ClipDataSpec(Section):
    train: PairSourceSpec = Field(default_factory=PairSourceSpec, description="training pairs")
    val: PairSourceSpec = Field(default_factory=PairSourceSpec, description="validation pairs (retrieval metrics)")
    augmentation: ClipAugmentSpec = Field(default_factory=ClipAugmentSpec)
    check_images: bool = Field(True, description="preflight: decode every image before training")


class WiseFtSpec(Section):
    alpha: float = Field(
        1.0, ge=0, le=1, description="WiSE-FT: weights = (1 - alpha) * pre-trained + alpha * fine-tuned (1 = off)"
    )


class ClipOptimizerSpec(OptimizerSpec):
    lr: float = Field(1e-3, gt=0, description="not used by clip: train.vision_lr and train.text_lr set the rates")
    backbone_lr_scale: float = Field(0.1, ge=0, le=1, description="not used by clip (train.vision_lr)")
    layer_decay: float = Field(1.0, gt=0, le=1, description="not used by clip")


class ClipTrainSpec(TrainSpec):
    optimizer: ClipOptimizerSpec = Field(default_factory=ClipOptimizerSpec)
    loss_type: Literal["siglip", "clip"] = Field("siglip", description="sigmoid (SigLIP) or softmax (CLIP) loss")
    vision_lr: float = Field(1e-5, gt=0, description="peak learning rate of the image tower")
    text_lr: float = Field(1e-5, gt=0, description="peak learning rate of the text tower and the logit scale/bias")
    wise_ft: WiseFtSpec = Field(default_factory=WiseFtSpec)


class ZeroShotSpec(Section):
    source: SpecPath | None = Field(None, description="folder of class folders named like the classes")
    classes_file: SpecPath | None = Field(None, description="class names, one per line (default: the folder names)")
    templates: str = Field("openai", description="prompt templates: openai (80), simple (7) or a templates file")


class ClipEvaluateSpec(EvaluateSpec):
    recall_k: tuple[int, ...] = Field((1, 5, 10), description="k of the retrieval recall metrics R@k")
    zeroshot: ZeroShotSpec = Field(default_factory=ZeroShotSpec, description="zero-shot accuracy on a labelled set")
    control: ZeroShotSpec = Field(
        default_factory=ZeroShotSpec,
        description="control set: zero-shot accuracy before and after fine-tuning (forgetting)",
    )


class ClipPredictSpec(PredictSpec):
    text_file: SpecPath | None = Field(None, description="texts to embed, one per line (TAO inference.text_file)")


class ClipExportSpec(ExportSpec):
    encoder_type: Literal["combined", "separate"] = Field(
        "separate", description="separate: <name>_vision.onnx + <name>_text.onnx; combined: one graph"
    )


class ClipSpec(RunSpec):
    """Spec of ``vfm clip train|evaluate|predict|export``."""

    task: Literal["clip"] = Field("clip", description="the task this spec is for")

    example: ClassVar[dict] = {
        "dataset": {
            "train": {"type": "custom", "image_dir": "data/train/images", "caption_dir": "data/train/captions"},
            "val": {"type": "custom", "image_dir": "data/val/images", "caption_dir": "data/val/captions"},
        }
    }
    """Values ``vfm spec init`` writes for the required keys."""

    model: ClipModelSpec = Field(default_factory=ClipModelSpec)
    dataset: ClipDataSpec = Field(default_factory=ClipDataSpec)
    train: ClipTrainSpec = Field(default_factory=ClipTrainSpec)
    evaluate: ClipEvaluateSpec = Field(default_factory=ClipEvaluateSpec)
    predict: ClipPredictSpec = Field(default_factory=ClipPredictSpec)
    export: ClipExportSpec = Field(default_factory=ClipExportSpec)

    @model_validator(mode="after")
    def _check(self) -> ClipSpec:
        if self.model.freeze_vision_encoder and self.model.freeze_text_encoder:
            raise ValueError("model.freeze_vision_encoder and model.freeze_text_encoder are both set: nothing trains")
        if any(k < 1 for k in self.evaluate.recall_k):
            raise ValueError(f"evaluate.recall_k must be positive, got {list(self.evaluate.recall_k)}")
        return self
