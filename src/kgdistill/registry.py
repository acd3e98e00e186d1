"""A small typed registry: components are looked up by name (PyKEEN's resolver pattern).

Entries are either registered objects (the ``@registry.register(name)`` decorator, run when the defining module is
imported) or *declared* lazy entries, ``registry.declare(name, "package.module:object")``, resolved by importing
the module on first :meth:`Registry.get`. A registry declares the entries that live in other modules, so that which
names exist does not depend on what was imported first: ``names()`` lists them all without importing anything.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from kgdistill.errors import KGDistillError

T = TypeVar("T")


class UnknownNameError(ValueError, KGDistillError):
    """A name that is not registered; the message lists the known names and close matches (a user error: the
    command line prints it as one message, without a traceback)."""


def normalize_name(name: str) -> str:
    """Lower-case and drop separators so ``Trans-E``, ``trans_e`` and ``TransE`` are one name."""
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def suggest(name: str, known: list[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix naming close matches of ``name`` among ``known`` (empty if none); each name once,
    also when ``known`` repeats it or holds spellings of it that differ only in case or separators."""
    known = list(dict.fromkeys(known))
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]
    close = list({normalize_name(c): c for c in reversed(close)}.values())[::-1]  # first spelling of each name
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
        self._lazy: dict[str, str] = {}  # declared, not yet resolved: name -> "module:object"

    def _claim(self, name: str, aliases: tuple[str, ...]) -> None:
        for key in (name, *aliases):
            norm = normalize_name(key)
            if norm in self._canonical:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self._canonical[norm] = name

    def declare(self, name: str, target: str, *aliases: str) -> None:
        """Declare ``name`` (and ``aliases``) as ``"module:object"``, imported on first :meth:`get`.

        The module may also register the object with the decorator under the same name (the declared aliases, or
        a subset of them): that fills the entry instead of failing as a second registration.
        """
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:object', got {target!r}")
        self._claim(name, aliases)
        self._lazy[name] = target

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._lazy and name not in self._items:
                unknown = [a for a in aliases if self._canonical.get(normalize_name(a)) != name]
                if unknown:
                    raise ValueError(f"{self.kind} {name!r}: aliases {unknown} were not declared with it")
            else:
                self._claim(name, aliases)
            self._items[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        """Every registered or declared name (imports nothing)."""
        return sorted({*self._items, *self._lazy})

    def is_loaded(self, name: str) -> bool:
        """Whether ``name``'s object is in memory (False for a declared entry not yet resolved)."""
        return self.canonical(name) in self._items

    def canonical(self, name: str) -> str:
        norm = normalize_name(name)
        if norm not in self._canonical:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known names: {', '.join(self.names())}.{suggest(name, self.names())}"
            )
        return self._canonical[norm]

    def get(self, name: str) -> T:
        """The object of ``name`` (or an alias); a declared entry is imported now."""
        key = self.canonical(name)
        if key not in self._items:
            module, _, attr = self._lazy[key].partition(":")
            try:
                obj = getattr(importlib.import_module(module), attr)  # the import may register it with the decorator
            except ModuleNotFoundError as err:
                if not err.name or err.name == module or err.name.startswith("kgdistill"):
                    raise
                from kgdistill.errors import ConfigError

                raise ConfigError(f"{self.kind} {key!r} needs the package {err.name!r}, which is not installed "
                                  f"(is the matching kgdistill extra installed? e.g. pip install 'kgdistill[text]' "
                                  f"for text models)") from err
            self._items.setdefault(key, obj)
        return self._items[key]

    def make(self, name_or_obj: str | Any, **kwargs: Any) -> Any:
        """Build a component from its name (calling the factory with ``kwargs``); instances pass through."""
        if isinstance(name_or_obj, str):
            return self.get(name_or_obj)(**kwargs)  # type: ignore[operator]
        return name_or_obj

    def __contains__(self, name: str) -> bool:
        return normalize_name(name) in self._canonical

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
