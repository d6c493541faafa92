"""The base of the record types: msgspec's `Struct` and `Meta`, or, where msgspec is not
installed, a frozen dataclass that builds, compares and prints the same.

A training script's own interpreter (`scalemon run --python PY`) gets only this scalemon on
its path, nothing else of scalemon's environment; there the injected probe writes records
(json, `codec.encode`) and never decodes a line, so it needs the classes, not msgspec's
decoder. `codec.decode` takes the reference path where msgspec is missing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

try:
    from msgspec import Meta, Struct
except ImportError:

    class Meta:  # type: ignore[no-redef]
        """A field's bounds, which only msgspec's decoder reads."""

        def __init__(self, **bounds: Any) -> None:
            self.bounds = bounds

    class Struct:  # type: ignore[no-redef]
        """msgspec.Struct's class options (frozen, kw_only, gc, tag_field, tag) as a frozen,
        keyword-only dataclass; an empty {} default is each instance's own, as in msgspec."""

        def __init_subclass__(cls, **options: Any) -> None:
            super().__init_subclass__()
            for name in cls.__dict__.get("__annotations__", {}):
                if cls.__dict__.get(name) == {}:
                    setattr(cls, name, dataclasses.field(default_factory=dict))
            dataclasses.dataclass(frozen=True, kw_only=True)(cls)


__all__ = ["Meta", "Struct"]
