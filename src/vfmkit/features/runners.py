"""How feature extraction runs a backbone: PyTorch (CPU or GPU, fp32/bf16/fp16, optionally compiled) or onnxruntime
(fp32 or int8, from a cached export).

Every runner has the backbone's call surface: ``runner(images)`` with float32 (B, 3, H, W) RGB in [0, 1] returns a
:class:`BackboneOutput`, and ``runner.preprocessing`` says how to feed it; so :func:`vfmkit.features.embed.
extract_embeddings`, PCA, k-NN and the linear-probe feature cache take a runner wherever they take a backbone.
:func:`make_runner` builds one from :class:`RuntimeOptions` (the ``--runtime``, ``--int8``, ``--min-cosine``,
``--device``, ``--dtype`` and ``--compile`` options of the CLI) and refuses combinations that cannot work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from vfmkit.errors import VfmError
from vfmkit.export.cache import OnnxCache
from vfmkit.export.onnx_runner import DEFAULT_MIN_COSINE, BackboneDelegate, OnnxBackboneRunner
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing

RUNTIMES = ("torch", "onnxruntime")
DTYPES = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class BackboneRunner(Protocol):
    """What feature extraction needs of a model: images (B, 3, H, W) in [0, 1] -> outputs, and its preprocessing."""

    @property
    def preprocessing(self) -> Preprocessing: ...

    def __call__(self, images: torch.Tensor) -> BackboneOutput: ...


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run the backbone.

    Attributes:
        runtime: ``torch`` (eager PyTorch) or ``onnxruntime`` (CPU, from a cached ONNX export).
        int8: onnxruntime only: dynamically quantized weights.
        min_cosine: int8 only: refuse output whose mean summary cosine to fp32 on the first batch is lower.
        dtype: torch only: ``fp32``, or ``bf16`` / ``fp16`` autocast (fp16 needs a CUDA GPU).
        compile: torch only: ``torch.compile`` the backbone.
        device: torch only: ``auto`` (CUDA when visible, else CPU), ``cpu`` or ``cuda``.
        cache_dir: folder of cached ONNX graphs; None: the user cache folder (``$VFMKIT_CACHE/onnx`` or
            ``~/.cache/vfmkit/onnx``).
    """

    runtime: str = "torch"
    int8: bool = False
    min_cosine: float = DEFAULT_MIN_COSINE
    dtype: str = "fp32"
    compile: bool = False
    device: str = "auto"
    cache_dir: Path | None = None

    def check(self) -> None:
        """Raise :class:`VfmError` (one line) for an unknown value or a combination that cannot work."""
        for name, value, allowed in (
            ("runtime", self.runtime, RUNTIMES),
            ("dtype", self.dtype, DTYPES),
            ("device", self.device, DEVICES),
        ):
            if value not in allowed:
                raise VfmError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.int8 and self.runtime != "onnxruntime":
            raise VfmError("--int8 needs --runtime onnxruntime (int8 is onnxruntime's weight quantization)")
        if self.runtime == "onnxruntime":
            torch_only = [flag for flag, on in (("--dtype", self.dtype != "fp32"), ("--compile", self.compile)) if on]
            if torch_only:
                verb = "apply" if len(torch_only) > 1 else "applies"
                raise VfmError(
                    f"{' and '.join(torch_only)} {verb} to --runtime torch; onnxruntime runs fp32, or int8 with --int8"
                )
            if self.device == "cuda":
                raise VfmError(
                    "--runtime onnxruntime runs on the CPU; on a GPU use --runtime torch (--dtype bf16) or a TensorRT "
                    "engine (vfm models export ID --format tensorrt)"
                )


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when visible, else CPU; ``cuda`` without a visible GPU is a :class:`VfmError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise VfmError("--device cuda: no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False)")
    return torch.device(device)


class TorchRunner(BackboneDelegate):
    """Eager (or compiled) PyTorch on one device, fp32 or under bf16/fp16 autocast.

    Args:
        backbone: the model (moved to ``device``, eval mode).
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 only on CUDA).
        compile: wrap the backbone in ``torch.compile``; a compiler failure on the first batch is a
            :class:`VfmError` saying to run without ``--compile``.

    Outputs stay on the device, in the autocast dtype; callers convert (``.float()``, ``.cpu()``).
    """

    def __init__(self, backbone: Backbone, device: str = "auto", dtype: str = "fp32", compile: bool = False) -> None:
        self.device = resolve_device(device)
        if dtype == "fp16" and self.device.type != "cuda":
            raise VfmError("--dtype fp16 needs a CUDA GPU (no fp16 autocast on the CPU here); use --dtype bf16 or fp32")
        if dtype == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise VfmError("--dtype bf16: this GPU has no bfloat16 support; use --dtype fp16")
        self.backbone = backbone.eval().to(self.device)
        self.dtype = dtype
        self.compile = compile
        self._forward = torch.compile(self.backbone) if compile else self.backbone
        self._compiled_once = not compile

    @property
    def cache_tag(self) -> str:
        """``torch-fp32`` etc.: identifies the numerics in feature caches (compilation does not change them)."""
        return f"torch-{self.dtype}"

    def __call__(self, images: torch.Tensor) -> BackboneOutput:
        """images float32 (B, 3, H, W) RGB in [0, 1] (any device) -> outputs on ``self.device``."""
        self.backbone.check_input(images)
        images = images.to(self.device, non_blocking=True)
        autocast = torch.autocast(self.device.type, dtype=_AUTOCAST.get(self.dtype), enabled=self.dtype != "fp32")
        with torch.inference_mode(), autocast:
            if self._compiled_once:
                return self._forward(images)
            try:
                output = self._forward(images)
            except Exception as exc:  # the compiler's own failure (missing C++ compiler, unsupported op, ...)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise VfmError(f"torch.compile failed on this machine ({reason[:300]}); run without --compile") from exc
            self._compiled_once = True
            return output


def make_runner(backbone: Backbone, model_id: str, options: RuntimeOptions | None = None) -> BackboneRunner:
    """The runner ``options`` describe; None: the backbone itself (eager, on the device it is on).

    Raises:
        VfmError: a bad option or combination (see :meth:`RuntimeOptions.check`), fp16 on the CPU, no GPU.
    """
    if options is None:
        return backbone
    options.check()
    if options.runtime == "onnxruntime":
        cache = OnnxCache(options.cache_dir)
        return OnnxBackboneRunner(backbone, model_id, int8=options.int8, min_cosine=options.min_cosine, cache=cache)
    return TorchRunner(backbone, options.device, options.dtype, options.compile)
