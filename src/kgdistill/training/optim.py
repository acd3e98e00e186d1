"""Optimisers by name.

``adam`` and ``adamw`` are torch's own, built with ``fused=True`` (one fused kernel per step over all parameters)
where torch has it for the parameters (floating-point tensors on CPU or CUDA), ``foreach=True`` otherwise. A
hand-written fused CPU Adam kernel used to live here; ``benchmarks/adam_fused.py`` measured torch's fused Adam
ahead of it (figures in BENCHMARKS.md), so it was removed. ``adagrad`` and ``sgd`` are torch's defaults.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from kgdistill.errors import ConfigError
from kgdistill.registry import Registry, UnknownNameError

optimizers: Registry[type[torch.optim.Optimizer]] = Registry("optimizer")
optimizers.register("adam")(torch.optim.Adam)
optimizers.register("adamw")(torch.optim.AdamW)
optimizers.register("adagrad")(torch.optim.Adagrad)
optimizers.register("sgd")(torch.optim.SGD)

#: optimisers built with fused=True where the parameters allow it
FUSED = (torch.optim.Adam, torch.optim.AdamW)


def _fused_ok(params: list[torch.nn.Parameter]) -> bool:
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64,
                                                                                   torch.float16, torch.bfloat16)
                                for p in params)


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    try:
        cls = optimizers.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"optimizer: {err}") from None
    params = list(params)
    kwargs: dict = {"lr": lr, "weight_decay": weight_decay}
    if issubclass(cls, FUSED):
        if _fused_ok(params):
            kwargs["fused"] = True
        elif all(p.device.type in ("cpu", "cuda") for p in params):
            kwargs["foreach"] = True
    return cls(params, **kwargs)
