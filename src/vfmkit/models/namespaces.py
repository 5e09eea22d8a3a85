"""A name -> entry table with aliases, for registries that live beside the backbone registry.

The CLIP registry and the text-tower registry are separate namespaces: a CLIP id such as ``c-radio_v3-h`` may also be
a backbone alias, and resolving it here never touches :mod:`vfmkit.models.registry`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from vfmkit.errors import ModelNotFoundError


class NamedEntry(Protocol):
    id: str
    aliases: tuple[str, ...]
    test_only: bool


EntryT = TypeVar("EntryT", bound=NamedEntry)


class Namespace(Generic[EntryT]):
    """Entries by canonical id and alias (case-insensitive), filled lazily by ``loader`` on first use.

    Args:
        kind: what the entries are, for messages (``"CLIP model"``).
        loader: imports the modules that register the entries.
        listing_hint: the command that lists the entries, for messages.
    """

    def __init__(self, kind: str, loader: Callable[[], None], listing_hint: str) -> None:
        self.kind = kind
        self._loader = loader
        self._listing_hint = listing_hint
        self._entries: dict[str, EntryT] = {}
        self._aliases: dict[str, str] = {}

    def register(self, entry: EntryT) -> EntryT:
        """Add an entry; its id and aliases must be unique in this namespace.

        Raises:
            ValueError: a name already taken.
        """
        for name in (entry.id, *entry.aliases):
            key = name.strip().lower()
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} name {name!r} is already taken")
        self._entries[entry.id.lower()] = entry
        for alias in entry.aliases:
            self._aliases[alias.strip().lower()] = entry.id.lower()
        return entry

    def find(self, name: str) -> EntryT | None:
        """The entry for an id or alias, or None."""
        self._loader()
        key = name.strip().lower()
        return self._entries.get(self._aliases.get(key, key))

    def resolve(self, name: str) -> EntryT:
        """The entry for an id or alias.

        Raises:
            ModelNotFoundError: unknown name; the message suggests the closest ones.
        """
        entry = self.find(name)
        if entry is None:
            names = list(self._entries) + list(self._aliases)
            close = difflib.get_close_matches(name.strip().lower(), names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; {self._listing_hint} lists them"
            raise ModelNotFoundError(f"unknown {self.kind} {name!r}{hint}")
        return entry

    def entries(self, include_test: bool = False) -> list[EntryT]:
        """Entries in registration order (tiny test variants only when asked)."""
        self._loader()
        return [e for e in self._entries.values() if include_test or not e.test_only]
