"""Adapted backbones: a student backbone with trained teacher heads, and the folder format that stores one.

A distilled student is a plain backbone plus, per teacher, a head pair (summary MLP on one cls slot, feature MLP on
the patch tokens) in the RADIO adaptor layout (:class:`~vfmkit.models.backbones.radio.adaptors.Adaptor`). On a RADIO
student the heads are attached natively (``RadioBackbone.adaptors``; each reads its own cls slot); on any other
backbone :class:`AdaptedBackbone` wraps it and the heads read the summary.

Folder format (:func:`save_adapted_backbone` writes it, :func:`load_adapted_backbone` and so
``vfmkit.load_backbone(folder, adaptors=[...])`` read it)::

    <folder>/vfmkit_backbone.json   the manifest
    <folder>/model.safetensors      the student's tensors under its own state-dict names, plus
                                    adaptors.<name>.head_mlp.* / adaptors.<name>.feat_mlp.* per head

Manifest (JSON object):

- ``format`` = ``"vfmkit-adapted-backbone"``, ``version`` = 1, ``vfmkit_version``;
- ``weights``: the safetensors file, relative to the manifest's folder (default ``model.safetensors``), so another
  folder (e.g. a run folder) can hold a manifest that points at exported weights elsewhere;
- ``student``: ``{"family": "radio", "config": {RadioConfig fields except adaptors}, "registry_id": id | null}``
  (the full architecture, so any RADIO checkpoint's student round-trips) or ``{"family": "timm" | "open_clip",
  "registry_id": id}`` (rebuilt from the registry without weights, then loaded);
- ``adaptors``: ``{name: {"token_slot", "summary_mlp", "feature_mlp", "upsample_factor", "num_heads", "space",
  "teacher"}}``: the head architecture (MLP specs as in :class:`AdaptorConfig`), ``space`` = ``"teacher"`` when the
  heads emit teacher-space features (standardisation inverse folded in) and free-form ``teacher`` metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from vfmkit._version import __version__
from vfmkit.errors import VfmError, WeightsError
from vfmkit.models.backbones.base import Backbone, BackboneOutput, Preprocessing
from vfmkit.models.backbones.radio.adaptors import Adaptor
from vfmkit.models.backbones.radio.config import AdaptorConfig, RadioConfig
from vfmkit.models.backbones.radio.model import RadioBackbone
from vfmkit.utils.atomic import atomic_output, atomic_write_text
from vfmkit.weights.report import LoadReport
from vfmkit.weights.safe_load import load_safetensors

MANIFEST_NAME = "vfmkit_backbone.json"
FORMAT_NAME = "vfmkit-adapted-backbone"
FORMAT_VERSION = 1
ADAPTOR_PREFIX = "adaptors."


class AdaptedBackbone(Backbone):
    """A backbone with teacher heads outside it: on its summary (cls slot 0 = the summary; a RADIO backbone's heads
    read their own cls slot from ``out.cls_tokens``) and patch tokens.

    Non-RADIO students always carry their heads this way; a RADIO student is wrapped while it trains (so the
    backbone itself holds no head: it can stay frozen, and be left out of checkpoints, while the heads train) and
    gets its heads natively when saved and loaded again (:func:`save_adapted_backbone`), with the same outputs.

    Output: the wrapped backbone's :class:`BackboneOutput` with one :class:`AdaptorOutput` per head in ``adaptors``.
    Every other part of the backbone surface (preprocessing, token-level view, intermediates) is the wrapped
    backbone's, so the wrapper goes wherever a backbone goes.
    """

    def __init__(self, backbone: Backbone, configs: Sequence[AdaptorConfig], num_heads: int):
        super().__init__()
        self.backbone = backbone
        self.num_heads = num_heads
        self.adaptors = nn.ModuleDict()
        self.embed_dim, self.summary_dim = backbone.embed_dim, backbone.summary_dim
        self.num_blocks = backbone.num_blocks
        self.add_adaptors(configs)

    def add_adaptors(self, configs: Sequence[AdaptorConfig]) -> None:
        """Attach more heads (names must be new; summary heads read slot 0, the summary)."""
        slots = self.backbone.cfg.num_cls_tokens if isinstance(self.backbone, RadioBackbone) else 1
        for cfg in configs:
            if slots == 1 and cfg.token_slot != 0:
                raise VfmError(
                    f"head {cfg.name!r}: summary_token_idx {cfg.token_slot} needs a RADIO student with several cls "
                    "tokens; other backbones have one summary (use 0)"
                )
            if not 0 <= cfg.token_slot < slots:
                raise VfmError(
                    f"head {cfg.name!r}: summary_token_idx {cfg.token_slot} is not a cls slot of this RADIO student "
                    f"(it has {slots}: 0..{slots - 1})"
                )
            self.adaptors[cfg.name] = Adaptor(cfg, num_heads=self.num_heads)
        self.adaptor_names = tuple(self.adaptors)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.backbone.preprocessing

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.backbone, "num_prefix_tokens", 0))

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        return self._with_heads(self.backbone(images))

    def _with_heads(self, out: BackboneOutput) -> BackboneOutput:
        slots = out.cls_tokens if out.cls_tokens is not None else out.summary[:, None]
        heads = {name: adaptor(slots, out.features, out.grid) for name, adaptor in self.adaptors.items()}
        out.adaptors = {**out.adaptors, **heads}
        return out

    def embed_tokens(self, images: torch.Tensor):
        return self.backbone.embed_tokens(images)

    def token_blocks(self) -> nn.Module:
        return self.backbone.token_blocks()

    def finish_tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> BackboneOutput:
        return self._with_heads(self.backbone.finish_tokens(tokens, grid))

    def forward_intermediates(self, images: torch.Tensor, *args: Any, **kwargs: Any):
        return self.backbone.forward_intermediates(images, *args, **kwargs)

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        self.backbone.set_grad_checkpointing(enable)


def plain_backbone(backbone: Backbone) -> Backbone:
    """The student without the wrapper (the RADIO backbone itself, heads included, for RADIO students)."""
    return backbone.backbone if isinstance(backbone, AdaptedBackbone) else backbone


def attention_heads(backbone: Backbone) -> int:
    """Heads of the backbone's attention (used by ``attn`` feature heads), or a divisor of its width."""
    backbone = plain_backbone(backbone)
    if isinstance(backbone, RadioBackbone):
        return backbone.cfg.num_heads
    for module in backbone.modules():
        heads = getattr(module, "num_heads", None)
        if isinstance(heads, int) and heads > 0 and backbone.embed_dim % heads == 0:
            return heads
    return next(h for h in (16, 8, 4, 2, 1) if backbone.embed_dim % h == 0)


