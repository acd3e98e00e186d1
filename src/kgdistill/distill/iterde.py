"""IterDE (Liu et al., AAAI 2023): iterative distillation along a chain of decreasing dimensions.

Each step trains a fresh, randomly initialised student of the next dimension of the chain (default: halving from
the teacher's dimension down to ``target_dim``, e.g. 512→256→128→64→32) from the previous model, then that student
teaches the next step. Per batch ``L = L_hard + w · SmoothL1(f_S, f_T)`` on the raw scores of the positive and its
negatives (no temperature) as released (``soft_loss="huber"``); ``w`` follows a soft-label weighting schedule (SWDA,
``schedule="swda"``: the released two-phase rule; linear ramp, step ramp and constant are pluggable) and is a
detached float (``swda_weight="release"``: the released tensor weight). By default (beyond the paper, each measured
ahead on kinship) every step uses one-shot KD's KL with temperature 1 and a constant weight instead, which also
separates what the chain brings from what the loss and the schedule bring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from torch import Tensor

from kgdistill.config import opt
from kgdistill.distributed import DistContext
from kgdistill.distill import terms
from kgdistill.distill.distiller import DistillModel, Distiller, LossTerm, StepContext
from kgdistill.distill.method import (CommonConfig, Method, methods, stage_training, teacher_model,
                                     teacher_precision_opt)
from kgdistill.distill.schedules import make_schedule
from kgdistill.distill.stage import StageResult, make_student, run_stage
from kgdistill.errors import ConfigError
from kgdistill.models.base import KGCModel
from kgdistill.runs import Run


@dataclass(frozen=True)
class IterDEConfig(CommonConfig):
    dims: list = opt([], "the chain of student dimensions (default: halving from the teacher's dim to target_dim)",
                     item=int)
    target_dim: int | None = opt(None, "last dimension of the default halving chain (default: 32, or half the "
                                       "teacher's dim for a teacher of fewer than 64 dims)")
    schedule: str = opt("constant", "soft weight schedule: constant (default: measured ahead of swda on kinship at "
                                    "both budgets, BENCHMARKS.md) | swda (two-phase, released) | linear | step")
    swda_weight: str = opt("detached", "swda's first-phase weight w = l / norm(L_s · L_h): detached (a number) | "
                                       "release (a tensor, as released: the weighted soft term's gradient is then "
                                       "(1 - w·L_s/L_h)·∇L_h, so the first half trains on the hard loss alone)")
    soft_weight: float | None = opt(None, "target soft weight l (default: the release's, 0.001 then 0.01 for "
                                          "TransE's first / second half of the chain, 1 otherwise)")
    huber_beta: float = opt(1.0, "β of the SmoothL1 soft loss")
    huber_reduction: str = opt("mean", "reduction of the SmoothL1 soft loss: mean over all B·(1+N) scores "
                                       "(released; more negatives dilute it) | sum (over each query's candidates, "
                                       "mean over the batch)")
    soft_loss: str = opt("kl", "soft loss of every step: kl (default, beyond the paper: KL with temperature over the "
                               "candidates, as one-shot KD; measured ahead of huber on kinship, BENCHMARKS.md) | huber "
                               "(released: SmoothL1 on raw scores)")
    temperature: float = opt(1.0, "temperature of the kl soft loss")
    last_margin: float | None = opt(None, "margin of the hard loss in the chain's last step (release: 2 for TransE "
                                          "at 64→32; default: the same margin as every step)")
    teacher_precision: str = teacher_precision_opt()
    step_lrs: list = opt([], "learning rate of each step of the chain, in order (default: lr for every step; a "
                             "small student may want a larger one than the teacher's, BENCHMARKS.md)", item=float)


SOFT_LOSSES = ("huber", "kl")
HUBER_REDUCTIONS = ("mean", "sum")
SWDA_WEIGHTS = ("detached", "release")


def chain(teacher_dim: int, config: IterDEConfig) -> list[int]:
    """The dimensions of the students, in order."""
    if config.dims:
        dims = [int(d) for d in config.dims]
        if dims[0] >= teacher_dim or any(b >= a for a, b in zip(dims, dims[1:])):
            raise ConfigError(f"iterde: dims must decrease from below the teacher's dim {teacher_dim}, got {dims}")
        return dims
    target = config.target_dim if config.target_dim is not None else min(32, teacher_dim // 2)
    if target < 1 or target > teacher_dim // 2:
        raise ConfigError(f"iterde: target_dim {target} is not below half the teacher's dim {teacher_dim}")
    dims, d = [], teacher_dim
    while d // 2 >= target:
        d //= 2
        dims.append(d)
    return dims


def soft_weight(config: IterDEConfig, interaction: str, step: int, num_steps: int) -> float:
    if config.soft_weight is not None:
        return config.soft_weight
    if interaction == "transe" and config.soft_loss == "huber":
        return 0.001 if step < num_steps / 2 else 0.01
    return 1.0


def huber_soft(config: IterDEConfig, student: Tensor, teacher: Tensor) -> Tensor:
    """SmoothL1 of raw candidate scores ``[B, K]``: mean over every score, or summed per query (``sum``)."""
    return terms.huber_scores(student, teacher, config.huber_beta, config.huber_reduction)


def release_swda(value: float, soft: Tensor, hard: Tensor, epoch: int, num_epochs: int) -> Tensor:
    """The released SWDA term ``w · L_s`` with ``w`` not detached: first half ``w = l / norm(L_s · L_h)`` where
    ``norm`` divides by a constant power of ten, so ``w · L_s = l · 10^k / L_h`` (its gradient opposes ``∇L_h``);
    second half ``l · L_s``."""
    if epoch <= num_epochs / 2:
        product = float((soft * hard).detach())
        if product > 0 and math.isfinite(product):
            decade = 10.0 ** math.floor(math.log10(product))
            return value * soft / (soft * hard / decade)
    return value * soft


def iterde_term(config: IterDEConfig, weight: float) -> LossTerm:
    """The step's soft term: SmoothL1 on raw scores (released) or KL with temperature (``soft_loss="kl"``)."""
    for name, value, known in (("soft_loss", config.soft_loss, SOFT_LOSSES),
                               ("huber_reduction", config.huber_reduction, HUBER_REDUCTIONS),
                               ("swda_weight", config.swda_weight, SWDA_WEIGHTS)):
        if value not in known:
            raise ConfigError(f"iterde: {name} must be one of {', '.join(known)}, got {value!r}")
    if config.swda_weight == "release" and config.schedule not in ("swda", "two_phase"):
        raise ConfigError(f"iterde: swda_weight=release is the released SWDA weight: it needs schedule swda (got "
                          f"{config.schedule!r}, the default since SWDA measured behind a constant weight)")

    def soft(ctx: StepContext) -> Tensor:
        if config.soft_loss == "huber":
            return huber_soft(config, ctx.student.candidates, ctx.teacher.candidates)
        return terms.kl_with_temperature(ctx.student.candidates, ctx.teacher.candidates, config.temperature)

    name = f"soft_{config.soft_loss}"
    if config.swda_weight == "release" and config.schedule in ("swda", "two_phase"):
        def fn(ctx: StepContext) -> Tensor:
            assert ctx.hard is not None
            return release_swda(weight, soft(ctx), ctx.hard, ctx.epoch, ctx.num_epochs)
        return LossTerm(name, fn, make_schedule("constant", 1.0))
    return LossTerm(name, soft, make_schedule(config.schedule, weight))


