"""Classification metrics from a confusion matrix and top-k hits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ClassificationMetrics:
    """Accumulated over a split.

    Attributes:
        confusion: (K, K) int64, rows = true class, columns = predicted class.
        topk_hits: images whose true class is among the top-k predictions.
        k: the k of ``topk_hits`` (capped at K).
        loss_sum: summed cross-entropy.
    """

    confusion: np.ndarray
    topk_hits: int
    k: int
    loss_sum: float = 0.0

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        """Percent of images whose top prediction is right."""
        return 100.0 * float(np.trace(self.confusion)) / max(1, self.total)

    @property
    def topk(self) -> float:
        return 100.0 * self.topk_hits / max(1, self.total)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.total)

    def per_class_accuracy(self) -> np.ndarray:
        """(K,) percent right per true class (NaN for classes without images)."""
        support = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, 100.0 * np.diag(self.confusion) / support, np.nan)

    def as_dict(self, classes: list[str]) -> dict:
        per_class = self.per_class_accuracy()
        return {
            "images": self.total,
            "top1": round(self.top1, 4),
            f"top{self.k}": round(self.topk, 4),
            "loss": round(self.loss, 6),
            "per_class_accuracy": {
                c: (None if np.isnan(a) else round(float(a), 4)) for c, a in zip(classes, per_class, strict=True)
            },
            "confusion_matrix": self.confusion.tolist(),
        }


class MetricAccumulator:
    """Adds up batches of logits and labels into :class:`ClassificationMetrics`."""

    def __init__(self, num_classes: int, k: int = 5):
        self.num_classes = num_classes
        self.k = min(k, num_classes)
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.hits = 0
        self.loss_sum = 0.0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits (B, K) float, labels (B,) int64 in [0, K)."""
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        predicted = logits.argmax(dim=1)
        index = labels * self.num_classes + predicted
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, -1)
        topk = logits.topk(self.k, dim=1).indices
        self.hits += int((topk == labels[:, None]).any(dim=1).sum())
        self.loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))

    def compute(self) -> ClassificationMetrics:
        return ClassificationMetrics(self.confusion.numpy().copy(), self.hits, self.k, self.loss_sum)
