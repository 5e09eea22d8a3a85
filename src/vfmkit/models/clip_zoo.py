"""The CLIP registry and :func:`load_clip_model`.

A CLIP id resolves to an image tower (a backbone registry entry, plus a RADIO adaptor head), a text tower (text
registry) and the logit scalars. The namespace is separate from the backbone registry: ``c-radio_v3-h`` is a
backbone alias AND a CLIP alias, and each registry resolves it to its own kind of model.

Families:

- ``open_clip``: both towers come from one open_clip checkpoint (``hf-hub:timm/ViT-SO400M-16-SigLIP2-256`` ...; NV-CLIP
  from the NGC file given as ``checkpoint``). The image tower is the vfmkit backbone of the same weights (timm reads
  open_clip's ``visual.trunk.*`` keys; the open_clip family reads ``visual.*``); the text keys are read lazily.
- ``radio``: a RADIO backbone with one pre-aligned adaptor head + the adaptor teacher's text tower (DFN CLIP-H for
  ``clip``, SigLIP SO400M for ``siglip``, SigLIP2-g for ``siglip2-g``), for every RADIO generation whose checkpoint
  carries such a head (C-RADIOv2, RADIOv2.5, C-RADIOv3, C-RADIOv4).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from vfmkit.errors import ConfigurationError, ModelNotFoundError, WeightsError
from vfmkit.models.backbones.open_clip_family import OPEN_CLIP_WEIGHT_FILES
from vfmkit.models.backbones.timm_family import fetch_hub_weights
from vfmkit.models.clip import ClipModel, ImageTower
from vfmkit.models.factory import build_from_entry, load_backbone
from vfmkit.models.namespaces import Namespace
from vfmkit.models.registry import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ModelEntry, list_backbones, resolve_entry
from vfmkit.models.text.zoo import SIGLIP2_SO400M_TEXT, TEXT_TOWERS, TextEntry, build_text_entry, load_text_tokenizer
from vfmkit.weights.rule import RegisteredModel, WeightsRequest, decide_source

logger = logging.getLogger(__name__)

CLIP_LOGIT_SCALE = math.log(1 / 0.07)
"""Initial log temperature of softmax (InfoNCE) CLIP training."""
SIGLIP_LOGIT_SCALE, SIGLIP_LOGIT_BIAS = math.log(10.0), -10.0
"""Initial log temperature and bias of sigmoid (SigLIP) training."""

RADIO_ADAPTOR_TEXT = {
    "clip": "dfn-clip-h14-378-text",
    "siglip": "siglip-so400m-14-384-text",
    "siglip2-g": "siglip2-g-384-text",
}
"""RADIO summary adaptors with a text tower: adaptor name -> the teacher's text tower (text registry id).
C-RADIOv3-B/L's ``siglip2`` head (SigLIP2-so400m NaFlex teacher) has no open_clip checkpoint and is not listed."""
RADIO_ADAPTOR_PREFERENCE = ("siglip2-g", "clip", "siglip")
"""Default adaptor when a RADIO checkpoint carries several (DFN CLIP beats SigLIP for zero-shot on v2.5)."""
PROJECTIONS = ("native", "linear")
"""How image features reach the joint space (see :func:`load_clip_model`)."""


@dataclass(frozen=True)
class ClipEntry:
    """One CLIP model.

    Attributes:
        id: canonical id.
        family: ``open_clip`` or ``radio``.
        description, license: for humans.
        vision: the image tower: a backbone registry id, or an (unregistered) backbone entry.
        adaptor_texts: adaptor name -> text tower id; ``open_clip`` family: one entry with key None.
        default_adaptor: RADIO: the adaptor used when none is asked for.
        weights: ``open_clip``: the ``hf-hub:`` source of the checkpoint holding both towers (None: NGC-only).
        sigmoid: trained with the sigmoid loss (logit bias) rather than softmax.
        aliases: other names (TAO's).
        test_only: a tiny random-init model.
    """

    id: str
    family: str
    description: str
    license: str
    vision: str | ModelEntry
    adaptor_texts: dict[str | None, str]
    default_adaptor: str | None = None
    weights: str | None = None
    sigmoid: bool = False
    aliases: tuple[str, ...] = ()
    test_only: bool = False
    weights_note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def vision_entry(self) -> ModelEntry:
        return resolve_entry(self.vision) if isinstance(self.vision, str) else self.vision

    def text_id(self, adaptor_name: str | None) -> str:
        """The text tower of the given adaptor (the default one when None).

        Raises:
            ModelNotFoundError: an adaptor without a text tower in this model.
        """
        adaptor = adaptor_name or self.default_adaptor
        if adaptor not in self.adaptor_texts:
            offered = ", ".join(str(a) for a in self.adaptor_texts)
            raise ModelNotFoundError(f"{self.id}: no CLIP adaptor {adaptor_name!r} (this model offers {offered})")
        return self.adaptor_texts[adaptor]


