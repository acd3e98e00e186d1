"""Optimisers by name."""

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


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    try:
        cls = optimizers.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"optimizer: {err}") from None
    params = list(params)
    kwargs: dict = {"lr": lr, "weight_decay": weight_decay}
    if cls in (torch.optim.Adam, torch.optim.AdamW) and all(p.device.type in ("cpu", "cuda") for p in params):
        kwargs["foreach"] = True
    return cls(params, **kwargs)
