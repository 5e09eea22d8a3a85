"""RADIO model behaviour: input rules, CPE in eval and training, ViTDet windows, training hooks."""

from __future__ import annotations

import pytest
import torch

from vfmkit import load_backbone
from vfmkit.models.backbones.radio.patch_generator import PatchGenerator


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return load_backbone("test-radio-v2-tiny", adaptors=["siglip"])


def test_shapes_and_adaptor_outputs(tiny):
    out = tiny(torch.rand(2, 3, 48, 80))
    assert out.grid == (3, 5)
    assert out.summary.shape == (2, 3 * 64)
    assert out.features.shape == (2, 15, 64)
    assert out.spatial().shape == (2, 64, 3, 5)
    siglip = out.adaptors["siglip"]
    assert siglip.summary.shape == (2, 40) and siglip.features.shape == (2, 15, 24)
    assert siglip.spatial().shape == (2, 24, 3, 5)
    summary, features = out
    assert summary is out.summary and features is out.features


def test_summary_is_the_selected_cls_tokens(tiny):
    images = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        tokens, _ = tiny.model.forward_tokens(tiny.input_conditioner(images))
        out = tiny(images)
    torch.testing.assert_close(out.summary, tokens[:, [0, 1, 2]].flatten(1))
    torch.testing.assert_close(out.features, tokens[:, 8:])


def test_input_not_multiple_of_patch_is_refused(tiny):
    with pytest.raises(ValueError, match=r"not a multiple of 16; nearest supported resolution: \(64, 96\)"):
        tiny(torch.rand(1, 3, 70, 90))
    with pytest.raises(ValueError, match="expected float RGB images"):
        tiny(torch.rand(3, 64, 64))


def _generator(max_size=128, patch=16, dim=8):
    torch.manual_seed(0)
    return PatchGenerator(patch, dim, max_size, num_prefix_tokens=2).eval()


def test_eval_position_grid_is_square_resize_then_top_left_crop():
    gen = _generator()
    wide = gen.position_embedding((3, 5), batch=1).reshape(3, 5, -1)
    square = gen.position_embedding((5, 5), batch=1).reshape(5, 5, -1)
    torch.testing.assert_close(wide, square[:3, :5])
    full = gen.position_embedding((8, 8), batch=1)
    assert full is gen.pos_embed


def test_eval_position_cache_follows_weight_updates():
    gen = _generator()
    with torch.no_grad():
        first = gen.position_embedding((4, 4), batch=1)
        assert gen.position_embedding((4, 4), batch=1) is first  # cached
        gen.pos_embed.add_(1.0)
        second = gen.position_embedding((4, 4), batch=1)
    torch.testing.assert_close(second, first + 1.0)
    assert gen.position_embedding((4, 4), batch=1).requires_grad  # never cached while the grid trains


def test_eval_position_is_differentiable_when_training_the_grid():
    gen = _generator()
    gen.position_embedding((4, 4), batch=1).sum().backward()
    assert gen.pos_embed.grad is not None and gen.pos_embed.grad.abs().sum() > 0


def test_training_positions_are_random_crops_with_sample_dropout():
    gen = _generator().train()
    gen.pos_dropout = 0.0
    torch.manual_seed(1)
    pos = gen.position_embedding((4, 6), batch=3)
    assert pos.shape == (3, 24, 8)
    assert not torch.allclose(pos[0], pos[1])
    gen.pos_dropout = 1.0
    assert torch.count_nonzero(gen.position_embedding((4, 6), batch=3)) == 0


def test_training_step_reaches_every_parameter(tiny):
    tiny.train()
    out = tiny(torch.rand(2, 3, 32, 48))
    siglip = out.adaptors["siglip"]
    loss = out.summary.pow(2).mean() + siglip.summary.pow(2).mean() + siglip.features.pow(2).mean()
    loss.backward()
    no_grad = [n for n, p in tiny.named_parameters() if p.grad is None]
    assert not no_grad


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = load_backbone("test-radio-v3-tiny").train()
    model.model.patch_generator.pos_dropout = 0.0
    images = torch.rand(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(3)
        model(images).features.sum().backward()
        grads.append(model.model.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_no_weight_decay_names_real_parameters(tiny):
    names = dict(tiny.named_parameters())
    assert tiny.no_weight_decay() <= names.keys()


def test_vitdet_windows_isolate_patches_until_a_global_block():
    torch.manual_seed(0)
    model = load_backbone("test-radio-v4-tiny", vitdet_window_size=2)
    model.cfg.vitdet_num_global = 1  # depth 3 -> blocks 0, 1 windowed, block 2 global
    assert model.model.windowed_blocks() == [True, True, False]
    images = torch.rand(1, 3, 64, 64)  # 4x4 tokens -> four 2x2 windows
    changed = images.clone()
    changed[:, :, :32, :32] = torch.rand(1, 3, 32, 32)  # only the top-left window
    with torch.inference_mode():
        before = model.forward_intermediates(images, indices=[1, 2])
        after = model.forward_intermediates(changed, indices=[1, 2])
    windowed_delta = (before[0] - after[0]).abs().amax(dim=1)[0]
    assert windowed_delta[:2, :2].min() > 0
    assert windowed_delta[2:, :].max() == 0 and windowed_delta[:, 2:].max() == 0
    assert (before[1] - after[1]).abs().amax(dim=1)[0][3, 3] > 0  # the global block mixes windows


def test_vitdet_needs_grid_divisible_by_window():
    model = load_backbone("test-radio-v4-tiny", vitdet_window_size=2)
    assert model.preprocessing.resolution_step == 32
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.rand(1, 3, 48, 64))


def test_vitdet_refused_where_the_version_does_not_support_it():
    from vfmkit.errors import WeightsError

    with pytest.raises(WeightsError, match="ViTDet"):
        load_backbone("test-radio-v3-tiny", vitdet_window_size=2)


def test_model_built_under_inference_mode_runs():
    with torch.inference_mode():
        model = load_backbone("test-radio-v2-tiny")
        first = model(torch.rand(1, 3, 32, 32))
        second = model(torch.rand(1, 3, 32, 32))
    assert first.features.shape == second.features.shape == (1, 4, 64)
