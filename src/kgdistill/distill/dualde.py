"""DualDE (Zhu et al., WSDM 2022): dual-influence distillation with soft-label evaluation, two stages.

Soft label distance (eq. 4, 5, 7): ``d = SmoothL1(σ(f_S), σ(f_T))`` plus, when ``structure`` (the paper's default;
the release comments it out), ``SmoothL1(cos(h_S, t_S), cos(h_T, t_T)) + SmoothL1(|h_S|/|t_S|, |h_T|/|t_T|)`` for
the positive and each negative: the sampled corruptions in sLCWA, every entity in 1-N (the teacher's training mode
by default; the release is sLCWA only). A soft-label evaluation module ``p = σ(a (f_T + b))`` (a = 1, b = 0 at start;
eq. 8/9) weighs how far each teacher score is trusted. How soft and hard labels combine (``weighting``):

* ``additive`` (default): the student's usual hard loss at weight 1 plus ``soft_weight`` × the trusted soft part
  ``½ (mean p⁺ d⁺ + mean Σ w (1 - p⁻) d⁻)``; ``p`` detached and calibrated against the hard labels;
* ``eq10``: the paper's mixture ``p d + (1 - p) · hard`` (eq. 10), ``p`` detached and calibrated;
* ``release``: eq. 10 as released, ``p`` trained through the mixture and the positive's ``p`` reused for the
  negatives. A calibrated ``p`` of a confident teacher tends to 1 on positives, which drives the hard-label weight
  of eq. 10 towards 0 (stage-1 MRR 0.025 on FB15k-237 ComplEx, 0.21 on kinship; BENCHMARKS.md).

Negatives are combined with self-adversarial weights (the target's own column excluded in 1-N).
Stage 1: teacher frozen, student + evaluation module trained. Stage 2: teacher unfrozen, symmetric loss
``L_S(student | teacher labels) + L_T(teacher | student labels)`` (with ``additive``, each side's hard loss too) at a
tenth of the learning rate (paper: 1e-4 then 1e-5), each side with its own evaluation module. Both stages
early-stop on validation MRR of the student.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from kgdistill.config import opt
from kgdistill.distributed import DistContext
from kgdistill.distill import terms
from kgdistill.distill.distiller import DistillModel, Distiller, LossTerm, Scores, StepContext
from kgdistill.distill.method import (CommonConfig, Method, methods, stage_training, teacher_model,
                                     teacher_precision_opt)
from kgdistill.distill.schedules import make_schedule
from kgdistill.distill.stage import StageResult, make_student, run_stage
from kgdistill.losses import adversarial_weights
from kgdistill.runs import Run


class SoftLabelEvaluator(nn.Module):
    """``p = σ(a · (f + b))`` with learnable scalars ``a`` (1 at start) and ``b`` (0 at start); DualDE eq. 8/9."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))
        self.b = nn.Parameter(torch.zeros(()))


WEIGHTINGS = ("additive", "eq10", "release")


@dataclass(frozen=True)
class DualDEConfig(CommonConfig):
    structure: bool = opt(True, "add the structure distance of eq. 5 to the score distance (paper: on)")
    weighting: str = opt("additive", "how soft and hard labels combine: additive (the usual hard loss at weight 1 "
                                     "plus soft_weight × the p-weighted soft distances; default, see BENCHMARKS.md) | "
                                     "eq10 (the paper's mixture p·d + (1-p)·hard, p calibrated and detached) | "
                                     "release (eq. 10 as released: p trained through the mixture, the positive's p "
                                     "reused for negatives)")
    soft_weight: float = opt(0.3, "weight of the soft distances with weighting=additive (0.3 measured ahead of 1 "
                                  "on kinship, BENCHMARKS.md)")
    stage2: bool = opt(True, "run stage 2 (teacher unfrozen, symmetric loss)")
    stage2_epochs: int | None = opt(None, "epochs of stage 2 (default: those of stage 1)")
    stage2_lr_factor: float = opt(0.1, "stage-2 learning rate = factor × stage-1 lr (paper: 1e-5 / 1e-4)")
    adversarial_alpha: float = opt(1.0, "self-adversarial temperature combining the negatives' losses")
    teacher_precision: str = teacher_precision_opt()  # stage 1's frozen teacher; stage 2 trains it in float32


