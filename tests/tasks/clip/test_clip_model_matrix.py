"""Every CLIP registry id x every image projection: the clip task's model builds on the meta device (without weights,
as training's dry build does), or refuses with a VfmError naming the spec key to change.

The clip task builds CLIP registry ids (``model.type``), not backbone ids, so it has its own matrix beside
``tests/tasks/test_model_matrix.py``. Hugging Face tokenizers need their ``tokenizer.json`` (not available offline
here; tested with local files in ``tests/models/text``): a stand-in of the same context length takes their place.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

import vfmkit.models.clip_zoo as clip_zoo
import vfmkit.models.factory as factory
from vfmkit import Task
from vfmkit.errors import VfmError
from vfmkit.models.clip_zoo import CLIP_MODELS
from vfmkit.models.text.tokenizers import ClipBpeTokenizer
from vfmkit.models.text.zoo import tokenizer_spec
from vfmkit.tasks import get_task
from vfmkit.tasks.clip.model import model_facts

# One published model per build path runs by default (SigLIP2: timm image tower; NV-CLIP: open_clip image tower;
# RADIO-CLIP), with every tiny test model; the others differ in widths and text configs only: marked slow.
DEFAULT = {"siglip2-so400m-p16-256", "nv-clip-vit-l14-224", "c-radio-v2-b"}
IDS = [
    entry.id if entry.test_only or entry.id in DEFAULT else pytest.param(entry.id, marks=pytest.mark.slow)
    for entry in CLIP_MODELS.entries(include_test=True)
]
CASES = [("native", "siglip"), ("linear", "clip")]


@pytest.fixture
def offline_meta_builds(monkeypatch):
    """Stand-in tokenizers for Hugging Face ones, and each image backbone built once (then copied)."""
    real_tokenizer, real_build, cache = clip_zoo.load_text_tokenizer, factory.build_from_entry, {}

    def tokenizer(entry, folder=None):
        spec = tokenizer_spec(entry)
        if spec.kind == "clip_bpe":
            return real_tokenizer(entry, folder)
        return ClipBpeTokenizer(spec.context_length, spec.clean)

    def build(entry, pretrained=True, adaptors=(), **options):
        key = (entry.id, tuple(adaptors), json.dumps(entry.arch.get("adaptors"), sort_keys=True))
        if key not in cache:
            cache[key] = real_build(entry, pretrained=pretrained, adaptors=adaptors, **options)
        return copy.deepcopy(cache[key])

    monkeypatch.setattr(clip_zoo, "load_text_tokenizer", tokenizer)
    monkeypatch.setattr(clip_zoo, "build_from_entry", build)
    monkeypatch.setattr(factory, "build_from_entry", build)


@pytest.mark.parametrize("model_id", IDS)
def test_every_clip_model_builds_or_names_the_key_to_change(model_id: str, offline_meta_builds) -> None:
    entry = CLIP_MODELS.resolve(model_id)
    for projection, loss in CASES:
        overrides = [f"model.type={model_id}", f"model.projection={projection}", f"train.loss_type={loss}"]
        spec = Task("clip", None, overrides).spec
        taskdef = get_task("clip").select(spec)
        try:
            with torch.device("meta"):
                model = taskdef.build_model(spec, {}, pretrained=False)
        except VfmError as err:
            named = set(re.findall(r"\bmodel\.[a-z_]+", str(err)))
            assert named & {"model.type", "model.projection"}, f"{model_id}: the error names no key: {err}"
            pytest.fail(f"{model_id} with model.projection={projection} does not build: {err}")
        assert model.embed_dim == model.text.output_dim == model.visual.output_dim
        assert model.logit_bias is not None and model.logit_bias.requires_grad == (loss == "siglip")
        assert model.tokenizer.context_length == model.text.context_length
        if entry.family == "radio" and projection == "native":
            assert model.visual.adaptor_name == entry.default_adaptor
        assert (model.visual.projection is None) == (projection == "native")


def test_a_backbone_without_the_adaptor_head_names_the_keys(tmp_path) -> None:
    from tests.synthetic import save_tiny_radio_checkpoint

    source = save_tiny_radio_checkpoint(tmp_path / "radio.pth.tar")  # no adaptor heads
    spec = Task("clip", None, ["model.type=test-radio-clip-tiny", f"model.backbone={source}"]).spec
    with pytest.raises(VfmError, match=r"model.backbone .*model.projection=linear"):
        get_task("clip").select(spec).build_model(spec, {}, pretrained=True)


def test_radio_adaptor_heads_rebuild_from_the_saved_config_without_weights(offline_meta_builds) -> None:
    """A trained RADIO-CLIP checkpoint keeps its adaptor head's architecture (published heads take their sizes from
    the weights), so reloading it builds the head without downloading anything; without it the error says why."""
    taskdef = get_task("clip")
    tiny = taskdef.build_model(Task("clip", None, ["model.type=test-radio-clip-tiny"]).spec, {}, pretrained=True)
    facts = model_facts(tiny)
    facts["adaptor"]["summary_mlp"] = ("v2", 64, 16, 40, 1)  # another hidden width than the registry's
    spec = Task("clip", None, ["model.type=c-radio-v2-b", "model.adaptor_name=siglip"]).spec
    with pytest.raises(VfmError, match=r"model.pretrained=false: .*model.projection=linear"):
        taskdef.build_model(spec, {}, pretrained=False)
    facts["adaptor"]["summary_mlp"] = ("v2", 768, 32, 1152, 1)
    with torch.device("meta"):
        model = taskdef.build_model(spec, facts, pretrained=False)
    head = model.visual.backbone.adaptors["siglip"]
    assert head.cfg.summary_mlp[2] == 32 and model.embed_dim == 1152
