"""The text-tower registry: CLIP text encoders built by open_clip, their weights and their tokenizers.

Each entry names an open_clip model config (or carries a config dict), the full CLIP checkpoint its text weights are
read from (``hf-hub:<repo>``, offline-first through the Hugging Face cache; ``HF_HUB_OFFLINE`` honoured), and its
tokenizer. Text towers of RADIO-CLIP are the RADIO teachers' towers: DFN CLIP-H/14-378, SigLIP SO400M/14-384 and
SigLIP2-g/16-384 (open_clip's ``ViT-gopt-16-SigLIP2-384``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from vfmkit.errors import ModelNotFoundError, WeightsError
from vfmkit.models.backbones.open_clip_family import OPEN_CLIP_WEIGHT_FILES
from vfmkit.models.backbones.timm_family import fetch_hub_weights
from vfmkit.models.namespaces import Namespace
from vfmkit.models.text.tokenizers import ClipBpeTokenizer, HfTokenizer, TextTokenizer
from vfmkit.models.text.towers import TextTower, build_text_tower, load_text_weights
from vfmkit.weights.sources import fetch_hub_file, parse_hub


@dataclass(frozen=True)
class TokenizerSpec:
    """How to build a tower's tokenizer.

    Attributes:
        kind: ``clip_bpe`` (open_clip's shipped BPE) or ``hf`` (a Hugging Face ``tokenizer.json``).
        context_length: ids per text.
        clean: ``lower``, ``whitespace`` or ``canonicalize``.
        repo: ``hf``: the Hub repo holding ``tokenizer.json``.
        strip_sep_token: ``hf``: replace the separator id by 0 (open_clip's CLIPA configs).
    """

    kind: str
    context_length: int
    clean: str
    repo: str | None = None
    strip_sep_token: bool = False


@dataclass(frozen=True)
class TextEntry:
    """One text tower.

    Attributes:
        id: canonical id.
        description: one line.
        license: license of the weights.
        model: an open_clip model config name, or a config dict (``embed_dim``, ``text_cfg``, ``quick_gelu``).
        source: ``hf-hub:<repo>`` of the full CLIP checkpoint, None for weights published elsewhere (NGC) or tests.
        tokenizer: overrides the tokenizer the config implies (test towers).
        aliases: other names.
        test_only: a tiny random-init tower for tests.
        weights_note: where to get the weights when ``source`` is None.
    """

    id: str
    description: str
    license: str
    model: str | dict[str, Any]
    source: str | None = None
    tokenizer: TokenizerSpec | None = None
    aliases: tuple[str, ...] = ()
    test_only: bool = False
    weights_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        return int(text_model_config(self)["embed_dim"])


def _load_entries() -> None:  # entries are registered at the bottom of this module
    return None


TEXT_TOWERS: Namespace[TextEntry] = Namespace("text tower", _load_entries, "`vfm models --all`")


def text_model_config(entry: TextEntry) -> dict[str, Any]:
    """The open_clip model config of an entry.

    Raises:
        ModelNotFoundError: open_clip has no config of that name.
    """
    if isinstance(entry.model, dict):
        return entry.model
    config = open_clip.get_model_config(entry.model)
    if config is None:
        raise ModelNotFoundError(f"{entry.id}: open_clip {open_clip.__version__} has no model config {entry.model!r}")
    return config


def tokenizer_spec(entry: TextEntry) -> TokenizerSpec:
    """The entry's tokenizer: its override, else what the open_clip config implies (HF name, cleaning, length)."""
    if entry.tokenizer is not None:
        return entry.tokenizer
    text_cfg = text_model_config(entry)["text_cfg"]
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    context = int(text_cfg.get("context_length", 77))
    if text_cfg.get("hf_tokenizer_name"):
        return TokenizerSpec(
            "hf",
            context,
            kwargs.get("clean", "whitespace"),
            text_cfg["hf_tokenizer_name"],
            kwargs.get("strip_sep_token", False),
        )
    return TokenizerSpec("clip_bpe", context, kwargs.get("clean", "lower"))


def load_text_tokenizer(name_or_entry: str | TextEntry, folder: str | Path | None = None) -> TextTokenizer:
    """The tokenizer of a text tower.

    Args:
        name_or_entry: a text registry id/alias or entry.
        folder: for Hugging Face tokenizers, a local folder with ``tokenizer.json`` used instead of the Hub cache.

    Raises:
        WeightsError: the tokenizer files are neither in ``folder`` nor in the Hugging Face cache, and cannot be
            downloaded (offline).
    """
    entry = TEXT_TOWERS.resolve(name_or_entry) if isinstance(name_or_entry, str) else name_or_entry
    spec = tokenizer_spec(entry)
    if spec.kind == "clip_bpe":
        return ClipBpeTokenizer(spec.context_length, spec.clean)
    source = str(folder) if folder is not None else f"hf-hub:{spec.repo}"
    if folder is None:
        folder = _fetch_tokenizer_folder(spec.repo)
    return HfTokenizer(folder, spec.context_length, spec.clean, spec.strip_sep_token, source)


def _fetch_tokenizer_folder(repo: str) -> Path:
    """The cache folder of a Hub repo's ``tokenizer.json`` (its config files are fetched beside it when present)."""
    ref = parse_hub(f"hf-hub:{repo}")
    path = fetch_hub_file(ref, "tokenizer.json")
    for optional in ("tokenizer_config.json", "special_tokens_map.json"):
        with contextlib.suppress(WeightsError):
            fetch_hub_file(ref, optional)
    return path.parent


def build_text_entry(
    entry: TextEntry, pretrained: bool = True, checkpoint: str | Path | None = None
) -> tuple[TextTower, dict[str, float]]:
    """Build a text tower and load its weights.

    Args:
        entry: the registry entry.
        pretrained: load the published text weights (test towers are a seeded random init unless ``checkpoint``).
        checkpoint: a local full CLIP checkpoint used instead of the published source.

    Returns:
        The tower (eval mode, float32, CPU) and the checkpoint's ``logit_scale`` / ``logit_bias`` when it has them.

    Raises:
        WeightsError: the weights are not available offline or do not fit.
    """
    config = text_model_config(entry)
    if entry.test_only and checkpoint is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_text_tower(config, entry.id).eval(), {}
    tower = build_text_tower(config, entry.id)
    weights = Path(checkpoint).expanduser() if checkpoint is not None else None
    if weights is None and pretrained:
        if entry.source is None:
            raise WeightsError(
                f"text tower {entry.id!r} has no downloadable weights ({entry.weights_note or 'not on the Hub'}); "
                "pass the CLIP checkpoint as a local file, or use pretrained=False for a random init"
            )
        weights = fetch_hub_weights(entry.source, entry.id, OPEN_CLIP_WEIGHT_FILES)
    scalars: dict[str, float] = {}
    if weights is not None:
        _, scalars = load_text_weights(tower, weights, str(checkpoint or entry.source))
    return tower.eval(), scalars


def load_text_tower(
    name: str, pretrained: bool = True, checkpoint: str | Path | None = None
) -> tuple[TextTower, TextTokenizer]:
    """A registered text tower with its tokenizer (see :func:`build_text_entry`)."""
    entry = TEXT_TOWERS.resolve(name)
    tower, scalars = build_text_entry(entry, pretrained, checkpoint)
    tower.pretrained_logits = scalars
    return tower, load_text_tokenizer(entry)


def _register() -> None:
    register = TEXT_TOWERS.register
    register(
        TextEntry(
            "dfn-clip-h14-378-text",
            "DFN5B CLIP ViT-H/14-378 text tower (RADIO teacher `clip`; 1024-d)",
            "Apple AMLR (see the model card)",
            "ViT-H-14-378-quickgelu",
            "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378",
            aliases=("ViT-H-14-378-quickgelu", "dfn5b-clip-h14-378"),
        )
    )
    register(
        TextEntry(
            "siglip-so400m-14-384-text",
            "SigLIP SO400M/14-384 text tower (RADIOv2.5 teacher `siglip`; 1152-d)",
            "Apache-2.0",
            "ViT-SO400M-14-SigLIP-384",
            "hf-hub:timm/ViT-SO400M-14-SigLIP-384",
            aliases=("ViT-SO400M-14-SigLIP-384",),
        )
    )
    register(
        TextEntry(
            "siglip2-g-384-text",
            "SigLIP2 giant-opt/16-384 text tower (C-RADIOv3-H/g and v4 teacher `siglip2-g`; 1536-d)",
            "Apache-2.0",
            "ViT-gopt-16-SigLIP2-384",
            "hf-hub:timm/ViT-gopt-16-SigLIP2-384",
            aliases=("ViT-gopt-16-SigLIP2-384", "siglip2-g-384", "google/siglip2-giant-opt-patch16-384"),
        )
    )
    for model_id, config in SIGLIP2_SO400M_TEXT.items():
        register(
            TextEntry(
                f"{model_id}-text",
                f"SigLIP2 so400m text tower of open_clip {config} (1152-d)",
                "Apache-2.0",
                config,
                f"hf-hub:timm/{config}",
                aliases=(f"{config}-text",),
            )
        )
    for size, config in (("l", "ViT-L-14-CLIPA"), ("h", "ViT-H-14-CLIPA")):
        register(
            TextEntry(
                f"nv-clip-{size}14-text",
                f"NV-CLIP SigLIP-CLIPA ViT-{size.upper()}/14 text tower (open_clip {config} text config, BERT "
                "tokenizer); weights from the NGC checkpoint",
                "NVIDIA (see the NGC model card)",
                config,
                weights_note="NGC: local file only",
            )
        )
    _register_test_towers()


SIGLIP2_SO400M_TEXT = {
    "siglip2-so400m-p16-256": "ViT-SO400M-16-SigLIP2-256",
    "siglip2-so400m-p16-384": "ViT-SO400M-16-SigLIP2-384",
    "siglip2-so400m-p16-512": "ViT-SO400M-16-SigLIP2-512",
    "siglip2-so400m-p14-224": "ViT-SO400M-14-SigLIP2",
    "siglip2-so400m-p14-384": "ViT-SO400M-14-SigLIP2-378",
}
"""SigLIP2 so400m CLIP ids -> the open_clip configs whose checkpoints carry their text towers."""

_TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
_TINY_SIGLIP_TEXT = {
    **_TINY_TEXT,
    "no_causal_mask": True,
    "proj_bias": True,
    "pool_type": "last",
    "norm_kwargs": {"eps": 1e-6},
    "act_kwargs": {"approximate": "tanh"},
}


def _register_test_towers() -> None:
    def tiny(model_id: str, what: str, embed: int, text_cfg: dict[str, Any], clean: str) -> TextEntry:
        return TextEntry(
            model_id,
            f"tiny random-init {what} text tower (2 layers, width 32, context 16, {embed}-d) for tests",
            "Apache-2.0 (random weights)",
            {"embed_dim": embed, "text_cfg": text_cfg},
            tokenizer=TokenizerSpec("clip_bpe", 16, clean),
            test_only=True,
        )

    TEXT_TOWERS.register(
        tiny("test-clip-text-tiny", "CLIP-style (causal mask, argmax pooling)", 32, _TINY_TEXT, "lower")
    )
    siglip = "SigLIP-style (bidirectional, last-token pooling, canonicalised text)"
    # SigLIP-style towers differ only in their output width, which must match the tiny image towers they pair with
    for model_id, width in (
        ("test-siglip-text-tiny", 32),
        ("test-siglip2-text-tiny", 64),
        ("test-radio-siglip-text-tiny", 40),
    ):
        TEXT_TOWERS.register(tiny(model_id, siglip, width, _TINY_SIGLIP_TEXT, "canonicalize"))


_register()
