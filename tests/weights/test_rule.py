"""The weights rule (:mod:`vfmkit.weights.rule`): every source kind, every contradiction refused naming both keys,
what builders pass when they load nothing, ``load_backbone`` following the rule, and the recorded facts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
from tests.synthetic import save_tiny_radio_checkpoint

from vfmkit import load_backbone
from vfmkit.errors import ConfigurationError, ModelNotFoundError
from vfmkit.weights.fingerprint import weights_fingerprint
from vfmkit.weights.record import record_weights, records_as_json, records_from_json
from vfmkit.weights.rule import (
    ADAPTED_BACKBONE,
    CHECKPOINT_FILE,
    HUB_SOURCE,
    LOCAL_BACKBONE,
    PUBLISHED,
    RANDOM_INIT,
    TEST_VARIANT,
    RegisteredModel,
    WeightsRequest,
    decide_source,
    loader_arguments,
)

KEYS = {"model_key": "model.backbone", "pretrained_key": "model.pretrained", "checkpoint_key": "model.ckpt"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("weights")
    adapted = root / "adapted"
    adapted.mkdir()
    (adapted / "vfmkit_backbone.json").write_text("{}")
    (adapted / "model.safetensors").write_bytes(b"weights")
    (adapted / "notes.txt").write_text("not a weights file")
    return {
        "tiny": save_tiny_radio_checkpoint(root / "tiny.pth.tar", noise=0.5, seed=1),
        "adapted": adapted,
    }


def request(model, pretrained=True, checkpoint=None, **keys) -> WeightsRequest:
    return WeightsRequest("backbone", str(model), pretrained, checkpoint, **{**KEYS, **keys})


def test_every_source_kind(files) -> None:
    tiny = files["tiny"]
    cases = [
        (request("c-radio-v3-b"), PUBLISHED, "hf-hub:nvidia/C-RADIOv3-B", None),
        (request("c-radio-v3-b", False), RANDOM_INIT, "random init", None),
        (request("c-radio-v3-b", True, tiny), CHECKPOINT_FILE, str(tiny.resolve()), tiny.resolve()),
        (request("test-radio-v2-tiny", False), TEST_VARIANT, "test variant, seed 0", None),
        (request("test-radio-v2-tiny"), TEST_VARIANT, "test variant, seed 0", None),
        (request(tiny), LOCAL_BACKBONE, str(tiny.resolve()), tiny.resolve()),
        (request(files["adapted"]), ADAPTED_BACKBONE, str(files["adapted"].resolve()), files["adapted"].resolve()),
        (request("hf-hub:acme/radio-x"), HUB_SOURCE, "hf-hub:acme/radio-x", None),
        (request("timm:resnet18"), PUBLISHED, "hf-hub:timm/resnet18.a1_in1k", None),
        (request("timm:resnet18", True, tiny), CHECKPOINT_FILE, str(tiny.resolve()), tiny.resolve()),
        (request("timm:resnet18", False), RANDOM_INIT, "random init", None),
    ]
    for asked, kind, source, path in cases:
        decision = decide_source(asked)
        assert (decision.kind, decision.source, decision.path) == (kind, source, path), asked


def test_another_registry_supplies_its_facts() -> None:
    """CLIP models and text towers name entries of their own registries: the caller passes the facts."""
    published = RegisteredModel("some-clip", False, "hf-hub:org/clip")
    assert decide_source(request("some-clip", registered=published)).source == "hf-hub:org/clip"
    test = RegisteredModel("tiny-clip", True, None)
    assert decide_source(request("tiny-clip", registered=test)).kind == TEST_VARIANT


@pytest.mark.parametrize(
    ("model", "pretrained", "with_file", "named"),
    [
        ("c-radio-v3-b", False, True, ("model.ckpt is set", "model.pretrained is false")),
        ("timm:resnet18", False, True, ("model.ckpt is set", "model.pretrained is false")),
        ("test-radio-v2-tiny", True, True, ("model.ckpt is set", "model.backbone test-radio-v2-tiny is a test")),
        ("test-radio-v2-tiny", False, True, ("model.ckpt is set", "model.pretrained is false")),
        ("<tiny>", False, False, ("model.backbone is a local checkpoint", "model.pretrained is false")),
        ("<tiny>", True, True, ("model.ckpt is set", "model.backbone is a local checkpoint")),
        ("<adapted>", True, True, ("model.ckpt is set", "model.backbone is an adapted backbone")),
        ("hf-hub:acme/radio-x", False, False, ("model.backbone is a hub source", "model.pretrained is false")),
    ],
)
def test_contradictions_are_refused_naming_both_keys(files, model, pretrained, with_file, named) -> None:
    model = {"<tiny>": files["tiny"], "<adapted>": files["adapted"]}.get(model, model)
    with pytest.raises(ConfigurationError) as info:
        decide_source(request(model, pretrained, files["tiny"] if with_file else None))
    message = str(info.value)
    assert "\n" not in message and all(fragment in message for fragment in named), message


def test_a_missing_or_empty_checkpoint_or_an_unknown_name_names_the_key(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"model\.ckpt: no such file or folder: .*gone\.pth"):
        decide_source(request("c-radio-v3-b", True, tmp_path / "gone.pth"))
    with pytest.raises(ModelNotFoundError, match=r"model\.ckpt is empty"):
        decide_source(request("c-radio-v3-b", True, " "))
    with pytest.raises(ModelNotFoundError, match=r"model\.backbone: unknown model 'c-radio-v3-bb'.*did you mean"):
        decide_source(request("c-radio-v3-bb"))
    with pytest.raises(ModelNotFoundError, match=r"^unknown model 'c-radio-v3-bb'"):  # load_backbone's own wording
        decide_source(WeightsRequest("backbone", "c-radio-v3-bb", True))


def test_builders_that_load_nothing_pass_no_file(files) -> None:
    tiny = files["tiny"]
    assert loader_arguments("c-radio-v3-b", True, tiny, load=True) == (True, tiny)
    assert loader_arguments("c-radio-v3-b", True, tiny, load=False) == (False, None)
    assert loader_arguments("timm:resnet18", True, tiny, load=False) == (False, None)
    assert loader_arguments(tiny, True, None, load=False) == (True, None)  # the file is the architecture
    assert loader_arguments("hf-hub:acme/radio-x", True, None, load=False) == (True, None)


def test_load_backbone_follows_the_rule(files) -> None:
    """N1: ``pretrained=False`` with a file used to build random weights without opening the file."""
    tiny = files["tiny"]
    with pytest.raises(ConfigurationError, match=r"checkpoint is set .* but pretrained is false"):
        load_backbone("c-radio-v2-b", pretrained=False, checkpoint=tiny)
    with pytest.raises(ConfigurationError, match=r"name_or_path test-radio-v2-tiny is a test variant"):
        load_backbone("test-radio-v2-tiny", checkpoint=tiny)
    with pytest.raises(ConfigurationError, match=r"name_or_path is a local checkpoint .* but pretrained is false"):
        load_backbone(tiny, pretrained=False)
    loaded = load_backbone("c-radio-v2-b", checkpoint=tiny)
    assert loaded.weights_source == str(tiny.resolve())
    assert weights_fingerprint(loaded) == weights_fingerprint(load_backbone(tiny))
    assert weights_fingerprint(loaded) != weights_fingerprint(load_backbone("test-radio-v2-tiny"))
    assert load_backbone("test-radio-v2-tiny").weights_source is None


def test_records_fingerprint_the_module_and_hash_the_files_read(files) -> None:
    tiny = files["tiny"]
    module = load_backbone(tiny)
    record = record_weights(decide_source(request(tiny)), module)
    assert record.fingerprint == weights_fingerprint(module)
    assert record.files == ((str(tiny.resolve()), hashlib.sha256(tiny.read_bytes()).hexdigest()),)
    folder = record_weights(decide_source(request(files["adapted"])), module)
    assert [path for path, _ in folder.files] == [str(files["adapted"].resolve() / "model.safetensors")]
    random = record_weights(decide_source(replace(request("c-radio-v3-b", False), role="teacher:t")), module)
    assert (random.role, random.kind, random.source, random.files) == ("teacher:t", RANDOM_INIT, "random init", ())
    data = json.loads(json.dumps(records_as_json([record, random], tiny)))
    assert records_from_json(data) == ([record, random], str(tiny))
    assert str(tiny.resolve()) in record.card_line() and record.fingerprint in record.card_line()
