"""Metrics of the dense tasks: segmentation (confusion matrix), change segmentation and golden-vs-test classification.

Conventions:

- The confusion matrix is int64 (K, K), rows = target class, columns = predicted class; pixels whose target is
  ``ignore_index`` are left out.
- Per-class ratios whose denominator is 0 are NaN (undefined), never 0: precision of a class never predicted,
  recall of a class absent from the target, IoU of a class absent from both.
- mIoU (and mean precision / recall / F1) averages the defined (non-NaN) classes. A class absent from both target
  and prediction is therefore excluded; a class absent from the target but predicted somewhere has IoU 0 and counts.
- ``as_dict`` results are JSON-safe: NaN becomes ``None``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _json(value):
    if isinstance(value, np.ndarray):
        return [_json(v) for v in value.tolist()]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _predictions(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Logits (B, K, H, W) -> argmax (B, H, W); (B, 1, H, W) binary logits -> logit > 0; labels pass through."""
    if preds.ndim == target.ndim + 1:
        preds = (preds[:, 0] > 0).long() if preds.shape[1] == 1 else preds.argmax(1)
    if preds.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} do not match the target {tuple(target.shape)}; resize the logits to "
            "the mask size first"
        )
    return preds.long()


class SegmentationMeter:
    """Accumulates a confusion matrix over batches and computes segmentation metrics.

    Args:
        num_classes: K.
        ignore_index: target value left out (e.g. 255).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            preds: logits float (B, K, H, W) (argmax taken; (B, 1, H, W) binary logits thresholded at 0) or
                predicted class indices int (B, H, W).
            target: int (B, H, W) class indices in 0..K-1 or ``ignore_index``.

        Raises:
            ValueError: mismatched shapes, or target / prediction values outside 0..K-1 (other than ignored).
        """
        labels = _predictions(preds, target).reshape(-1)
        target = target.long().reshape(-1)
        valid = target != self.ignore_index
        labels, target = labels[valid], target[valid]
        k = self.num_classes
        for name, values in (("target", target), ("prediction", labels)):
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= k):
                raise ValueError(f"{name} values must be in 0..{k - 1} (or {self.ignore_index} in the target)")
        counts = torch.bincount(target * k + labels, minlength=k * k).reshape(k, k)
        self.confusion += counts.cpu()

    def compute(self) -> dict:
        """The metrics of everything accumulated.

        Returns:
            dict with floats ``miou``, ``pixel_accuracy``, ``mean_precision``, ``mean_recall``, ``mean_f1`` and
            float64 (K,) arrays ``iou``, ``precision``, ``recall``, ``f1``, int64 (K,) ``support`` (target pixels
            per class) and the int64 (K, K) ``confusion`` (see the module docstring for NaN handling).
        """
        cm = self.confusion.numpy().astype(np.int64)
        tp = np.diag(cm)
        support, predicted = cm.sum(1), cm.sum(0)
        iou = _ratio(tp, support + predicted - tp)
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = _ratio(2 * tp, support + predicted)
        return {
            "miou": _nanmean(iou),
            "pixel_accuracy": float(_ratio(tp.sum(), cm.sum())),
            "mean_precision": _nanmean(precision),
            "mean_recall": _nanmean(recall),
            "mean_f1": _nanmean(f1),
            "iou": iou,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "confusion": cm,
        }

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        """:meth:`compute` as JSON-safe values (lists, NaN -> None), plus ``class_names`` when given."""
        out = {key: _json(value) for key, value in self.compute().items()}
        if class_names is not None:
            if len(class_names) != self.num_classes:
                raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
            out["class_names"] = list(class_names)
        return out


