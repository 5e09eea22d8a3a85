"""The classify variant's ROC curve and best-accuracy threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vfmkit.metrics.dense import roc_curve
from vfmkit.utils.atomic import save_figure_atomically


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> dict:
    """``best_threshold`` / ``best_threshold_accuracy``: the score threshold with the highest accuracy on a split
    (FAIL when score > threshold); None without samples."""
    if not len(scores):
        return {"best_threshold": None, "best_threshold_accuracy": None}
    candidates = np.r_[np.unique(scores), -np.inf]
    accuracy = [float(np.mean((scores > t) == (labels == 1))) for t in candidates]
    best = int(np.argmax(accuracy))
    threshold = float(candidates[best])
    return {"best_threshold": threshold if np.isfinite(threshold) else None, "best_threshold_accuracy": accuracy[best]}


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: Path, title: str = "") -> Path:
    """ROC curve (FAIL = positive, higher score = more likely FAIL) with its AUC, as a PNG."""
    import matplotlib.pyplot as plt  # the Agg backend is selected by vfmkit.engine.plots

    from vfmkit.engine import plots  # noqa: F401

    path.parent.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _, auc = roc_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, marker=".", label=f"AUC {auc:.4f}" if np.isfinite(auc) else "AUC undefined")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("false-alarm rate (PASS flagged FAIL)")
    ax.set_ylabel("defect accuracy (FAIL recall)")
    ax.set_title(title or "ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure_atomically(fig, path)
    plt.close(fig)
    return path