def attach_adaptors(
    backbone: Backbone, configs: Sequence[AdaptorConfig], num_heads: int | None = None, wrap: bool = False
) -> Backbone:
    """Attach teacher heads to a student and return the model that computes them.

    RADIO students get them in ``backbone.adaptors`` (each summary head reads cls slot ``token_slot``) unless
    ``wrap``; others (and wrapped RADIO students) are wrapped in :class:`AdaptedBackbone` (or extended, when already
    wrapped).

    Raises:
        VfmError: a head name already taken, or a cls slot the student does not have.
    """
    existing = set(getattr(backbone, "adaptor_names", ()))
    for cfg in configs:
        if cfg.name in existing:
            raise VfmError(f"the student already has a head named {cfg.name!r}; teacher names must be unique")
        existing.add(cfg.name)
    num_heads = num_heads or attention_heads(backbone)
    if isinstance(backbone, AdaptedBackbone):
        backbone.add_adaptors(configs)
        return backbone
    if wrap or not isinstance(backbone, RadioBackbone):
        return AdaptedBackbone(backbone, configs, num_heads)
    for cfg in configs:
        if not 0 <= cfg.token_slot < backbone.cfg.num_cls_tokens:
            raise VfmError(
                f"head {cfg.name!r}: summary_token_idx {cfg.token_slot} is not a cls slot of this RADIO student "
                f"(it has {backbone.cfg.num_cls_tokens}: 0..{backbone.cfg.num_cls_tokens - 1})"
            )
        backbone.adaptors[cfg.name] = Adaptor(cfg, num_heads=num_heads)
    backbone.cfg = backbone.cfg.with_overrides(adaptors=[*backbone.cfg.adaptors, *configs])
    backbone.adaptor_names = tuple(backbone.adaptors)
    return backbone


