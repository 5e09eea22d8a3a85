"""Retrieval and zero-shot metrics, all as fractions in [0, 1] (ranks are 1-based).

Retrieval is computed from a score matrix (N_img, N_txt) and a boolean relevance matrix of the same shape (image i and
caption j belong together), in both directions: ``i2t`` (each image queries the captions) and ``t2i`` (each caption
queries the images). Two conventions of recall are reported, named in the keys, because they are not comparable:

- ``any`` (CLIP_benchmark, the CLIP paper's COCO/Flickr numbers): a query scores a hit at k when ANY of its relevant
  items is in its top k (an image with 5 captions needs one of them);
- ``1cap`` (open_clip's evaluation): one caption per image, the first one; the (N_img, N_img) sub-matrix of those
  captions is ranked with the diagonal as the only relevant item, in both directions (it assumes distinct captions).

``mAP`` (mean average precision over every relevant item), ``median_rank`` / ``mean_rank`` (median and mean 1-based
rank of the first relevant item; TAO's MedR / MeanR) and ``NDCG`` (binary relevance, whole ranking) use every
relevant item (``any`` semantics).
Ties count against the query: an irrelevant item with the same score as a relevant one is ranked before it, so a
collapsed model (all scores equal) gets recall 0, never 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vfmkit.tasks.classify.metrics import MetricAccumulator

DEFAULT_KS = (1, 5, 10)


def relevance_from_owners(caption_image: np.ndarray, num_images: int) -> np.ndarray:
    """bool (N_img, N_txt) relevance of captions owned by images (COCO layout: caption j describes image
    ``caption_image[j]``)."""
    caption_image = np.asarray(caption_image, dtype=np.int64)
    relevance = np.zeros((num_images, len(caption_image)), dtype=bool)
    relevance[caption_image, np.arange(len(caption_image))] = True
    return relevance


def first_captions(relevance: np.ndarray) -> np.ndarray:
    """int64 (N_img,) index of each image's first relevant caption.

    Raises:
        ValueError: an image without any caption.
    """
    relevance = np.asarray(relevance, dtype=bool)
    if not relevance.any(axis=1).all():
        raise ValueError(f"{int((~relevance.any(axis=1)).sum())} image(s) have no caption")
    return relevance.argmax(axis=1)


def _ranked_relevance(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """bool (Q, N): each query row's relevance in ranking order (score descending, irrelevant first among ties)."""
    order = np.lexsort((relevance, -scores), axis=-1)
    return np.take_along_axis(relevance, order, axis=-1)


def ranking_metrics(
    scores: np.ndarray, relevance: np.ndarray, ks: Sequence[int] = DEFAULT_KS, chunk: int = 1024
) -> dict[str, float]:
    """Metrics of queries (rows) ranking items (columns).

    Args:
        scores: float (Q, N), higher is better.
        relevance: bool (Q, N); every query needs at least one relevant item.
        ks: the k of the ``R@k`` keys.
        chunk: queries ranked at once (memory: chunk x N).

    Returns:
        ``R@k`` (any relevant item in the top k), ``mAP``, ``median_rank``, ``mean_rank``, ``NDCG``.

    Raises:
        ValueError: shapes differ, or a query without a relevant item.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevance = np.asarray(relevance, dtype=bool)
    if scores.shape != relevance.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevance {relevance.shape} must be the same 2-D shape")
    counts = relevance.sum(axis=1)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} quer(ies) have no relevant item")
    discounts = 1.0 / np.log2(np.arange(scores.shape[1]) + 2.0)
    first_rank, average_precision, ndcg = [], [], []
    for start in range(0, len(scores), chunk):
        ranked = _ranked_relevance(scores[start : start + chunk], relevance[start : start + chunk])
        n_rel = counts[start : start + chunk]
        first_rank.append(ranked.argmax(axis=1) + 1)
        precision = np.cumsum(ranked, axis=1) / np.arange(1, ranked.shape[1] + 1)
        average_precision.append((precision * ranked).sum(axis=1) / n_rel)
        ideal = np.cumsum(discounts)[n_rel - 1]
        ndcg.append((ranked * discounts).sum(axis=1) / ideal)
    ranks = np.concatenate(first_rank)
    metrics = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    metrics.update(
        mAP=float(np.concatenate(average_precision).mean()),
        median_rank=float(np.median(ranks)),
        mean_rank=float(ranks.mean()),
        NDCG=float(np.concatenate(ndcg).mean()),
    )
    return metrics


def retrieval_metrics(
    scores: np.ndarray | torch.Tensor, relevance: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Bidirectional retrieval metrics.

    Args:
        scores: float (N_img, N_txt) image-caption similarities (any monotonic score).
        relevance: bool (N_img, N_txt) (see :func:`relevance_from_owners`); every image needs a caption and every
            caption an image.
        ks: recall cut-offs.

    Returns:
        ``{i2t,t2i}_R@k_any``, ``{i2t,t2i}_R@k_1cap``, ``{i2t,t2i}_{mAP,median_rank,mean_rank,NDCG}``, and ``images`` /
        ``captions`` (the counts).
    """
    scores = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    relevance = np.asarray(relevance, dtype=bool)
    firsts = first_captions(relevance)
    one_caption = scores[:, firsts]
    identity = np.eye(len(firsts), dtype=bool)
    out: dict[str, float] = {"images": float(scores.shape[0]), "captions": float(scores.shape[1])}
    for direction, s, r, s1 in (
        ("i2t", scores, relevance, one_caption),
        ("t2i", scores.T, relevance.T, one_caption.T),
    ):
        full = ranking_metrics(s, r, ks)
        single = ranking_metrics(s1, identity, ks)
        for k in ks:
            out[f"{direction}_R@{k}_any"] = full[f"R@{k}"]
            out[f"{direction}_R@{k}_1cap"] = single[f"R@{k}"]
        for name in ("mAP", "median_rank", "mean_rank", "NDCG"):
            out[f"{direction}_{name}"] = full[name]
    return out


def zeroshot_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Zero-shot classification metrics (CLIP_benchmark's definitions, as fractions).

    Args:
        logits: float (N, C) class scores.
        labels: int64 (N,) true classes in [0, C).

    Returns:
        ``top1``, ``top5`` (NaN with fewer than 5 classes), ``mean_per_class_recall`` (mean over classes that have
        images of the fraction of their images predicted right: balanced accuracy) and ``images``.
    """
    num_classes = logits.shape[1]
    accumulator = MetricAccumulator(num_classes, k=min(5, num_classes))
    accumulator.update(logits, labels)
    result = accumulator.compute()
    per_class = result.per_class_accuracy()
    return {
        "images": float(result.total),
        "top1": result.top1 if result.total else float("nan"),
        "top5": result.topk if num_classes >= 5 and result.total else float("nan"),
        "mean_per_class_recall": float(np.nanmean(per_class)) if result.total else float("nan"),
    }
