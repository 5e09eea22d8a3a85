"""YAML reading that refuses duplicate keys: PyYAML's safe loader keeps the last of two equal keys without a word,
so a spec with ``epochs: 3`` and, further down the same section, ``epochs: 30`` would silently train 30 epochs."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping holds the same key twice.

    Attributes:
        key: the repeated key (as constructed, e.g. ``'epochs'``).
        dotted: the key with the keys of the mappings above it, e.g. ``'train.epochs'`` (list items as ``[i]``).
        first_line, line: 1-based lines of the first and the repeated occurrence.
    """

    def __init__(self, key: Any, dotted: str, first_line: int, line: int, key_mark: yaml.Mark) -> None:
        super().__init__(None, None, f"found duplicate key {dotted!r} (first on line {first_line})", key_mark)
        self.key, self.dotted, self.first_line, self.line = key, dotted, first_line, line


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises :class:`DuplicateKeyError` when a mapping repeats a key.

    Merge keys (``<<: *defaults``) still work: keys merged in from an anchor may be overridden by the mapping's own
    keys, as YAML intends; only keys written twice in the same mapping are refused.
    """

    def construct_document(self, node: Node) -> Any:
        self._key_prefixes = _key_prefixes(node)
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            self._check_unique_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _check_unique_keys(self, node: MappingNode) -> None:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:  # an unhashable key: SafeConstructor reports it itself
                continue
            line = key_node.start_mark.line + 1
            if key in first_lines:
                dotted = getattr(self, "_key_prefixes", {}).get(id(node), "") + str(key)
                raise DuplicateKeyError(key, dotted, first_lines[key], line, key_node.start_mark)
            first_lines[key] = line


def _key_prefixes(root: Node) -> dict[int, str]:
    """``id(mapping node)`` -> the dotted prefix of its keys (``'train.'``), for every mapping below ``root``."""
    prefixes: dict[int, str] = {}
    pending = [(root, "")]
    while pending:
        node, prefix = pending.pop()
        if id(node) in prefixes:  # an alias of a node already seen (or a recursive anchor)
            continue
        if isinstance(node, MappingNode):
            prefixes[id(node)] = prefix
            pending += [(value, f"{prefix}{key.value}.") for key, value in node.value if isinstance(key, ScalarNode)]
        elif isinstance(node, SequenceNode):
            prefixes[id(node)] = prefix
            pending += [(item, f"{prefix.rstrip('.')}[{i}].") for i, item in enumerate(node.value)]
    return prefixes


def load_strict(text: str) -> Any:
    """Parse one YAML document with :class:`StrictSafeLoader`.

    Raises:
        DuplicateKeyError: a mapping repeats a key; yaml.YAMLError: any other YAML problem.
    """
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 (a SafeLoader subclass)
