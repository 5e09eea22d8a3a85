"""MODEL_CARD.md for a run: backbone and weights provenance (every backbone's source and fingerprints, as recorded
in ``weights.json``), data summary, metrics, spec hash, limits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vfmkit import __version__
from vfmkit.engine.run_dir import atomic_write_text
from vfmkit.models.registry import find_entry
from vfmkit.weights.record import WeightsRecord

RecordedWeights = tuple[list[WeightsRecord], str | None]
"""The records of ``weights.json`` and its ``init_from`` (see :func:`vfmkit.engine.weights.read_weights_json`)."""


def _backbone_lines(backbone: str, weights: RecordedWeights | None) -> list[str]:
    main = next((r for r in weights[0] if r.role == "backbone"), None) if weights else None
    source = f"{main.kind}: {main.source}" if main else "not recorded (the run has no weights.json)"
    entry = find_entry(backbone)
    if entry is None:
        return [
            f"- backbone: `{backbone}` (not a registry model; license: see its publisher)",
            f"- weights: {source}",
        ]
    return [
        f"- backbone: `{entry.id}` ({entry.description})",
        f"- weights: {source}",
        f"- weights license: {entry.license}",
        f"- parameters: {entry.params_m} M" if entry.params_m else "- parameters: -",
    ]


def _weights_lines(weights: RecordedWeights | None) -> list[str]:
    """The "Weights" section: every backbone's source and fingerprints, as ``weights.json`` records them."""
    if not weights:
        return ["- not recorded: this run has no weights.json (started by an older vfmkit)"]
    records, init_from = weights
    lines = [
        "Where each backbone's weights came from when the run started (`weights.json`); weights sha256 is "
        "`vfmkit.weights.fingerprint.weights_fingerprint` of the backbone as built, before training.",
        "",
        *(record.card_line() for record in records),
    ]
    if init_from:
        lines.append(f"- then the whole model started from the weights of `{init_from}` (train.init_from)")
    return lines


def write_model_card(
    run_dir: Path,
    task: str,
    backbone: str,
    weights: RecordedWeights | None,
    data_summary: dict[str, Any],
    metrics: dict[str, Any] | None,
    spec_hash: str,
    notes: list[str] | None = None,
    metric_notes: dict[str, str] | None = None,
    test_metrics: dict[str, Any] | None = None,
    monitor: str | None = None,
) -> Path:
    """Write ``run_dir/MODEL_CARD.md``.

    Args:
        weights: the records of the run's ``weights.json`` and its ``init_from``; None: not recorded.
        data_summary: e.g. {"classes": [...], "images per split": {...}}.
        metrics: the headline metrics on the validation split (name -> value; fractions in [0, 1], None when
            undefined); None without validation.
        notes: intended use / limitations lines.
        metric_notes: why a metric can be undefined (shown next to an undefined value).
        test_metrics: the same on the test split, when the dataset has one: the unbiased figure.
        monitor: the validation metric that picked the checkpoint (e.g. ``val/ap``).
    """
    lines = [
        f"# Model card: {task} run `{Path(run_dir).name}`",
        "",
        f"Trained with vfmkit {__version__} on {time.strftime('%Y-%m-%d')}.",
        "",
        "## Backbone",
        *_backbone_lines(backbone, weights),
        "",
        "## Weights",
        *_weights_lines(weights),
        "",
        "## Data",
        *(f"- {key}: {value}" for key, value in data_summary.items()),
        "",
        "## Metrics",
        *_metrics_section(metrics, test_metrics, monitor, metric_notes or {}),
        "",
        "## Reproducibility",
        f"- spec hash (sha256 of spec.resolved.yaml): `{spec_hash}`",
        "- the resolved spec is in `spec.resolved.yaml`, the environment in `env.json`",
        "",
        "## Intended use and limits",
        *(f"- {note}" for note in (notes or [])),
        "- metrics are measured on the data above; performance on other data is not guaranteed",
        "",
    ]
    path = Path(run_dir) / "MODEL_CARD.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _metrics_section(
    val: dict[str, Any] | None, test: dict[str, Any] | None, monitor: str | None, notes: dict[str, str]
) -> list[str]:
    """The metrics of the best checkpoint: test first (the unbiased figure), then val, saying that val picked the
    checkpoint (so its figure is optimistic)."""
    lines = ["Fractions in [0, 1], from the best checkpoint.", ""]
    if test is not None:
        lines += ["Test split (not used to pick the checkpoint: the unbiased figure):", ""]
        lines += [*(_metric_line(key, value, notes) for key, value in test.items()), ""]
    if val is None:
        return [*lines, "- validation: none (no val split)"]
    by = f" by `{monitor}`" if monitor else ""
    if test is None:
        lines += [
            f"Validation split. It also picked the checkpoint{by}, so these figures are optimistic (selection bias); "
            "with a test split in the dataset, train reports it too as the unbiased figure.",
            "",
        ]
    else:
        lines += [f"Validation split (it picked the checkpoint{by}, so it reads optimistic):", ""]
    return [*lines, *(_metric_line(key, value, notes) for key, value in val.items())]


def _metric_line(key: str, value: Any, notes: dict[str, str]) -> str:
    if value is None:
        why = notes.get(key, "its denominator is zero on this split")
        return f"- {key}: undefined ({why})"
    if isinstance(value, float):
        return f"- {key}: {value:.4f}"
    return f"- {key}: {value}"