@dataclass
class LabelView:
    """One model's scores seen as positives ``pos[B]`` and negatives ``neg[B, K]``: the sampled negatives in
    sLCWA; every entity in 1-N, where ``exclude[B, K]`` marks the target's own column (weight 0 as a negative)."""

    pos: Tensor
    neg: Tensor
    exclude: Tensor | None = None


def label_view(scores: Scores, batch: Tensor) -> LabelView:
    if scores.neg is not None:
        return LabelView(scores.pos, scores.neg)
    assert scores.all is not None
    exclude = torch.zeros_like(scores.all, dtype=torch.bool)
    exclude.scatter_(1, batch[:, 2:3], True)
    return LabelView(scores.pos, scores.all, exclude)


def negative_weights(view: LabelView, alpha: float) -> Tensor:
    """Self-adversarial weights ``softmax(α f⁻)`` over each row's negatives (the target excluded in 1-N)."""
    if view.exclude is None:
        return adversarial_weights(view.neg, alpha)
    return torch.softmax((alpha * view.neg.detach()).masked_fill(view.exclude, float("-inf")), dim=-1)


def _distance(student: Scores, teacher: Scores, structure: bool) -> tuple[Tensor, Tensor]:
    """Soft-label distances of the positives ``[B]`` and negatives ``[B, K]`` (eq. 7); ``teacher`` is the label."""
    s_neg = student.neg if student.neg is not None else student.all
    t_neg = teacher.neg if teacher.neg is not None else teacher.all
    assert s_neg is not None and t_neg is not None
    d_pos = terms.dualde_score_distance(student.pos, teacher.pos.detach())
    d_neg = terms.dualde_score_distance(s_neg, t_neg.detach())
    if structure and student.structure is not None and teacher.structure is not None:
        s, t = student.structure, teacher.structure
        d_pos = d_pos + terms.structure_feature_distance(s.cos_pos, s.ratio_pos, t.cos_pos.detach(),
                                                         t.ratio_pos.detach())
        d_neg = d_neg + terms.structure_feature_distance(s.cos_neg, s.ratio_neg, t.cos_neg.detach(),
                                                         t.ratio_neg.detach())
    return d_pos, d_neg


def soft_label_loss(learner: Scores, provider: Scores, evaluator: SoftLabelEvaluator, structure: bool,
                    alpha: float, batch: Tensor, weighting: str = "eq10") -> Tensor:
    """The soft-label loss of ``learner`` with labels from ``provider`` weighted by ``evaluator`` (``p``).

    ``eq10``: eq. 10 with ``p`` detached, negatives weighted by their own ``p⁻``; ``release``: eq. 10 as released
    (``p`` not detached, so the mixture's gradient trains ``a``, ``b``; every negative reuses the positive's ``p⁺``);
    ``additive``: only the trusted soft part ``½ (mean p⁺ d⁺ + mean Σ w (1 - p⁻) d⁻)`` (the hard loss is added by
    the distiller at full weight).
    """
    view, label = label_view(learner, batch), label_view(provider, batch)
    d_pos, d_neg = _distance(learner, provider, structure)
    w = negative_weights(view, alpha)
    if weighting == "release":
        p_pos = torch.sigmoid(evaluator.a * (label.pos.detach() + evaluator.b))
        p_neg = p_pos[:, None].expand_as(d_neg)
    else:
        p_pos = terms.soft_label_weight(label.pos.detach(), evaluator.a, evaluator.b)
        p_neg = terms.soft_label_weight(label.neg.detach(), evaluator.a, evaluator.b)
    if weighting == "additive":
        return 0.5 * ((p_pos * d_pos).mean() + (w * (1.0 - p_neg) * d_neg).sum(-1).mean())
    return terms.dualde_soft_label_loss(d_pos, d_neg, view.pos, view.neg, p_pos, p_neg, w)


def calibration(scores: Scores, evaluator: SoftLabelEvaluator, batch: Tensor) -> Tensor:
    """Platt calibration of the evaluation module on the label provider's scores (not with ``release``)."""
    view = label_view(scores, batch)
    if view.exclude is None:
        return terms.soft_label_calibration(view.pos, view.neg, evaluator.a, evaluator.b)
    # 1-N: every non-target entity is a negative (a uniform mean over them)
    keep = ~view.exclude
    neg = view.neg.detach()[keep].view(view.neg.shape[0], -1)
    return terms.soft_label_calibration(view.pos, neg, evaluator.a, evaluator.b)


