"""kgdistill: train, distil, evaluate and serve knowledge graph completion models.

The public API is imported on first use, so ``import kgdistill`` stays cheap (no torch) and changes nothing in the
process::

    import kgdistill

    teacher = kgdistill.train("kinship", "runs/teacher", model="complex", dim=64, epochs=60)
    report = kgdistill.distill("kd", teacher, "runs/kd", dims=[8])
    kgdistill.evaluate(report.results[-1].path)            # {"both": {"mrr": ...}, "head": ..., "tail": ...}
    artifact = kgdistill.load(kgdistill.export(report.results[-1].path, "kd.safetensors"))

See :mod:`kgdistill.api` for :func:`~kgdistill.api.train`, :func:`~kgdistill.api.distill`,
:func:`~kgdistill.api.evaluate`, :func:`~kgdistill.api.load`, :func:`~kgdistill.api.export` and
:class:`~kgdistill.api.Dataset`. ``distill``, ``evaluate`` and ``export`` are also the names of submodules: those
modules are callable and call the API function of their name, so ``kgdistill.evaluate(...)`` works whether or not
``kgdistill.evaluate`` (the module) was imported before, and ``from kgdistill.evaluate import ...`` keeps working.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_API = ("Dataset", "train", "distill", "evaluate", "load", "export")
#: public functions that share their name with a submodule
_SUBMODULE_API = ("distill", "evaluate", "export")

__all__ = ["Dataset", "__version__", "distill", "evaluate", "export", "load", "train"]


class _CallableModule(types.ModuleType):
    """A submodule that is also the public function of its name (``kgdistill.api.<name>``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module("kgdistill.api"), self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``kgdistill`` package: a submodule bound under a public function's name is made callable."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SUBMODULE_API and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _SUBMODULE_API:
        return importlib.import_module(f"{__name__}.{name}")  # binding it here makes it callable (see _Package)
    if name in _API:
        value = getattr(importlib.import_module("kgdistill.api"), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'kgdistill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
