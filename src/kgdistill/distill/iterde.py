"""IterDE (Liu et al., AAAI 2023): iterative distillation along a chain of decreasing dimensions.

Each step trains a fresh, randomly initialised student of the next dimension of the chain (default: halving from
the teacher's dimension down to ``target_dim``, e.g. 512→256→128→64→32) from the previous model, then that student
teaches the next step. Per batch ``L = L_hard + w · SmoothL1(f_S, f_T)`` on the raw scores of the positive and its
negatives (no temperature); ``w`` follows a soft-label weighting schedule (SWDA: the released two-phase rule by
default; linear ramp, step ramp and constant are pluggable) and is a detached float. Beyond the paper,
``soft_loss="kl"`` swaps the Huber term for one-shot KD's KL with temperature, to separate what the chain brings from
what the loss brings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from kgdistill.config import opt
from kgdistill.distributed import DistContext
from kgdistill.distill import terms
from kgdistill.distill.distiller import DistillModel, Distiller, LossTerm, StepContext
from kgdistill.distill.method import CommonConfig, Method, methods, stage_training, teacher_model
from kgdistill.distill.schedules import make_schedule
from kgdistill.distill.stage import StageResult, make_student, run_stage
from kgdistill.errors import ConfigError
from kgdistill.models.base import KGCModel
from kgdistill.runs import Run


@dataclass(frozen=True)
class IterDEConfig(CommonConfig):
    dims: list = opt([], "the chain of student dimensions (default: halving from the teacher's dim to target_dim)")
    target_dim: int = opt(32, "last dimension of the default halving chain")
    schedule: str = opt("swda", "soft weight schedule: swda (two-phase, released) | linear | step | constant")
    soft_weight: float | None = opt(None, "target soft weight l (default: the release's, 0.001 then 0.01 for "
                                          "TransE's first / second half of the chain, 1 otherwise)")
    huber_beta: float = opt(1.0, "β of the SmoothL1 soft loss")
    soft_loss: str = opt("huber", "soft loss of every step: huber (released: SmoothL1 on raw scores) | kl (beyond "
                                  "the paper: KL with temperature over the candidates, as one-shot KD)")
    temperature: float = opt(2.0, "temperature of the kl soft loss")


def chain(teacher_dim: int, config: IterDEConfig) -> list[int]:
    """The dimensions of the students, in order."""
    if config.dims:
        dims = [int(d) for d in config.dims]
    else:
        dims, d = [], teacher_dim
        while d // 2 >= config.target_dim:
            d //= 2
            dims.append(d)
        if not dims:
            raise ConfigError(f"target_dim {config.target_dim} is not below half the teacher's dim {teacher_dim}")
    return dims


def soft_weight(config: IterDEConfig, interaction: str, step: int, num_steps: int) -> float:
    if config.soft_weight is not None:
        return config.soft_weight
    if interaction == "transe" and config.soft_loss == "huber":
        return 0.001 if step < num_steps / 2 else 0.01
    return 1.0


def iterde_term(config: IterDEConfig, weight: float) -> LossTerm:
    """The step's soft term: SmoothL1 on raw scores (released) or KL with temperature (``soft_loss="kl"``)."""
    if config.soft_loss == "huber":
        def fn(ctx: StepContext) -> object:
            return terms.huber_scores(ctx.student.candidates, ctx.teacher.candidates, beta=config.huber_beta)
    elif config.soft_loss == "kl":
        def fn(ctx: StepContext) -> object:
            return terms.kl_with_temperature(ctx.student.candidates, ctx.teacher.candidates, config.temperature)
    else:
        raise ConfigError(f"iterde: soft_loss must be 'huber' or 'kl', got {config.soft_loss!r}")
    name = f"soft_{config.soft_loss}"
    return LossTerm(name, fn, make_schedule(config.schedule, weight))  # type: ignore[arg-type]


def run_chain(teacher: Run, config: IterDEConfig, out: Path, *, device: str = "cpu", progress: bool = False,
              method: str = "iterde", ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
    """Run every step of the chain; returns one result per step (the last is the final student)."""
    t_model = teacher_model(teacher)
    assert teacher.dataset is not None
    dims = chain(t_model.dim, config)
    current: KGCModel = t_model
    results: list[StageResult] = []
    training = stage_training(teacher, config)
    for i, dim in enumerate(dims):
        student = make_student(t_model, dim, config.seed + i).to(device)
        weight = soft_weight(config, t_model.interaction_name, i, len(dims))
        distiller = Distiller(student, current, [iterde_term(config, weight)])
        prev = getattr(current, "dim", "?")
        name = f"iterde-{prev}-{dim}"
        results.append(run_stage(name, run_dir=Path(out) / name, model=DistillModel(student), student=student,
                                 dataset=teacher.dataset, base_config=teacher.config,
                                 training=replace(training, seed=config.seed + i), step_loss=distiller,
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
