"""Semantic, panoptic and instance post-processing (Mask2Former's inference rules) on hand-built query outputs."""

from __future__ import annotations

import pytest
import torch

from vfmkit.tasks.universal.postprocess import (
    instance_inference,
    panoptic_inference,
    resize_mask_logits,
    semantic_inference,
)

BIG = 20.0


def logits_for(classes: list[int], num_classes: int, confidence: float = BIG) -> torch.Tensor:
    """(Q, K + 1) logits whose argmax is ``classes[q]`` (num_classes = no object)."""
    logits = torch.zeros(len(classes), num_classes + 1)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = confidence
    return logits


def box_masks(boxes: list[tuple[int, int, int, int]], size: int = 8) -> torch.Tensor:
    """(Q, size, size) mask logits: +BIG inside each (y0, y1, x0, x1) box, -BIG outside."""
    masks = torch.full((len(boxes), size, size), -BIG)
    for q, (y0, y1, x0, x1) in enumerate(boxes):
        masks[q, y0:y1, x0:x1] = BIG
    return masks


def test_semantic_inference_sums_class_probabilities_times_masks():
    torch.manual_seed(0)
    logits, masks = torch.randn(2, 5, 4), torch.randn(2, 5, 6, 7)
    scores = semantic_inference(logits, masks)
    assert scores.shape == (2, 3, 6, 7)
    expected = sum(logits[1, q].softmax(-1)[:3, None, None] * masks[1, q].sigmoid() for q in range(5))
    torch.testing.assert_close(scores[1], expected)
    torch.testing.assert_close(semantic_inference(logits[0], masks[0]), scores[0])  # one image
    traced = torch.fx.symbolic_trace(SemanticGraph())  # no data-dependent control flow: traceable for export
    torch.testing.assert_close(traced(logits, masks), scores)


class SemanticGraph(torch.nn.Module):
    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return semantic_inference(logits, masks)


def test_panoptic_inference_keeps_confident_queries_and_numbers_segments():
    isthing = [True, False]
    logits = torch.cat([logits_for([0, 0, 1], 2), logits_for([2], 2)])  # 2 things, 1 stuff, 1 no-object
    masks = box_masks([(0, 4, 0, 4), (0, 4, 4, 8), (4, 8, 0, 8), (0, 8, 0, 8)])
    result = panoptic_inference(logits, masks, isthing)
    assert result.ids.dtype == torch.int32
    assert [(s["id"], s["category"], s["isthing"]) for s in result.segments] == [
        (1, 0, True),
        (2, 0, True),
        (3, 1, False),
    ]
    assert result.ids[0, 0] == 1 and result.ids[0, 7] == 2 and result.ids[7, 0] == 3
    assert result.segments[0]["score"] == pytest.approx(1.0, abs=1e-6)


def test_panoptic_inference_thresholds():
    isthing = [True, False]
    unsure = logits_for([0], 2, confidence=1.0)  # softmax 2.7 / (2.7 + 2) ~ 0.58 < 0.8
    assert panoptic_inference(unsure, box_masks([(0, 4, 0, 4)]), isthing).segments == []
    assert len(panoptic_inference(unsure, box_masks([(0, 4, 0, 4)]), isthing, object_mask_threshold=0.5).segments) == 1
    # query 1 (score 0.99) covers query 0 (score 1.0) mostly: query 0 wins the overlap, query 1 keeps 4 of its 16 px
    logits = torch.cat([logits_for([0], 2), logits_for([0], 2, confidence=6.0)])
    masks = box_masks([(0, 4, 0, 4), (0, 4, 1, 5)])
    result = panoptic_inference(logits, masks, isthing)
    assert [s["id"] for s in result.segments] == [1]  # 4 / 16 < overlap_threshold 0.8: dropped
    assert int((result.ids == 0).sum()) == 64 - 16
    result = panoptic_inference(logits, masks, isthing, overlap_threshold=0.2)
    assert len(result.segments) == 2 and int((result.ids == 2).sum()) == 4


def test_panoptic_inference_merges_stuff_of_one_class():
    isthing = [True, False]
    logits = logits_for([1, 1, 0], 2)
    masks = box_masks([(0, 4, 0, 8), (4, 8, 0, 8), (2, 6, 2, 6)])
    masks[:2, 2:6, 2:6] = 1.0  # the stuff queries are unsure where the thing is: it wins those pixels
    result = panoptic_inference(logits, masks, isthing, overlap_threshold=0.5)
    assert [(s["id"], s["category"]) for s in result.segments] == [(1, 1), (2, 0)]
    assert set(torch.unique(result.ids).tolist()) == {1, 2}
    assert int((result.ids == 1).sum()) == 64 - 16


def test_instance_inference_ranks_query_class_pairs():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [-5.0, -5.0, 5.0]])  # K = 2 (+ no object)
    masks = box_masks([(0, 4, 0, 4), (4, 8, 4, 8), (0, 8, 0, 8)])
    result = instance_inference(logits, masks, test_topk_per_image=4)
    assert result.masks.shape == (4, 8, 8) and result.masks.dtype == torch.bool
    assert result.labels[:2].tolist() == [0, 1]
    assert result.scores.tolist() == sorted(result.scores.tolist(), reverse=True)
    first = logits[0].softmax(-1)[0] * torch.sigmoid(torch.tensor(BIG))
    assert float(result.scores[0]) == pytest.approx(float(first), rel=1e-5)
    assert int(result.masks[0].sum()) == 16
    things = instance_inference(logits, masks, test_topk_per_image=6, isthing=[False, True])
    assert set(things.labels.tolist()) == {1} and len(things.labels) == 3  # Q x K = 6 pairs, half are things
    assert len(result.above(0.5).scores) == 2
    assert instance_inference(logits, masks, test_topk_per_image=100).scores.shape == (6,)  # capped at Q x K


def test_mask_logits_are_resized_bilinearly():
    masks = torch.zeros(3, 4, 4)
    masks[:, :, 2:] = 1.0
    resized = resize_mask_logits(masks, (8, 8))
    assert resized.shape == (3, 8, 8) and float(resized[0, 0, 0]) == 0.0 and float(resized[0, 0, 7]) == 1.0
    assert resize_mask_logits(masks, (4, 4)) is masks
    assert resize_mask_logits(masks[None], (2, 2)).shape == (1, 3, 2, 2)