def set_summary_slots(backbone: Backbone, slots: Sequence[int]) -> None:
    """Make a RADIO student's ``summary`` the concatenation of cls ``slots`` (e.g. those its teachers' summaries are
    distilled into); ``summary_dim`` follows. Other backbones have one summary and are left alone.

    Raises:
        VfmError: a slot the student does not have.
    """
    plain = plain_backbone(backbone)
    if not isinstance(plain, RadioBackbone) or not slots:
        return
    slots = tuple(int(s) for s in slots)
    if not all(0 <= s < plain.cfg.num_cls_tokens for s in slots):
        raise VfmError(
            f"summary slots {slots} are not all cls slots of this RADIO student (0..{plain.cfg.num_cls_tokens - 1})"
        )
    plain.cfg = plain.cfg.with_overrides(summary_idxs=slots)
    plain.summary_idxs = torch.tensor(slots, dtype=torch.int64, device=plain.summary_idxs.device)
    plain.summary_dim = plain.cfg.summary_dim
    if backbone is not plain:
        backbone.summary_dim = plain.summary_dim


def head_state_dict(backbone: Backbone) -> dict[str, torch.Tensor]:
    """``adaptors.<name>.*`` tensors of the attached heads."""
    return {f"{ADAPTOR_PREFIX}{key}": value for key, value in backbone.adaptors.state_dict().items()}


def student_state_dict(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The student's own tensors (no heads), under the plain backbone's names."""
    plain = plain_backbone(backbone)
    return {k: v for k, v in plain.state_dict().items() if not k.startswith(ADAPTOR_PREFIX)}


def describe_student(backbone: Backbone, registry_id: str | None = None) -> dict[str, Any]:
    """The manifest's ``student`` field (see the module docstring).

    Raises:
        VfmError: a non-RADIO student whose registry id cannot be told (pass ``registry_id``).
    """
    from vfmkit.models.registry import find_entry

    plain = plain_backbone(backbone)
    name = registry_id or getattr(plain, "registry_id", None) or getattr(plain, "model_id", None)
    entry = find_entry(str(name)) if name else None
    if isinstance(plain, RadioBackbone):
        config = {f.name: getattr(plain.cfg, f.name) for f in fields(RadioConfig) if f.name != "adaptors"}
        return {"family": "radio", "config": config, "registry_id": entry.id if entry else None}
    if entry is None:
        raise VfmError(
            f"cannot save a {type(plain).__name__} student: its registry id is unknown ({name!r}); pass registry_id"
        )
    return {"family": entry.family, "registry_id": entry.id}


def save_adapted_backbone(
    folder: str | Path,
    backbone: Backbone,
    adaptor_info: dict[str, dict[str, Any]] | None = None,
    registry_id: str | None = None,
) -> Path:
    """Write a student and its heads as an adapted-backbone folder (each file atomically, the manifest last).

    Args:
        folder: created if needed; existing manifest/weights are replaced.
        backbone: the student, heads attached (:func:`attach_adaptors`).
        adaptor_info: per head name, extra manifest fields (``space``, ``teacher`` metadata).
        registry_id: the student's registry id when the model does not carry it (non-RADIO students).

    Returns:
        The manifest path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = adaptor_info or {}
    adaptors = {}
    for name, adaptor in backbone.adaptors.items():
        cfg = asdict(adaptor.cfg)
        cfg.pop("name")
        num_heads = getattr(backbone, "num_heads", None) or attention_heads(backbone)
        adaptors[name] = {**cfg, "num_heads": num_heads, "space": "student", **info.get(name, {})}
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vfmkit_version": __version__,
        "weights": "model.safetensors",
        "student": describe_student(backbone, registry_id),
        "adaptors": adaptors,
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in student_state_dict(backbone).items()}
    tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in head_state_dict(backbone).items()})
    metadata = {"format": FORMAT_NAME}
    with atomic_output(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=2))
    return folder / MANIFEST_NAME


def is_adapted_backbone_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding an adapted-backbone manifest."""
    return (Path(path).expanduser() / MANIFEST_NAME).is_file()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an adapted-backbone folder, checked.

    Raises:
        WeightsError: unreadable JSON, another format, a newer version, or a missing field (named).
    """
    path = Path(folder).expanduser() / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: not a readable JSON manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise WeightsError(f"{path}: field 'format' must be {FORMAT_NAME!r}")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > FORMAT_VERSION:
        raise WeightsError(f"{path}: field 'version' must be an integer <= {FORMAT_VERSION} (upgrade vfmkit)")
    student = manifest.get("student")
    if not isinstance(student, dict) or student.get("family") not in ("radio", "timm", "open_clip"):
        raise WeightsError(f"{path}: field 'student.family' must be one of radio, timm, open_clip")
    if student["family"] == "radio" and not isinstance(student.get("config"), dict):
        raise WeightsError(f"{path}: field 'student.config' (the RADIO architecture) is missing")
    if student["family"] != "radio" and not isinstance(student.get("registry_id"), str):
        raise WeightsError(f"{path}: field 'student.registry_id' is missing")
    if not isinstance(manifest.get("adaptors", {}), dict):
        raise WeightsError(f"{path}: field 'adaptors' must be an object of head name -> head description")
    return manifest


