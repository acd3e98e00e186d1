"""Training objectives of text runs: plain SimKGC training and the base every distillation method extends.

An objective turns one :class:`~kgdistill.text.textdata.TextBatch` into a scalar loss for the student. Distillation
objectives run the frozen teacher (eval mode, ``no_grad``) on the same inputs, and compare *aligned* logits: the
in-batch ``[B, B]`` block plus the self-negative column, computed in the same way for teacher and student (no margin,
no pre-batch queue, each model's own temperature), so both matrices score the same candidates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kgdistill.registry import Registry
from kgdistill.text.biencoder import BiEncoder, BiEncoderOutput
from kgdistill.text.contrastive import (PreBatchQueue, in_batch_false_negatives, prebatch_false_negatives,
                                        self_negative_mask, simkgc_logits, simkgc_loss)
from kgdistill.text.textdata import KnownTails, TextBatch

objectives: Registry[type["Objective"]] = Registry("text training method")


def sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Mean over rows of the squared L2 distance ``‖a_i − b_i‖²`` for ``a, b: [n, d]`` (scalar)."""
    return (a - b).pow(2).sum(-1).mean()


def masked_mean(hidden: Tensor, positions: Tensor) -> Tensor:
    """Mean of ``hidden[B, L, d]`` over ``positions[B, L]`` (bool) → ``[B, d]`` (zeros for empty rows)."""
    m = positions.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@objectives.register("none", "no-kd", "simkgc")
class Objective:
    """SimKGC training without a teacher: ``loss = CE(logits) + CE(logits[:, :B]ᵀ)``."""

    needs_teacher = False

    def __init__(self, student: BiEncoder, teacher: BiEncoder | None, config: Any, known: KnownTails,
                 layer_map: list[int] | None = None) -> None:
        self.student, self.teacher, self.config, self.known = student, teacher, config, known
        self.layer_map = layer_map or []
        t = config.training
        self.queue = PreBatchQueue(t.pre_batch)
        self.margin, self.pre_batch_weight = student.additive_margin, t.pre_batch_weight
        d = config.distill
        self.alpha, self.beta = float(d.alpha), float(d.beta)
        if self.teacher is not None:
            self.teacher.eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    # ---- pieces shared by all methods ----------------------------------------------------------------------------
    def modules(self) -> list[nn.Module]:
        """Extra trainable modules optimised together with the student (e.g. MGD generators)."""
        return []

    def forward(self, model: BiEncoder, batch: TextBatch, inputs: dict[str, Any] | None = None,
                **kw: Any) -> BiEncoderOutput:
        inputs = inputs or {}
        return model(inputs.get("hr", batch.hr_inputs), inputs.get("tail", batch.tail_inputs),
                     inputs.get("head", batch.head_inputs), **kw)

    def teacher_forward(self, batch: TextBatch, inputs: dict[str, Any] | None = None, **kw: Any) -> BiEncoderOutput:
        assert self.teacher is not None
        with torch.no_grad():
            return self.forward(self.teacher, batch, inputs, **kw)

    def masks(self, batch: TextBatch) -> tuple[Tensor, Tensor]:
        return (in_batch_false_negatives(batch.h, batch.r, batch.t, self.known),
                self_negative_mask(batch.h, batch.r, batch.t, self.known))

    def ce(self, out: BiEncoderOutput, batch: TextBatch) -> Tensor:
        """SimKGC loss with margin, masks, self- and pre-batch negatives; pushes this batch's tails on the queue."""
        in_batch, self_mask = self.masks(batch)
        q_vecs, q_ids = self.queue.get()
        pre_mask = None
        if q_vecs is not None:
            pre_mask = prebatch_false_negatives(batch.h, batch.r, batch.t, q_ids, self.known)  # type: ignore[arg-type]
        logits = simkgc_logits(out.hr.pooled, out.tail.pooled, self.student.inv_t, self.margin, in_batch,
                               out.head.pooled if out.head is not None else None, self_mask, q_vecs, pre_mask,
                               self.pre_batch_weight)
        self.queue.push(out.tail.pooled, batch.t)
        return simkgc_loss(logits, batch.h.shape[0])

    def aligned_logits(self, model: BiEncoder, out: BiEncoderOutput, batch: TextBatch) -> tuple[Tensor, Tensor]:
        """``(logits [B, B (+1)], valid [B, B (+1)])``: teacher/student-comparable logits and where they are real
        candidates (false negatives excluded)."""
        in_batch, self_mask = self.masks(batch)
        logits = simkgc_logits(out.hr.pooled, out.tail.pooled, model.inv_t, 0.0, in_batch,
                               out.head.pooled if out.head is not None else None, self_mask)
        invalid = in_batch if out.head is None else torch.cat([in_batch, self_mask.unsqueeze(1)], dim=1)
        return logits, ~invalid

    def combine(self, ce: Tensor, logit_term: Tensor | None = None, feature_term: Tensor | None = None
                ) -> tuple[Tensor, dict[str, float]]:
        """``(1 − α − β)·CE + α·logit + β·feature`` (absent terms take no weight)."""
        a = self.alpha if logit_term is not None else 0.0
        b = self.beta if feature_term is not None else 0.0
        loss = (1.0 - a - b) * ce
        logs = {"ce": float(ce.detach())}
        if logit_term is not None:
            loss = loss + a * logit_term
            logs["logit"] = float(logit_term.detach())
        if feature_term is not None:
            loss = loss + b * feature_term
            logs["feature"] = float(feature_term.detach())
        return loss, logs

    # ---- the method ----------------------------------------------------------------------------------------------
    def loss(self, batch: TextBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        out = self.forward(self.student, batch)
        ce = self.ce(out, batch)
        return ce, {"ce": float(ce.detach())}

    def after_step(self, batch: TextBatch, step: int) -> dict[str, float]:
        """Called after each optimiser step of the student (HRKD's meta step)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"modules": [m.state_dict() for m in self.modules()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m, s in zip(self.modules(), state.get("modules", [])):
            m.load_state_dict(s)
