"""Training objectives of text runs: plain SimKGC training and the base every distillation method extends.

An objective turns one :class:`~kgdistill.text.textdata.TextBatch` into a scalar loss for the student. Distillation
objectives run the frozen teacher (eval mode, ``no_grad``) on the same inputs, and compare *aligned* logits: the
in-batch ``[B, B]`` block plus the self-negative column, computed in the same way for teacher and student (no margin,
no pre-batch queue, each model's own temperature), so both matrices score the same candidates.

Under ``torch.distributed`` (a multi-process ``ctx``) each rank holds a share of the global batch. The student's
forward goes through ``student_module`` (its DistributedDataParallel wrapper, set by the trainer); the in-batch
candidates are every rank's tails, gathered with gradients (:func:`~kgdistill.distributed.gather_with_grad`), and
the false-negative mask is built from the gathered global ids, so each rank's rows of every logit matrix are the
rows a single process would compute for the global batch (the SimKGC loss adds each rank's tails scored against
every rank's queries: :func:`~kgdistill.text.contrastive.sharded_simkgc_loss`). A teacher's tails are gathered
without gradients; the teacher itself is never wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from kgdistill.distill.distiller import freeze
from kgdistill.distributed import DistContext, gather_sizes, gather_with_grad
from kgdistill.errors import ConfigError
from kgdistill.registry import Registry
from kgdistill.text.biencoder import BiEncoder, BiEncoderOutput
from kgdistill.text.contrastive import (PreBatchQueue, in_batch_false_negatives, prebatch_false_negatives,
                                        self_negative_mask, sharded_simkgc_loss, simkgc_logits, simkgc_loss)
from kgdistill.text.teacher_cache import TeacherCache
from kgdistill.text.textdata import KnownTails, TextBatch

objectives: Registry[type["Objective"]] = Registry("text training method")
# declared here, imported on first use (each module also registers its class with the decorator)
objectives.declare("none", "kgdistill.text.objective:Objective", "no-kd", "simkgc")
objectives.declare("logit", "kgdistill.distill.text_kd:LogitKD", "logit-kd", "kd")
objectives.declare("patient", "kgdistill.distill.text_kd:PatientKD", "patient-kd", "pkd")
objectives.declare("pmd", "kgdistill.distill.text_pmd:PMDObjective")
objectives.declare("hrkd", "kgdistill.distill.text_hrkd:HRKDObjective")


def sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Mean over rows of the squared L2 distance ``‖a_i − b_i‖²`` for ``a, b: [n, d]`` (scalar)."""
    return (a - b).pow(2).sum(-1).mean()


def masked_mean(hidden: Tensor, positions: Tensor) -> Tensor:
    """Mean of ``hidden[B, L, d]`` over ``positions[B, L]`` (bool) → ``[B, d]`` (zeros for empty rows)."""
    m = positions.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@dataclass
class GlobalBatch:
    """The global batch a rank's share belongs to: ``sizes`` (every rank's ``b``), this rank's rows
    ``offset .. offset + local``, the global ids ``h, r, t: [B]`` and the global in-batch false-negative mask
    ``mask: [B, B]`` (``mask[i, j]``: candidate tail ``j`` is a true answer of query ``i``)."""

    sizes: list[int]
    offset: int
    local: int
    h: Tensor
    r: Tensor
    t: Tensor
    mask: Tensor
    gathered: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    @property
    def rows(self) -> slice:
        """This rank's rows (or columns) of a global ``[B, ...]`` tensor."""
        return slice(self.offset, self.offset + self.local)


