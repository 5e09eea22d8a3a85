"""Generated data, toy teachers and a plain training loop for the distillation tests.

Images (32x32 PNG): a faint class pattern (stripes of period 8: checker, diagonal, horizontal, vertical; amplitude
10) under a loud nuisance (one of 8 random +-45 tiles repeated every 16 pixels, a strong background colour: blue,
green, red, yellow, and noise). Pattern and colour are independent labels. A random network's features follow the
loud parts, so an untrained student's k-NN on patterns stays near chance, while a linear filter recovers the pattern
exactly. The same files are exposed as class folders by pattern and by colour (hard links) for k-NN.

Teachers are real :class:`~vfmkit.models.backbones.base.Backbone` modules, so they go through the same frozen-teacher
wrapper as registry models: oracle modules in the sense of the design notes (clip-distill.md 8.5) whose weights are
set, not fitted: a one-layer CNN of matched filters for the pattern, and the mean colour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from vfmkit.data.preprocess import pil_to_tensor, resize
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing
from vfmkit.tasks.distill.data import DistillImages, collate_distill
from vfmkit.tasks.distill.spec import DistillSpec

PATTERNS = ("checker", "diagonal", "horizontal", "vertical")
COLOURS = {"blue": (40, 70, 200), "green": (40, 170, 60), "red": (200, 40, 40), "yellow": (200, 190, 40)}
SIZE = 32
_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
_K = 2 * np.pi / 8
TEMPLATES = {
    "checker": np.sign(np.sin(_K * _X + 0.5) * np.sin(_K * _Y + 0.5)),
    "diagonal": np.sign(np.sin(_K * (_X + _Y) + 0.5)),
    "horizontal": np.sign(np.sin(_K * _Y + 0.5)),
    "vertical": np.sign(np.sin(_K * _X + 0.5)),
}
_TILES = np.sign(np.random.default_rng(123).normal(size=(8, 16, 16)))


@dataclass
class PatternData:
    """Paths of a generated dataset: ``unlabeled`` (the train images), ``by_pattern`` / ``by_colour`` class-folder
    roots (``train`` / ``val`` splits), and per split the files with their pattern and colour labels."""

    root: Path
    unlabeled: Path
    by_pattern: Path
    by_colour: Path
    files: dict[str, list[Path]]
    pattern_labels: dict[str, list[int]]
    colour_labels: dict[str, list[int]]


def _draw(pattern: str, colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    base = np.array(colour, dtype=np.float64) + rng.integers(-30, 31, 3)
    tile = np.tile(_TILES[rng.integers(0, len(_TILES))], (2, 2))
    pixels = base + 45 * tile[..., None] + 10 * TEMPLATES[pattern][..., None] + rng.normal(0, 6, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_pattern_dataset(root: Path, per_combo: dict[str, int] | None = None, seed: int = 0) -> PatternData:
    """``per_combo[split]`` PNG images of every (pattern, colour) pair per split (default 20 train, 6 val)."""
    per_combo = per_combo or {"train": 20, "val": 6}
    rng = np.random.default_rng(seed)
    root = Path(root)
    files, patterns, colours = {}, {}, {}
    for split, count in per_combo.items():
        files[split], patterns[split], colours[split] = [], [], []
        for pi, pattern in enumerate(PATTERNS):
            for ci, (colour, rgb) in enumerate(COLOURS.items()):
                for i in range(count):
                    path = root / "images" / split / f"{colour}_{pattern}_{i:03d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _draw(pattern, rgb, rng).save(path)
                    for view, label in (("by_pattern", pattern), ("by_colour", colour)):
                        link = root / view / split / label / path.name
                        link.parent.mkdir(parents=True, exist_ok=True)
                        os.link(path, link)
                    files[split].append(path)
                    patterns[split].append(pi)
                    colours[split].append(ci)
    return PatternData(
        root, root / "images" / "train", root / "by_pattern", root / "by_colour", files, patterns, colours
    )


def load_images(files: list[Path], size: int = SIZE) -> torch.Tensor:
    """(N, 3, size, size) float images in [0, 1] (resized as the distillation data resizes)."""
    return torch.stack([resize(pil_to_tensor(Image.open(f).convert("RGB")), (size, size)) for f in files])


def _preprocessing(patch: int) -> Preprocessing:
    return Preprocessing((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), patch, (SIZE, SIZE), SIZE, patch)


def _code(dim: int, inputs: int, seed: int) -> torch.Tensor:
    return torch.randn(dim, inputs, generator=torch.Generator().manual_seed(seed))


class ColourTeacher(Backbone):
    """Encodes the mean colour: summary = ``scale * R [r, g, b]`` (R a fixed random 16x3 matrix), features = the same
    code of each 8x8 patch's mean colour (4x4 grid)."""

    def __init__(self, scale: float = 1.0, dim: int = 16):
        super().__init__()
        self.preprocessing = _preprocessing(8)
        self.embed_dim = self.summary_dim = dim
        self.num_blocks = 1
        self.scale = scale
        self.register_buffer("code", _code(dim, 3, 7))

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        grid = self.check_input(images)
        features = F.avg_pool2d(images, 8).flatten(2).transpose(1, 2)
        summary = images.mean((2, 3))
        return BackboneOutput(self.scale * summary @ self.code.T, self.scale * features @ self.code.T, grid)


