"""Mask2Former / OneFormer heads: shapes, reference structure, task conditioning, and ONNX export with parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vfmkit.export.onnx import export_onnx
from vfmkit.export.runtime import OnnxModel
from vfmkit.export.verify import verify_onnx
from vfmkit.models.factory import load_backbone
from vfmkit.models.heads.mask2former import (
    ExportableUniversalSegmenter,
    MSDeformAttnPixelDecoder,
    MultiScaleMaskedTransformerDecoder,
    PositionEmbeddingSine,
    UniversalHeadConfig,
    UniversalSegmenter,
    task_text,
    task_tokens,
    tokenize_texts,
)
from vfmkit.models.heads.mask2former.oneformer import TextMapper
from vfmkit.models.necks import build_neck

SMALL = {
    "num_object_queries": 6,
    "hidden_dim": 32,
    "nheads": 4,
    "dim_feedforward": 64,
    "dec_layers": 4,
    "conv_dim": 32,
    "mask_dim": 32,
    "transformer_enc_layers": 1,
    "pixel_decoder_dim_feedforward": 64,
    "text_width": 32,
    "text_num_layers": 1,
    "text_context_length": 16,
    "n_ctx": 2,
}


def small_model(head: str, seed: int = 0) -> UniversalSegmenter:
    torch.manual_seed(seed)
    neck = build_neck("simple_pyramid", load_backbone("test-radio-v2-tiny"), out_channels=32)
    return UniversalSegmenter(neck, 3, UniversalHeadConfig(head=head, **SMALL))


def reference_sine(h: int, w: int, feats: int) -> torch.Tensor:
    """DETR's PositionEmbeddingSine(normalize=True) as written in the reference (cumsum of a mask)."""
    not_mask = torch.ones(1, h, w)
    y_embed, x_embed = not_mask.cumsum(1), not_mask.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(feats, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / feats)
    pos_x, pos_y = x_embed[..., None] / dim_t, y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def test_position_encoding_matches_the_reference_formula():
    encoding = PositionEmbeddingSine(16)(torch.zeros(2, 5, 3, 7))
    assert encoding.shape == (1, 32, 3, 7)
    torch.testing.assert_close(encoding, reference_sine(3, 7, 16), rtol=0, atol=1e-6)


def test_pixel_decoder_shapes_on_a_non_square_pyramid():
    decoder = MSDeformAttnPixelDecoder(
        [24] * 4,
        conv_dim=32,
        mask_dim=16,
        transformer_enc_layers=2,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
    )
    features = [torch.rand(2, 24, 24 // s, 40 // s) for s in (1, 2, 4, 8)]  # strides 4..32 of a 96 x 160 image
    mask_features, multi_scale = decoder(features)
    assert mask_features.shape == (2, 16, 24, 40)
    assert [tuple(m.shape) for m in multi_scale] == [(2, 32, 3, 5), (2, 32, 6, 10), (2, 32, 12, 20)]
    names = {n for n, _ in decoder.named_parameters()}
    assert {"input_proj.0.0.weight", "transformer.level_embed", "mask_features.weight"} <= names
    assert "transformer.encoder.layers.1.self_attn.sampling_offsets.weight" in names


def test_decoder_outputs_and_deep_supervision():
    decoder = MultiScaleMaskedTransformerDecoder(
        32, num_classes=5, hidden_dim=32, num_queries=7, nheads=4, dim_feedforward=64, dec_layers=5, mask_dim=16
    )
    features = [torch.rand(2, 32, 2, 3), torch.rand(2, 32, 4, 6), torch.rand(2, 32, 8, 12)]
    mask_features = torch.rand(2, 16, 16, 24)
    decoder.train()
    out = decoder(features, mask_features)
    assert out["pred_logits"].shape == (2, 7, 6) and out["pred_masks"].shape == (2, 7, 16, 24)
    assert len(out["aux_outputs"]) == 4 and out["aux_outputs"][0]["pred_masks"].shape == (2, 7, 16, 24)
    decoder.eval()
    assert "aux_outputs" not in decoder(features, mask_features)
    names = {n for n, _ in decoder.named_parameters()}
    assert {
        "query_feat.weight",
        "query_embed.weight",
        "level_embed.weight",
        "class_embed.weight",
        "transformer_cross_attention_layers.3.multihead_attn.in_proj_weight",
        "transformer_self_attention_layers.0.self_attn.in_proj_weight",
        "transformer_ffn_layers.0.linear1.weight",
        "mask_embed.layers.2.weight",
        "decoder_norm.weight",
    } <= names


def test_attention_masks_never_hide_everything():
    decoder = MultiScaleMaskedTransformerDecoder(
        8, num_classes=2, hidden_dim=8, num_queries=3, nheads=2, dim_feedforward=16, dec_layers=2, mask_dim=8
    )
    seen = []
    layer = decoder.transformer_cross_attention_layers[0]
    layer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["memory_mask"]), with_kwargs=True)
    with torch.no_grad():
        decoder.mask_embed.layers[-1].bias.fill_(-100.0)  # every predicted mask empty: every row fully masked
        decoder([torch.rand(1, 8, 2, 2), torch.rand(1, 8, 4, 4), torch.rand(1, 8, 8, 8)], torch.rand(1, 8, 16, 16))
    assert seen and not bool(seen[0].all(-1).any())


