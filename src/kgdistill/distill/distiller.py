"""The distiller core: a frozen (or trainable) teacher, a student, named weighted loss terms with schedules.

One :class:`Distiller` is one training stage. It plugs into the foundation's :class:`~kgdistill.training.loop.Trainer`
as its ``step_loss``: the trainer keeps owning batching, the optimiser, validation, early stopping, checkpoints and
the trace; the distiller computes, per batch, the student's and the teacher's scores on the same candidates
(positive + sampled negatives in sLCWA, all entities in 1-N) and combines ``hard + Σ_i w_i(epoch) · term_i``.
Teacher scores are computed in eval mode under ``torch.no_grad()`` unless the stage trains the teacher too.

Under ``torch.distributed`` the trainer wraps :class:`DistillModel` (not the distiller) in DistributedDataParallel:
a frozen teacher is not one of its submodules, so it is never wrapped; a teacher trained in the stage is one, so its
gradients are averaged over the ranks with the student's. Each rank scores its share of every batch with its own
negatives; schedules that read the batch's losses (SWDA) see the rank's values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from kgdistill.distill import terms
from kgdistill.distill.schedules import ConstantSchedule, WeightSchedule
from kgdistill.models.base import KGCModel
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.steps import negative_sampling_scores, score_queries


def freeze(model: KGCModel) -> KGCModel:
    """Put ``model`` in eval mode with ``requires_grad=False`` everywhere (a frozen teacher)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class Scores:
    """Scores of one model on a batch's candidates.

    sLCWA: ``pos[B]``, ``neg[B, N]``; 1-N: ``pos`` is the target's score ``[B]`` and ``all[B, E]`` every entity's.
    ``structure``: DualDE's structure features of the positive and corrupted triples (sLCWA, embedding models,
    when asked for); ``rows`` feed regularisers.
    """

    pos: Tensor
    neg: Tensor | None = None
    all: Tensor | None = None
    rows: list = field(default_factory=list)
    structure: Structure | None = None

    @property
    def candidates(self) -> Tensor:
        """``[B, 1 + N]`` (positive first) in sLCWA, ``[B, E]`` in 1-N."""
        if self.all is not None:
            return self.all
        assert self.neg is not None
        return torch.cat([self.pos[:, None], self.neg], dim=1)

    def float(self) -> Scores:
        """These scores in float32 (scores computed under bf16 autocast come back in bf16)."""
        def f(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.float()

        structure = None if self.structure is None else Structure(
            *(t.float() for t in (self.structure.cos_pos, self.structure.ratio_pos, self.structure.cos_neg,
                                  self.structure.ratio_neg)))
        return Scores(self.pos.float(), f(self.neg), f(self.all), [(r.float(), k) for r, k in self.rows], structure)


@dataclass
class Structure:
    """Head-tail structure (DualDE eq. 5) of a batch's triples: ``cos(h, t)`` and ``|h| / |t|``.

    ``cos_pos``, ``ratio_pos``: ``[B]`` for the positives; ``cos_neg``, ``ratio_neg``: ``[B, N]`` for the corrupted
    triples, in the negatives' column order.
    """

    cos_pos: Tensor
    ratio_pos: Tensor
    cos_neg: Tensor
    ratio_neg: Tensor


def structure_of(model: EmbeddingModel, batch: Tensor, neg_ids: Tensor, corrupt_head: Tensor | None, num_head: int,
                 eps: float = 1e-8) -> Structure:
    """:class:`Structure` of positives and negatives without materialising the corrupted triples' rows.

    A corrupted triple shares one entity with its positive, so its cosine and norm ratio follow from the candidate
    rows ``[B, N, D]`` (gathered once), their norms and one dot product per candidate with the kept entity:
    a head corruption ``(c, r, t)`` has ``cos = c·t / (|c||t|)``, a tail corruption ``(h, r, c)`` ``h·c / (|h||c|)``.
    Equal to :func:`~kgdistill.distill.terms.structure_features` on the corrupted rows (tested), at a fraction of
    the memory traffic (DualDE's stage 2 trains a 512-dim teacher through these features).
    """
    B, N = neg_ids.shape
    # one gather for every row (one dense gradient for the table, not one per lookup)
    rows = model.entity_rows(torch.cat([batch[:, 0], batch[:, 2], neg_ids.reshape(-1)]))
    h, t, cand = rows.split([B, B, B * N])  # split, not slicing: its backward concatenates, no zero-filled grads
    cand = cand.view(B, N, -1)
    cos_pos, ratio_pos = terms.structure_features(h, t, eps)
    nh, nt = h.norm(dim=-1).clamp_min(eps)[:, None], t.norm(dim=-1).clamp_min(eps)[:, None]
    nc = cand.norm(dim=-1).clamp_min(eps)
    if corrupt_head is None:  # fixed layout: head corruptions first
        corrupt_head = (torch.arange(N, device=neg_ids.device) < num_head).expand(B, N)
    # a corrupted head keeps the tail and vice versa: dot of every candidate with both, then pick the kept one
    dots = torch.bmm(cand, torch.stack([t, h], dim=2))  # [B, N, 2]: (c·t, c·h)
    dot = torch.where(corrupt_head, dots[..., 0], dots[..., 1])
    kept_norm = torch.where(corrupt_head, nt, nh)
    return Structure(cos_pos, ratio_pos, dot / (nc * kept_norm),
                     torch.where(corrupt_head, nc / nt, nh / nc))


def slcwa_scores(model: KGCModel, batch: Tensor, neg_ids: Tensor, corrupt_head: Tensor | None, num_head: int,
                 with_structure: bool = False) -> Scores:
    """Scores of positives and negatives (the foundation's fast path), optionally with their :class:`Structure`."""
    pos, neg, rows = negative_sampling_scores(model, batch, neg_ids, corrupt_head, num_head)
    out = Scores(pos=pos, neg=neg, rows=rows)
    if with_structure and isinstance(model, EmbeddingModel):
        out.structure = structure_of(model, batch, neg_ids, corrupt_head, num_head)
    return out


def structure_of_queries(model: EmbeddingModel, queries: Tensor, eps: float = 1e-8) -> Structure:
    """:class:`Structure` of 1-N queries ``[B, 3]`` against every entity: ``cos_neg``, ``ratio_neg`` are ``[B, E]``
    (column ``e``: the triple with ``e`` as the answer), ``cos_pos``, ``ratio_pos`` ``[B]`` (the target's column).

    A query ``(a, r, ?)`` (``r < R``) makes triples ``(a, r, e)``: ratio ``|a| / |e|``; an inverse query
    (``r ≥ R``) makes ``(e, r - R, a)``: ratio ``|e| / |a|``. The cosine is symmetric.
    """
    num_rel = model.num_relations
    anchors = model.entity_rows(queries[:, 0])  # [B, D]
    table = model.entity  # [E, D]
    na = anchors.norm(dim=-1).clamp_min(eps)[:, None]
    ne = table.norm(dim=-1).clamp_min(eps)[None, :]
    cos = (anchors @ table.T) / (na * ne)
    inverse = (queries[:, 1] >= num_rel)[:, None]
    ratio = torch.where(inverse, ne / na, na / ne)
    target = queries[:, 2:3]
    return Structure(cos.gather(1, target).squeeze(1), ratio.gather(1, target).squeeze(1), cos, ratio)


def query_scores(model: KGCModel, queries: Tensor, with_structure: bool = False) -> Scores:
    """1-N scores of ``queries[B, 3]`` = (anchor, relation (≥ R: inverse), target): all entities ``[B, E]``,
    optionally with the :class:`Structure` of every (query, entity) triple (:func:`structure_of_queries`)."""
    scores = score_queries(model, queries[:, 0], queries[:, 1])
    rows: list = []
    structure = None
    if isinstance(model, EmbeddingModel):
        inter = model.interaction
        rows = [(model.entity_rows(queries[:, 0]), inter.entity_kind),
                (model.relation_rows(queries[:, 1]), inter.relation_kind),
                (model.entity_rows(queries[:, 2]), inter.entity_kind)]
        if with_structure:
            structure = structure_of_queries(model, queries)
    return Scores(pos=scores.gather(1, queries[:, 2:3]).squeeze(1), all=scores, rows=rows, structure=structure)


TermFn = Callable[["StepContext"], Tensor]
#: precisions of a frozen teacher's scores (:meth:`Distiller._frozen_scores`)
TEACHER_PRECISIONS = ("fp32", "bf16")


@dataclass
class LossTerm:
    """A named loss term ``fn(ctx) -> scalar`` with a base weight shaped by a schedule (constant by default)."""

    name: str
    fn: TermFn
    schedule: WeightSchedule = field(default_factory=ConstantSchedule)


@dataclass
class StepContext:
    """What a loss term sees: the batch, both models' scores on the same candidates, the epoch."""

    batch: Tensor
    student: Scores
    teacher: Scores
    epoch: int
    num_epochs: int
    extras: dict[str, Any] = field(default_factory=dict)
    #: scores of the further (frozen) teachers of a multi-teacher stage, on the same candidates
    more_teachers: list[Scores] = field(default_factory=list)
    #: the student's hard loss on the batch (with its graph; zero when the stage's hard weight is 0)
    hard: Tensor | None = None


class DistillModel(KGCModel):
    """The module a stage trains: the student (which it scores with), plus trainable extras.

    ``teacher`` is registered as a submodule only when it is trained in this stage (DualDE's second stage), so that
    the trainer's optimiser and checkpoints cover it; a frozen teacher stays outside (never in the optimiser, the
    checkpoints or DDP). ``extras`` holds small trainable modules (e.g. DualDE's soft-label evaluation module).
    """

    def __init__(self, student: KGCModel, teacher: KGCModel | None = None,
                 extras: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.extras = nn.ModuleDict(extras or {})
        self.num_entities, self.num_relations = student.num_entities, student.num_relations

    def score_hrt(self, hrt: Tensor) -> Tensor:
        return self.student.score_hrt(hrt)

    def score_t(self, h: Tensor, r: Tensor, candidates: Tensor | None = None) -> Tensor:
        return self.student.score_t(h, r, candidates)

    def score_h(self, r: Tensor, t: Tensor, candidates: Tensor | None = None) -> Tensor:
        return self.student.score_h(r, t, candidates)

    def apply_constraints(self) -> None:
        self.student.apply_constraints()
        if self.teacher is not None:
            self.teacher.apply_constraints()


class Distiller:
    """``hard + Σ_i w_i · term_i`` per batch, as a ``Trainer`` step.

    Args:
        student: the model trained with the hard loss.
        teacher: the teacher (frozen unless ``train_teacher``).
        terms: soft loss terms; each weight comes from its schedule at the current epoch (a float, no gradient).
        hard_weight: weight of the student's usual loss (the trainer's configured loss); 0 disables it (the
            student's regulariser, if configured, always applies).
        teacher_terms: extra terms evaluated when ``train_teacher`` (DualDE stage 2's teacher losses).
        with_structure: also compute the head-tail :class:`Structure` of positives and negatives (DualDE).
        more_teachers: further frozen teachers (any :class:`KGCModel` over the same ids), scored on the same
            candidates for the terms of a multi-teacher stage (``StepContext.more_teachers``).
    """

    def __init__(self, student: KGCModel, teacher: KGCModel, terms: list[LossTerm], *, hard_weight: float = 1.0,
                 train_teacher: bool = False, with_structure: bool = False,
                 extras: dict[str, Any] | None = None, more_teachers: list[KGCModel] | None = None,
                 teacher_precision: str = "fp32") -> None:
        if teacher_precision not in TEACHER_PRECISIONS:
            raise ValueError(f"teacher_precision must be one of {TEACHER_PRECISIONS}, got {teacher_precision!r}")
        self.student, self.teacher, self.terms = student, teacher, terms
        self.teacher_precision = teacher_precision
        self.more_teachers = [freeze(t) for t in more_teachers or []]
        self.hard_weight, self.train_teacher, self.with_structure = hard_weight, train_teacher, with_structure
        self.extras = extras if extras is not None else {}
        self.trainer: Any = None
        self.epoch_sums: dict[str, float] = {}
        self.epoch_batches = 0
        self._epoch_seen = 0
        if not train_teacher:
            freeze(teacher)

    def bind(self, trainer: Any) -> Distiller:
        """Attach the trainer whose sampler, loss, regulariser, epoch counter and trace the steps use."""
        self.trainer = trainer
        return self

    # ---- per-batch -------------------------------------------------------------------------------------------
    def _scores(self, model: KGCModel, batch: Tensor, sample: tuple | None) -> Scores:
        if sample is None:
            return query_scores(model, batch, with_structure=self.with_structure)
        neg_ids, corrupt_head, num_head = sample
        return slcwa_scores(model, batch, neg_ids, corrupt_head, num_head, with_structure=self.with_structure)

    def _frozen_scores(self, model: KGCModel, batch: Tensor, sample: tuple | None) -> Scores:
        """A frozen teacher's scores without autograd; under bf16 autocast with ``teacher_precision="bf16"`` (its
        matrix products in bfloat16, ~4× faster on CPUs with AVX512-BF16; element-wise parts stay float32), returned
        in float32."""
        with torch.no_grad():
            if self.teacher_precision == "fp32":
                return self._scores(model, batch, sample)
            with torch.autocast(batch.device.type, dtype=torch.bfloat16):
                return self._scores(model, batch, sample).float()

    def hard_loss(self, scores: Scores, batch: Tensor) -> Tensor:
        """The model's usual loss: the trainer's sLCWA loss, or cross-entropy over all entities in 1-N."""
        if scores.all is not None:
            return torch.nn.functional.cross_entropy(scores.all, batch[:, 2])
        assert scores.neg is not None
        return self.trainer.loss_fn(scores.pos, scores.neg)

    def regularization(self, scores: Scores) -> Tensor | None:
        reg = self.trainer.regularizer
        return reg(scores.rows) if scores.rows and reg.weight else None

    def __call__(self, model: KGCModel, batch: Tensor, generator: torch.Generator) -> Tensor:
        tr = self.trainer
        assert tr is not None, "Distiller.bind(trainer) first"
        epoch, num_epochs = tr.state.epoch + 1, tr.config.epochs
        self._start_epoch(epoch)
        sample = None
        if tr.config.training_mode == "slcwa":
            neg_ids, corrupt_head = tr.sampler.sample(batch, generator)
            sample = (neg_ids, corrupt_head, tr.sampler.num_head_negatives)
        student = self._scores(self.student, batch, sample)
        if self.train_teacher:
            self.teacher.train()
            teacher = self._scores(self.teacher, batch, sample)
        else:
            self.teacher.eval()
            teacher = self._frozen_scores(self.teacher, batch, sample)
        more = [self._frozen_scores(t, batch, sample) for t in self.more_teachers]
        hard = self.hard_loss(student, batch) if self.hard_weight else student.pos.new_zeros(())
        ctx = StepContext(batch, student, teacher, epoch, num_epochs, self.extras, more, hard)
        values = {t.name: t.fn(ctx) for t in self.terms}
        total = self.hard_weight * hard
        reg = self.regularization(student)
        if reg is not None:
            total = total + reg
        soft_sum = float(sum(float(v.detach()) for v in values.values())) if values else 0.0
        logged = {"hard": float(hard.detach())}
        for term in self.terms:
            w = term.schedule.weight(epoch, num_epochs, soft=soft_sum, hard=logged["hard"])
            total = total + w * values[term.name]
            logged[term.name] = float(values[term.name].detach())
            logged[f"w_{term.name}"] = w
        self._accumulate(logged)
        return total

    # ---- epoch records in the trace ---------------------------------------------------------------------------
    def _start_epoch(self, epoch: int) -> None:
        if epoch != self._epoch_seen:
            self.flush()
            self._epoch_seen = epoch

    def _accumulate(self, logged: dict[str, float]) -> None:
        for k, v in logged.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
        self.epoch_batches += 1

    def flush(self) -> None:
        """Write the mean of every term and weight over the last epoch's batches to the trace (``distill``).

        Multi-process: the means are averaged over the ranks (each rank saw its shares of the same batches), so
        every rank must call it at the same points (the trainer's checkpoints, the first batch of an epoch).
        """
        if self.epoch_batches and self.trainer is not None:
            means = {k: v / self.epoch_batches for k, v in self.epoch_sums.items()}
            ctx = getattr(self.trainer, "ctx", None)
            if ctx is not None and ctx.enabled:
                from kgdistill.distributed import all_gather_objects

                ranks = all_gather_objects(means, ctx)
                means = {k: sum(r[k] for r in ranks) / len(ranks) for k in means}
            self.trainer.trace.write("distill", epoch=self._epoch_seen,
                                     **{k: round(v, 6) for k, v in means.items()})
        self.epoch_sums, self.epoch_batches = {}, 0


__all__ = ["freeze", "Scores", "Structure", "structure_of", "structure_of_queries", "slcwa_scores", "query_scores",
           "LossTerm", "StepContext", "DistillModel", "Distiller"]