def _load_entries() -> None:
    if not _REGISTERED:
        _REGISTERED.append(True)
        _register_all()


_REGISTERED: list[bool] = []
CLIP_MODELS: Namespace[ClipEntry] = Namespace("CLIP model", _load_entries, "`vfm clip models --all`")


def load_clip_model(
    name: str,
    pretrained: bool = True,
    adaptor_name: str | None = None,
    checkpoint: str | Path | None = None,
    text_checkpoint: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    canonicalize_text: bool | None = None,
    backbone: str | Path | None = None,
    projection: str = "native",
    adaptor_config: dict | None = None,
    backbone_pretrained: bool | None = None,
) -> ClipModel:
    """Build a registered CLIP model and load its weights (offline-first).

    Args:
        name: a CLIP registry id or alias.
        pretrained: load the published weights (False: random init; test models are always a seeded random init).
        adaptor_name: RADIO: the adaptor head (``clip``, ``siglip``, ``siglip2-g``); default: the entry's.
        checkpoint: a local file used instead of the published one: the full CLIP checkpoint (``open_clip``;
            required for NGC-only NV-CLIP weights) or the RADIO checkpoint (``radio``).
        text_checkpoint: RADIO: a local CLIP checkpoint of the teacher whose text keys are loaded.
        tokenizer_dir: a local folder with the Hugging Face ``tokenizer.json`` (instead of the Hub cache).
        canonicalize_text: force canonical text cleaning on (True) or the tokenizer's plain cleaning (False);
            None keeps the tower's own (canonical for SigLIP).
        backbone: the image tower's backbone instead of the entry's own (anything
            :func:`~vfmkit.models.factory.load_backbone` takes: a registry id, ``hf-hub:`` source or a local
            checkpoint such as a RADIO ``.pth.tar``); the text tower stays the entry's.
        projection: ``native``: the image feature is in the joint space as it is (the tower's own projection; RADIO:
            the adaptor head, which the backbone must carry); ``linear``: a new linear projection of the backbone's
            summary into the text tower's space (for backbones without a pre-aligned head; it must be trained).
        adaptor_config: RADIO, ``pretrained=False``: the adaptor head's architecture (the fields of
            :class:`~vfmkit.models.backbones.radio.config.AdaptorConfig`); published heads take their sizes from
            the checkpoint, so a random init of one needs them (e.g. saved by a training run).
        backbone_pretrained: ``pretrained`` of ``backbone`` when it differs from the towers' (None: the same).

    Where each tower's weights come from follows :func:`vfmkit.weights.rule.decide_source` (see
    :func:`clip_weight_requests`): a checkpoint is always loaded, and one that would be ignored (``pretrained``
    false, a test model, a RADIO checkpoint beside ``backbone``, ``text_checkpoint`` for an open_clip model) is
    refused.

    Returns:
        The model in eval mode, float32, on the CPU. ``model.visual.backbone.weights_source`` names where the image
        weights came from (None for a random init).

    Raises:
        ModelNotFoundError: unknown id or adaptor, a backbone without the adaptor head, or towers of different widths;
        ConfigurationError: a checkpoint that would be ignored (above); WeightsError: weights missing offline or not
        matching.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    entry = CLIP_MODELS.resolve(name)
    text_entry = TEXT_TOWERS.resolve(entry.text_id(adaptor_name))
    teacher = adaptor_name or entry.default_adaptor  # RADIO: the adaptor whose teacher's text tower is used
    adaptor = teacher if entry.family == "radio" and projection == "native" else None
    requests = clip_weight_requests(
        entry, text_entry, pretrained, checkpoint, text_checkpoint, backbone, backbone_pretrained=backbone_pretrained
    )
    for request in requests:
        decide_source(request)  # a contradiction is refused before anything is built
    if entry.family == "radio":
        text, scalars = build_text_entry(text_entry, pretrained, text_checkpoint)
    else:
        weights = _open_clip_weights(entry, pretrained, checkpoint)
        text, scalars = build_text_entry(text_entry, weights is not None, weights)
    if entry.family == "radio" and backbone is None and adaptor and not pretrained and adaptor_config is not None:
        with_head = replace(entry.vision_entry, arch={**entry.vision_entry.arch, "adaptors": [adaptor_config]})
        vision = build_from_entry(with_head, pretrained=False, adaptors=[adaptor])
    elif entry.family == "radio" or backbone is not None:
        vision = load_backbone(
            backbone or entry.vision_entry.id,
            adaptors=[adaptor] if adaptor else None,
            pretrained=pretrained if backbone is None or backbone_pretrained is None else backbone_pretrained,
            checkpoint=checkpoint if entry.family == "radio" and backbone is None else None,
        )
    else:
        vision = build_from_entry(entry.vision_entry, weights is not None, checkpoint=weights)
        vision.weights_source = _weights_source(entry, weights, checkpoint)
    visual = ImageTower(vision, adaptor, text.output_dim if projection == "linear" else None)
    tokenizer = load_text_tokenizer(text_entry, tokenizer_dir)
    if canonicalize_text is not None:
        tokenizer = tokenizer.with_clean("canonicalize" if canonicalize_text else _plain_clean(tokenizer.kind))
    sigmoid = teacher != "clip" if entry.family == "radio" else entry.sigmoid
    scale, bias = default_logit_params(sigmoid)
    scale = scalars.get("logit_scale", scale)
    bias = scalars.get("logit_bias", bias)
    model = ClipModel(visual, text, tokenizer, scale, bias, model_id=entry.id)
    model.load_reports = {"vision": getattr(vision, "load_report", None), "text": getattr(text, "load_report", None)}
    return model.eval()


def clip_weight_requests(
    entry: ClipEntry,
    text_entry: TextEntry,
    pretrained: bool,
    checkpoint: str | Path | None,
    text_checkpoint: str | Path | None,
    backbone: str | Path | None,
    keys: dict[str, str] | None = None,
    backbone_pretrained: bool | None = None,
) -> list[WeightsRequest]:
    """The weights requests of a CLIP model: its image tower and its text tower (module paths ``visual.backbone``
    and ``text``).

    An open_clip model reads both towers from one checkpoint (``checkpoint``); a RADIO-CLIP model reads its image
    tower from ``checkpoint`` (a RADIO checkpoint) and its text tower from ``text_checkpoint``; ``backbone``
    replaces the image tower.

    Args:
        keys: the key that set each argument, for messages (``type`` for the model's name, ``pretrained``,
            ``checkpoint``, ``text_checkpoint``, ``backbone``); default: :func:`load_clip_model`'s argument names.

    Raises:
        ConfigurationError: ``text_checkpoint`` for an open_clip model, or ``checkpoint`` (a RADIO checkpoint) beside
            ``backbone``: files that would be ignored.
    """
    key = {k: k for k in ("pretrained", "checkpoint", "text_checkpoint", "backbone")} | {"type": "name"} | (keys or {})
    radio = entry.family == "radio"
    if not radio and text_checkpoint is not None:
        raise ConfigurationError(
            f"{key['text_checkpoint']} is set ({text_checkpoint}) but {key['type']} {entry.id} reads both towers from "
            f"one open_clip checkpoint: give that file as {key['checkpoint']} and remove {key['text_checkpoint']}"
        )
    if radio and backbone is not None and checkpoint is not None:
        raise ConfigurationError(
            f"{key['checkpoint']} is set ({checkpoint}) but {key['backbone']} ({backbone}) replaces the RADIO image "
            f"tower that file is for: remove {key['checkpoint']}, or remove {key['backbone']}"
        )
    clip = RegisteredModel(entry.id, entry.test_only, entry.weights)
    text = RegisteredModel(text_entry.id, text_entry.test_only, text_entry.source)
    names = (key["type"], key["pretrained"], key["checkpoint"])
    if radio:
        text_request = WeightsRequest(
            "text tower", text_entry.id, pretrained, text_checkpoint, key["type"], key["pretrained"],
            key["text_checkpoint"], "text", text,
        )  # fmt: skip
    else:
        text_request = WeightsRequest("text tower", entry.id, pretrained, checkpoint, *names, "text", clip)
    if backbone is not None:
        image_pretrained = pretrained if backbone_pretrained is None else backbone_pretrained
        image = WeightsRequest(
            "image tower", str(backbone), image_pretrained, None, key["backbone"], key["pretrained"],
            key["checkpoint"], "visual.backbone",
        )  # fmt: skip
    elif radio:
        vision = entry.vision_entry
        facts = RegisteredModel(entry.id, vision.test_only, vision.source)
        image = WeightsRequest("image tower", entry.id, pretrained, checkpoint, *names, "visual.backbone", facts)
    else:
        image = WeightsRequest("image tower", entry.id, pretrained, checkpoint, *names, "visual.backbone", clip)
    return [image, text_request]


def _weights_source(entry: ClipEntry, weights: Path | None, checkpoint: str | Path | None) -> str | None:
    """Where an open_clip checkpoint came from: the local file (resolved), the Hub source, or None (random)."""
    if weights is None:
        return None
    return str(Path(checkpoint).expanduser().resolve()) if checkpoint is not None else entry.weights


CLIP_TABLE_HEADER = ("id", "family", "dim", "text tower (adaptor)", "aliases", "weights")


def clip_model_rows(include_test: bool = False) -> list[tuple[str, ...]]:
    """One row per CLIP model (see :data:`CLIP_TABLE_HEADER`): id, family, embedding width, text tower(s),
    the first aliases and where the weights come from."""
    rows = []
    for entry in CLIP_MODELS.entries(include_test=include_test):
        towers = ", ".join(f"{text} ({a})" if a else text for a, text in entry.adaptor_texts.items())
        width = TEXT_TOWERS.resolve(entry.text_id(None)).embed_dim
        weights = entry.weights or entry.vision_entry.source or entry.weights_note or "random init (test model)"
        rows.append((entry.id, entry.family, str(width), towers, ", ".join(entry.aliases[:3]) or "-", weights))
    return rows


def default_logit_params(sigmoid: bool) -> tuple[float, float | None]:
    """Initial (log scale, bias): SigLIP (ln 10, -10) or CLIP (ln(1/0.07), None)."""
    return (SIGLIP_LOGIT_SCALE, SIGLIP_LOGIT_BIAS) if sigmoid else (CLIP_LOGIT_SCALE, None)


def _plain_clean(kind: str) -> str:
    return "lower" if kind == "clip_bpe" else "whitespace"


def _open_clip_weights(entry: ClipEntry, pretrained: bool, checkpoint: str | Path | None) -> Path | None:
    """The checkpoint both towers load from: the local file, the cached/downloaded Hub file, or None (random)."""
    if checkpoint is not None:
        return Path(checkpoint).expanduser()
    if not pretrained or entry.test_only:
        return None
    if entry.weights is None:
        raise WeightsError(
            f"{entry.id!r} has no downloadable weights ({entry.weights_note or 'not on the Hub'}); download the "
            "checkpoint yourself and pass it as a local file (checkpoint=<path>), or use pretrained=False"
        )
    return fetch_hub_weights(entry.weights, entry.id, OPEN_CLIP_WEIGHT_FILES)


def _register_all() -> None:
    _register_siglip2()
    _register_nv_clip()
    _register_dfn()
    _register_radio()
    _register_tests()


def _register_siglip2() -> None:
    for model_id, config in SIGLIP2_SO400M_TEXT.items():
        vision = resolve_entry(model_id)
        tao = tuple(a for a in vision.aliases if a.startswith("siglip2-so400m-patch"))
        CLIP_MODELS.register(
            ClipEntry(
                model_id,
                "open_clip",
                f"SigLIP2 so400m {vision.description.split('so400m ')[1].replace('image tower', '').strip()} "
                "image + text towers (WebLI)",
                "Apache-2.0",
                model_id,
                {None: f"{model_id}-text"},
                weights=f"hf-hub:timm/{config}",
                sigmoid=True,
                aliases=(*tao, f"google/{tao[0]}" if tao else config, config),
            )
        )


def _register_nv_clip() -> None:
    for size in ("l", "h"):
        for res in (224, 336):
            vision = resolve_entry(f"nv-clip-vit-{size}14-{res}")
            tao = f"ViT-{size.upper()}-14-SigLIP-CLIPA-{res}"
            CLIP_MODELS.register(
                ClipEntry(
                    vision.id,
                    "open_clip",
                    f"NV-CLIP SigLIP-CLIPA ViT-{size.upper()}/14 @ {res} image + text towers (NVIDIA TAO; NGC file)",
                    vision.license,
                    vision.id,
                    {None: f"nv-clip-{size}14-text"},
                    sigmoid=True,
                    aliases=(tao, tao.lower().replace("-", "_")),
                    weights_note="NGC: local file only",
                )
            )


def _register_dfn() -> None:
    vision = ModelEntry(
        id="dfn-clip-vit-h14-378-image",
        family="open_clip",
        arch={"model_name": "ViT-H-14-378-quickgelu"},
        description="DFN5B CLIP ViT-H/14-378 image tower",
        license="Apple AMLR (see the model card)",
        params_m=632.1,
        patch_size=14,
        preferred_resolution=378,
        max_resolution=378,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        summary_dim=1024,
        feature_dim=1280,
        source="hf-hub:apple/DFN5B-CLIP-ViT-H-14-378",
        tasks=("clip",),
    )
    CLIP_MODELS.register(
        ClipEntry(
            "dfn-clip-vit-h14-378",
            "open_clip",
            "DFN5B CLIP ViT-H/14-378 (Apple; the RADIO `clip` teacher)",
            vision.license,
            vision,
            {None: "dfn-clip-h14-378-text"},
            weights=vision.source,
            aliases=("ViT-H-14-378-quickgelu", "apple/DFN5B-CLIP-ViT-H-14-378"),
        )
    )


def _register_radio() -> None:
    for backbone in list_backbones(family="radio"):
        adaptors = [a for a in backbone.adaptors if a in RADIO_ADAPTOR_TEXT]
        if not adaptors:
            continue
        default = next(a for a in RADIO_ADAPTOR_PREFERENCE if a in adaptors)
        CLIP_MODELS.register(
            ClipEntry(
                backbone.id,
                "radio",
                f"RADIO-CLIP: {backbone.description.split(' (')[0]} + adaptor head ({', '.join(adaptors)}) + the "
                "teacher's text tower",
                backbone.license,
                backbone.id,
                {a: RADIO_ADAPTOR_TEXT[a] for a in adaptors},
                default_adaptor=default,
                sigmoid=default != "clip",
                aliases=backbone.aliases,
            )
        )


def _register_tests() -> None:
    test = dict(license="Apache-2.0 (random weights)", test_only=True)
    CLIP_MODELS.register(
        ClipEntry(
            "test-openclip-clip-tiny",
            "open_clip",
            "tiny random-init CLIP: open_clip ViT image tower (64 px, 32-d) + CLIP-style text tower",
            vision="test-openclip-tiny",
            adaptor_texts={None: "test-clip-text-tiny"},
            **test,
        )
    )
    CLIP_MODELS.register(
        ClipEntry(
            "test-nvclip-clip-tiny",
            "open_clip",
            "tiny random-init NV-CLIP-style (SigLIP-CLIPA) CLIP: average-pool open_clip image tower (64 px, 32-d) + "
            "SigLIP-style text tower",
            vision="test-nvclip-tiny",
            adaptor_texts={None: "test-siglip-text-tiny"},
            sigmoid=True,
            **test,
        )
    )
    CLIP_MODELS.register(
        ClipEntry(
            "test-siglip2-clip-tiny",
            "open_clip",
            "tiny random-init SigLIP2-style CLIP: timm MAP-head ViT (64 px, 64-d) + SigLIP-style text tower",
            vision="test-siglip-tiny",
            adaptor_texts={None: "test-siglip2-text-tiny"},
            sigmoid=True,
            **test,
        )
    )
    CLIP_MODELS.register(
        ClipEntry(
            "test-radio-clip-tiny",
            "radio",
            "tiny random-init RADIO-CLIP: test-radio-v2-tiny + its `siglip` adaptor (40-d) + SigLIP-style text tower",
            vision="test-radio-v2-tiny",
            adaptor_texts={"siglip": "test-radio-siglip-text-tiny"},
            default_adaptor="siglip",
            sigmoid=True,
            **test,
        )
    )
