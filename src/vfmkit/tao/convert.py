"""Convert a TAO experiment spec into a vfmkit spec through the task's mapping table.

``resolve_tao_spec`` reads the file with OmegaConf (TAO's own reader: ``${...}`` interpolations resolved, ``???``
kept as the placeholder); :func:`convert` walks the resolved tree against the table of :mod:`vfmkit.tao.tables`:
every key of the input ends up either in a vfmkit key (with its TAO key as the source) or in
:attr:`Conversion.unmapped` with a category and a note, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from vfmkit.errors import VfmError
from vfmkit.spec.loader import SpecError, parse_overrides
from vfmkit.spec.render import yaml_scalar
from vfmkit.tao.tables import MapRow, TaoTask, tao_task, tao_tasks
from vfmkit.tao.transforms import FOLDED, KEEP, MISSING, Append, NotMapped, same_value
from vfmkit.tao.transforms import apply as apply_transform

PLACEHOLDER = "???"
CATEGORIES = {
    "gpu-only": "GPU-only (TensorRT, device selection): vfmkit has its own way, see the note",
    "not-applicable": "not applicable in vfmkit",
    "not-supported-yet": "not supported yet",
    "default": "vfmkit's default applies (TAO's automatic / unset value)",
    "unknown": "not a key of this TAO spec that vfmkit knows",
}
"""Why a TAO key is not converted: category -> heading in the written spec."""


@dataclass
class Unmapped:
    """A TAO key (or section) that is not in the vfmkit spec, and why."""

    tao_key: str
    value: Any
    category: str
    note: str


@dataclass
class Source:
    """A TAO key that fed a vfmkit key (``tao_key`` ``"command line"`` for overrides)."""

    tao_key: str
    value: Any


@dataclass
class Conversion:
    """The result of converting one TAO spec.

    Attributes:
        task: the TAO task (and through it the vfmkit task).
        values: vfmkit dotted key -> value (``???`` where the user must fill in); integer segments index lists.
        sources: vfmkit dotted key -> the TAO keys it came from.
        unmapped: every TAO key not converted, with its category and note.
    """

    task: TaoTask
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, list[Source]] = field(default_factory=dict)
    unmapped: list[Unmapped] = field(default_factory=list)

    def contribute(self, key: str, value: Any, source: Source) -> None:
        """Record ``source`` for ``key`` and write ``value`` (the last written value wins; FOLDED writes nothing)."""
        self.sources.setdefault(key, []).append(source)
        if isinstance(value, Append):
            current = self.values.get(key, list(value.base))
            self.values[key] = [*current, *(item for item in value.items if item not in current)]
        elif value is not FOLDED:
            self.values[key] = value

    def data(self) -> dict[str, Any]:
        """The vfmkit spec as nested data (lists where keys are list indices)."""
        return nest(self.values)

    @property
    def placeholders(self) -> list[str]:
        """vfmkit keys whose value is, or holds, ``???`` (in the order they were converted)."""
        return [key for key, value in self.values.items() if holds_placeholder(value)]

    def apply_overrides(self, overrides: list[str]) -> None:
        """Set vfmkit ``key=value`` overrides (they fill ``???`` and replace converted values).

        Raises:
            SpecError: a malformed override.
        """
        for key, value in flatten(parse_overrides(overrides)).items():
            prefix = key + "."
            for existing in [k for k in self.values if k == key or k.startswith(prefix) or key.startswith(k + ".")]:
                del self.values[existing]
            self.values[key] = value
            self.sources[key] = [Source("command line", value)]


def holds_placeholder(value: Any) -> bool:
    """Whether a value is ``???`` or holds one (in a list or a mapping)."""
    if isinstance(value, str):
        return value.strip() == PLACEHOLDER
    if isinstance(value, dict):
        return any(holds_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_placeholder(v) for v in value)
    return False


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted leaf keys (lists and empty dicts are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested dicts; a level whose keys are all integers becomes a list in index order."""
    root: dict[Any, Any] = {}
    for key, value in values.items():
        target = root
        parts = [int(p) if p.isdigit() else p for p in key.split(".")]
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {key: _lists(value) for key, value in node.items()}
    if node and all(isinstance(key, int) for key in node):
        return [node[key] for key in sorted(node)]
    return node


# --- reading ------------------------------------------------------------------------------------------------------


