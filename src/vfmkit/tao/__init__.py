"""Coming from NVIDIA TAO: convert TAO experiment specs (``tao model <task> <action> -e spec.yaml``) into vfmkit specs.

``vfm spec from-tao TAO_SPEC.yaml [--task TASK] -o vfm_spec.yaml [key=value ...]`` is :func:`convert_tao_file`. The
mapping lives in one data table per vfmkit task (``vfmkit/tasks/<task>/tao_map.yaml``, plus the shared rows in
``vfmkit/spec/tao_map.yaml``); :mod:`vfmkit.tao.tables` describes their format, :mod:`vfmkit.tao.transforms` the value
transforms, and :mod:`vfmkit.tao.detect` refuses an unconverted TAO spec given to ``vfm <task> ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vfmkit.errors import VfmError
from vfmkit.tao.convert import Conversion, convert, infer_tao_task, resolve_tao_spec
from vfmkit.tao.output import render_conversion, validate_conversion
from vfmkit.tao.tables import tao_task, tao_tasks

__all__ = ["ConvertedSpec", "convert_tao_file", "tao_tasks"]


@dataclass
class ConvertedSpec:
    """What :func:`convert_tao_file` made.

    Attributes:
        conversion: the converted keys, their TAO sources and the keys not converted.
        text: the commented vfmkit spec (YAML).
        out: where it was written, or None.
    """

    conversion: Conversion
    text: str
    out: Path | None


def convert_tao_file(
    path: str | Path, task: str | None = None, overrides: Sequence[str] = (), out: str | Path | None = None,
    force: bool = False,
) -> ConvertedSpec:  # fmt: skip
    """Convert a TAO spec file into a commented vfmkit spec, validated against the vfmkit task's spec.

    Args:
        path: the TAO experiment spec (YAML, OmegaConf interpolations allowed).
        task: the TAO task (``classification_pyt``, ``rtdetr`` ...; see :func:`tao_tasks`); None: inferred from the
            spec's keys when that is unambiguous.
        overrides: vfmkit ``key=value`` settings applied after the conversion (they fill ``???``).
        out: write the spec here (atomically; nothing is written when the conversion fails).
        force: overwrite an existing ``out``.

    Raises:
        VfmError: unreadable spec, unknown or ambiguous task, an invalid converted value or override (naming the
            vfmkit key and its TAO key), or an existing ``out`` without ``force``.
    """
    from vfmkit.task import spec_class
    from vfmkit.utils.atomic import atomic_write_text

    path = Path(path)
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and not force:
        raise VfmError(f"{out} exists; pass --force to overwrite it")
    data = resolve_tao_spec(path)
    tao = tao_task(task) if task else tao_task(infer_tao_task(data, path))
    conversion = convert(data, tao)
    conversion.apply_overrides(list(overrides))
    schema = spec_class(tao.vfm_task)
    validate_conversion(conversion, schema, path)
    text = render_conversion(conversion, schema, path, out)
    if out is not None:
        atomic_write_text(out, text)
    return ConvertedSpec(conversion, text, out)
