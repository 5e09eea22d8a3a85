"""Generated change-detection datasets for the change tests (deterministic, small, with PIL).

- :func:`make_levir`: LEVIR-CD layout; pairs of textured 64x64 scenes where shapes appear in B or vanish from it,
  with a global brightness change between A and B that is NOT a change; labels mark the appeared/vanished shapes.
- :func:`make_golden_csv`: golden-vs-test inspection CSVs; every object has a golden image (a random pattern),
  the test image is the golden with another exposure and noise (PASS) or with a planted defect blob (FAIL); each sample
  is stored in two lighting conditions (``_L0`` bright, ``_L1`` dim).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = ((230, 60, 60), (60, 200, 60), (70, 90, 240), (240, 220, 60), (240, 240, 240))


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(40, 110, 3)
    coarse = rng.normal(0, 18, (size // 8, size // 8, 3))
    coarse = np.kron(coarse, np.ones((8, 8, 1)))
    return np.clip(base + coarse + rng.normal(0, 8, (size, size, 3)), 0, 255)


def _shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, fill) -> None:
    s = int(rng.integers(size // 6, size // 3))
    x, y = (int(v) for v in rng.integers(0, size - s, 2))
    if rng.random() < 0.5:
        draw.rectangle([x, y, x + s, y + s], fill=fill)
    else:
        draw.ellipse([x, y, x + s, y + s], fill=fill)


def _scene_pair(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image, np.ndarray]:
    background = _texture(rng, size)
    a, b = Image.fromarray(background.astype(np.uint8)), Image.fromarray(background.astype(np.uint8))
    label = Image.new("L", (size, size), 0)
    draw_a, draw_b, draw_l = ImageDraw.Draw(a), ImageDraw.Draw(b), ImageDraw.Draw(label)
    for _ in range(int(rng.integers(0, 2))):  # unchanged shapes in both
        fill = COLORS[int(rng.integers(len(COLORS)))]
        state = rng.bit_generator.state
        _shape(draw_a, rng, size, fill)
        rng.bit_generator.state = state
        _shape(draw_b, rng, size, fill)
    for _ in range(int(rng.integers(1, 3))):  # appear in B or vanish from B
        fill = COLORS[int(rng.integers(len(COLORS)))]
        target = draw_b if rng.random() < 0.5 else draw_a
        state = rng.bit_generator.state
        _shape(target, rng, size, fill)
        rng.bit_generator.state = state
        _shape(draw_l, rng, size, 255)
    gain = float(rng.uniform(0.85, 1.15))  # illumination change: not a change
    b = Image.fromarray(np.clip(np.asarray(b, dtype=np.float64) * gain, 0, 255).astype(np.uint8))
    return a, b, np.asarray(label)


def make_levir(root: Path, counts: dict[str, int] | None = None, size: int = 64, seed: int = 0) -> Path:
    """``root/{A,B,label,list}`` with ``counts`` pairs per split (default 96 train, 32 val)."""
    counts = counts or {"train": 96, "val": 32}
    rng = np.random.default_rng(seed)
    for folder in ("A", "B", "label", "list"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        names = []
        for i in range(count):
            name = f"{split}_{i:03d}.png"
            a, b, label = _scene_pair(rng, size)
            a.save(root / "A" / name)
            b.save(root / "B" / name)
            Image.fromarray(label).save(root / "label" / name)
            names.append(name)
        (root / "list" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    image = Image.fromarray(_texture(rng, size).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        draw.line([x0, y0, x1, y1], fill=(200, 200, 200), width=2)
    return np.asarray(image, dtype=np.float64)


def _test_view(golden: np.ndarray, rng: np.random.Generator, defect: bool) -> np.ndarray:
    gain = float(rng.uniform(0.9, 1.1))  # exposure difference: not a defect
    image = Image.fromarray(np.clip(golden * gain + rng.normal(0, 4, golden.shape), 0, 255).astype(np.uint8))
    if defect:
        size = golden.shape[0]
        s = int(rng.integers(size // 8, size // 5))
        x, y = (int(v) for v in rng.integers(2, size - s - 2, 2))
        colour = (250, 30, 250) if rng.random() < 0.5 else (10, 10, 10)
        ImageDraw.Draw(image).ellipse([x, y, x + s, y + s], fill=colour)
    return np.asarray(image, dtype=np.float64)


def make_golden_csv(
    root: Path, counts: dict[str, int] | None = None, size: int = 64, seed: int = 0, goldens_per_folder: int = 1
) -> Path:
    """``root/{golden,test}/<split>/`` images and ``root/<split>.csv``; half the samples are FAIL.

    With ``goldens_per_folder`` > 1 the objects of a split are grouped into golden folders of that many objects
    (for multi-golden). Returns ``root``.
    """
    counts = counts or {"train": 96, "val": 32}
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        rows = ["input_path,golden_path,label,object_name"]
        for i in range(count):
            golden_dir = f"golden/{split}/g{i // goldens_per_folder:03d}"
            (root / golden_dir).mkdir(parents=True, exist_ok=True)
            (root / "test" / split).mkdir(parents=True, exist_ok=True)
            golden, obj = _pattern(rng, size), f"obj{i:03d}"
            defect = i % 2 == 1
            test = _test_view(golden, rng, defect)
            for light, gain in (("_L0", 1.0), ("_L1", 0.6)):
                Image.fromarray(np.clip(golden * gain, 0, 255).astype(np.uint8)).save(
                    root / golden_dir / f"{obj}{light}.png"
                )
                Image.fromarray(np.clip(test * gain, 0, 255).astype(np.uint8)).save(
                    root / "test" / split / f"{obj}{light}.png"
                )
            rows.append(f"test/{split},{golden_dir},{'FAIL' if defect else 'PASS'},{obj}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root