def run_chain(teacher: Run, config: IterDEConfig, out: Path, *, device: str = "cpu", progress: bool = False,
              method: str = "iterde", ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
    """Run every step of the chain; returns one result per step (the last is the final student)."""
    t_model = teacher_model(teacher)
    assert teacher.dataset is not None
    dims = chain(t_model.dim, config)
    if config.step_lrs and len(config.step_lrs) != len(dims):
        raise ConfigError(f"iterde: step_lrs gives {len(config.step_lrs)} learning rates for a chain of "
                          f"{len(dims)} steps ({' → '.join(map(str, [t_model.dim, *dims]))})")
    if any(float(lr) <= 0 for lr in config.step_lrs):
        raise ConfigError(f"iterde: step_lrs must be > 0, got {config.step_lrs}")
    current: KGCModel = t_model
    results: list[StageResult] = []
    training = stage_training(teacher, config)
    for i, dim in enumerate(dims):
        student = make_student(t_model, dim, config.seed + i).to(device)
        step_training = replace(training, seed=config.seed + i)
        if config.step_lrs:
            step_training = replace(step_training, lr=float(config.step_lrs[i]))
        if config.last_margin is not None and i == len(dims) - 1:
            step_training = replace(step_training, margin=config.last_margin)
        weight = soft_weight(config, t_model.interaction_name, i, len(dims))
        distiller = Distiller(student, current, [iterde_term(config, weight)],
                              teacher_precision=config.teacher_precision)
        prev = getattr(current, "dim", "?")
        name = f"iterde-{prev}-{dim}"
        results.append(run_stage(name, run_dir=Path(out) / name, model=DistillModel(student), student=student,
                                 dataset=teacher.dataset, base_config=teacher.config,
                                 training=step_training, step_loss=distiller,
                                 method=method, method_config=config, teacher_dir=str(teacher.path),
                                 device=device, progress=progress, on_trainer=distiller.bind, ctx=ctx,
                                 resume=resume))
        current = student
    total = sum(r.metrics["train_seconds"] for r in results)
    results[-1].row["chain train s"] = round(total, 3)
    results[-1].metrics["chain_train_seconds"] = round(total, 3)
    return results


@methods.register("iterde")
class IterDE(Method):
    name = "iterde"
    Config = IterDEConfig

    def run(self, teacher: Run, config: IterDEConfig, out: Path, *, device: str = "cpu", progress: bool = False,
            ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
        return run_chain(teacher, config, out, device=device, progress=progress, ctx=ctx, resume=resume)
