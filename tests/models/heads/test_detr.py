"""The DETR family: presets, output format in training and inference, the denoising queries and their attention
mask, every registry backbone as main backbone and as frozen foundation model, the timm CNN main backbone."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from vfmkit.errors import ModelNotFoundError, VfmError, WeightsError
from vfmkit.models.backbones.timm_cnn import TimmCNN
from vfmkit.models.heads.detr import (
    DETR_PRESETS,
    build_denoising_queries,
    build_detector,
    denoising_attn_mask,
    detr_preset,
)

MINI = {
    "hidden_dim": 32,
    "nheads": 2,
    "num_queries": 10,
    "num_select": 10,
    "dec_layers": 2,
    "enc_layers": 1,
    "dim_feedforward": 32,
    "csp_blocks": 1,
    "dec_n_points": 1,
    "enc_n_points": 1,
    "dn_number": 6,
}
TINY = [
    "test-radio-v2-tiny",
    "test-radio-v3-tiny",
    "test-radio-v4-tiny",
    "test-radio-v2.5g-tiny",
    "test-dinov2-tiny",
    "test-clip-tiny",
    "test-siglip-tiny",
    "test-openclip-tiny",
    "test-nvclip-tiny",
]


def _targets():
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]


def test_presets_use_taos_defaults():
    rtdetr, rt_loss = detr_preset("rtdetr", 80)
    dino, dino_loss = detr_preset("dino", 80)
    assert (rtdetr.num_queries, rtdetr.num_feature_levels, rtdetr.feat_strides, rtdetr.encoder) == (
        300,
        3,
        (8, 16, 32),
        "hybrid",
    )
    assert (dino.num_queries, dino.num_feature_levels, dino.encoder, dino.enc_layers) == (900, 4, "deformable", 6)
    assert (rt_loss.cls_loss, rt_loss.focal_alpha, rt_loss.focal_gamma) == ("vfl", 0.75, 2.0)
    assert (dino_loss.cls_loss, dino_loss.focal_alpha, dino_loss.cls_loss_coef) == ("focal", 0.25, 2.0)
    for config, loss in ((rtdetr, rt_loss), (dino, dino_loss)):
        assert config.two_stage and config.dn_number == 100 and config.hidden_dim == 256 and config.dec_layers == 6
        assert (loss.bbox_loss_coef, loss.giou_loss_coef, loss.set_cost_class, loss.set_cost_bbox) == (5, 2, 2, 5)
    assert set(DETR_PRESETS) == {"rtdetr", "dino", "lw-n", "lw-s", "lw-m"}  # lw-*: tests/tasks/detect/test_detect_light
    assert detr_preset("dino", 3, num_queries=None, dn_number=0)[0].num_queries == 900  # None keeps the preset
    with pytest.raises(VfmError, match="unknown DETR option"):
        detr_preset("rtdetr", 3, num_querys=5)
    with pytest.raises(VfmError, match="unknown DETR head 'detr'"):
        detr_preset("detr", 3)
    with pytest.raises(VfmError, match="hidden_dim 30 must be divisible by nheads 8"):
        detr_preset("rtdetr", 3, hidden_dim=30)


@pytest.mark.parametrize("head", ["rtdetr", "dino"])
def test_outputs_in_training_and_inference(head):
    torch.manual_seed(0)
    model, criterion = build_detector(3, head, backbone="test-radio-v2-tiny", **MINI)
    images = torch.rand(2, 3, 64, 64)
    model.train()
    out = model(images, _targets())
    assert out["pred_logits"].shape == (2, 10, 3) and out["pred_boxes"].shape == (2, 10, 4)
    assert len(out["aux_outputs"]) == 1 and out["enc_outputs"]["pred_boxes"].shape == (2, 10, 4)
    groups = out["dn_meta"]["dn_num_group"]
    assert groups == 3 and out["dn_meta"]["dn_num_split"] == [2 * 2 * groups, 10]
    assert len(out["dn_outputs"]) == 2 and out["dn_outputs"][0]["pred_logits"].shape == (2, 12, 3)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    criterion(out, _targets())["loss"].backward()
    assert model.decoder.score_heads[0].weight.grad is not None
    assert all(p.grad is None for p in model.source.backbone.parameters())  # frozen foundation backbone
    model.eval()
    with torch.no_grad():
        inference = model(images)
    assert set(inference) == {"pred_logits", "pred_boxes"} and inference["pred_logits"].shape == (2, 10, 3)


def test_denoising_attention_mask_blocks():
    mask = denoising_attn_mask(num_denoising=8, group_size=4, num_queries=3, extra=1)
    assert mask.shape == (12, 12) and mask.dtype == torch.bool
    assert mask[8:11, :8].all()  # matching queries never see denoising queries
    assert not mask[8:11, 8:].any()  # ... but see each other and the image query
    assert mask[0:4, 4:8].all() and mask[4:8, 0:4].all()  # groups are isolated from each other
    assert not mask[0:4, 0:4].any() and not mask[4:8, 4:8].any()  # ... not from themselves
    assert not mask[:8, 8:].any()  # denoising queries see matching and image queries
    assert not mask[11].any() and not mask[:, 11].any()  # the image query sees and is seen by everything


def test_denoising_queries_noise_and_positive_indices():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(4, 8, padding_idx=3)
    dn = build_denoising_queries(_targets(), 3, 5, embed, dn_number=7, label_noise_ratio=0.0, box_noise_scale=1.0)
    groups, max_gt = 3, 2  # 7 // 2
    assert dn.content.shape == (2, 2 * max_gt * groups, 8) and dn.reference.shape == (2, 12, 4)
    assert dn.attn_mask.shape == (17, 17) and dn.meta["dn_num_group"] == groups
    assert dn.meta["dn_positive_idx"][0].tolist() == [0, 1, 4, 5, 8, 9] and dn.meta["dn_positive_idx"][1].numel() == 0
    boxes = dn.reference.sigmoid()
    truth = _targets()[0]["boxes"]
    positive, negative = boxes[0, [0, 1]], boxes[0, [2, 3]]
    # positives move each corner by less than half the box size; negatives by more (before clipping to [0, 1])
    half = truth[:, 2:].repeat(1, 2) / 2
    to_xyxy = torch.cat([truth[:, :2] - truth[:, 2:] / 2, truth[:, :2] + truth[:, 2:] / 2], -1)
    pos_xyxy = torch.cat([positive[:, :2] - positive[:, 2:] / 2, positive[:, :2] + positive[:, 2:] / 2], -1)
    neg_xyxy = torch.cat([negative[:, :2] - negative[:, 2:] / 2, negative[:, :2] + negative[:, 2:] / 2], -1)
    assert ((pos_xyxy - to_xyxy).abs() <= half + 1e-5).all()
    assert ((neg_xyxy - to_xyxy).abs() >= half - 1e-5).any()
    assert torch.equal(dn.content[1], embed.weight[3].expand(12, 8))  # an image without targets: padding slots
    assert build_denoising_queries(_targets()[1:], 3, 5, embed) is None


@pytest.mark.parametrize("name", TINY)
def test_every_registry_backbone_as_main_backbone_and_as_frozen_fm(name):
    torch.manual_seed(0)
    model, _ = build_detector(2, "rtdetr", backbone=name, neck="simple_pyramid", frozen_fm=name, **MINI)
    side = 56 if name == "test-radio-v2.5g-tiny" else 64
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, side, side))
    assert out["pred_logits"].shape == (1, 10, 2) and torch.isfinite(out["pred_boxes"]).all()


def test_frozen_fm_branch_beside_a_timm_cnn():
    torch.manual_seed(0)
    model, criterion = build_detector(
        3, "rtdetr", backbone="timm:resnet18", pretrained=False, frozen_fm="test-radio-v2-tiny", **MINI
    )
    branch = model.frozen_fm
    assert model.source.channels == [128, 256, 512] and branch.summary_dim == 192
    assert model.decoder.image_query_proj is not None and len(model.decoder.image_query_proj) == 2
    assert model.decoder.layers[0].cross_attn.n_levels == 3  # the stride-64 level is dropped before the decoder
    assert len(model.encoder.fpn_blocks) == 3  # ... after enriching the 4-level fusion
    model.train()
    assert not branch.backbone.training and all(not p.requires_grad for p in branch.backbone.parameters())
    summary, level = branch(torch.rand(2, 3, 128, 128))
    assert summary.shape == (2, 192) and level.shape == (2, 64, 2, 2)
    out = model(torch.rand(2, 3, 64, 64), _targets())
    assert out["dn_meta"]["dn_num_split"][0] == 12
    criterion(out, _targets())["loss"].backward()
    assert model.source.model.conv1.weight.grad is not None  # the CNN trains
    assert model.decoder.image_query_proj[1][0].weight.grad is not None


def test_timm_cnn_weights(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    cnn = TimmCNN("timm:resnet18", strides=(8, 16, 32), checkpoint=path)
    torch.testing.assert_close(cnn.model.conv1.weight, reference.conv1.weight)
    assert type(cnn.model.bn1).__name__ == "FrozenBatchNorm2d"  # loaded weights: RT-DETR's frozen norms
    assert isinstance(TimmCNN("resnet18").model.bn1, torch.nn.BatchNorm2d)  # random init: trainable norms
    maps = cnn(torch.rand(1, 3, 64, 64))
    assert [m.shape[1:] for m in maps] == [(128, 8, 8), (256, 4, 4), (512, 2, 2)]
    with pytest.raises(WeightsError, match="does not exist"):
        TimmCNN("resnet18", checkpoint=tmp_path / "missing.pth")
    bad = tmp_path / "bad.safetensors"
    save_file({"conv1.weight": torch.zeros(3)}, str(bad))
    with pytest.raises(WeightsError, match="does not hold weights for timm resnet18"):
        TimmCNN("resnet18", checkpoint=bad)
    with pytest.raises(ModelNotFoundError, match="timm has no architecture 'resnet5000'"):
        TimmCNN("timm:resnet5000")
    with pytest.raises(ModelNotFoundError, match="not \\[64\\]"):
        TimmCNN("resnet18", strides=(8, 64))


def test_dino_on_a_vit_adapter_trains_the_adapter_not_the_backbone():
    torch.manual_seed(0)
    model, criterion = build_detector(3, "dino", backbone="test-radio-v2-tiny", neck="vit_adapter", **MINI)
    criterion(model.train()(torch.rand(2, 3, 64, 64), _targets()), _targets())["loss"].backward()
    neck = model.source.neck
    assert any(p.grad is not None for n, p in neck.named_parameters() if not n.startswith("backbone."))
    assert all(p.grad is None for p in neck.backbone.parameters()) and not neck.backbone.training


def test_learned_queries_without_two_stage_and_too_many_queries():
    model, _ = build_detector(3, "dino", backbone="test-dinov2-tiny", **{**MINI, "two_stage": False, "dn_number": 0})
    model.train()
    out = model(torch.rand(1, 3, 64, 64), _targets()[:1])
    assert "enc_outputs" not in out and "dn_meta" not in out and out["pred_boxes"].shape == (1, 10, 4)
    crowded, _ = build_detector(3, "rtdetr", backbone="test-dinov2-tiny", **{**MINI, "num_queries": 200})
    with pytest.raises(ValueError, match="num_queries 200 exceeds the 84 encoder positions"):
        crowded.eval()(torch.rand(1, 3, 64, 64))


def test_simple_pyramid_builds_only_the_levels_the_detector_reads():
    """The detector's pyramid has no stride-4 level; its 8/16/32 maps equal a full pyramid's with the same weights."""
    from vfmkit import load_backbone
    from vfmkit.models.necks import SimpleFeaturePyramid

    torch.manual_seed(0)
    model, _ = build_detector(3, "rtdetr", backbone="test-radio-v2-tiny", **MINI)
    neck = model.source.neck
    assert neck.strides == (8, 16, 32) and len(neck.scales) == 3
    full = SimpleFeaturePyramid(load_backbone("test-radio-v2-tiny"), out_channels=neck.out_channels)
    state = {
        key.replace(f"{part}.{i}.", f"{part}.{i + 1}."): value
        for key, value in neck.state_dict().items()
        for part in ("scales", "convs")
        for i in range(3)
        if key.startswith(f"{part}.{i}.")
    }
    full.load_state_dict(
        {**full.state_dict(), **state, **{k: v for k, v in neck.state_dict().items() if "backbone" in k}}
    )
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = full.eval()(images).features[1:], model.source.eval()(images)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="strides"):
        SimpleFeaturePyramid(load_backbone("test-radio-v2-tiny"), strides=(16, 8))
