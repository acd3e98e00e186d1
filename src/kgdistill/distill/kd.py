"""One-shot soft-label KD (Hinton et al., 2015) for KGE, and the from-scratch baseline of every table.

``kd``: ``L = hard_weight · L_hard + soft_weight · L_soft`` with ``L_soft`` the temperature KL between the
teacher's and the student's distributions over each query's candidates (the positive and its negatives in sLCWA,
all entities in 1-N), or a Huber loss on the raw scores (``kd_loss=huber``). With ``more_teachers`` the target is
the mean of several teachers' distributions on the same candidates (multi-teacher KD).
``scratch``: the student trained with its hard loss only, same config and epochs (the reference row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgdistill.config import opt
from kgdistill.distributed import DistContext
from kgdistill.distill import terms
from kgdistill.distill.distiller import DistillModel, Distiller, LossTerm, StepContext
from kgdistill.distill.method import (CommonConfig, Method, methods, more_teacher_models, stage_training,
                                     teacher_model, teacher_precision_opt)
from kgdistill.distill.schedules import make_schedule
from kgdistill.distill.stage import StageResult, make_student, run_stage
from kgdistill.errors import ConfigError
from kgdistill.runs import Run

KD_LOSSES = ("kl", "huber")


@dataclass(frozen=True)
class KDConfig(CommonConfig):
    kd_loss: str = opt("kl", "soft loss: kl (temperature KL over the candidates) | huber (SmoothL1 on raw scores)")
    temperature: float = opt(1.0, "KL temperature T (the loss is scaled by T², Hinton et al.; 1 measured ahead of "
                                  "2 and 4 on kinship, BENCHMARKS.md)")
    soft_weight: float = opt(1.0, "weight of the soft loss")
    hard_weight: float = opt(1.0, "weight of the hard loss")
    schedule: str = opt("constant", "soft weight schedule: constant | linear | step | swda")
    more_teachers: list = opt([], "further teacher run folders (same graph; any model or size): the soft targets "
                                  "are the mean of every teacher's distribution (multi-teacher KD, kd_loss kl)")
    huber_beta: float = opt(1.0, "β of the huber soft loss")
    huber_reduction: str = opt("mean", "reduction of the huber soft loss: mean over all scores (IterDE's release) | "
                                       "sum (over each query's candidates, mean over the batch)")
    teacher_precision: str = teacher_precision_opt()


@dataclass(frozen=True)
class KDHuberConfig(KDConfig):
    kd_loss: str = opt("huber", "soft loss: huber (SmoothL1 on raw scores, IterDE's KD baseline) | kl")


def kd_term(config: KDConfig) -> LossTerm:
    if config.kd_loss not in KD_LOSSES:
        raise ConfigError(f"kd_loss: unknown {config.kd_loss!r}; known: {', '.join(KD_LOSSES)}")
    if config.more_teachers and config.kd_loss != "kl":
        raise ConfigError(f"more_teachers: several teachers are averaged as distributions, which needs kd_loss kl "
                          f"(got {config.kd_loss!r})")
    if config.kd_loss == "kl" and config.more_teachers:
        def fn(ctx: StepContext) -> object:
            return terms.ensemble_kl(ctx.student.candidates,
                                     [ctx.teacher.candidates, *(t.candidates for t in ctx.more_teachers)],
                                     config.temperature)
    elif config.kd_loss == "kl":
        def fn(ctx: StepContext) -> object:
            return terms.kl_with_temperature(ctx.student.candidates, ctx.teacher.candidates, config.temperature)
    else:
        if config.huber_reduction not in ("mean", "sum"):
            raise ConfigError(f"huber_reduction: unknown {config.huber_reduction!r}; known: mean, sum")

        def fn(ctx: StepContext) -> object:
            return terms.huber_scores(ctx.student.candidates, ctx.teacher.candidates, config.huber_beta,
                                      config.huber_reduction)
    return LossTerm(f"soft_{config.kd_loss}", fn, make_schedule(config.schedule, config.soft_weight))  # type: ignore


@methods.register("kd")
class KD(Method):
    name = "kd"
    Config = KDConfig

    def run(self, teacher: Run, config: KDConfig, out: Path, *, device: str = "cpu", progress: bool = False,
            ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
        t_model = teacher_model(teacher)
        assert teacher.dataset is not None
        dim = config.dims[-1]
        term = kd_term(config)
        more = more_teacher_models(teacher, [str(d) for d in config.more_teachers], device)
        student = make_student(t_model, dim, config.seed).to(device)
        distiller = Distiller(student, t_model, [term], hard_weight=config.hard_weight, more_teachers=more,
                              teacher_precision=config.teacher_precision)
        result = run_stage(f"{self.name}-{dim}", run_dir=Path(out) / f"{self.name}-{dim}", model=DistillModel(student),
                           student=student, dataset=teacher.dataset, base_config=teacher.config,
                           training=stage_training(teacher, config), step_loss=distiller, method=self.name,
                           method_config=config, teacher_dir=str(teacher.path), device=device, progress=progress,
                           on_trainer=distiller.bind, ctx=ctx, resume=resume)
        return [result]


@methods.register("kd-huber", "bkd")
class KDHuber(KD):
    """One-shot KD with IterDE's soft loss (SmoothL1 on raw scores, constant weight): the release's ``kd_huber``
    baseline, the matched comparison for an IterDE chain with the same loss."""

    name = "kd-huber"
    Config = KDHuberConfig


@methods.register("scratch", "from_scratch")
class Scratch(Method):
    """The student trained from scratch with the teacher's recipe (hard loss only): the baseline row."""

    name = "scratch"
    Config = CommonConfig

    def run(self, teacher: Run, config: CommonConfig, out: Path, *, device: str = "cpu", progress: bool = False,
            ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
        t_model = teacher_model(teacher)
        assert teacher.dataset is not None
        results = []
        for dim in config.dims:
            student = make_student(t_model, dim, config.seed).to(device)
            results.append(run_stage(f"scratch-{dim}", run_dir=Path(out) / f"scratch-{dim}", model=student,
                                     student=student, dataset=teacher.dataset, base_config=teacher.config,
                                     training=stage_training(teacher, config), step_loss=None, method=self.name,
                                     method_config=config, teacher_dir=str(teacher.path), device=device,
                                     progress=progress, ctx=ctx, resume=resume))
        return results
