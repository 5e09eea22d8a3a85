"""Windowed attention for timm ViTs (DINOv2 with registers, CLIP, SigLIP) and open_clip towers: windows covering the
whole grid give exactly global attention; real windows give what a reference written here gives (every block run
on the full sequence of window copies, windowed blocks with a block-diagonal attention mask)."""

from __future__ import annotations

import pytest
import torch

from vfmkit import load_backbone
from vfmkit.errors import ConfigurationError
from vfmkit.models.backbones.windowed import global_block_flags

FAMILIES = ["test-dinov2-tiny", "test-clip-tiny", "test-siglip-tiny", "test-openclip-tiny"]


def _blocks(backbone):
    return backbone.model.blocks if hasattr(backbone, "model") else backbone.tower.transformer.resblocks


def test_global_blocks_follow_the_vitdet_rule():
    assert [i for i, g in enumerate(global_block_flags(12)) if g] == [2, 5, 8, 11]
    assert [i for i, g in enumerate(global_block_flags(3, 4)) if g] == [0, 1, 2]
    assert [i for i, g in enumerate(global_block_flags(24, 4)) if g] == [5, 11, 17, 23]


@pytest.mark.parametrize("name", FAMILIES)
def test_one_window_over_the_whole_grid_is_global_attention(name):
    torch.manual_seed(0)
    plain = load_backbone(name)
    windowed = load_backbone(name, vitdet_window_size=6)
    images = torch.rand(2, 3, 48, 48) if plain.patch_size == 8 else torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected, got = plain(images), windowed(images)
        expected_maps = plain.forward_intermediates(images, [0, -1])
        got_maps = windowed.forward_intermediates(images, [0, -1])
    assert got.grid == expected.grid == (6, 6)
    torch.testing.assert_close(got.features, expected.features, rtol=0, atol=0)
    torch.testing.assert_close(got.summary, expected.summary, rtol=0, atol=0)
    for a, b in zip(got_maps, expected_maps, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _strong(backbone):
    """The backbone with LayerScale gammas set to 1 (DINOv2's 1e-5 init makes every block almost an identity)."""
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if name.endswith(".gamma"):
                param.fill_(1.0)
    return backbone


def _reference(backbone, images: torch.Tensor, window: int):
    """Windowed attention written out: the prefix copied into every window, the window sequences concatenated into
    one sequence; every block runs on that sequence, a windowed block with an additive mask that keeps each window
    to itself. Output: patches back in raster order, prefix copies averaged, the model's own final norm / pooling."""
    tokens, (h, w) = backbone.embed_tokens(images)
    prefix_count = backbone.num_prefix_tokens
    prefix, patches = tokens[:, :prefix_count], tokens[:, prefix_count:]
    grid = patches.reshape(len(images), h, w, -1)
    cells = [(r, c) for r in range(0, h, window) for c in range(0, w, window)]
    pieces = [torch.cat([prefix, grid[:, r : r + window, c : c + window].flatten(1, 2)], dim=1) for r, c in cells]
    sequence, length = torch.cat(pieces, dim=1), prefix_count + window * window
    owner = torch.arange(sequence.shape[1]) // length
    mask = torch.zeros(sequence.shape[1], sequence.shape[1])
    mask[owner[:, None] != owner[None, :]] = float("-inf")
    for block, is_global in zip(_blocks(backbone), backbone.global_flags(), strict=True):
        sequence = block(sequence) if is_global else block(sequence, attn_mask=mask)
    pieces = sequence.split(length, dim=1)
    out = torch.zeros_like(grid)
    for (r, c), piece in zip(cells, pieces, strict=True):
        out[:, r : r + window, c : c + window] = piece[:, prefix_count:].reshape(len(images), window, window, -1)
    mean_prefix = torch.stack([piece[:, :prefix_count] for piece in pieces]).mean(0)
    return backbone.finish_tokens(torch.cat([mean_prefix, out.flatten(1, 2)], dim=1), (h, w))


@pytest.mark.parametrize("name", FAMILIES)
def test_real_windows_match_a_reference_windowed_attention(name):
    torch.manual_seed(0)
    backbone = _strong(load_backbone(name, vitdet_window_size=2))
    backbone.set_window_attention(2, num_global=1)  # the tiny models have 2-3 blocks: only the last is global
    patch = backbone.patch_size
    images = torch.rand(2, 3, 4 * patch, 6 * patch)  # a 4 x 6 grid: 2 x 3 windows of 2 x 2 patches
    assert backbone.preprocessing.resolution_step == 2 * patch
    flags = backbone.global_flags()
    assert flags[-1] and not any(flags[:-1])
    plain = _strong(load_backbone(name))
    with torch.no_grad():
        got = backbone(images)
        expected = _reference(backbone, images, 2)
        global_out = plain(images)
    torch.testing.assert_close(got.features, expected.features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.summary, expected.summary, rtol=1e-5, atol=1e-5)
    assert (got.features - global_out.features).abs().max() > 1e-3  # the windows do change the result


def test_windowed_backbones_refuse_the_plain_block_sequence_and_misaligned_inputs():
    backbone = load_backbone("test-dinov2-tiny", vitdet_window_size=2)
    with pytest.raises(ValueError, match="runs the blocks on windows"):
        backbone.token_blocks()
    with pytest.raises(ValueError, match="not a multiple of 16"):
        backbone(torch.rand(1, 3, 24, 32))


def test_simple_pyramid_runs_on_a_windowed_dinov2():
    from vfmkit.models.necks import build_neck

    neck = build_neck("simple_pyramid", load_backbone("test-dinov2-tiny", vitdet_window_size=2), out_channels=16)
    with torch.no_grad():
        out = neck(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in out.features] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_windows_on_a_model_without_plain_blocks_name_the_option(monkeypatch):
    import vfmkit.models.backbones.timm_family as timm_family

    monkeypatch.setattr(timm_family.TimmBackbone, "_has_plain_blocks", lambda self: False)
    monkeypatch.setattr(
        timm_family.TimmBackbone, "_require_plain_vit", lambda self: (_ for _ in ()).throw(ValueError("not plain"))
    )
    with pytest.raises(ConfigurationError, match="vitdet_window_size is not available"):
        load_backbone("test-dinov2-tiny", vitdet_window_size=2)


@pytest.mark.parametrize("task", ["segment", "universal"])
def test_segment_and_universal_build_windowed_backbones(task):
    from vfmkit import Task
    from vfmkit.tasks.segment.model import build_segmenter
    from vfmkit.tasks.universal.model import build_universal_model

    data = {
        "segment": ["dataset.root=none", "dataset.palette=[{name: a, id: 0}, {name: b, id: 1}]"],
        "universal": ["dataset.train.images=none", "dataset.train.annotations=none.json"],
    }[task]
    overrides = [*data, "model.backbone=test-dinov2-tiny", "model.neck=simple_pyramid", "model.vitdet_window_size=2"]
    spec = Task(task, None, overrides).spec
    if task == "segment":
        model = build_segmenter(spec, {"classes": ["a", "b"]}, pretrained=False)
    else:
        model = build_universal_model(spec.model, 2, pretrained=False)
    backbone = next(m for m in model.modules() if hasattr(m, "window_size") and hasattr(m, "token_pass"))
    assert backbone.window_size == 2 and backbone.preprocessing.resolution_step == 16


@pytest.mark.parametrize("name", FAMILIES)
def test_one_pass_intermediates_equal_the_separate_calls(name):
    """``forward_intermediates(return_final=True)`` (what the necks call) gives what ``forward`` and the library's own
    intermediates give."""
    backbone = load_backbone(name)
    images = torch.rand(1, 3, 32, 48) if backbone.patch_size == 8 else torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        final, maps = backbone.forward_intermediates(images, [0, -1], return_final=True)
        expected_final, expected_maps = backbone(images), backbone.forward_intermediates(images, [0, -1])
    torch.testing.assert_close(final.features, expected_final.features, rtol=0, atol=1e-6)
    torch.testing.assert_close(final.summary, expected_final.summary, rtol=0, atol=1e-6)
    for got, expected in zip(maps, expected_maps, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
