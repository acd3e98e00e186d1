"""Training losses on score tensors (higher score = more plausible).

Negative-sampling losses take ``pos[B]`` and ``neg[B, N]``; 1-N losses take ``scores[B, E]`` and targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kgdistill.registry import Registry

losses: Registry[type[Loss]] = Registry("loss")


class Loss:
    """Base class of negative-sampling losses: ``__call__(pos[B], neg[B, N]) -> scalar``."""

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        raise NotImplementedError


def adversarial_weights(neg: Tensor, temperature: float) -> Tensor:
    """Self-adversarial weights ``softmax(α · neg)`` over the negatives of each positive, detached (Sun et al.)."""
    return torch.softmax(temperature * neg.detach(), dim=-1)


@losses.register("nssa", "self_adversarial")
class SelfAdversarialLoss(Loss):
    """Self-adversarial negative sampling loss (RotatE, Sun et al., 2019, eq. 5).

    ``L = -log σ(γ + s⁺) - Σ_i p_i log σ(-γ - s⁻_i)``, ``p = softmax(α s⁻)`` detached; the two terms are averaged
    over the batch and halved as in the RotatE code. ``temperature=0`` gives uniform weights.
    """

    def __init__(self, margin: float = 9.0, adversarial_temperature: float = 1.0) -> None:
        self.margin, self.temperature = margin, adversarial_temperature

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        pos_loss = -F.logsigmoid(self.margin + pos)
        if self.temperature > 0:
            w = adversarial_weights(neg, self.temperature)
        else:
            w = torch.full_like(neg, 1.0 / neg.shape[-1])
        neg_loss = -(w * F.logsigmoid(-self.margin - neg)).sum(-1)
        return 0.5 * (pos_loss.mean() + neg_loss.mean())


@losses.register("margin", "margin_ranking")
class MarginRankingLoss(Loss):
    """Pairwise hinge ``mean(max(0, γ - s⁺ + s⁻))`` over all (positive, negative) pairs (Bordes et al., 2013)."""

    def __init__(self, margin: float = 1.0, adversarial_temperature: float = 0.0) -> None:
        self.margin, self.temperature = margin, adversarial_temperature

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        hinge = F.relu(self.margin - pos[:, None] + neg)
        if self.temperature > 0:  # self-adversarial margin loss (IterDE's TransE)
            return (adversarial_weights(neg, self.temperature) * hinge).sum(-1).mean()
        return hinge.mean()


@losses.register("softplus", "logistic")
class SoftplusLoss(Loss):
    """Logistic loss ``½(mean softplus(-s⁺) + mean softplus(s⁻))``; self-adversarial weights when ``α > 0``."""

    def __init__(self, margin: float = 0.0, adversarial_temperature: float = 0.0) -> None:
        self.margin, self.temperature = margin, adversarial_temperature

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        pos_loss = F.softplus(-pos - self.margin).mean()
        if self.temperature > 0:
            neg_loss = (adversarial_weights(neg, self.temperature) * F.softplus(neg + self.margin)).sum(-1).mean()
        else:
            neg_loss = F.softplus(neg + self.margin).mean()
        return 0.5 * (pos_loss + neg_loss)


def cross_entropy_1vsall(scores: Tensor, targets: Tensor) -> Tensor:
    """1vsAll: ``CE(scores[B, E], targets[B])`` (Lacroix et al., 2018; Ruffinelli et al., 2020)."""
    return F.cross_entropy(scores, targets)


def bce_kvsall(scores: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """KvsAll: binary cross-entropy against multi-hot ``labels[B, E]`` with label smoothing (Dettmers et al., 2018)."""
    if label_smoothing > 0:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / labels.shape[-1]
    return F.binary_cross_entropy_with_logits(scores, labels)


# ---- regularisers -----------------------------------------------------------------------------------------------
regularizers: Registry[type[Regularizer]] = Registry("regularizer")


class Regularizer:
    """``__call__(rows, kind) -> scalar`` where ``rows`` are the representations used in the batch."""

    def __init__(self, weight: float = 0.0) -> None:
        self.weight = weight

    def __call__(self, rows: list[tuple[Tensor, str]]) -> Tensor:
        raise NotImplementedError


@regularizers.register("none")
class NoRegularizer(Regularizer):
    def __call__(self, rows: list[tuple[Tensor, str]]) -> Tensor:
        return rows[0][0].new_zeros(())


@regularizers.register("l2")
class L2Regularizer(Regularizer):
    """``weight · Σ_rows mean_batch ||x||²`` over the rows used in the batch."""

    def __call__(self, rows: list[tuple[Tensor, str]]) -> Tensor:
        return self.weight * sum((x * x).sum(-1).mean() for x, _ in rows)


def _moduli(x: Tensor, kind: str) -> Tensor:
    if kind == "complex":
        d = x.shape[-1] // 2
        return torch.sqrt(x[..., :d] ** 2 + x[..., d:] ** 2 + 1e-12)
    return x.abs()


@regularizers.register("n3")
class N3Regularizer(Regularizer):
    """Nuclear 3-norm ``weight · Σ_rows mean_batch Σ_d |x_d|³`` with complex moduli (Lacroix et al., 2018)."""

    def __call__(self, rows: list[tuple[Tensor, str]]) -> Tensor:
        return self.weight * sum((_moduli(x, kind) ** 3).sum(-1).mean() for x, kind in rows)


@regularizers.register("dura")
class DURARegularizer(Regularizer):
    """DURA for bilinear models, ``weight · mean(||h||² + ||t||² + ||h∘r||² + ||t∘r̄||²)`` (Zhang et al., 2020).

    Expects rows ``[h, r, t]`` in that order; used by MetaSD's released code.
    """

    def __call__(self, rows: list[tuple[Tensor, str]]) -> Tensor:
        (h, hk), (r, rk), (t, _) = rows[:3]
        if hk == "complex" and rk == "complex":
            d = h.shape[-1] // 2
            hr, hi, rr, ri, tr, ti = h[..., :d], h[..., d:], r[..., :d], r[..., d:], t[..., :d], t[..., d:]
            hrm = (hr * rr - hi * ri) ** 2 + (hr * ri + hi * rr) ** 2
            trm = (tr * rr + ti * ri) ** 2 + (ti * rr - tr * ri) ** 2
            val = (hr**2 + hi**2 + tr**2 + ti**2 + hrm + trm).sum(-1)
        else:
            val = (h**2 + t**2 + (h * r) ** 2 + (t * r) ** 2).sum(-1)
        return self.weight * val.mean()
