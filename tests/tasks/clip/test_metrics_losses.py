"""Retrieval and zero-shot metrics against hand-computed values; losses, logit parameters and WiSE-FT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfmkit.models.clip_zoo import load_clip_model
from vfmkit.tasks.clip.losses import ContrastiveLoss, clamp_logit_scale, logit_scale_ceiling, prepare_logit_params
from vfmkit.tasks.clip.metrics import relevance_from_owners, retrieval_metrics, zeroshot_metrics
from vfmkit.tasks.clip.wiseft import interpolate_weights

# 3 images, 5 captions: image 0 owns captions 0 and 1, image 1 caption 2, image 2 captions 3 and 4
SCORES = np.array(
    [
        [0.9, 0.1, 0.8, 0.3, 0.2],
        [0.5, 0.6, 0.4, 0.7, 0.1],
        [0.2, 0.3, 0.9, 0.1, 0.5],
    ]
)
OWNERS = np.array([0, 0, 1, 2, 2])


def _ndcg(ranks: list[int], count: int) -> float:
    ideal = sum(1 / math.log2(i + 2) for i in range(count))
    return sum(1 / math.log2(r + 1) for r in ranks) / ideal


def test_retrieval_metrics_match_hand_computed_values() -> None:
    m = retrieval_metrics(SCORES, relevance_from_owners(OWNERS, 3), ks=(1, 2, 5))
    # image -> text, any of the image's captions: first relevant ranks 1, 4, 2; relevant ranks {1,5}, {4}, {2,5}
    assert (m["i2t_R@1_any"], m["i2t_R@2_any"], m["i2t_R@5_any"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    assert (m["i2t_median_rank"], m["i2t_mean_rank"]) == pytest.approx((2.0, 7 / 3))
    assert m["i2t_mAP"] == pytest.approx(((1 + 2 / 5) / 2 + 1 / 4 + (1 / 2 + 2 / 5) / 2) / 3)
    assert m["i2t_NDCG"] == pytest.approx((_ndcg([1, 5], 2) + _ndcg([4], 1) + _ndcg([2, 5], 2)) / 3)
    # text -> image: each caption has one image; ranks 1, 3, 3, 3, 1
    assert (m["t2i_R@1_any"], m["t2i_R@2_any"], m["t2i_R@5_any"]) == pytest.approx((0.4, 0.4, 1.0))
    assert (m["t2i_median_rank"], m["t2i_mean_rank"], m["t2i_mAP"]) == pytest.approx((3.0, 2.2, 0.6))
    # one caption per image (the first: 0, 2, 3): diagonal ranks i2t 1, 3, 3 and t2i 1, 3, 3
    assert (m["i2t_R@1_1cap"], m["i2t_R@2_1cap"], m["i2t_R@5_1cap"]) == pytest.approx((1 / 3, 1 / 3, 1.0))
    assert (m["t2i_R@1_1cap"], m["t2i_R@2_1cap"]) == pytest.approx((1 / 3, 1 / 3))
    assert (m["images"], m["captions"]) == (3.0, 5.0)


def test_ties_count_against_the_query() -> None:
    collapsed = retrieval_metrics(np.zeros((4, 4)), np.eye(4, dtype=bool), ks=(1,))
    assert collapsed["i2t_R@1_any"] == collapsed["t2i_R@1_any"] == 0.0
    assert collapsed["i2t_median_rank"] == 4.0
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(np.zeros((2, 1)), np.array([[True], [False]]))


def test_zeroshot_metrics() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    logits = F.one_hot(torch.tensor([0, 0, 0, 0, 0, 2]), 3).float()
    m = zeroshot_metrics(logits, labels)
    assert m["top1"] == pytest.approx(5 / 6)
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0 + 1) / 3)
    assert math.isnan(m["top5"])  # fewer than 5 classes, as CLIP_benchmark
    wide = zeroshot_metrics(torch.arange(6.0).repeat(2, 1), torch.tensor([5, 0]))
    assert (wide["top1"], wide["top5"]) == (0.5, 0.5)


def test_losses_are_open_clips() -> None:
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    logits = scale.exp() * images @ texts.T + bias
    labels = 2 * torch.eye(4) - 1
    expected = -F.logsigmoid(labels * logits).sum() / 4
    torch.testing.assert_close(ContrastiveLoss("siglip")(images, texts, scale, bias), expected)
    logits = 2.0 * images @ texts.T
    expected = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    torch.testing.assert_close(ContrastiveLoss("clip")(images, texts, torch.tensor(math.log(2.0))), expected)
    with pytest.raises(ValueError, match="needs a logit bias"):
        ContrastiveLoss("siglip")(images, texts, scale)


def test_logit_params_per_loss_type() -> None:
    clip_style = load_clip_model("test-openclip-clip-tiny")  # pre-trained (here: built) without a bias
    prepare_logit_params(clip_style, "siglip")
    ceiling = logit_scale_ceiling(clip_style)
    assert (clip_style.logit_scale.item(), clip_style.logit_bias.item()) == pytest.approx((math.log(10), -10.0))
    assert clip_style.logit_bias.requires_grad and ceiling == pytest.approx(math.log(100))
    siglip_style = load_clip_model("test-nvclip-clip-tiny")
    with torch.no_grad():
        siglip_style.logit_scale.fill_(4.8)  # a pre-trained SigLIP scale above ln 100 is kept, and not clamped
    prepare_logit_params(siglip_style, "siglip")
    ceiling = logit_scale_ceiling(siglip_style)
    assert siglip_style.logit_scale.item() == pytest.approx(4.8) and ceiling == pytest.approx(4.8)
    prepare_logit_params(siglip_style, "clip")
    assert siglip_style.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert siglip_style.logit_bias.item() == 0.0 and not siglip_style.logit_bias.requires_grad
    prepare_logit_params(siglip_style, "clip", init_logit_scale=7.0)
    clamp_logit_scale(siglip_style)
    assert siglip_style.logit_scale.item() == pytest.approx(math.log(100))


def test_wise_ft_interpolation() -> None:
    before = {"w": torch.tensor([0.0, 2.0]), "steps": torch.tensor(3), "h": torch.tensor([1.0], dtype=torch.float16)}
    after = {"w": torch.tensor([1.0, 4.0]), "steps": torch.tensor(7), "h": torch.tensor([3.0], dtype=torch.float16)}
    assert interpolate_weights(before, after, 0.0)["w"].tolist() == [0.0, 2.0]
    mid = interpolate_weights(before, after, 0.25)
    assert mid["w"].tolist() == [0.25, 2.5] and mid["steps"].item() == 7 and mid["h"].dtype == torch.float16
    assert interpolate_weights(before, after, 1.0)["w"].tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate_weights(before, after, 1.5)
    with pytest.raises(ValueError, match="different keys"):
        interpolate_weights(before, {"w": after["w"]}, 0.5)