class ChangeSegMeter(SegmentationMeter):
    """Binary change segmentation: class 0 = no change, 1 = change.

    :meth:`compute` adds the change-class headline numbers ``change_precision``, ``change_recall``, ``change_f1``,
    ``change_iou`` (NaN when undefined, e.g. precision with no predicted change), ``overall_accuracy`` (= pixel
    accuracy) and ``miou`` over {no-change, change}.

    Args:
        ignore_index: target value left out.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__(2, ignore_index)

    def compute(self) -> dict:
        """See the class docstring; also every key of :meth:`SegmentationMeter.compute`."""
        out = super().compute()
        out.update(
            change_precision=float(out["precision"][1]),
            change_recall=float(out["recall"][1]),
            change_f1=float(out["f1"][1]),
            change_iou=float(out["iou"][1]),
            overall_accuracy=out["pixel_accuracy"],
        )
        return out


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """ROC curve of scores where higher means positive (FAIL).

    Args:
        scores: float (N,).
        labels: (N,) 0/1 (1 = positive).

    Returns:
        ``(fpr, tpr, thresholds, auc)``: float64 arrays of equal length T + 1 for T distinct scores, starting at
        (0, 0) with threshold +inf; point i counts ``score >= thresholds[i]`` as positive; thresholds decrease.
        ``auc`` is the trapezoidal area (ties handled exactly). When one class is absent its rate is NaN and the AUC
        is NaN.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order].astype(np.int64)
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1] if scores.size else np.array([], dtype=np.int64)
    tps = np.cumsum(labels)[last]
    fps = (last + 1) - tps
    positives, negatives = int(labels.sum()), int(labels.size - labels.sum())
    tpr = _ratio(np.r_[0, tps], positives)
    fpr = _ratio(np.r_[0, fps], negatives)
    thresholds = np.r_[np.inf, scores[last]]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if positives and negatives else math.nan
    return fpr, tpr, thresholds, auc


class ChangeClassifyMeter:
    """Golden-vs-test classification: label 1 = FAIL (defect), 0 = PASS.

    A sample is predicted FAIL when its score is > ``threshold``. Scores are FAIL probabilities (learnable mode),
    embedding distances (euclidean mode, threshold = the eval margin), or logits (N, 2) from which the softmax FAIL
    probability is taken.

    Args:
        threshold: decision threshold on the score.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.scores, self.labels = [], []

    @torch.no_grad()
    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``scores`` float (N,) or logits (N, 2); ``labels`` int (N,) 0/1."""
        if scores.ndim == 2:
            if scores.shape[1] != 2:
                raise ValueError(f"logits must be (N, 2), got {tuple(scores.shape)}")
            scores = scores.float().softmax(1)[:, 1]
        scores_np = scores.detach().float().cpu().numpy().reshape(-1)
        labels_np = labels.detach().cpu().numpy().reshape(-1).astype(np.int64)
        if scores_np.shape != labels_np.shape or not np.isin(labels_np, (0, 1)).all():
            raise ValueError("scores and labels must have one entry per sample and labels must be 0 or 1")
        self.scores.append(scores_np)
        self.labels.append(labels_np)

    def compute(self) -> dict:
        """Returns ``accuracy``, ``defect_accuracy`` (FAIL recall), ``false_alarm_rate`` (PASS predicted FAIL /
        PASS), ``miss_rate`` (FAIL predicted PASS / FAIL), ``auc``, the counts ``tp fp tn fn`` (FAIL = positive),
        and float64 (N,) ``scores`` / int64 (N,) ``labels`` for ROC plots. Undefined rates are NaN."""
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, dtype=np.int64)
        predicted = scores > self.threshold
        tp = int(np.sum(predicted & (labels == 1)))
        fp = int(np.sum(predicted & (labels == 0)))
        fn = int(np.sum(~predicted & (labels == 1)))
        tn = int(np.sum(~predicted & (labels == 0)))
        _, _, _, auc = roc_curve(scores, labels)
        return {
            "accuracy": float(_ratio(tp + tn, labels.size)),
            "defect_accuracy": float(_ratio(tp, tp + fn)),
            "false_alarm_rate": float(_ratio(fp, fp + tn)),
            "miss_rate": float(_ratio(fn, tp + fn)),
            "auc": auc,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
            "scores": scores.astype(np.float64),
            "labels": labels,
        }

    def as_dict(self, include_scores: bool = False) -> dict:
        """:meth:`compute` as JSON-safe values; the per-sample arrays only with ``include_scores``."""
        out = self.compute()
        if not include_scores:
            out.pop("scores")
            out.pop("labels")
        return {key: _json(value) for key, value in out.items()}