def stage_terms(config: DualDEConfig, ev_t: SoftLabelEvaluator, ev_s: SoftLabelEvaluator | None,
                regularize_teacher: bool) -> list[LossTerm]:
    a, mode = config.adversarial_alpha, config.weighting
    if mode not in WEIGHTINGS:
        from kgdistill.errors import ConfigError

        raise ConfigError(f"dualde: weighting must be one of {', '.join(WEIGHTINGS)}, got {mode!r}")
    soft_w = make_schedule("constant", config.soft_weight if mode == "additive" else 1.0)
    out = [LossTerm("soft_student", lambda c: soft_label_loss(c.student, c.teacher, ev_t, config.structure, a,
                                                              c.batch, mode), soft_w)]
    if mode != "release":
        out.append(LossTerm("calibration_t", lambda c: calibration(c.teacher, ev_t, c.batch)))
    if ev_s is not None:  # stage 2: the teacher learns from the student's labels
        out.append(LossTerm("soft_teacher", lambda c: soft_label_loss(c.teacher, c.student, ev_s, config.structure,
                                                                      a, c.batch, mode), soft_w))
        if mode != "release":
            out.append(LossTerm("calibration_s", lambda c: calibration(c.student, ev_s, c.batch)))
        if mode == "additive":
            out.append(LossTerm("hard_teacher", lambda c: c.extras["hard_loss"](c.teacher, c.batch)))
        if regularize_teacher:
            out.append(LossTerm("reg_teacher", _teacher_reg))
    return out


def _teacher_reg(ctx: StepContext) -> Tensor:
    reg = ctx.extras["regularizer"]
    return reg(ctx.teacher.rows) if ctx.teacher.rows else ctx.teacher.pos.new_zeros(())


@methods.register("dualde")
class DualDE(Method):
    name = "dualde"
    Config = DualDEConfig

    def run(self, teacher: Run, config: DualDEConfig, out: Path, *, device: str = "cpu", progress: bool = False,
            ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
        t_model = teacher_model(teacher)
        assert teacher.dataset is not None
        dim = config.dims[-1]
        student = make_student(t_model, dim, config.seed).to(device)
        training = stage_training(teacher, config)
        hard_weight = 1.0 if config.weighting == "additive" else 0.0
        ev_t = SoftLabelEvaluator().to(device)
        d1 = Distiller(student, t_model, stage_terms(config, ev_t, None, False), hard_weight=hard_weight,
                       with_structure=config.structure, teacher_precision=config.teacher_precision)
        common = dict(dataset=teacher.dataset, base_config=teacher.config, method=self.name, method_config=config,
                      teacher_dir=str(teacher.path), device=device, progress=progress, ctx=ctx, resume=resume)
        name1 = f"dualde-{dim}-stage1"
        results = [run_stage(name1, run_dir=Path(out) / name1, model=DistillModel(student, extras={"eval_t": ev_t}),
                             student=student, training=training, step_loss=d1, on_trainer=d1.bind,
                             **common)]  # type: ignore[arg-type]
        if not config.stage2:
            return results
        trained_teacher = copy.deepcopy(t_model)  # the loaded teacher stays untouched
        for p in trained_teacher.parameters():
            p.requires_grad_(True)
        ev_s = SoftLabelEvaluator().to(device)
        extras: dict = {}
        d2 = Distiller(student, trained_teacher, stage_terms(config, ev_t, ev_s, True), hard_weight=hard_weight,
                       train_teacher=True, with_structure=config.structure, extras=extras)
        training2 = replace(training, lr=training.lr * config.stage2_lr_factor,
                            epochs=config.stage2_epochs or training.epochs)

        def bind(trainer: object) -> None:
            d2.bind(trainer)
            extras["regularizer"] = trainer.regularizer  # type: ignore[attr-defined]
            extras["hard_loss"] = d2.hard_loss

        name2 = f"dualde-{dim}-stage2"
        model2 = DistillModel(student, teacher=trained_teacher, extras={"eval_t": ev_t, "eval_s": ev_s})
        results.append(run_stage(name2, run_dir=Path(out) / name2, model=model2, student=student,
                                 training=training2, step_loss=d2, on_trainer=bind, **common))  # type: ignore
        total = sum(r.metrics["train_seconds"] for r in results)
        results[-1].row["chain train s"] = round(total, 3)
        results[-1].metrics["chain_train_seconds"] = round(total, 3)
        return results
