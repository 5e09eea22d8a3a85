"""The TAO -> vfmkit mapping tables: data files, one per vfmkit task, validated by the models below.

Where the tables are:

- ``vfmkit/spec/tao_map.yaml``: rows every TAO task shares (``results_dir``, ``train.num_epochs``, ``export.*``,
  ``gen_trt_engine.*`` ...), beside the shared spec sections;
- ``vfmkit/tasks/<task>/tao_map.yaml``: one section per TAO task that converts into that vfmkit task (e.g.
  ``tasks/detect/tao_map.yaml`` holds ``rtdetr``, ``rtdetr_distill`` and ``dino``).

A task section's rows come after the shared rows; a row of the task replaces a shared row with the same ``tao`` key
(and ``when``). Each row maps one TAO key (dotted; a ``*`` segment matches any one key) to one vfmkit key with a
value transform from the closed set in :mod:`vfmkit.tao.transforms`, or says why it cannot be mapped
(``reason``: ``gpu-only``, ``not-applicable`` or ``not-supported-yet``, with a ``note``). ``example`` / ``expect``
are a TAO value and the vfmkit value it becomes: the round-trip test converts every example, and the documentation
renders them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vfmkit.errors import VfmError
from vfmkit.utils.strict_yaml import load_strict

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
COMMON_TABLE = PACKAGE_ROOT / "spec" / "tao_map.yaml"
TASK_TABLES = PACKAGE_ROOT / "tasks"
TABLE_NAME = "tao_map.yaml"

Transform = Literal[
    "rename", "enum", "backbone", "ratio", "item", "square", "pair", "same_as", "subfolder", "each", "palette",
    "lights", "append",
]  # fmt: skip
Reason = Literal["gpu-only", "not-applicable", "not-supported-yet"]
UNSET = object()
"""``example`` / ``expect`` not given."""


@functools.cache
def _split(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


class MapRow(BaseModel):
    """One TAO key and what it becomes.

    Attributes:
        tao: dotted TAO key; a ``*`` segment matches any one key.
        vfm: dotted vfmkit key (integer segments index lists: ``distill.teacher.0.backbone``); None when unmappable.
        transform: how the value changes (see :mod:`vfmkit.tao.transforms`).
        values: ``enum``: TAO value -> vfmkit value (strings match case-insensitively); ``backbone``: TAO names the
            registry does not know -> vfmkit names; ``append``: TAO value -> list item.
        keep: TAO values that mean "vfmkit's default": nothing is written (e.g. TAO's ``-1`` = automatic).
        fold: TAO values with nothing of their own to write: another key carries the setting (e.g. an ``enable:
            true`` whose probability key is mapped).
        of: ``ratio``: the TAO key divided by; ``pair``: the TAO key holding the other end of the range;
            ``same_as``: the TAO key that must hold the same value; ``subfolder``: the folder the value is under.
        factor: ``palette``: the mask ids are the TAO label ids times this (255 for TAO's ``label_transform: norm``).
        index: ``item``: the list position taken (negative counts from the end); ``pair``: this value's position (0
            or 1) in the range.
        only_one: ``item``: a list of several values cannot be converted (vfmkit takes one).
        namespace: ``backbone``: the registry the name resolves in (``backbone`` or ``clip``).
        rows: ``each``: the rows of one list item (keys relative to the item).
        base: ``append``: the list the items are appended to.
        when: apply only when every listed TAO key holds one of the given values (a value or a list of values).
        reason: why the key cannot be mapped (with ``vfm`` None).
        note: one sentence for the user: what to do instead, or what differs.
        example: a TAO value for the round-trip test and the documentation.
        expect: the vfmkit value ``example`` becomes (default: ``example``).
        context: other TAO values the example assumes (the key a ``ratio``, ``pair`` or ``subfolder`` reads).
    """

    model_config = ConfigDict(extra="forbid")

    tao: str = Field(min_length=1)
    vfm: str | None = None
    transform: Transform = "rename"
    values: dict[Any, Any] = Field(default_factory=dict)
    keep: list[Any] = Field(default_factory=list)
    fold: list[Any] = Field(default_factory=list)
    of: str | None = None
    factor: int = Field(1, ge=1)
    index: int = 0
    only_one: bool = False
    namespace: Literal["backbone", "clip"] = "backbone"
    rows: list[MapRow] = Field(default_factory=list)
    base: list[Any] = Field(default_factory=list)
    when: dict[str, Any] = Field(default_factory=dict)
    reason: Reason | None = None
    note: str = ""
    example: Any = Field(default_factory=lambda: UNSET)
    expect: Any = Field(default_factory=lambda: UNSET)
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> MapRow:
        if (self.vfm is None) == (self.reason is None):
            raise ValueError(f"row {self.tao!r}: give either vfm (mapped) or reason (unmappable), not both")
        if self.reason and not self.note:
            raise ValueError(f"row {self.tao!r}: an unmappable row needs a note saying why / what to do")
        if self.transform in ("ratio", "pair", "same_as", "subfolder") and not self.of:
            raise ValueError(f"row {self.tao!r}: transform {self.transform} needs 'of'")
        if self.transform == "enum" and not self.values:
            raise ValueError(f"row {self.tao!r}: transform enum needs 'values'")
        if self.transform == "each" and not self.rows:
            raise ValueError(f"row {self.tao!r}: transform each needs 'rows'")
        return self

    def matches(self, path: list[str]) -> bool:
        """Whether this row's key names ``path`` (``*`` matches any one segment)."""
        segments = _split(self.tao)
        return len(path) == len(segments) and all(s in ("*", p) for s, p in zip(segments, path, strict=True))

    def is_under(self, path: list[str]) -> bool:
        """Whether this row names a key strictly below ``path``."""
        segments = _split(self.tao)
        return len(segments) > len(path) and all(s in ("*", p) for s, p in zip(segments, path, strict=False))

    @property
    def specificity(self) -> int:
        """Literal (non-``*``) segments: the most specific matching row wins."""
        return sum(s != "*" for s in _split(self.tao))


class TaoTask(BaseModel):
    """One TAO task (``tao model <name> <action>``) and how its spec converts.

    Attributes:
        name: the ``--task`` name (``rtdetr``, ``classification_pyt_distill`` ...).
        vfm_task: the vfmkit task it becomes (the folder the table is in).
        title: one line for humans and the documentation.
        signs: TAO keys of which one (set, not null) marks a spec as this task's, for ``--task`` inference.
        requires: TAO keys that must all be set for the inference to pick this task.
        absent: TAO keys that must be unset (missing or null) for the inference to pick this task.
        set: vfmkit keys this TAO task fixes (e.g. ``model.head: rtdetr``).
        required: vfmkit keys the converted spec must have: ``???`` when nothing in the TAO spec fills them.
        aliases: other ``--task`` names of it (e.g. ``nvclip``).
        extends: a TAO task of the same table whose rows this one inherits (its own rows replace them by key).
        rows: this task's rows.
        shared: the rows it inherits (shared rows, then the ``extends`` task's), minus those its own rows replace.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    vfm_task: str
    title: str
    signs: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    extends: str | None = None
    rows: list[MapRow]
    shared: list[MapRow] = Field(default_factory=list)

    @property
    def all_rows(self) -> list[MapRow]:
        """The inherited rows this task does not replace, then its own (the order rows are tried and written in)."""
        return [*self.shared, *self.rows]


class TableError(VfmError):
    """A mapping table that does not load (a packaging or editing mistake)."""


def _read(path: Path) -> dict[str, Any]:
    try:
        data = load_strict(path.read_text())
    except Exception as err:  # a broken package file: name it
        raise TableError(f"cannot read the TAO mapping table {path}: {err}") from None
    if not isinstance(data, dict):
        raise TableError(f"{path}: expected a mapping at the top level")
    return data


def _rows(data: Any, where: Path) -> list[MapRow]:
    rows = []
    for row in data or []:
        try:
            rows.append(MapRow.model_validate(row))
        except ValidationError as err:
            first = err.errors()[0]
            name = row.get("tao") if isinstance(row, dict) else row
            raise TableError(f"{where}: row {name!r}: {first['msg']} at {first['loc']}") from None
    return rows


def _row_key(row: MapRow) -> tuple[str, str]:
    return row.tao, repr(sorted(row.when.items()))


@functools.cache
def shared_rows() -> tuple[MapRow, ...]:
    """The rows every TAO task shares (``vfmkit/spec/tao_map.yaml``)."""
    return tuple(_rows(_read(COMMON_TABLE).get("rows"), COMMON_TABLE))


@functools.cache
def tao_tasks() -> dict[str, TaoTask]:
    """Every TAO task with a table, by ``--task`` name (sorted by vfmkit task, then file order)."""
    tasks: dict[str, TaoTask] = {}
    for path in sorted(TASK_TABLES.glob(f"*/{TABLE_NAME}")):
        for name, section in _read(path).items():
            if name in tasks:
                raise TableError(f"{path}: TAO task {name!r} is also defined in another table")
            section = dict(section or {})
            own = _rows(section.pop("rows", None), path)
            parent = section.get("extends")
            if parent is not None and parent not in tasks:
                raise TableError(f"{path}: {name!r} extends {parent!r}, which must come before it in the same file")
            inherited = [*shared_rows(), *(tasks[parent].rows if parent else [])]
            replaced = {_row_key(row) for row in own}
            kept = [row for row in inherited if _row_key(row) not in replaced]
            if parent:  # the parent's own rows replace shared ones too
                kept = [row for row in kept if row in tasks[parent].all_rows]
            try:
                tasks[name] = TaoTask(name=name, vfm_task=path.parent.name, rows=own, shared=kept, **section)
            except ValidationError as err:
                raise TableError(f"{path}: TAO task {name!r}: {err.errors()[0]['msg']}") from None
    return tasks


def tao_task(name: str) -> TaoTask:
    """The TAO task called ``name``.

    Raises:
        VfmError: unknown name (with the known ones).
    """
    tasks = tao_tasks()
    for task in tasks.values():
        if name in (task.name, *task.aliases):
            return task
    raise VfmError(f"unknown TAO task {name!r}; vfm spec from-tao converts: {', '.join(tasks)}")
