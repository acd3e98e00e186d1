"""Weight schedules of distillation loss terms, and sparsity schedules of pruning.

A weight schedule maps ``(epoch, num_epochs, soft, hard)`` to a float (``epoch`` counts from 1; ``soft`` and
``hard`` are the current batch's loss values, used by IterDE's SWDA only). The result is a plain float: a schedule
never carries gradient (the IterDE release backpropagates through its weight; we do not).
"""

from __future__ import annotations

import math

from kgdistill.registry import Registry

schedules: Registry[type[WeightSchedule]] = Registry("weight schedule")


def unit_decade(x: float) -> float:
    """Rescale ``|x|`` by a power of ten into ``[1, 10)`` (IterDE's ``norm``); 0 and non-finite values give 1.

    The release loops ``while x < 1: x *= 10`` and never ends on 0; here the exponent is computed directly.
    """
    x = abs(float(x))
    if x == 0.0 or not math.isfinite(x):
        return 1.0
    scaled = x / 10.0 ** math.floor(math.log10(x))
    return min(max(scaled, 1.0), 10.0 - 1e-12)  # guards log10 rounding at exact powers of ten


class WeightSchedule:
    """Base: ``weight(epoch, num_epochs, soft=None, hard=None) -> float`` around the target weight ``value``."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)

    def weight(self, epoch: int, num_epochs: int, soft: float | None = None, hard: float | None = None) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value})"


@schedules.register("constant")
class ConstantSchedule(WeightSchedule):
    """``w = l`` at every epoch."""

    def weight(self, epoch: int, num_epochs: int, soft: float | None = None, hard: float | None = None) -> float:
        return self.value


@schedules.register("swda", "two_phase")
class SWDASchedule(WeightSchedule):
    """IterDE's released SWDA rule: first half of training ``w = l / unit_decade(soft · hard)``, then ``w = l``.

    ``unit_decade`` maps into ``[1, 10)``, so the first phase uses a weight between ``l / 10`` and ``l`` that follows
    the magnitude of the current losses; the second phase uses the full ``l``.
    """

    def weight(self, epoch: int, num_epochs: int, soft: float | None = None, hard: float | None = None) -> float:
        if epoch <= num_epochs / 2:
            if soft is None or hard is None:
                return self.value
            return self.value / unit_decade(soft * hard)
        return self.value


@schedules.register("linear", "linear_ramp")
class LinearRamp(WeightSchedule):
    """``w = l · min(1, epoch / (fraction · num_epochs))``: from ``l / ramp_epochs`` up to ``l`` at ``fraction``."""

    def __init__(self, value: float = 1.0, fraction: float = 0.5) -> None:
        super().__init__(value)
        self.fraction = fraction

    def weight(self, epoch: int, num_epochs: int, soft: float | None = None, hard: float | None = None) -> float:
        ramp = max(1.0, self.fraction * num_epochs)
        return self.value * min(1.0, epoch / ramp)


@schedules.register("step", "step_ramp")
class StepRamp(WeightSchedule):
    """IterDE's commented-out 3-step ramp: ``l/2``, then ``3l/4`` from 1/4 of training, then ``l`` from 1/2."""

    def weight(self, epoch: int, num_epochs: int, soft: float | None = None, hard: float | None = None) -> float:
        progress = (epoch - 1) / max(1, num_epochs)
        if progress < 0.25:
            return 0.5 * self.value
        if progress < 0.5:
            return 0.75 * self.value
        return self.value


def make_schedule(name: str, value: float) -> WeightSchedule:
    return schedules.get(name)(value=value)


# ---- sparsity -----------------------------------------------------------------------------------------------------
def sparsity_at(epoch: int, final: float, ramp_epochs: int = 0) -> float:
    """Target sparsity at ``epoch`` (from 1): ``final`` when ``ramp_epochs`` is 0 (fixed, MetaSD's default), else
    the cubic ramp of Zhu & Gupta (2017) ``final · (1 - (1 - epoch / ramp_epochs)³)`` reaching ``final`` then."""
    if ramp_epochs <= 0 or epoch >= ramp_epochs:
        return final
    return final * (1.0 - (1.0 - epoch / ramp_epochs) ** 3)


__all__ = ["schedules", "WeightSchedule", "ConstantSchedule", "SWDASchedule", "LinearRamp", "StepRamp",
           "make_schedule", "unit_decade", "sparsity_at"]