def resolve_tao_spec(path: Path) -> dict[str, Any]:
    """A TAO spec file as plain data, read as TAO reads it (OmegaConf): ``1e-4`` is a float, ``${a.b}`` is
    resolved, ``???`` stays ``???`` (also where an interpolation points at one).

    Raises:
        SpecError: missing file, invalid YAML (with the line), a duplicate key, an interpolation that does not resolve
            (naming the key), or a top level that is not a mapping.
    """
    import yaml
    from omegaconf import OmegaConf

    if not path.is_file():
        raise SpecError(f"TAO spec file not found: {path}")
    try:
        config = OmegaConf.create(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise SpecError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    if not OmegaConf.is_dict(config):
        raise SpecError(f"{path}: the top level must be a mapping of sections")
    return _resolved(config, "", path)


def _resolved(node: Any, prefix: str, path: Path) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, InterpolationToMissingValueError

    keys = list(node.keys()) if OmegaConf.is_dict(node) else list(range(len(node)))
    out: dict | list = {} if OmegaConf.is_dict(node) else []
    for key in keys:
        dotted = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            value = PLACEHOLDER
        else:
            try:
                value = node[key]
            except InterpolationToMissingValueError:
                value = PLACEHOLDER
            except InterpolationResolutionError as err:
                reason = str(err).splitlines()[0]
                raise SpecError(f"{path}: '{dotted}': interpolation cannot be resolved ({reason})") from None
            if OmegaConf.is_config(value):
                value = _resolved(value, dotted + ".", path)
        if isinstance(out, dict):
            out[str(key)] = value
        else:
            out.append(value)
    return out


# --- task inference -----------------------------------------------------------------------------------------------


def _is_set(data: dict[str, Any], dotted: str) -> bool:
    value = lookup(data, dotted)
    return value is not MISSING and value is not None and value != PLACEHOLDER


def lookup(data: Any, dotted: str) -> Any:
    """The value at a dotted key (integer segments index lists), or MISSING."""
    node = data
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def candidate_tasks(data: dict[str, Any]) -> list[str]:
    """TAO tasks whose marks the spec carries: one of ``signs`` set, all ``requires`` set, every ``absent`` unset."""
    found = []
    for name, task in tao_tasks().items():
        if not any(_is_set(data, key) for key in task.signs):
            continue
        if all(_is_set(data, key) for key in task.requires) and not any(_is_set(data, key) for key in task.absent):
            found.append(name)
    return found


def infer_tao_task(data: dict[str, Any], path: Path) -> str:
    """The TAO task of a spec when its keys make it unambiguous.

    Raises:
        VfmError: none or several candidates (naming them), asking for ``--task``.
    """
    found = candidate_tasks(data)
    if len(found) == 1:
        return found[0]
    if found:
        raise VfmError(f"{path} could be a TAO spec of {', '.join(found)}: pass --task with one of them")
    raise VfmError(f"cannot tell which TAO task {path} is for: pass --task ({', '.join(tao_tasks())})")


# --- the walk -----------------------------------------------------------------------------------------------------


def _holds(value: Any, wanted: Any) -> bool:
    options = wanted if isinstance(wanted, list) else [wanted]
    return any(same_value(value, option) for option in options)


def _options(wanted: Any) -> str:
    options = wanted if isinstance(wanted, list) else [wanted]
    return " or ".join(yaml_scalar(option) for option in options)


class _Where(NamedTuple):
    """Where a walk is: the prefix of TAO keys and of vfmkit keys, and the list item it is inside (or None)."""

    tao: str = ""
    vfm: str = ""
    item: Any = None


TOP = _Where()


@dataclass
class _Walk:
    """One conversion pass: the table, the data (for ``of`` / ``when`` look-ups) and the result."""

    result: Conversion
    root: dict[str, Any]

    def get(self, dotted: str, item: Any = None) -> Any:
        """A TAO value by dotted key: inside the current list item first, then from the top."""
        value = lookup(item, dotted) if item is not None else MISSING
        return value if value is not MISSING else lookup(self.root, dotted)

    def walk(self, node: Any, path: list[str], rows: list[MapRow], fallback: MapRow | None, where: _Where) -> None:
        """Convert ``node`` (at TAO ``path``) with ``rows``; ``where``: the prefixes and the list item."""
        rows = [row for row in rows if row.matches(path) or row.is_under(path)]  # those that matter below here
        exact = [row for row in rows if row.matches(path)]
        deeper = any(row.is_under(path) for row in rows)
        if exact:
            best = max(row.specificity for row in exact)
            exact = [row for row in exact if row.specificity == best]
            chosen = next((row for row in exact if self._when(row, where.item)), None)
            if chosen is None:
                self._skip(node, path, exact[0], where)
                return
            if not (chosen.reason and deeper):
                self.apply(chosen, node, path, where)
                return
            fallback = chosen
        if isinstance(node, dict) and node:
            for key, value in node.items():
                self.walk(value, [*path, str(key)], rows, fallback, where)
            return
        if isinstance(node, list) and node and deeper:  # rows name list items (e.g. datasets.0.image_dir)
            for index, value in enumerate(node):
                self.walk(value, [*path, str(index)], rows, fallback, where)
            return
        key = (where.tao + ".".join(path)).rstrip(".")
        if fallback is not None:
            self.result.unmapped.append(Unmapped(key, node, fallback.reason, fallback.note))
        else:
            self.result.unmapped.append(Unmapped(key, node, "unknown", "not converted: check the spelling"))

    def _when(self, row: MapRow, item: Any) -> bool:
        """Whether every ``when`` key holds one of its values (a missing key counts as null)."""
        values = {key: self.get(key, item) for key in row.when}
        return all(_holds(None if values[key] is MISSING else values[key], wanted) for key, wanted in row.when.items())

    def _skip(self, node: Any, path: list[str], row: MapRow, where: _Where) -> None:
        key = where.tao + ".".join(path)
        condition = " and ".join(f"{k} is {_options(v)}" for k, v in row.when.items())
        note = f"converted only when {condition}"
        self.result.unmapped.append(Unmapped(key, node, "not-applicable", note))

    def apply(self, row: MapRow, node: Any, path: list[str], where: _Where) -> None:
        """Apply one row to the value at ``path`` (a whole section when the row names one)."""
        key = (where.tao + ".".join(path)).rstrip(".")
        if row.transform == "each" and row.vfm and isinstance(node, dict | list) and node:
            self._each(row, node, key, where)
            return
        if row.reason:
            self.result.unmapped.append(Unmapped(key, node, row.reason, row.note))
            return
        target = where.vfm + row.vfm
        if node is None or (row.transform == "each" and not node):
            self.result.unmapped.append(Unmapped(key, node, "default", f"unset in the TAO spec (-> {target})"))
            return
        if row.transform == "each":
            note = f"expected a list of sections, got {node!r}"
            self.result.unmapped.append(Unmapped(key, node, "not-supported-yet", note))
            return
        if holds_placeholder(node):
            if row.of:  # derived from another key: nothing to fill here
                note = f"follows {row.of}, which is ??? (-> {target})"
                self.result.unmapped.append(Unmapped(key, node, "default", note))
            else:
                self.result.contribute(target, PLACEHOLDER, Source(key, node))
            return
        try:
            value = apply_transform(row, node, lambda dotted: self.get(dotted, where.item))
        except NotMapped as err:
            self.result.unmapped.append(Unmapped(key, node, err.reason, err.note.strip()))
            return
        if value is KEEP:
            self.result.unmapped.append(Unmapped(key, node, "default", f"TAO's automatic / empty value (-> {target})"))
            return
        self.result.contribute(target, value, Source(key, node))

    def _each(self, row: MapRow, node: Any, key: str, where: _Where) -> None:
        items = [node] if isinstance(node, dict) else node
        for index, item in enumerate(items):
            item_key = f"{key}.{index}." if isinstance(node, list) else f"{key}."
            self.walk(item, [], row.rows, None, _Where(item_key, f"{where.vfm}{row.vfm}.{index}.", item))


def convert(data: dict[str, Any], task: str | TaoTask) -> Conversion:
    """Convert resolved TAO data (see :func:`resolve_tao_spec`) with the table of ``task``."""
    task = tao_task(task) if isinstance(task, str) else task
    result = Conversion(task)
    walker = _Walk(result, data)
    for key, value in data.items():
        walker.walk(value, [str(key)], task.all_rows, None, TOP)
    for key, value in {"task": task.vfm_task, **task.set}.items():
        result.contribute(key, value, Source(f"TAO task {task.name}", value))
    for key in task.required:
        if not any(k == key or k.startswith(key + ".") for k in result.values):
            result.values[key] = PLACEHOLDER
    for key in [k for k in result.sources if k not in result.values]:  # folded into a key that was not converted
        for source in result.sources.pop(key):
            note = f"nothing of its own to write: vfmkit's default {key} applies"
            result.unmapped.append(Unmapped(source.tao_key, source.value, "default", note))
    return result
