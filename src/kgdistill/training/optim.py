"""Optimisers by name.

``adam`` is :class:`Adam`: ``torch.optim.Adam`` itself (same arguments, state and checkpoints) whose step runs one
compiled pass per dense float32 CPU parameter (:func:`kgdistill.kernels.adam_step`) instead of a chain of tensor
operations; the arithmetic is torch's, so the parameters follow the same trajectory up to float rounding. Any
parameter or option the kernel does not cover (AMSGrad, maximize, capturable, differentiable, tensor lr, sparse or
non-CPU gradients) runs torch's own implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from kgdistill import kernels
from kgdistill.errors import ConfigError
from kgdistill.registry import Registry, UnknownNameError


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` with a fused CPU kernel for its update (dense Adam: every row's moments decay)."""

    def _kernel_ok(self) -> bool:
        if not kernels.available():
            return False
        for group in self.param_groups:
            if group.get("amsgrad") or group.get("maximize") or group.get("capturable") \
                    or group.get("differentiable") or group.get("fused") or group.get("decoupled_weight_decay"):
                return False
            if isinstance(group["lr"], torch.Tensor) or any(isinstance(b, torch.Tensor) for b in group["betas"]):
                return False
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if p.device.type != "cpu" or p.dtype != torch.float32 or g.is_sparse or g.dtype != torch.float32 \
                        or not p.is_contiguous() or not g.is_contiguous() or torch.is_complex(p):
                    return False
                state = self.state.get(p)
                if state and not (state["exp_avg"].is_contiguous() and state["exp_avg_sq"].is_contiguous()):
                    return False
        return True

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if not self._kernel_ok():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:  # as torch.optim.Adam._init_group
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                done = kernels.adam_step(p, p.grad, state["exp_avg"], state["exp_avg_sq"], beta1=beta1, beta2=beta2,
                                         step_size=lr / bias_correction1,
                                         bias_correction2_sqrt=bias_correction2 ** 0.5, eps=eps,
                                         weight_decay=weight_decay)
                if not done:  # cannot happen after _kernel_ok; keep torch's semantics if it ever does
                    raise RuntimeError("kgdistill Adam: the kernel refused a parameter it had accepted")
        return loss


optimizers: Registry[type[torch.optim.Optimizer]] = Registry("optimizer")
optimizers.register("adam")(Adam)
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
    if issubclass(cls, torch.optim.Adam) and all(p.device.type in ("cpu", "cuda") for p in params):
        kwargs["foreach"] = True
    return cls(params, **kwargs)
