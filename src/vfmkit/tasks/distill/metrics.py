"""Validation of distillation inside the engine: the labelled k-NN sets as one dataset, and a meter that turns the
student's summaries (and its heads' outputs) into the validation metrics.

Metrics (fractions in [0, 1]; None when undefined):

- ``knn_top1``: k-NN top-1 of the student's summary on the domain set (``dataset.knn_validation``): the queries
  (``<root>/<val_split>/<class>/*``) vote over the memory (``<root>/<train_split>/<class>/*``) as ``vfm knn`` does
  (:func:`vfmkit.features.knn.knn_scores`: L2-normalised, k neighbours weighted by ``exp(cos / T)``, similarities
  in float64, a warning when neighbours tie);
- ``control_knn_top1``: the same on ``dataset.control`` (None without one): shows forgetting;
- ``<teacher>/summary_cosine``, ``<teacher>/feature_cosine``: fidelity, the mean cosine similarity in the teacher's
  own space between each head (standardisation inverse applied) and its teacher, on the domain's query images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vfmkit.data.preflight import check_samples
from vfmkit.errors import DataError
from vfmkit.features.knn import knn_scores, list_class_folders, require_two_classes
from vfmkit.models.backbones.base import AdaptorOutput
from vfmkit.tasks.distill.data import DistillImages, collate_distill
from vfmkit.tasks.distill.validate import head_fidelity

MEMORY, QUERY = 0, 1
"""Roles of a labelled image: k-NN memory or query."""


@dataclass
class KnnSet:
    """One labelled k-NN set: ``files`` (memory first, then queries), their class indices and roles."""

    name: str
    classes: list[str]
    files: list[Path]
    labels: list[int]
    roles: list[int]

    @classmethod
    def from_folders(cls, name: str, root: Path, memory_split: str, query_split: str, key: str) -> KnnSet:
        """``<root>/<memory_split>/<class>/*`` (memory) and ``<root>/<query_split>/<class>/*`` (queries).

        Raises:
            DataError: a missing or empty folder, or a memory of fewer than two classes (naming ``key``, the spec key
                of the root).
        """
        try:
            memory = list_class_folders(Path(root) / memory_split)
            require_two_classes(memory, Path(root) / memory_split)
            queries = list_class_folders(Path(root) / query_split, classes=memory.classes)
        except DataError as err:  # it names the folder; the message adds the spec key
            raise DataError(f"{key} {root}: {err}") from None
        if not memory.files or not queries.files:
            raise DataError(f"{key} {root}: no images in {memory_split}/<class>/ or {query_split}/<class>/")
        roles = [MEMORY] * len(memory.files) + [QUERY] * len(queries.files)
        return cls(
            name, list(memory.classes), [*memory.files, *queries.files], [*memory.labels, *queries.labels], roles
        )

    def __len__(self) -> int:
        return len(self.files)

    def readable(self, split: str, key: str) -> KnnSet:
        """This set without the images the shared decoding preflight leaves out (listed and recorded under
        ``split``).

        Raises:
            DataError: no readable memory or query image is left (naming ``key``).
        """
        keep = check_samples(self.files, split, what=f"{self.name} k-NN images").keep
        if keep.all():
            return self
        kept = [i for i in range(len(self)) if keep[i]]
        roles = [self.roles[i] for i in kept]
        if MEMORY not in roles or QUERY not in roles:
            raise DataError(f"{key}: no readable memory or query image is left in the {self.name} set (see above)")
        files, labels = [self.files[i] for i in kept], [self.labels[i] for i in kept]
        return KnnSet(self.name, list(self.classes), files, labels, roles)


class KnnImages(DistillImages):
    """The images of one or two :class:`KnnSet` (domain first, then control): each item is a
    :class:`~vfmkit.tasks.distill.data.DistillImages` item plus ``label``, ``role`` and ``set`` (0 domain, 1 control).
    """

    def __init__(self, sets: list[KnnSet], student_size, teacher_sizes):
        files = [f for s in sets for f in s.files]
        super().__init__(files, student_size, teacher_sizes)
        self.sets = list(sets)
        self.labels = [label for s in sets for label in s.labels]
        self.roles = [role for s in sets for role in s.roles]
        self.set_ids = [i for i, s in enumerate(sets) for _ in s.files]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item.update(label=self.labels[index], role=self.roles[index], set=self.set_ids[index])
        return item


def collate_knn(items: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`collate_distill` plus ``label``, ``role`` and ``set`` (B,) int64."""
    batch = collate_distill(items)
    for key in ("label", "role", "set"):
        batch[key] = torch.tensor([item[key] for item in items], dtype=torch.int64)
    return batch


class DistillMeter:
    """Collects summaries and fidelity sums over :func:`collate_knn` batches; :meth:`compute` gives the metrics.

    Args:
        sets: the domain set and optionally the control set, in that order (as the dataset holds them).
        teachers: teacher head names.
        k, temperature: the k-NN protocol.
    """

    def __init__(self, sets: list[KnnSet], teachers: list[str], k: int = 20, temperature: float = 0.07):
        self.sets, self.teachers, self.k, self.temperature = sets, list(teachers), k, temperature
        self.reset()

    def reset(self) -> None:
        self.index: list[torch.Tensor] = []
        self.summaries: list[torch.Tensor] = []
        self.fidelity = torch.zeros(len(self.teachers), 2, 2, dtype=torch.float64)  # teacher x kind x (sum, count)

    @torch.no_grad()
    def update(self, model, batch: dict[str, Any]) -> None:
        """Run the student (with heads) on the batch, and each teacher on its domain queries."""
        out = model.student(batch["student"])
        self.index.append(batch["index"].cpu())
        self.summaries.append(out.summary.float().cpu())
        rows = ((batch["role"] == QUERY) & (batch["set"] == 0)).to(batch["student"].device)
        if not bool(rows.any()):
            return
        for t, name in enumerate(self.teachers):
            target = model.teachers[name](batch["teachers"][name]["images"][rows])
            head = out.adaptors[name]
            rows_only = AdaptorOutput(head.summary[rows], head.features[rows], head.grid)
            for kind, cos in head_fidelity(model, name, rows_only, target).items():
                column = 0 if kind == "summary_cosine" else 1
                self.fidelity[t, column] += torch.tensor([float(cos.sum()), len(cos)], dtype=torch.float64)

    def gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) dataset indices and (N, C) summaries of this process (N = 0: a process that got no image)."""
        if not self.index:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, 0)
        return torch.cat(self.index), torch.cat(self.summaries)

    def compute(self, index: torch.Tensor | None = None, summaries: torch.Tensor | None = None) -> dict[str, Any]:
        """The metrics (see the module docstring) from this process's rows, or from gathered ``index`` /
        ``summaries`` (every process's; repeated indices count once)."""
        if index is None:
            index, summaries = self.gathered()
        order = torch.argsort(index)
        index, summaries = index[order], summaries[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        index, summaries = index[keep], summaries[keep]
        metrics: dict[str, Any] = {}
        start = 0
        for set_id, knn_set in enumerate(self.sets):
            rows = (index >= start) & (index < start + len(knn_set))
            key = "knn_top1" if set_id == 0 else "control_knn_top1"
            metrics[key] = self._top1(knn_set, index[rows] - start, summaries[rows])
            start += len(knn_set)
        if len(self.sets) < 2:
            metrics["control_knn_top1"] = None
        for t, name in enumerate(self.teachers):
            for kind, column in (("summary_cosine", 0), ("feature_cosine", 1)):
                total, count = self.fidelity[t, column].tolist()
                if count:
                    metrics[f"{name}/{kind}"] = total / count
        return metrics

    def _top1(self, knn_set: KnnSet, positions: torch.Tensor, summaries: torch.Tensor) -> float | None:
        """k-NN top-1 (a fraction) of the set's queries over its memory; None without either."""
        roles = torch.tensor(knn_set.roles)[positions]
        labels = torch.tensor(knn_set.labels)[positions]
        memory, query = roles == MEMORY, roles == QUERY
        if not memory.any() or not query.any():
            return None
        scores = knn_scores(
            summaries[memory], labels[memory], summaries[query], len(knn_set.classes), self.k, self.temperature
        )
        return float((scores.argmax(dim=1) == labels[query]).float().mean())
