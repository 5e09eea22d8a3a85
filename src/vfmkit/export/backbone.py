"""ONNX export of a bare backbone: ``image`` in, ``summary`` / ``features`` (and each adaptor's) out.

The graph (see :class:`BackboneGraph`):

- input ``image``: float32 (batch, 3, H, W) RGB in [0, 1]; mean/std normalisation happens inside the graph;
- outputs ``summary`` (batch, C) and ``features`` (batch, h*w, D) patch tokens in raster order (h = H / patch,
  w = W / patch), and for each adaptor head the model was loaded with ``adaptor.<name>.summary`` (batch, C_a) and
  ``adaptor.<name>.features`` (batch, h_a*w_a, D_a) (h_a = u * h for an adaptor that upsamples by u);
- a dynamic batch axis always; dynamic ``height`` / ``width`` where the model allows it: RADIO (not in ViTDet mode)
  resamples its CPE position grid inside the graph, so one file takes any H, W that are multiples of the patch
  size. The timm and open_clip towers resample their learned position table with antialiased bicubic
  interpolation, which ONNX opset 17 cannot express: they are exported at one fixed H x W (one file per resolution),
  from a copy whose table was resampled once beforehand with the same function, so the graph holds it as a constant;
- metadata: model id, weights fingerprint (sha256 of the state dict), exported resolution and resolution policy,
  mean/std, patch size, resolution step, adaptors, the input/output contract, precision and vfmkit version.

:func:`export_backbone` writes such a file with :func:`vfmkit.export.onnx.export_onnx` and verifies it with
:func:`vfmkit.export.verify.verify_onnx` on real preprocessed images (at a second resolution too when H/W are
dynamic); :func:`reference_images` gives the images shipped with vfmkit for that.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vfmkit.data.images import IMAGE_EXTENSIONS
from vfmkit.data.preprocess import preprocess_images, target_size
from vfmkit.export.onnx import DEFAULT_OPSET, ExportError, export_onnx
from vfmkit.export.verify import DEFAULT_TOLERANCE, VerifyResult, verify_onnx
from vfmkit.models.backbones.base import AdaptorOutput, Backbone, BackboneOutput
from vfmkit.weights.fingerprint import weights_fingerprint

INPUT_NAME = "image"
SPATIAL_AXES = {2: "height", 3: "width"}
Resolution = int | tuple[int, int] | None


def output_names(adaptors: Sequence[str] = ()) -> list[str]:
    """Graph output names: ``summary``, ``features``, then ``adaptor.<name>.summary`` / ``.features`` per adaptor."""
    names = ["summary", "features"]
    for name in adaptors:
        names += [f"adaptor.{name}.summary", f"adaptor.{name}.features"]
    return names


class BackboneGraph(nn.Module):
    """A backbone's forward as plain tensors, in :func:`output_names` order.

    Args:
        backbone: the backbone; every adaptor head it was loaded with becomes two outputs.

    Forward: images float32 (B, 3, H, W) RGB in [0, 1] -> (summary (B, C), features (B, h*w, D), then per adaptor
    summary (B, C_a) and features (B, h_a*w_a, D_a)).
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.adaptors = tuple(backbone.adaptor_names)

    @property
    def output_names(self) -> list[str]:
        return output_names(self.adaptors)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.backbone(images)
        tensors = [output.summary, output.features]
        for name in self.adaptors:
            tensors += [output.adaptors[name].summary, output.adaptors[name].features]
        return tuple(tensors)


