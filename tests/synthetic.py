"""Generated image datasets for task tests (deterministic, small, visually distinct classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("blue_stripes", "green_square", "red_circle", "yellow_cross")


def _draw(kind: int, rng: np.random.Generator, size: int) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 80, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    x, y = (int(v) for v in rng.integers(size // 8, size // 2, 2))
    s = int(rng.integers(size // 4, size // 3))
    jitter = rng.integers(-30, 30, 3)

    def colour(base):
        return tuple(int(v) for v in np.clip(np.array(base) + jitter, 0, 255))

    if kind == 0:
        for k in range(0, size, 8):
            draw.rectangle([k, 0, k + 3, size - 1], fill=colour([40, 40, 220]))
    elif kind == 1:
        draw.rectangle([x, y, x + s, y + s], fill=colour([40, 220, 40]))
    elif kind == 2:
        draw.ellipse([x, y, x + s, y + s], fill=colour([220, 40, 40]))
    else:
        draw.rectangle([x, y + s // 2 - 2, x + s, y + s // 2 + 2], fill=colour([230, 230, 40]))
        draw.rectangle([x + s // 2 - 2, y, x + s // 2 + 2, y + s], fill=colour([230, 230, 40]))
    return image


def make_shapes_dataset(
    root: Path, per_class: dict[str, int] | None = None, size: int = 64, seed: int = 0, classes=CLASSES
) -> Path:
    """``root/<split>/<class>/*.png`` with ``per_class`` images per class and split (default 60 train, 20 val)."""
    per_class = per_class or {"train": 60, "val": 20}
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for kind, name in enumerate(classes):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _draw(kind % 4, rng, size).save(folder / f"{name}_{i:03d}.png")
    return Path(root)


SEGMENT_CLASSES = ("background", "circle", "square")


def make_segmentation_dataset(
    root: Path, per_split: dict[str, int] | None = None, size: int = 64, seed: int = 0
) -> Path:
    """``root/images/<split>/*.png`` with id masks ``root/masks/<split>/*.png`` (0 background, 1 circle, 2 square)
    of shapes on noisy textured backgrounds."""
    per_split = per_split or {"train": 48, "val": 12}
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count in per_split.items():
        (Path(root) / "images" / split).mkdir(parents=True, exist_ok=True)
        (Path(root) / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            texture = rng.integers(40, 120, 3) + 25 * np.sin(xx[..., None] / rng.uniform(2, 6))
            image = np.clip(texture + rng.normal(0, 12, (size, size, 3)), 0, 255)
            mask = np.zeros((size, size), dtype=np.uint8)
            for kind in rng.permutation([1, 2])[: rng.integers(1, 3)]:
                s = int(rng.integers(size // 6, size // 3))
                cx, cy = (int(v) for v in rng.integers(s, size - s, 2))
                shape = (
                    ((xx - cx) ** 2 + (yy - cy) ** 2 <= s * s)
                    if kind == 1
                    else ((abs(xx - cx) <= s) & (abs(yy - cy) <= s))
                )
                colour = [230, 60, 60] if kind == 1 else [60, 200, 230]
                image[shape] = np.array(colour) + rng.normal(0, 10, 3)
                mask[shape] = kind
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(Path(root) / "images" / split / f"{i:03d}.png")
            Image.fromarray(mask, mode="L").save(Path(root) / "masks" / split / f"{i:03d}.png")
    return Path(root)


def save_tiny_radio_checkpoint(path: Path, noise: float = 0.0, seed: int = 0) -> Path:
    """The ``test-radio-v2-tiny`` weights (without adaptors) as a torch.hub-layout RADIO ``.pth.tar`` file: a
    backbone with a named local source. ``noise`` > 0 perturbs every tensor (other weights, same architecture)."""
    import argparse

    import torch

    from vfmkit import load_backbone

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in load_backbone("test-radio-v2-tiny").state_dict().items():
        if key.startswith("adaptors."):
            continue
        if noise and value.is_floating_point() and "input_conditioner" not in key:
            value = value + noise * torch.randn(value.shape, generator=generator)
        state[("base_" + key) if key.startswith("model.") else key] = value
    teachers = [{"name": name, "use_summary": name != "sam"} for name in ("clip", "siglip", "dino_v2", "sam")]
    args = argparse.Namespace(
        model="vit_tiny_patch16_224",
        model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2},
        cls_token_per_teacher=True,
        cpe_max_size=256,
        teachers=teachers,
        register_multiple=8,
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"args": args, "state_dict": state}, path)
    return Path(path)
