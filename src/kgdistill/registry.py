"""A small typed registry: components are looked up by name (PyKEEN's resolver pattern)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not registered; the message lists the known names and close matches."""


def normalize_name(name: str) -> str:
    """Lower-case and drop separators so ``Trans-E``, ``trans_e`` and ``TransE`` are one name."""
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def suggest(name: str, known: list[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix naming close matches of ``name`` among ``known`` (empty if none)."""
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class Registry(Generic[T]):
    """Maps names (and aliases) to factories of one component family.

    >>> losses = Registry[Callable]("loss")
    >>> @losses.register("margin")
    ... def margin(): ...
    >>> losses.get("Margin") is margin
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            for key in (name, *aliases):
                norm = normalize_name(key)
                if norm in self._canonical:
                    raise ValueError(f"{self.kind} {key!r} registered twice")
                self._canonical[norm] = name
            self._items[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        return sorted(self._items)

    def canonical(self, name: str) -> str:
        norm = normalize_name(name)
        if norm not in self._canonical:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known names: {', '.join(self.names())}.{suggest(name, self.names())}"
            )
        return self._canonical[norm]

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def make(self, name_or_obj: str | Any, **kwargs: Any) -> Any:
        """Build a component from its name (calling the factory with ``kwargs``); instances pass through."""
        if isinstance(name_or_obj, str):
            return self.get(name_or_obj)(**kwargs)  # type: ignore[operator]
        return name_or_obj

    def __contains__(self, name: str) -> bool:
        return normalize_name(name) in self._canonical

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