def to_backbone_output(
    arrays: Mapping[str, np.ndarray | torch.Tensor], image_size: tuple[int, int], patch_size: int
) -> BackboneOutput:
    """Graph outputs (name -> array, names as :func:`output_names`) back into a :class:`BackboneOutput`.

    Args:
        arrays: ``summary`` (B, C), ``features`` (B, h*w, D) and the adaptor outputs.
        image_size: (H, W) of the input images.
        patch_size: the backbone's patch size (h = H / patch_size).

    Returns:
        A :class:`BackboneOutput` of float32 CPU tensors; an adaptor's grid is inferred from its token count
        (h*u, w*u for an upsampling factor u).
    """
    tensors = {name: torch.as_tensor(np.asarray(value)).float() for name, value in arrays.items()}
    grid = (image_size[0] // patch_size, image_size[1] // patch_size)
    adaptors = {}
    for name in sorted({key.split(".")[1] for key in tensors if key.startswith("adaptor.")}):
        features = tensors[f"adaptor.{name}.features"]
        adaptors[name] = AdaptorOutput(
            tensors[f"adaptor.{name}.summary"], features, _token_grid(features.shape[1], grid)
        )
    return BackboneOutput(tensors["summary"], tensors["features"], grid, adaptors)


def _token_grid(tokens: int, grid: tuple[int, int]) -> tuple[int, int]:
    """The (h*u, w*u) grid of ``tokens`` tokens over a base ``grid`` (u an integer upsampling factor)."""
    factor = round(math.sqrt(tokens / (grid[0] * grid[1])))
    if factor < 1 or grid[0] * grid[1] * factor * factor != tokens:
        raise ExportError(f"{tokens} adaptor tokens do not tile the {grid[0]}x{grid[1]} patch grid")
    return grid[0] * factor, grid[1] * factor


def supports_dynamic_resolution(backbone: Backbone) -> bool:
    """True for RADIO outside ViTDet mode: its CPE position grid is resampled in the graph for any H, W."""
    from vfmkit.models.backbones.radio.model import RadioBackbone

    return isinstance(backbone, RadioBackbone) and not backbone.cfg.vitdet_window_size


def resolution_rule(backbone: Backbone, size: tuple[int, int], dynamic: bool) -> str:
    """One line saying which image sizes an exported graph takes."""
    if dynamic:
        step = backbone.preprocessing.resolution_step
        return f"dynamic: any H and W that are multiples of {step} (exported and verified at {size[0]}x{size[1]})"
    return f"fixed: {size[0]}x{size[1]} only (export one file per resolution)"


@contextlib.contextmanager
def traceable_position_embedding(backbone: nn.Module) -> Iterator[None]:
    """While exporting, RADIO's eval position embedding is computed in a form the tracer keeps symbolic.

    The eager method returns the stored grid unchanged at the native size and picks the long side with Python's
    ``max``; a tracer evaluates both once, freezing the graph to the example's shape. Here the long side is
    ``torch.maximum`` of the traced sizes and the grid is always resampled (bilinear, align_corners=False: exactly
    the eager result, an identity at the native size), then cropped to the top-left h x w as in eager mode.
    """
    from vfmkit.models.backbones.radio.patch_generator import PatchGenerator

    generators = [m for m in backbone.modules() if isinstance(m, PatchGenerator)]
    for generator in generators:
        generator._eval_position_embedding = types.MethodType(_symbolic_position_embedding, generator)
    try:
        yield
    finally:
        for generator in generators:
            del generator._eval_position_embedding


def _symbolic_position_embedding(generator: nn.Module, grid: tuple) -> torch.Tensor:
    """(1, h*w, D) position term; ``grid`` holds ints (eager) or 0-dim tensors (traced sizes)."""
    h, w = grid
    side = torch.maximum(h, w) if isinstance(h, torch.Tensor) else max(h, w)
    pos = F.interpolate(generator._grid_image(), size=(side, side), mode="bilinear", align_corners=False)
    return pos[:, :, :h, :w].to(generator.pos_embed.dtype).flatten(2).transpose(1, 2)


def backbone_metadata(
    backbone: Backbone, model_id: str, fingerprint: str, size: tuple[int, int], dynamic: bool
) -> dict[str, str]:
    """The ONNX metadata of a backbone graph (strings; lists and dicts JSON-encoded)."""
    prep = backbone.preprocessing
    names = output_names(backbone.adaptor_names)
    outputs = {
        "summary": f"float32 (batch, {backbone.summary_dim}) global embedding",
        "features": f"float32 (batch, h*w, {backbone.embed_dim}) patch tokens, raster order, h = H/{prep.patch_size}",
    }
    for name in names[2:]:
        kind = "teacher-space summary (batch, C)" if name.endswith("summary") else "teacher-space tokens (batch, N, D)"
        outputs[name] = f"float32 {kind}"
    return {
        "model": model_id,
        "weights_sha256": fingerprint,
        "resolution": f"{size[0]}x{size[1]}",
        "resolution_policy": "dynamic" if dynamic else "fixed",
        "resolution_rule": resolution_rule(backbone, size, dynamic),
        "mean": json.dumps(list(prep.mean)),
        "std": json.dumps(list(prep.std)),
        "patch_size": str(prep.patch_size),
        "resolution_step": str(prep.resolution_step),
        "adaptors": json.dumps(list(backbone.adaptor_names)),
        "input": "image: float32 (batch, 3, H, W) RGB in [0, 1]; mean/std are applied inside the graph",
        "outputs": json.dumps(outputs),
        "precision": "fp32",
    }


@dataclass
class BackboneExport:
    """What :func:`export_backbone` wrote.

    Attributes:
        path: the ``.onnx`` file.
        resolution: (H, W) it was exported (and first verified) at.
        dynamic: whether H and W are symbolic in the graph.
        metadata: the metadata stored in the file (without ``vfmkit_version`` / ``vfmkit_exporter``).
        verified: one :class:`VerifyResult` per resolution verified (two when dynamic), empty when not verified.
    """

    path: Path
    resolution: tuple[int, int]
    dynamic: bool
    metadata: dict[str, str]
    verified: list[VerifyResult] = field(default_factory=list)


def export_backbone(
    backbone: Backbone,
    path: str | Path,
    resolution: Resolution = None,
    *,
    model_id: str | None = None,
    dynamic_resolution: bool | None = None,
    opset: int = DEFAULT_OPSET,
    verify_images: torch.Tensor | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    fingerprint: str | None = None,
) -> BackboneExport:
    """Export ``backbone`` as a :class:`BackboneGraph` ONNX file and verify it against PyTorch.

    Args:
        backbone: the model (eval mode; adaptor heads it carries are exported too).
        path: the ``.onnx`` file to write (atomically).
        resolution: None for the preferred resolution, N for N x N, or (H, W): the example size, and the only size
            of a fixed-resolution graph.
        model_id: id recorded in the metadata; default the backbone's ``model_id`` attribute or class name.
        dynamic_resolution: symbolic H/W; None: whenever :func:`supports_dynamic_resolution`.
        opset: ONNX operator set (>= 17).
        verify_images: float32 (B, 3, H, W) real images in [0, 1] at ``resolution`` (see :func:`reference_images`);
            None skips verification. A dynamic graph is verified again at a second, non-square size.
        tolerance: max abs difference allowed, scaled by max(1, |largest output value|) per output.
        fingerprint: the weights fingerprint when already computed (else computed here).

    Raises:
        ExportError: dynamic H/W asked of a fixed-resolution model, export failure, or outputs that differ.
        VfmError: a resolution that is not a multiple of the resolution step.
    """
    size = target_size(backbone.preprocessing.preferred_resolution[::-1], backbone.preprocessing, resolution)
    dynamic = supports_dynamic_resolution(backbone) if dynamic_resolution is None else dynamic_resolution
    model_id = model_id or str(getattr(backbone, "model_id", type(backbone).__name__))
    if dynamic and not supports_dynamic_resolution(backbone):
        raise ExportError(f"{model_id} cannot be exported with dynamic H/W: {resolution_rule(backbone, size, False)}")
    module = BackboneGraph(backbone).eval()
    metadata = backbone_metadata(backbone, model_id, fingerprint or weights_fingerprint(backbone), size, dynamic)
    axes = {INPUT_NAME: SPATIAL_AXES} if dynamic else None
    traced = module if dynamic else BackboneGraph(with_position_table_for(backbone, size)).eval()
    with traceable_position_embedding(backbone) if dynamic else contextlib.nullcontext():
        export_onnx(
            traced,
            (torch.rand(2, 3, *size, device=_device(backbone)),),
            path,
            [INPUT_NAME],
            module.output_names,
            metadata,
            opset=opset,
            dynamic_input_axes=axes,
        )
    result = BackboneExport(Path(path), size, dynamic, metadata)
    if verify_images is not None:
        batches = [verify_images] + ([_second_size(verify_images, backbone)] if dynamic else [])
        for images in batches:
            result.verified.append(verify_onnx(path, module, (images,), tolerance=tolerance, relative=True))
    return result


def _device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def with_position_table_for(backbone: Backbone, size: tuple[int, int]) -> Backbone:
    """``backbone``, or a copy of it whose learned position table is resampled to ``size`` once, in eager mode.

    timm and open_clip towers resample the table on every forward at a non-native size (antialiased bicubic, no
    ONNX opset 17 equivalent). The copy holds the table already resampled by the same function (timm's
    ``set_input_size``; for open_clip towers the wrapper's own ``_position_embedding``), so its outputs at ``size``
    are the original's and the traced graph stores the table as a constant. The original is left untouched.
    """
    from vfmkit.models.backbones.open_clip_family import OpenClipVisionBackbone
    from vfmkit.models.backbones.timm_family import TimmBackbone

    grid = (size[0] // backbone.patch_size, size[1] // backbone.patch_size)
    if isinstance(backbone, TimmBackbone) and hasattr(backbone.model, "set_input_size"):
        if tuple(backbone.model.patch_embed.grid_size) == grid:
            return backbone
        resized = copy.deepcopy(backbone)
        resized.model.set_input_size(img_size=size)
        return resized
    if isinstance(backbone, OpenClipVisionBackbone) and tuple(backbone.tower.grid_size) != grid:
        resized = copy.deepcopy(backbone)
        with torch.no_grad():
            table = resized._position_embedding(grid).detach().clone()
        resized.tower.positional_embedding = nn.Parameter(table, requires_grad=False)
        resized.tower.grid_size = grid
        return resized
    return backbone


def _second_size(images: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """The verification images resized to a non-square size one step taller and two steps wider."""
    step = backbone.preprocessing.resolution_step
    height, width = images.shape[-2:]
    resized = F.interpolate(images, size=(height + step, width + 2 * step), mode="bilinear", antialias=True)
    return resized.clamp(0.0, 1.0)


def reference_images(backbone: Backbone, resolution: Resolution = None, count: int = 4) -> torch.Tensor:
    """Real images to verify an export with: the photos-like demo images shipped with vfmkit, preprocessed.

    Args:
        backbone: sets the preprocessing.
        resolution: as in :func:`export_backbone`.
        count: how many images (one per demo class in turn).

    Returns:
        float32 (count, 3, H, W) RGB in [0, 1].

    Raises:
        ExportError: the images are missing from the installed package.
    """
    root = resources.files("vfmkit").joinpath("assets", "demo", "val")
    if not root.is_dir():
        raise ExportError(f"the demo images are missing from the installed package ({root}); reinstall vfmkit")
    folders = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name)
    files = [sorted((f for f in d.iterdir() if _is_image_name(f.name)), key=lambda f: f.name) for d in folders]
    chosen = [column for row in zip(*files, strict=False) for column in row][:count]
    images = [Image.open(io.BytesIO(item.read_bytes())) for item in chosen]
    return preprocess_images(images, backbone, resolution=resolution)


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS
