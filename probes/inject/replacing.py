"""Attributes of torch replaced for the injected probe, each with its undo, so that all of
torch comes back as it was (`restore`) when the probe stands down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Replacements:
    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def replace(self, owner: Any, name: str, new: Any) -> Any:
        """Set owner.name to new; returns the old value (a class's own, not an inherited one,
        is what comes back: an inherited one comes back by deleting the override)."""
        if isinstance(owner, type) and name not in owner.__dict__:
            old = getattr(owner, name)
            self._undo.append(lambda: delattr(owner, name))
        else:
            old = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            self._undo.append(lambda: setattr(owner, name, old))
        setattr(owner, name, new)
        return old

    def keep(self, undo: Callable[[], None]) -> None:
        """Another undo (a hook handle's remove)."""
        self._undo.append(undo)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
