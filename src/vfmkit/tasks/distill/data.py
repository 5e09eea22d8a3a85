"""Unlabeled images for distillation: one view for the student and one per teacher, each at its own size.

Every image is decoded once (:func:`vfmkit.data.images.load_image_rgb`) and resized (aspect ignored, bilinear with
antialiasing, :func:`vfmkit.data.preprocess.resize`) to the student's size and to each teacher's size; the models
normalise themselves. The only augmentation is photometric (colour jitter) on the student's view: teachers always
see the clean image, so their targets are the same whether they run or come from the cache (geometric augmentation
would misalign spatial targets and defeat the cache). The jitter of a sample is seeded by (seed, epoch, index)
(:func:`vfmkit.data.augment.sample_seed`), so resumed runs see the same batches.

With a :class:`~vfmkit.tasks.distill.teachers.TeacherCache`, a sample whose outputs for a teacher are cached carries
them instead of that teacher's view; :func:`collate_distill` groups each teacher's cached rows and the rows it must
still run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from vfmkit.data.augment import EpochSeededDataset, sample_seed
from vfmkit.data.images import list_image_files, load_image_rgb
from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.tasks.distill.teachers import TeacherCache, file_key


class DistillImages(EpochSeededDataset):
    """Unlabeled image files -> student view, teacher views and cached teacher outputs.

    Args:
        files: image paths (see :func:`vfmkit.data.images.list_image_files` for sources).
        student_size: (H, W) of the student's view.
        teacher_sizes: teacher name -> (H, W) of its view.
        cache: cached teacher outputs to use instead of views (None: every teacher gets its view).
        color_jitter: brightness/contrast/saturation factors drawn from [1 - s, 1 + s] for the student's view (0: off).
        seed: run seed of the jitter.

    Items: ``{"index": int, "file_key": str, "student": (3, H, W), "views": {teacher: (3, h, w)}, "cached":
    {teacher: {"summary", "features", "grid"}}, "damaged": {teacher: "<entry file>: <reason>"}}``; every teacher is
    in exactly one of ``views`` and ``cached``; ``damaged`` names the teachers whose entry existed but did not
    verify (they are in ``views``: the teacher runs and the entry is rewritten).

    Raises (when an item is read):
        DataError: an unreadable image (the message names it).
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        student_size: tuple[int, int],
        teacher_sizes: dict[str, tuple[int, int]],
        cache: TeacherCache | None = None,
        color_jitter: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        self.split = [Path(f) for f in files]
        self.student_size = tuple(student_size)
        self.teacher_sizes = {name: tuple(size) for name, size in teacher_sizes.items()}
        self.cache, self.seed = cache, seed
        strength = float(color_jitter)
        self.jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength) if strength else None

    @classmethod
    def from_source(cls, source: str | Path, **kwargs: Any) -> DistillImages:
        """A dataset over every image of a folder, glob or list file (DataError when there are none)."""
        return cls(list_image_files(source), **kwargs)

    @property
    def files(self) -> list[Path]:
        return self.split

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.split[index]
        key = file_key(path) if self.cache is not None else ""
        cached, damaged = {}, {}
        if self.cache is not None:
            for name in self.teacher_sizes:
                lookup = self.cache.lookup(name, key)
                if lookup.hit:
                    cached[name] = lookup.tensors
                elif lookup.damaged:
                    damaged[name] = f"{self.cache.entry_path(name, key).name}: {lookup.problem}"
        image = pil_to_tensor(load_image_rgb(path))
        resized: dict[tuple[int, int], torch.Tensor] = {}

        def view(size: tuple[int, int]) -> torch.Tensor:
            if size not in resized:
                resized[size] = resize(image, size)
            return resized[size]

        views = {name: view(size) for name, size in self.teacher_sizes.items() if name not in cached}
        return {
            "index": index,
            "file_key": key,
            "student": self._augment(view(self.student_size), index),
            "views": views,
            "cached": cached,
            "damaged": damaged,
        }

    def _augment(self, image: torch.Tensor, index: int) -> torch.Tensor:
        if self.jitter is None:
            return image
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.jitter(image).clamp_(0.0, 1.0)


def collate_distill(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`DistillImages` items.

    Returns:
        ``{"index": (B,) int64, "file_keys": [B str], "student": (B, 3, H, W), "teachers": {name: {"run_rows": (R,)
        int64, "images": (R, 3, h, w) or None, "cached_rows": (M,) int64, "cached": {"summary": (M, C_s),
        "features": (M, N, C_f)}, "grid": (h, w) or None, "damaged": int, "damage": str or None}}}`` where
        ``run_rows`` / ``cached_rows`` index the batch and ``damaged`` counts the run rows whose cache entry did
        not verify (``damage``: the first one's file and reason).
    """
    names = list(items[0]["views"]) + list(items[0]["cached"])
    teachers = {}
    for name in names:
        run = [i for i, item in enumerate(items) if name in item["views"]]
        hit = [i for i, item in enumerate(items) if name in item["cached"]]
        cached: dict[str, torch.Tensor] = {}
        grid = None
        if hit:
            for key in ("summary", "features"):
                if key in items[hit[0]]["cached"][name]:
                    cached[key] = torch.stack([items[i]["cached"][name][key] for i in hit])
            grid = tuple(int(v) for v in items[hit[0]]["cached"][name]["grid"])
        damage = [item["damaged"][name] for item in items if name in item.get("damaged", {})]
        teachers[name] = {
            "run_rows": torch.tensor(run, dtype=torch.int64),
            "images": torch.stack([items[i]["views"][name] for i in run]) if run else None,
            "cached_rows": torch.tensor(hit, dtype=torch.int64),
            "cached": cached,
            "grid": grid,
            "damaged": len(damage),
            "damage": damage[0] if damage else None,
        }
    return {
        "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
        "file_keys": [item["file_key"] for item in items],
        "student": torch.stack([item["student"] for item in items]),
        "teachers": teachers,
    }