def _adaptor_config(name: str, entry: dict[str, Any], where: Path) -> AdaptorConfig:
    try:
        return AdaptorConfig(
            name=name,
            token_slot=int(entry["token_slot"]),
            summary_mlp=tuple(entry["summary_mlp"]) if entry.get("summary_mlp") else None,
            feature_mlp=tuple(entry["feature_mlp"]) if entry.get("feature_mlp") else None,
            upsample_factor=int(entry.get("upsample_factor", 1)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise WeightsError(f"{where}: field 'adaptors.{name}' is not a valid head description ({err})") from None


def _build_student(student: dict[str, Any], vitdet_window_size: int | None, where: Path) -> Backbone:
    """The student architecture with random weights (they are loaded next)."""
    if student["family"] == "radio":
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in student["config"].items()}
        if vitdet_window_size:
            if not config.get("supports_vitdet", True):
                raise WeightsError(f"{where}: this RADIO student does not support ViTDet windowed attention")
            config["vitdet_window_size"] = vitdet_window_size
        try:
            cfg = RadioConfig(**config)
        except TypeError as err:
            raise WeightsError(f"{where}: field 'student.config' does not describe a RADIO model ({err})") from None
        return RadioBackbone(cfg)
    if vitdet_window_size:
        raise WeightsError(f"{where}: vitdet_window_size applies to RADIO students only")
    from vfmkit.models.factory import build_from_entry
    from vfmkit.models.registry import resolve_entry

    return build_from_entry(resolve_entry(student["registry_id"]), pretrained=False)


def load_adapted_backbone(
    folder: str | Path, adaptors: Sequence[str] = (), vitdet_window_size: int | None = None
) -> Backbone:
    """Load an adapted-backbone folder (see the module docstring).

    Args:
        folder: the folder holding ``vfmkit_backbone.json``.
        adaptors: head names to attach (their outputs appear in ``out.adaptors[name]``); none: the plain student.
        vitdet_window_size: RADIO students only: windowed attention with this window.

    Returns:
        The student in eval mode, float32, on the CPU; ``load_report`` tells what happened to every key.

    Raises:
        WeightsError: a bad manifest, missing/unexpected/mis-shaped tensors, or an unknown head name.
    """
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    weights = folder / str(manifest.get("weights", "model.safetensors"))
    tensors = load_safetensors(weights)
    heads = manifest.get("adaptors", {})
    unknown = [name for name in adaptors if name not in heads]
    if unknown:
        raise WeightsError(f"{folder}: adaptor(s) {unknown} are not in this adapted backbone; it has {sorted(heads)}")
    report = LoadReport(source=str(weights))
    student = _build_student(manifest["student"], vitdet_window_size, folder / MANIFEST_NAME)
    report.load_exact(student, {k: v for k, v in tensors.items() if not k.startswith(ADAPTOR_PREFIX)})
    report.ignored.extend(k for k in tensors if k.startswith(ADAPTOR_PREFIX))
    model = student
    if adaptors:
        configs = [_adaptor_config(name, heads[name], folder / MANIFEST_NAME) for name in adaptors]
        num_heads = {int(heads[name].get("num_heads") or 0) for name in adaptors} - {0}
        model = attach_adaptors(student, configs, num_heads=num_heads.pop() if len(num_heads) == 1 else None)
        prefixes = tuple(f"{ADAPTOR_PREFIX}{name}." for name in adaptors)
        wanted = {k[len(ADAPTOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(prefixes)}
        report.ignored = [k for k in report.ignored if not k.startswith(prefixes)]
        report.load_exact(model.adaptors, wanted)
    plain_backbone(model).registry_id = manifest["student"].get("registry_id")
    model.adapted_manifest = manifest
    model.load_report = report
    return model.eval()
