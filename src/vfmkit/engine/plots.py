"""PNG plots for run folders (matplotlib Agg, no fonts downloaded)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vfmkit.utils.atomic import save_figure_atomically


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one column; empty cells (undefined metrics) become NaN, which matplotlib draws as a gap."""
    epochs, values = [], []
    for row in rows:
        value = row.get(key, "")
        epochs.append(int(row["epoch"]) + 1)
        values.append(float(value) if value not in ("", None) else float("nan"))
    return epochs, values


def plot_curves(rows: list[dict], out_dir: Path) -> list[Path]:
    """``loss.png`` (every ``*loss*`` column) and ``metrics.png`` (every other metric) from metrics.csv rows."""
    if not rows:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [k for k in rows[-1] if k not in ("epoch", "lr", "seconds")]
    written = []
    groups = {"loss": [k for k in keys if "loss" in k], "metrics": [k for k in keys if "loss" not in k]}
    for name, selected in groups.items():
        if not selected:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in selected:
            ax.plot(*_series(rows, key), marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        save_figure_atomically(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(matrix, dtype=np.int64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    save_figure_atomically(fig, path)
    plt.close(fig)
    return path
