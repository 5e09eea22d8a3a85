"""The clip task's model: the spec mapped onto :func:`~vfmkit.models.clip_zoo.load_clip_model`, the training set-up
(logit scalars for the loss, per-tower freezing) and the input resolution."""

from __future__ import annotations

import dataclasses

import torch

from vfmkit.errors import ConfigurationError, ModelNotFoundError, WeightsError
from vfmkit.models.clip import ClipModel, IncompatibleTowersError
from vfmkit.models.clip_zoo import CLIP_MODELS, clip_weight_requests, load_clip_model
from vfmkit.models.registry import find_entry
from vfmkit.models.text.zoo import TEXT_TOWERS
from vfmkit.tasks.clip.losses import prepare_logit_params
from vfmkit.tasks.clip.spec import ClipSpec
from vfmkit.weights.rule import WeightsRequest, loader_arguments

LINEAR_HINT = "set model.projection=linear to train a new projection into the text tower's space"


def spec_resolution(spec: ClipSpec) -> int:
    """The input side of a spec: ``model.image_size``, else the preferred resolution of ``model.backbone`` (a registry
    id) or of ``model.type``'s image tower.

    Raises:
        ConfigurationError: an unknown ``model.type``.
    """
    if spec.model.image_size:
        return int(spec.model.image_size)
    backbone = find_entry(spec.model.backbone) if spec.model.backbone else None
    if backbone is not None:
        return int(backbone.preferred_resolution)
    return int(_entry(spec).vision_entry.preferred_resolution)


def _entry(spec: ClipSpec):
    try:
        return CLIP_MODELS.resolve(spec.model.type)
    except ModelNotFoundError as err:
        raise ConfigurationError(f"model.type: {err}") from None


def build_pretrained(spec: ClipSpec, pretrained: bool = True, meta: dict | None = None) -> ClipModel:
    """The CLIP model of ``spec.model`` as published (eval mode): no training set-up, logit scalars untouched.

    ``pretrained`` True loads both towers' weights as the spec says (``model.pretrained``, ``model.checkpoint``,
    ``model.text_checkpoint``, a ``model.backbone`` path); False loads none (a checkpoint holding them follows, or a
    dry build): no file is read but a backbone path (its architecture). A RADIO adaptor head (``model.projection``
    native) built without weights takes its architecture from ``meta["adaptor"]`` (saved by training, see
    :func:`model_facts`); on the meta device (a dry build: shapes only, nothing loaded or computed) a head of the
    text tower's width stands in when there is none.

    Raises:
        ConfigurationError: an unknown ``model.type``/``model.adaptor_name``, a ``model.backbone`` without the
            adaptor head, towers of different widths, or an ``model.image_size`` the image tower cannot take (each
            naming the key to change); WeightsError: weights not available.
    """
    m = spec.model
    entry = _entry(spec)
    _text_entry(spec, entry)
    towers = pretrained and m.pretrained
    backbone_pretrained = loader_arguments(m.backbone, m.pretrained, None, pretrained)[0] if m.backbone else None
    try:
        model = load_clip_model(
            m.type,
            towers,
            m.adaptor_name,
            m.checkpoint if pretrained else None,
            m.text_checkpoint if pretrained else None,
            m.tokenizer_dir,
            m.canonicalize_text,
            backbone=m.backbone,
            projection=m.projection,
            adaptor_config=_adaptor_config(spec, entry, towers, meta or {}),
            backbone_pretrained=backbone_pretrained,
        )
    except (ModelNotFoundError, WeightsError) as err:
        # an image backbone without the pre-aligned head (or of another width) pairs through a linear projection
        head = isinstance(err, IncompatibleTowersError) or "adaptor" in str(err)
        hint = f"; {LINEAR_HINT}" if m.projection == "native" and head else ""
        if isinstance(err, WeightsError) and not hint:
            raise
        key = f"model.backbone {m.backbone}" if m.backbone else f"model.type {m.type}"
        raise ConfigurationError(f"{key}: {err}{hint}") from None
    step = model.preprocessing.resolution_step
    resolution = spec_resolution(spec)
    if resolution % step:
        raise ConfigurationError(
            f"model.image_size must be a multiple of {step} for this image tower, got {resolution}"
        )
    return model


def weight_requests(spec: ClipSpec) -> list[WeightsRequest]:
    """The image tower (``visual.backbone``) and the text tower (``text``) of a spec, with the ``model.*`` keys
    that set where their weights come from (see :func:`~vfmkit.models.clip_zoo.clip_weight_requests`).

    Raises:
        ConfigurationError: an unknown ``model.type`` or ``model.adaptor_name``, or a weights file the model would
            ignore (naming both keys).
    """
    m = spec.model
    entry = _entry(spec)
    keys = {k: f"model.{k}" for k in ("type", "pretrained", "checkpoint", "text_checkpoint", "backbone")}
    return clip_weight_requests(
        entry, _text_entry(spec, entry), m.pretrained, m.checkpoint, m.text_checkpoint, m.backbone, keys
    )


def _text_entry(spec: ClipSpec, entry):
    try:
        return TEXT_TOWERS.resolve(entry.text_id(spec.model.adaptor_name))
    except ModelNotFoundError as err:
        raise ConfigurationError(f"model.adaptor_name: {err}") from None


def _adaptor_config(spec: ClipSpec, entry, pretrained: bool, meta: dict) -> dict | None:
    """The RADIO adaptor head to build without weights (see :func:`build_pretrained`), None when not needed."""
    if pretrained or entry.family != "radio" or spec.model.projection != "native" or spec.model.backbone:
        return None
    if meta.get("adaptor"):
        return dict(meta["adaptor"])
    vision = entry.vision_entry
    name = spec.model.adaptor_name or entry.default_adaptor
    if name in {a["name"] for a in vision.arch.get("adaptors", [])}:
        return None  # a test variant: its registry entry defines the head
    if torch.get_default_device().type != "meta":
        raise ConfigurationError(
            f"model.pretrained=false: the {name!r} adaptor head of {entry.id} takes its size from the published "
            "checkpoint; use model.pretrained=true, or model.projection=linear for a random image tower"
        )
    width = TEXT_TOWERS.resolve(entry.text_id(name)).embed_dim
    hidden = vision.feature_dim
    return {"name": name, "token_slot": 0, "summary_mlp": ("v2", hidden, hidden, width, 1), "feature_mlp": None}


def model_facts(model: ClipModel) -> dict:
    """What a checkpoint must keep to rebuild ``model`` without weights: the RADIO adaptor head's architecture."""
    tower = model.visual
    if tower.adaptor_name is None:
        return {}
    return {"adaptor": dataclasses.asdict(tower.backbone.adaptors[tower.adaptor_name].cfg)}


def build_for_training(spec: ClipSpec, pretrained: bool, meta: dict | None = None) -> ClipModel:
    """The model a ``clip`` run trains: :func:`build_pretrained`, logit scale/bias set for ``train.loss_type``
    (:func:`~vfmkit.tasks.clip.losses.prepare_logit_params`) and the towers frozen as the spec says. Checkpoints of a
    run hold this model's parameters."""
    model = build_pretrained(spec, pretrained, meta)
    m = spec.model
    prepare_logit_params(model, spec.train.loss_type, m.init_logit_scale, m.init_logit_bias)
    model.freeze(vision=m.freeze_vision_encoder, text=m.freeze_text_encoder)
    return model
