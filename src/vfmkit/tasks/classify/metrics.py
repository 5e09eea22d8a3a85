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
    def top1(self) -> float | None:
        """Fraction of images whose top prediction is right (None without images)."""
        return float(np.trace(self.confusion)) / self.total if self.total else None

    @property
    def topk(self) -> float | None:
        """Fraction of images whose true class is among the top-k predictions (None without images)."""
        return self.topk_hits / self.total if self.total else None

    @property
    def loss(self) -> float | None:
        """Mean cross-entropy (None without images)."""
        return self.loss_sum / self.total if self.total else None

    def per_class_accuracy(self) -> np.ndarray:
        """(K,) fraction right per true class (NaN for classes without images)."""
        support = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, np.diag(self.confusion) / np.maximum(support, 1), np.nan)

    def as_dict(self, classes: list[str]) -> dict:
        """The metrics as written to metrics.json: fractions, None where undefined."""
        per_class = self.per_class_accuracy()
        return {
            "images": self.total,
            "top1": self.top1,
            f"top{self.k}": self.topk,
            "loss": self.loss,
            "per_class_accuracy": {
                c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class, strict=True)
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