@objectives.register("none", "no-kd", "simkgc")
class Objective:
    """SimKGC training without a teacher: ``loss = CE(logits) + CE(logits[:, :B]ᵀ)``."""

    needs_teacher = False
    #: whether the objective's teacher terms use only per-text vectors (``distill.cache_teacher`` applies)
    caches_teacher = False

    def __init__(self, student: BiEncoder, teacher: BiEncoder | None, config: Any, known: KnownTails,
                 layer_map: list[int] | None = None, ctx: DistContext | None = None) -> None:
        self.student, self.teacher, self.config, self.known = student, teacher, config, known
        self.layer_map = layer_map or []
        self.ctx = ctx or DistContext(device=str(student.device))
        #: what the student's forward goes through: the student, or its DistributedDataParallel wrapper
        self.student_module: nn.Module = student
        self._global: tuple[TextBatch, GlobalBatch] | None = None
        t = config.training
        self.queue = PreBatchQueue(t.pre_batch)
        self.margin, self.pre_batch_weight = student.additive_margin, t.pre_batch_weight
        d = config.distill
        self.alpha, self.beta = float(d.alpha), float(d.beta)
        if self.teacher is not None:
            freeze(self.teacher)
        #: the frozen teacher's per-text features kept across epochs (``distill.cache_teacher``), or None
        self.teacher_cache: TeacherCache | None = None
        if getattr(d, "cache_teacher", False):
            if not self.caches_teacher:
                raise ConfigError(f"distill.cache_teacher: the {d.method!r} objective needs the teacher's token-level "
                                  f"outputs on inputs that change every step; it applies to logit and patient KD")
            self.teacher_cache = TeacherCache()

    # ---- pieces shared by all methods ----------------------------------------------------------------------------
    def modules(self) -> list[nn.Module]:
        """Extra trainable modules optimised together with the student (e.g. MGD generators)."""
        return []

    def forward(self, model: BiEncoder, batch: TextBatch, inputs: dict[str, Any] | None = None,
                **kw: Any) -> BiEncoderOutput:
        inputs = inputs or {}
        module = self.student_module if model is self.student else model
        return module(inputs.get("hr", batch.hr_inputs), inputs.get("tail", batch.tail_inputs),
                      inputs.get("head", batch.head_inputs), **kw)

    def teacher_forward(self, batch: TextBatch, inputs: dict[str, Any] | None = None, **kw: Any) -> BiEncoderOutput:
        assert self.teacher is not None
        with torch.no_grad():
            return self.forward(self.teacher, batch, inputs, **kw)

    def masks(self, batch: TextBatch) -> tuple[Tensor, Tensor]:
        """This rank's ``(in-batch mask [b, b], self mask [b])`` over its own share only."""
        return (in_batch_false_negatives(batch.h, batch.r, batch.t, self.known),
                self_negative_mask(batch.h, batch.r, batch.t, self.known))

    # ---- the global batch (several processes) --------------------------------------------------------------------
    def global_batch(self, batch: TextBatch) -> GlobalBatch:
        """Every rank's ids of the batch ``batch`` is a share of (gathered once per batch; a collective)."""
        if self._global is not None and self._global[0] is batch:
            return self._global[1]
        ctx = self.ctx
        ids = torch.stack([batch.h, batch.r, batch.t], dim=1)
        sizes = gather_sizes(ids.shape[0], ctx, ids.device)
        h, r, t = gather_with_grad(ids, ctx, sizes).unbind(1)
        g = GlobalBatch(sizes, sum(sizes[:ctx.rank]), ids.shape[0], h, r, t,
                        in_batch_false_negatives(h, r, t, self.known))
        self._global = (batch, g)
        return g

    def gather(self, x: Tensor, batch: TextBatch) -> Tensor:
        """``x[b, ...]`` of every rank → ``[B, ...]`` (with gradients; gathered once per tensor and batch)."""
        if not self.ctx.enabled:
            return x
        g = self.global_batch(batch)
        hit = g.gathered.get(id(x))
        if hit is None or hit[0] is not x:
            hit = (x, gather_with_grad(x, self.ctx, g.sizes))
            g.gathered[id(x)] = hit
        return hit[1]

    def contrastive_logits(self, out: BiEncoderOutput, batch: TextBatch, prebatch: Tensor | None = None,
                           prebatch_ids: Tensor | None = None) -> tuple[Tensor, Tensor | None, int]:
        """The student's training logits ``(logits [b, B (+1) (+K)], column logits [b, B] or None, offset)``.

        One process: ``b = B``, no column logits (the loss transposes ``logits[:, :B]``). Several: this rank's
        queries against every rank's tails, and this rank's tails against every rank's queries.
        """
        heads = out.head.pooled if out.head is not None else None
        pre_mask = None
        if prebatch is not None:
            pre_mask = prebatch_false_negatives(batch.h, batch.r, batch.t, prebatch_ids,  # type: ignore[arg-type]
                                                self.known)
        if not self.ctx.enabled:
            in_batch, self_mask = self.masks(batch)
            logits = simkgc_logits(out.hr.pooled, out.tail.pooled, self.student.inv_t, self.margin, in_batch, heads,
                                   self_mask, prebatch, pre_mask, self.pre_batch_weight)
            return logits, None, 0
        g = self.global_batch(batch)
        self_mask = self_negative_mask(batch.h, batch.r, batch.t, self.known)
        tails, hrs = self.gather(out.tail.pooled, batch), self.gather(out.hr.pooled, batch)
        logits = simkgc_logits(out.hr.pooled, tails, self.student.inv_t, self.margin, g.mask[g.rows], heads,
                               self_mask, prebatch, pre_mask, self.pre_batch_weight, offset=g.offset)
        columns = simkgc_logits(out.tail.pooled, hrs, self.student.inv_t, self.margin, g.mask[:, g.rows].T,
                                offset=g.offset)
        return logits, columns, g.offset

    def ce(self, out: BiEncoderOutput, batch: TextBatch) -> Tensor:
        """SimKGC loss with margin, masks, self- and pre-batch negatives; pushes this batch's tails on the queue
        (every rank's, so the queue is the same on every rank)."""
        q_vecs, q_ids = self.queue.get()
        logits, columns, offset = self.contrastive_logits(out, batch, q_vecs, q_ids)
        if columns is None:
            self.queue.push(out.tail.pooled, batch.t)
            return simkgc_loss(logits, batch.h.shape[0])
        g = self.global_batch(batch)
        self.queue.push(self.gather(out.tail.pooled, batch), g.t)
        return sharded_simkgc_loss(logits, columns, offset)

    def aligned_logits(self, model: BiEncoder, out: BiEncoderOutput, batch: TextBatch) -> tuple[Tensor, Tensor]:
        """``(logits [b, B (+1)], valid [b, B (+1)])``: teacher/student-comparable logits and where they are real
        candidates (false negatives excluded); ``B`` is the global batch over every rank."""
        heads = out.head.pooled if out.head is not None else None
        return self.aligned_logits_of(model.inv_t, out.hr.pooled, out.tail.pooled, heads, batch)

    def aligned_logits_of(self, inv_t: Tensor, hr: Tensor, tails: Tensor, heads: Tensor | None, batch: TextBatch
                          ) -> tuple[Tensor, Tensor]:
        """:meth:`aligned_logits` from pooled embeddings ``hr, tails, heads: [b, d]`` (this rank's share)."""
        if not self.ctx.enabled:
            in_batch, self_mask = self.masks(batch)
            offset = 0
        else:
            g = self.global_batch(batch)
            in_batch, offset = g.mask[g.rows], g.offset
            self_mask = self_negative_mask(batch.h, batch.r, batch.t, self.known)
            tails = self.gather(tails, batch)
        logits = simkgc_logits(hr, tails, inv_t, 0.0, in_batch, heads, self_mask, offset=offset)
        invalid = in_batch if heads is None else torch.cat([in_batch, self_mask.unsqueeze(1)], dim=1)
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

    def report(self) -> dict[str, Any]:
        """What the objective records at the end of a run (``metrics.json`` ``objective``; e.g. HRKD's graph)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"modules": [m.state_dict() for m in self.modules()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m, s in zip(self.modules(), state.get("modules", [])):
            m.load_state_dict(s)