class PatternTeacher(Backbone):
    """A frozen one-layer CNN of matched filters: an 8x8 stride-8 convolution whose filters are the zero-mean class
    templates, a softmax over the 4 responses, and a fixed random 16-d code. Summary: the code of the image-mean
    response; features: the code of each 8x8 patch's response (4x4 grid). Colour and tiles are invisible to it."""

    def __init__(self, scale: float = 1.0, dim: int = 16, sharpness: float = 0.01):
        super().__init__()
        self.preprocessing = _preprocessing(8)
        self.embed_dim = self.summary_dim = dim
        self.num_blocks = 1
        self.scale, self.sharpness = scale, sharpness
        filters = torch.tensor(np.stack([TEMPLATES[p][:8, :8] for p in PATTERNS]), dtype=torch.float32)
        filters = (filters - filters.mean((1, 2), keepdim=True))[:, None].repeat(1, 3, 1, 1) * (255.0 / 3)
        self.register_buffer("filters", filters)  # (4, 3, 8, 8) on [0, 1] pixels
        self.register_buffer("code", _code(dim, len(PATTERNS), 3))

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        grid = self.check_input(images)
        responses = F.conv2d(images, self.filters, stride=8)  # (B, 4, h, w)
        patches = F.softmax(self.sharpness * responses, dim=1).flatten(2).transpose(1, 2) @ self.code.T
        summary = F.softmax(self.sharpness * responses.mean((2, 3)), dim=1) @ self.code.T
        return BackboneOutput(self.scale * summary, self.scale * patches, grid)


def distill_spec(data: PatternData, teachers: list[dict], normalization: str = "phi_s", **distill) -> DistillSpec:
    """A spec for the tiny RADIO student at 32 px on the generated images; standardisation frozen after 5 batches."""
    return DistillSpec.model_validate(
        {
            "model": {"backbone": "test-radio-v2-tiny", "pretrained": False, "resolution": SIZE},
            "distill": {
                "feature_normalization": normalization,
                "teacher": teachers,
                "phi_s": {"freeze_after": 5, "update_period": 1},
                **distill,
            },
            "dataset": {"train_nolabel": {"folder_path": str(data.unlabeled)}},
        }
    )


def train_plain(
    model, files, epochs: int, lr: float = 2e-3, batch_size: int = 32, seed: int = 0, on_epoch=None
) -> list[float]:
    """A plain PyTorch loop over :class:`DistillImages`: AdamW on the trainable parameters; returns epoch-mean losses
    (``on_epoch(epoch, model)`` is called after each epoch)."""
    torch.manual_seed(seed)
    dataset = DistillImages(files, (SIZE, SIZE), model.teacher_sizes(), cache=model.cache)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate_distill,
        generator=torch.Generator().manual_seed(seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    history = []
    model.train()
    for _ in range(epochs):
        losses = []
        for batch in loader:
            loss = model(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        history.append(sum(losses) / len(losses))
        if on_epoch is not None:
            on_epoch(len(history), model)
    return history