def test_task_tokens_are_clip_bpe_of_the_task_prompt():
    tokens = task_tokens(["panoptic", "semantic"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.int64
    assert task_text("instance") == "the task is instance"
    from open_clip.tokenizer import tokenize

    assert torch.equal(tokens[0], tokenize(["The task is panoptic"])[0])  # lower-cased by the BPE
    assert not torch.equal(tokens[0], tokens[1])
    assert tokenize_texts(["a photo with a cat"], context_length=16).shape == (1, 16)
    with pytest.raises(ValueError, match="unknown task"):
        task_tokens(["depth"])


def test_text_mapper_appends_context_vectors():
    mapper = TextMapper(hidden_dim=16, context_length=16, width=32, num_layers=1, n_ctx=3)
    tokens = tokenize_texts(["a photo with a cat", "a panoptic photo"] * 3, 16).view(3, 2, 16)
    out = mapper(tokens)
    assert out.shape == (3, 5, 16)
    torch.testing.assert_close(out[0, 2:], mapper.prompt_ctx.weight)
    assert float(mapper.logit_scale.detach().exp()) == pytest.approx(1 / 0.07)


@pytest.mark.parametrize("head", ["mask2former", "oneformer"])
def test_segmenter_outputs(head):
    model = small_model(head)
    images = torch.rand(2, 3, 64, 96)
    tokens = task_tokens(["panoptic", "instance"]) if head == "oneformer" else None
    model.train()
    texts = tokenize_texts(["a photo with a cat"] * 8, 16).view(2, 4, 16) if head == "oneformer" else None
    out = model(images, tokens, texts)
    assert out["pred_logits"].shape == (2, 6, 4) and out["pred_masks"].shape == (2, 6, 16, 24)
    assert len(out["aux_outputs"]) == 3
    if head == "oneformer":
        assert out["contrastive_logits"].shape == out["texts"].shape == (2, 6, 32)
        assert model.config.num_texts == 4
    model.eval()
    with torch.no_grad():
        out = model(images, tokens)
    assert set(out) <= {"pred_logits", "pred_masks", "contrastive_logits"}


def test_task_conditioning_and_input_checks():
    oneformer, mask2former = small_model("oneformer"), small_model("mask2former")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        semantic = oneformer.eval()(images, task_tokens(["semantic"]))["pred_logits"]
        panoptic = oneformer(images, task_tokens(["panoptic"]))["pred_logits"]
    assert not torch.allclose(semantic, panoptic)  # the task token changes the queries
    with pytest.raises(ValueError, match="needs task_tokens"):
        oneformer(images)
    with pytest.raises(ValueError, match="takes no task"):
        mask2former(images, task_tokens(["semantic"]))
    with pytest.raises(ValueError, match="n_ctx"):
        UniversalHeadConfig(num_object_queries=4, n_ctx=4)
    with pytest.raises(ValueError, match="unknown head"):
        UniversalHeadConfig(head="maskformer")


def trained_a_little(model: UniversalSegmenter, tokens) -> None:
    """A few steps so the masks are not all near 0.5 (random heads put mask logits close to the 0.5 threshold of
    the masked attention, where float noise between runtimes flips pixels)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(2, 3, 64, 64)
    model.train()
    for _ in range(3):
        out = model(images, tokens)
        loss = out["pred_masks"].abs().neg().mean() + out["pred_logits"].square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize(
    ("head", "task", "inputs"),
    [
        ("mask2former", None, ["images"]),
        ("oneformer", None, ["images", "task_tokens"]),
        pytest.param("oneformer", "semantic", ["images"], marks=pytest.mark.slow),  # and in test_universal_task.py
    ],
)
def test_onnx_export_matches_pytorch(tmp_path, head, task, inputs):
    model = small_model(head, seed=1)
    trained_a_little(model, task_tokens(["panoptic", "semantic"]) if head == "oneformer" else None)
    graph = ExportableUniversalSegmenter(model, task)
    assert list(graph.input_names) == inputs
    images = torch.rand(3, 3, 64, 64)
    example = (images, task_tokens(["panoptic", "semantic", "instance"])) if len(inputs) == 2 else (images,)
    path = export_onnx(
        graph, example, tmp_path / "uni.onnx", graph.input_names, graph.output_names, {"task": "universal"}, opset=17
    )
    onnx_model = OnnxModel(path)
    assert onnx_model.input_names == inputs and onnx_model.output_names == ["pred_logits", "pred_masks"]
    result = verify_onnx(path, graph, example, tolerance=1e-4)
    assert result.max_abs_diff <= 1e-4 and result.batch_sizes == (1, 3)
    outputs = onnx_model(*(t.numpy() for t in example))
    assert outputs["pred_logits"].shape == (3, 6, 4) and outputs["pred_masks"].shape == (3, 6, 16, 16)
    if task is not None:  # the fixed task gives what the model gives with that task's tokens
        with torch.no_grad():
            expected = model(images, task_tokens([task] * 3))["pred_logits"].numpy()
        assert np.abs(outputs["pred_logits"] - expected).max() <= 1e-4


def test_mask2former_cannot_fix_a_task():
    with pytest.raises(ValueError, match="no task input"):
        ExportableUniversalSegmenter(small_model("mask2former"), "semantic")
