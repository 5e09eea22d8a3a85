"""The closed set of value transforms a mapping row may name (``transform:`` in ``tao_map.yaml``).

===========  ==========================================================================================================
rename       the value as it is
enum         ``values[value]`` (strings compared case-insensitively); a value not in the map is not supported
backbone     a TAO backbone name -> the vfmkit registry id (``values`` first, then the registry's aliases; the CLIP
             registry with ``namespace: clip``); an unknown name is not supported and leaves ``???``
ratio        ``value / <of>`` (e.g. TAO's ``lr_backbone / lr`` -> ``backbone_lr_scale``)
item         ``value[index]`` of a list (a scalar stays as it is; an empty list writes nothing; ``only_one``: more
             than one value is not supported)
square       a ``[height, width]`` pair of equal sides -> the side (vfmkit trains square inputs)
pair         ``[value, <of>]`` (``index: 1``: ``[<of>, value]``): two TAO keys -> one range (``min_scale``,
             ``max_scale`` -> ``scale_range``)
same_as      nothing of its own: the value must equal ``<of>``'s, which is mapped (e.g. ``input_width`` vs
             ``input_height`` -> one square ``resolution``)
subfolder    a folder directly under the folder ``<of>`` -> its name (TAO's ``${root_dir}/train`` -> ``train``)
each         a list of sections (one dict is a list of one), every item converted by the row's own ``rows``
palette      TAO's segmentation palette ``[{label_id, rgb, seg_class, mapping_class}]`` -> ``[{name, id, color}]``
             (``id = label_id * factor``)
lights       ChangeNet's ``input_map {LightName: index}`` -> the file-name suffixes ``["_LightName", ...]`` in index
             order
append       ``values[value]`` appended to the list ``base`` (several TAO keys add to one vfmkit list)
===========  ==========================================================================================================

Every transform also honours ``keep`` (TAO values that mean "the default": nothing is written) and ``fold`` (values
with nothing of their own to write: another key carries the setting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfmkit.tao.tables import MapRow

KEEP = object()
"""A transform result: nothing to write, vfmkit's default applies (TAO's ``-1`` = automatic, an empty list)."""
FOLDED = object()
"""A transform result: nothing of its own to write, another TAO key carries the same value (``same_as``)."""
MISSING = object()
"""A lookup result: the TAO key is not in the spec."""

Lookup = Callable[[str], Any]
"""TAO dotted key -> its resolved value, or :data:`MISSING`."""


class NotMapped(Exception):
    """This value cannot be converted: ``reason`` (a row reason) and a ``note`` for the user."""

    def __init__(self, reason: str, note: str) -> None:
        super().__init__(note)
        self.reason = reason
        self.note = note


@dataclass(frozen=True)
class Append:
    """Items an ``append`` row adds to the list ``base``."""

    base: tuple[Any, ...]
    items: tuple[Any, ...]


def same_value(a: Any, b: Any) -> bool:
    """TAO value equality: strings case-insensitively, other values of the same type by ==."""
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return type(a) is type(b) and a == b


def _lookup_value(table: dict[Any, Any], value: Any) -> Any:
    for key, mapped in table.items():
        if same_value(key, value):
            return mapped
    return MISSING


def _enum(row: MapRow, value: Any, lookup: Lookup) -> Any:
    mapped = _lookup_value(row.values, value)
    if mapped is MISSING:
        known = ", ".join(str(k) for k in row.values)
        note = f"value {value!r} has no vfmkit equivalent (converted: {known}). {row.note}"
        raise NotMapped("not-supported-yet", note)
    return mapped


def _backbone(row: MapRow, value: Any, lookup: Lookup) -> Any:
    mapped = _lookup_value(row.values, value)
    if mapped is not MISSING:
        return mapped
    if row.namespace == "clip":
        from vfmkit.models.clip_zoo import CLIP_MODELS

        entry = CLIP_MODELS.find(str(value))
        listing = "vfm clip models"
    else:
        from vfmkit.models.registry import find_entry

        entry = find_entry(str(value))
        listing = "vfm models"
    if entry is None:
        raise NotMapped(
            "not-supported-yet",
            f"{value!r} is not in vfmkit's registry (`{listing}` lists the ids; TAO names are aliases there): "
            f"choose one with {row.vfm}=<id>",
        )
    return entry.id


def _ratio(row: MapRow, value: Any, lookup: Lookup) -> Any:
    divisor = lookup(row.of)
    if not isinstance(divisor, int | float) or isinstance(divisor, bool) or divisor == 0:
        raise NotMapped("not-supported-yet", f"needs a non-zero number in {row.of} to divide by. {row.note}")
    return float(value) / float(divisor)


def _item(row: MapRow, value: Any, lookup: Lookup) -> Any:
    if not isinstance(value, list):
        return value
    if not value:
        return KEEP
    if len(value) > 1 and row.only_one:
        raise NotMapped("not-supported-yet", f"{len(value)} values given, vfmkit takes one. {row.note}")
    return value[row.index]


def _square(row: MapRow, value: Any, lookup: Lookup) -> Any:
    if not isinstance(value, list):
        return value
    if len(value) == 2 and value[0] == value[1]:
        return value[0]
    raise NotMapped("not-supported-yet", f"vfmkit trains square inputs, got {value}. {row.note}")


def _pair(row: MapRow, value: Any, lookup: Lookup) -> Any:
    other = lookup(row.of)
    if other is MISSING or other is None:
        raise NotMapped("not-supported-yet", f"needs {row.of} as the other end of the range. {row.note}")
    return [other, value] if row.index == 1 else [value, other]


def _same_as(row: MapRow, value: Any, lookup: Lookup) -> Any:
    other = lookup(row.of)
    if other is MISSING or other is None or same_value(other, value):
        return FOLDED
    raise NotMapped("not-supported-yet", f"differs from {row.of} ({other!r}). {row.note}")


def _subfolder(row: MapRow, value: Any, lookup: Lookup) -> Any:
    parent = lookup(row.of)
    folder = Path(str(value).rstrip("/"))
    if isinstance(parent, str) and folder.parent == Path(parent.rstrip("/")):
        return folder.name
    raise NotMapped("not-supported-yet", f"not a folder directly under {row.of} ({parent!r}). {row.note}")


def _palette(row: MapRow, value: Any, lookup: Lookup) -> Any:
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise NotMapped("not-supported-yet", "expected a list of {label_id, rgb, seg_class} entries")
    palette = []
    for entry in value:
        name = entry.get("seg_class")
        mapping = entry.get("mapping_class")
        if mapping not in (None, name):
            raise NotMapped("not-supported-yet", f"class {name!r} is merged into {mapping!r}. {row.note}")
        label = entry.get("label_id")
        item = {"name": name, "id": label * row.factor if isinstance(label, int) else label}
        if entry.get("rgb") is not None:
            item["color"] = list(entry["rgb"])
        palette.append(item)
    return palette


def _lights(row: MapRow, value: Any, lookup: Lookup) -> Any:
    if not isinstance(value, dict) or not all(isinstance(index, int) for index in value.values()):
        raise NotMapped("not-supported-yet", f"expected {{light name: index}}, got {value!r}")
    return [f"_{name}" for name, _ in sorted(value.items(), key=lambda item: item[1])]


def _append(row: MapRow, value: Any, lookup: Lookup) -> Any:
    item = _lookup_value(row.values, value)
    if item is MISSING:
        raise NotMapped("not-supported-yet", f"value {value!r} has no vfmkit equivalent. {row.note}")
    return Append(tuple(row.base), () if item is None else (item,))


TRANSFORMS: dict[str, Callable[[MapRow, Any, Lookup], Any]] = {
    "rename": lambda row, value, lookup: value,
    "enum": _enum,
    "backbone": _backbone,
    "ratio": _ratio,
    "item": _item,
    "square": _square,
    "pair": _pair,
    "same_as": _same_as,
    "subfolder": _subfolder,
    "palette": _palette,
    "lights": _lights,
    "append": _append,
}
"""Transform name -> function(row, TAO value, lookup) -> what :func:`apply` returns; raises
:class:`NotMapped`. ``each`` is not here: the converter walks its items with the row's own rows."""


def apply(row: MapRow, value: Any, lookup: Lookup) -> Any:
    """The vfmkit value of ``value`` under ``row``: a value, :class:`Append`, :data:`KEEP` or :data:`FOLDED`.

    Raises:
        NotMapped: the value cannot be converted.
    """
    if any(same_value(value, kept) for kept in row.keep):
        return KEEP
    if any(same_value(value, folded) for folded in row.fold):
        return FOLDED
    return TRANSFORMS[row.transform](row, value, lookup)
