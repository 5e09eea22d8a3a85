"""PCA colour maps of spatial features.

The patch features of all images are pooled, centred and projected on their first three principal components
(one PCA fitted jointly over every image, so colours are comparable between pictures). Each component is scaled to
[0, 1] between its 1st and 99th percentile and used as one RGB channel. Each picture is a PNG with the image as the
model saw it (resized to the model input) on the left and the colour map, upsampled to the same size with nearest
neighbours so every patch stays a visible square, on the right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vfmkit.data.images import list_image_files
from vfmkit.data.preprocess import preprocess_image
from vfmkit.errors import DataError
from vfmkit.features.embed import SkippedImage, extract_embeddings, resolve_model
from vfmkit.features.runners import RuntimeOptions, make_runner
from vfmkit.models.backbones.base import Backbone
from vfmkit.utils.atomic import save_image_atomically

GAP_PX = 4
"""White gap between the image and its colour map."""
MIN_SIDE_PX = 256
"""Pictures of smaller inputs are enlarged by an integer factor until their short side reaches this."""


@dataclass
class PcaResult:
    """The pictures written (one per readable input, input order) and the images skipped as unreadable."""

    pictures: list[Path]
    skipped: list[SkippedImage]


def pca_colors(spatial: torch.Tensor, max_fit_tokens: int = 200_000, seed: int = 0) -> torch.Tensor:
    """Project spatial features on their first 3 principal components, as colours.

    Args:
        spatial: (B, D, h, w) features (any float dtype).
        max_fit_tokens: fit on at most this many tokens (a fixed random subset) to bound memory; all are projected.
        seed: seed of that subset.

    Returns:
        float32 (B, 3, h, w) in [0, 1]; channel k is principal component k (signs fixed so each component's
        largest loading is positive, so the result is deterministic).
    """
    batch, dim, height, width = spatial.shape
    tokens = spatial.permute(0, 2, 3, 1).reshape(-1, dim).double()
    fit = tokens
    if tokens.shape[0] > max_fit_tokens:
        generator = torch.Generator().manual_seed(seed)
        fit = tokens[torch.randperm(tokens.shape[0], generator=generator)[:max_fit_tokens]]
    mean = fit.mean(dim=0)
    centred = fit - mean
    covariance = centred.T @ centred / max(fit.shape[0] - 1, 1)
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    basis = vectors[:, -3:].flip(-1)
    signs = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    if basis.shape[1] < 3:
        basis = F.pad(basis, (0, 3 - basis.shape[1]))
    fitted = centred @ basis
    low, high = torch.quantile(fitted, 0.01, dim=0), torch.quantile(fitted, 0.99, dim=0)
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    colors = ((tokens - mean) @ basis - low) / scale
    colors = torch.where(high > low, colors, torch.full_like(colors, 0.5)).clamp(0.0, 1.0)
    return colors.float().reshape(batch, height, width, 3).permute(0, 3, 1, 2)


def side_by_side(image: torch.Tensor, colors: torch.Tensor, min_side: int = MIN_SIDE_PX) -> Image.Image:
    """The image and its colour map next to each other.

    Args:
        image: float (3, H, W) RGB in [0, 1].
        colors: float (3, h, w) in [0, 1], upsampled (nearest) to the image size.
        min_side: when min(H, W) is smaller, both panels are enlarged by the smallest integer factor f that reaches
            it (the image bilinearly, the map with nearest neighbours).

    Returns:
        An RGB ``PIL.Image`` of size (2 * f * W + GAP_PX) x (f * H).
    """
    height, width = image.shape[-2:]
    factor = max(1, math.ceil(min_side / min(height, width)))
    size = (height * factor, width * factor)
    if factor > 1:
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    upsampled = F.interpolate(colors[None], size=size, mode="nearest")[0]
    gap = torch.ones(3, size[0], GAP_PX)
    canvas = torch.cat([image, gap, upsampled], dim=-1)
    array = (canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def picture_names(files: Sequence[Path]) -> list[str]:
    """Unique PNG names ``<stem>_pca.png`` (``<stem>_pca_2.png``... when stems repeat)."""
    names, seen = [], {}
    for file in files:
        count = seen[file.stem] = seen.get(file.stem, 0) + 1
        names.append(f"{file.stem}_pca.png" if count == 1 else f"{file.stem}_pca_{count}.png")
    return names


def pca_source(
    source: str | Path | Sequence[str | Path],
    model: str | Path | Backbone,
    out_dir: str | Path,
    resolution: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    runtime: RuntimeOptions | None = None,
) -> PcaResult:
    """Write one PCA picture per image of ``source`` into ``out_dir``.

    Args:
        source: folder, glob, list file or image file, or a sequence of image paths.
        model: a registry id, ``hf-hub:`` source or checkpoint path, or a loaded backbone.
        out_dir: folder for the PNGs (created).
        resolution: None for the model's preferred resolution, N for N x N.
        batch_size: images per forward.
        progress: show progress on stderr.
        runtime: how to run the model (see :class:`RuntimeOptions`); None: eager PyTorch.

    Returns:
        A :class:`PcaResult`. The PCA is fitted jointly over all images, so their features are held in memory:
        meant for a handful to a few hundred images.
    """
    files = list_image_files(source) if isinstance(source, (str, Path)) else [Path(s) for s in source]
    backbone, model_id = resolve_model(model)
    runner = make_runner(backbone, model_id, runtime)
    embeddings = extract_embeddings(runner, files, resolution, batch_size, "spatial", progress=progress, desc="pca")
    colors = pca_colors(embeddings.tensors["spatial"])
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from exc
    pictures = []
    for file, name, color in zip(embeddings.files, picture_names(embeddings.files), colors, strict=True):
        image = preprocess_image(file, backbone.preprocessing, embeddings.resolution)
        pictures.append(out_dir / name)
        save_image_atomically(side_by_side(image, color), pictures[-1])
    return PcaResult(pictures, embeddings.skipped)
