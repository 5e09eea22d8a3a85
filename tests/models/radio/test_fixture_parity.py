"""Faithfulness: every reference fixture, in both published layouts, reproduces the reference outputs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import radio_fixtures

from vfmkit import load_backbone

TOLERANCE = 1e-5
CASES = [
    ("radio-tiny-v2", "", ["siglip"]),
    ("radio-tiny-v2", "checkpoint.pth.tar", ["siglip"]),
    ("radio-tiny-v3", "", []),
    ("radio-tiny-v3", "checkpoint.pth.tar", []),
    ("radio-tiny-v4", "", []),
    ("radio-tiny-v4", "checkpoint.pth.tar", []),
    ("radio-tiny-v2-training-form", "checkpoint.pth.tar", []),
    ("radio-tiny-v2-training-form", "checkpoint_ema.pth.tar", []),
]


def _resolutions(reference: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k.removeprefix("input_") for k in reference if k.startswith("input_"))


@pytest.mark.parametrize(("folder", "file", "adaptors"), CASES)
def test_outputs_match_reference(folder, file, adaptors):
    root = radio_fixtures() / folder
    model = load_backbone(root / file if file else root, adaptors=adaptors)
    reference = load_file(str(root / "reference_io.safetensors"))
    resolutions = _resolutions(reference)
    assert resolutions, "fixture has no inputs"
    for res in resolutions:
        with torch.inference_mode():
            out = model(reference[f"input_{res}"])
        torch.testing.assert_close(out.summary, reference[f"summary_{res}"], atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(out.features, reference[f"features_{res}"], atol=TOLERANCE, rtol=0)
        for name in adaptors:
            adaptor = out.adaptors[name]
            assert adaptor.summary.dtype == torch.float32
            torch.testing.assert_close(adaptor.summary, reference[f"{name}_summary_{res}"], atol=TOLERANCE, rtol=0)
            torch.testing.assert_close(adaptor.features, reference[f"{name}_features_{res}"], atol=TOLERANCE, rtol=0)


def test_both_layouts_load_identical_weights():
    root = radio_fixtures() / "radio-tiny-v3"
    hf = load_backbone(root).state_dict()
    hub = load_backbone(root / "checkpoint.pth.tar").state_dict()
    assert hf.keys() == hub.keys()
    for key in hf:
        torch.testing.assert_close(hf[key], hub[key], atol=0, rtol=0)


def test_index_facts_match_loaded_models():
    import json

    index = json.loads((radio_fixtures() / "index.json").read_text())
    for name, facts in index.items():
        adaptors = list(facts["adaptors"] or {})
        model = load_backbone(radio_fixtures() / name, adaptors=adaptors)
        assert model.summary_dim == facts["summary_dim"]
        assert model.embed_dim == facts["feature_dim"]
        assert model.num_prefix_tokens == facts["num_skip"]
        assert model.cfg.num_cls_tokens == facts["num_cls_tokens"]
        assert list(model.cfg.summary_idxs) == facts["summary_idxs"]
        # the reference counts timm's unused reg tokens (v3), which vfmkit reports as ignored instead of loading
        unused = 4 * model.embed_dim if "model.reg_token" in model.load_report.ignored else 0
        assert sum(p.numel() for p in model.parameters()) + unused == facts["n_params"]


def test_forward_intermediates_last_block_equals_features():
    model = load_backbone(radio_fixtures() / "radio-tiny-v2")
    images = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        out, maps = model.forward_intermediates(images, indices=[0, -1], output_fmt="NLC", return_final=True)
    assert len(maps) == 2
    torch.testing.assert_close(maps[-1], out.features)
    assert not torch.allclose(maps[0], maps[1])
