"""Pure distillation loss terms on score / representation tensors (no state, no parameters).

Conventions: scores are "higher = more plausible"; a *candidate matrix* ``[B, K]`` holds, per row, the scores of
one query's candidates (the positive in column 0 and its negatives after it in negative-sampling training, or all
entities in 1-N training). Every term returns a scalar (batch mean) unless its name ends in ``_per_triple``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_with_temperature(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft-label KD (Hinton et al., 2015, eq. 2): ``T² · mean_b KL(softmax(t_b / T) || softmax(s_b / T))``.

    ``student``, ``teacher``: candidate scores ``[B, K]``. The ``T²`` factor keeps gradient magnitudes comparable
    across temperatures, as in the paper.
    """
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return temperature**2 * kl.mean()


def soft_cross_entropy_per_triple(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft cross-entropy of each row: ``-Σ_k softmax(t / T)_k · log_softmax(s / T)_k`` → ``[B]`` (HRKD's soft CE,
    averaged per domain by its caller; no ``T²`` factor). Same student gradient as :func:`kl_with_temperature`
    without its ``T²``: the two differ by the teacher's entropy."""
    return -(F.softmax(teacher / temperature, dim=-1) * F.log_softmax(student / temperature, dim=-1)).sum(-1)


def ensemble_kl(student: Tensor, teachers: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Multi-teacher KD: ``T² · mean_b KL(p̄_b || softmax(s_b / T))`` with ``p̄ = mean_i softmax(t_i / T)``, the mean
    of the teachers' distributions over the same candidates (ensemble distillation, Hinton et al., 2015, §3).

    ``student``: ``[B, K]``; ``teachers``: one or more ``[B, K]`` score matrices (models of any kind or size, on the
    same candidates). One teacher gives :func:`kl_with_temperature`.
    """
    if not teachers:
        raise ValueError("ensemble_kl needs at least one teacher")
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    stacked = torch.stack([F.log_softmax(t / temperature, dim=-1) for t in teachers])  # [n, B, K]
    log_p_t = torch.logsumexp(stacked, dim=0) - math.log(len(teachers))
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return temperature**2 * kl.mean()


def symmetric_kl(student: Tensor, teacher: Tensor, temperature: float = 3.0, forward_weight: float = 3.0,
                 reverse_weight: float = 1.0) -> Tensor:
    """MetaSD's distillation loss (released code): ``a · KL(T || S) + b · KL(S || T)`` on ``softmax(· / τ)``.

    ``student``, ``teacher``: candidate scores ``[B, K]`` (1-N: all entities); defaults ``τ = 3, a = 3, b = 1``.
    Both KLs are batch means (no ``τ²`` factor, as released).
    """
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher / temperature, dim=-1)
    fwd = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
    rev = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1).mean()
    return forward_weight * fwd + reverse_weight * rev


def huber_scores(student: Tensor, teacher: Tensor, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """IterDE's soft loss: ``mean SmoothL1_β(s, t)`` over raw scores of positives and negatives (any shape), as
    released; ``reduction="sum"``: summed over each query's candidates (last dim), mean over the queries, so the
    per-score weight does not fall with the number of negatives.

    ``SmoothL1_β(x) = 0.5 x² / β`` if ``|x| < β`` else ``|x| - 0.5 β`` (PyTorch's definition, β = 1 as released).
    """
    if reduction == "sum":
        return F.smooth_l1_loss(student, teacher, beta=beta, reduction="none").sum(-1).mean()
    if reduction != "mean":
        raise ValueError(f"huber reduction must be 'mean' or 'sum', got {reduction!r}")
    return F.smooth_l1_loss(student, teacher, beta=beta)


def dualde_score_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """DualDE eq. 4, elementwise: ``SmoothL1(σ(f_S), σ(f_T))`` → same shape as the inputs (e.g. ``[B, K]``)."""
    return F.smooth_l1_loss(torch.sigmoid(student), torch.sigmoid(teacher), reduction="none")


def structure_features(h: Tensor, t: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """DualDE's structure of a triple (eq. 5): ``(cos(h, t), |h| / |t|)``, rows ``[..., D]`` → ``[...]`` each."""
    nh, nt = h.norm(dim=-1).clamp_min(eps), t.norm(dim=-1).clamp_min(eps)
    return (h * t).sum(-1) / (nh * nt), nh / nt


def structure_feature_distance(cos_s: Tensor, ratio_s: Tensor, cos_t: Tensor, ratio_t: Tensor) -> Tensor:
    """DualDE eq. 5 on precomputed features: ``SmoothL1(cos_S, cos_T) + SmoothL1(ratio_S, ratio_T)``, elementwise."""
    return F.smooth_l1_loss(cos_s, cos_t, reduction="none") + F.smooth_l1_loss(ratio_s, ratio_t, reduction="none")


def dualde_structure_distance(h_s: Tensor, t_s: Tensor, h_t: Tensor, t_t: Tensor, eps: float = 1e-8) -> Tensor:
    """DualDE eq. 5, per triple: ``SmoothL1(cos(h_S, t_S), cos(h_T, t_T)) + SmoothL1(|h_S|/|t_S|, |h_T|/|t_T|)``.

    ``h_s, t_s``: student entity rows ``[..., Ds]``; ``h_t, t_t``: teacher rows ``[..., Dt]`` (dims may differ: only
    the angle and the length ratio of head and tail are compared). Returns ``[...]``.
    """
    return structure_feature_distance(*structure_features(h_s, t_s, eps), *structure_features(h_t, t_t, eps))


def soft_label_weight(teacher: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """DualDE eq. 8/9: the evaluation module ``p = σ(a · (f_T + b))`` (shape of ``teacher``), *detached*.

    The weight only mixes losses; ``a`` and ``b`` are trained by :func:`soft_label_calibration` instead of through
    the mixture (the released code lets the mixture's gradient reach them, which rewards whichever term is smaller).
    """
    return torch.sigmoid(a * (teacher + b)).detach()


def soft_label_calibration(teacher_pos: Tensor, teacher_neg: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Training signal of the evaluation module: binary cross-entropy of ``σ(a (f_T + b))`` against the hard labels.

    ``teacher_pos[B]`` (label 1), ``teacher_neg[B, N]`` (label 0), teacher scores detached: ``p`` learns how far the
    teacher's score can be trusted (Platt scaling of the teacher), negatives averaged per positive.
    """
    pos = F.binary_cross_entropy_with_logits(a * (teacher_pos.detach() + b), torch.ones_like(teacher_pos))
    neg = F.binary_cross_entropy_with_logits(a * (teacher_neg.detach() + b), torch.zeros_like(teacher_neg))
    return 0.5 * (pos + neg)


def dualde_soft_label_loss(d_pos: Tensor, d_neg: Tensor, student_pos: Tensor, student_neg: Tensor, p_pos: Tensor,
                           p_neg: Tensor, adversarial_weights: Tensor) -> Tensor:
    """DualDE eq. 10 with the weights of both label kinds: positives ``p⁺ d⁺ + (1 - p⁺)(-log σ(f_S⁺))``.

    Negatives take the evaluation module's own weight: a teacher that rightly scores a negative low (``p⁻`` near 0)
    is trusted, so ``(1 - p⁻) d⁻ + p⁻ (-log σ(-f_S⁻))`` (the release reuses ``p⁺`` here), combined with the
    self-adversarial ``adversarial_weights[B, N]`` (rows sum to 1). Shapes: ``d_pos, student_pos, p_pos [B]``;
    ``d_neg, student_neg, p_neg [B, N]``. Returns ``½ (mean_b pos + mean_b Σ_n w neg)``.
    """
    pos = p_pos * d_pos + (1.0 - p_pos) * -F.logsigmoid(student_pos)
    neg = (1.0 - p_neg) * d_neg + p_neg * -F.logsigmoid(-student_neg)
    return 0.5 * (pos.mean() + (adversarial_weights * neg).sum(-1).mean())


def feature_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """``mean ||s - t||²`` over matching feature tensors (same shape), e.g. projected embeddings."""
    return F.mse_loss(student, teacher)


__all__ = ["kl_with_temperature", "soft_cross_entropy_per_triple", "ensemble_kl", "symmetric_kl", "huber_scores",
           "dualde_score_distance", "structure_features", "structure_feature_distance", "dualde_structure_distance",
           "soft_label_weight", "soft_label_calibration", "dualde_soft_label_loss", "feature_mse"]
