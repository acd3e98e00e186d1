"""MetaSD (Li et al., Findings of EMNLP 2022): self-distillation with meta learning into a pruned model.

The dense source model ``T`` and the pruned student ``S = T ⊙ M`` share parameters; ``M`` is recomputed every epoch
by magnitude pruning over the entity and relation tables (fixed sparsity, or a cubic ramp): of whole model coordinates
by default (beyond the paper: the student is then a dense model of the kept dim, as small and fast as a dense student
of its parameter count), or of single entries over both tables together as released (``pruning=global``). Training
is 1-N (cross-entropy over all entities). Per batch:

1. (optional) one supervised step on the dense model (the trainer's optimiser);
2. lookahead ``S' = S - η · ∇_S (CE(S) + reg(S) + KD(S | T))`` built with ``torch.func.functional_call`` and
   ``create_graph=True`` (T not detached inside KD);
3. the cross-entropy of ``S'`` on a batch of the *quiz set* updates ``T`` through that second-order path
   (its own Adagrad, lr 1e-4); the quiz set is a seeded random held-out fraction of the training triples, never
   in the supervised loss;
4. mutual learning: ``CE(T) + CE(S) + reg + KD(T | S.detach()) + KD(S | T.detach())`` (+ optional relation
   prediction), returned to the trainer for one step; beyond the paper (default ``teacher_weight`` 6, 0 = released)
   ``+ teacher_weight · KL(teacher run || S)`` at temperature 1 from the frozen teacher run's model.

``KD(x | y) = 3 KL(y || x) + KL(x || y)`` on ``softmax(· / 3)``. Checkpoints are selected on validation MRR of the
pruned branch only. An entry-pruned model is exported in sparse form (bitmap + values) and its true non-zero count and
bytes on disk are reported; a coordinate-pruned one is saved as the dense model of the kept dim.

Under ``torch.distributed`` the dense model ``T`` is the trained module (DistributedDataParallel averages the
gradients of step 4); steps 1 and 3 run inside the step with their own optimisers, so their gradients are averaged
over the ranks explicitly (:func:`~kgdistill.distributed.all_reduce_grads_`) and every rank keeps the same weights.
The mask is computed from those equal weights on every rank; rank 0's is broadcast all the same and the number of
entries that differed is recorded (``rank_mismatch`` in the trace's ``mask`` records, 0 when all agree). The quiz
split is seeded by ``seed`` alone (the same on every rank); each meta step draws one global quiz batch from a
generator seeded the same on every rank and each rank takes its share of it.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kgdistill.config import opt
from kgdistill.data.triples import KGDataset
from kgdistill.distill import terms
from kgdistill.distill.method import CommonConfig, Method, methods, stage_training, teacher_model
from kgdistill.distill.pruning import SPARSE_WEIGHTS, PrunedModel, export_sparse
from kgdistill.distill.schedules import sparsity_at
from kgdistill.distill.stage import StageResult, make_student, run_stage
from kgdistill.distributed import (DistContext, all_gather_objects, all_reduce_grads_, all_reduce_mean_,
                                   broadcast_tensor_, gather_sizes, shard_bounds)
from kgdistill.errors import ConfigError
from kgdistill.models.base import KGCModel, save_model
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.runs import Run
from kgdistill.training.optim import make_optimizer
from kgdistill.training.steps import score_queries, score_query_candidates


# torch's Adagrad builds the row-sparse update with invariant checks off and says so once per process; the rows
# come from an embedding gradient (valid by construction)
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


@dataclass(frozen=True)
class MetaSDConfig(CommonConfig):
    dims: list = opt([], "dimension of the dense source model (default: the teacher's, or from nonzeros_per_entity)",
                     item=int)
    init: str = opt("scratch", "scratch: train the dense model from a fresh initialisation (as released) | teacher: "
                               "start it from the teacher run's weights")
    sparsity: float = opt(0.9, "fraction of entity + relation entries pruned (released default 0.9)")
    nonzeros_per_entity: int | None = opt(None, "non-zero reals kept per entity row on average: sets the dense "
                                                "dim to this / (1 - sparsity) (the release: rank 2000 at 0.9 keeps "
                                                "400 per complex entity row)")
    pruning: str = opt("dims", "dims: whole model coordinates, the student saved as a dense model of the kept dim "
                               "(measured ahead of global on kinship, BENCHMARKS.md) | global: magnitude pruning over "
                               "both tables together (released) | row: the same number of entries kept in every row")
    sparsity_ramp_epochs: int | None = opt(None, "0: fixed sparsity from the first epoch (released); N: cubic ramp "
                                                 "reaching the sparsity at epoch N (default: 0 for dims pruning, two "
                                                 "thirds of the epochs otherwise; only later validations may select "
                                                 "the model)")
    quiz_fraction: float = opt(0.02, "held-out fraction of training triples forming the quiz set (seeded)")
    quiz: str = opt("set", "set: every meta step scores the whole quiz set (released) | batch: one seeded quiz "
                           "batch as large as the training batch per meta step")
    lookahead: str = opt("copy", "copy: the lookahead S' is built from a detached copy of the pruned tables, so "
                                 "only the second-order KD path reaches the dense model (released) | live: from "
                                 "the live tables (the first-order quiz gradient reaches it too)")
    lookahead_lr: float = opt(0.1, "η of the lookahead S' = S - η ∇")
    teacher_lr: float = opt(1e-4, "learning rate of the meta (quiz) update of the dense model (Adagrad)")
    kd_temperature: float = opt(3.0, "temperature of the distillation KL")
    kl_forward: float = opt(3.0, "weight of KL(target || learner) in the lookahead's KD")
    kl_reverse: float = opt(1.0, "weight of KL(learner || target) in the lookahead's KD")
    mutual_kl: str = opt("release", "weights of the mutual step's KD: release (kl_forward on KL(learner || target), "
                                    "as released) | same (as in the lookahead's KD)")
    relation_weight: float = opt(0.0, "weight of the relation-prediction CE (release: 4; 0 = off)")
    supervised_step: bool = opt(True, "step 1: a supervised step on the dense model before the meta step")
    meta_every: int = opt(1, "meta (quiz) update every N batches")
    num_candidates: int = opt(0, "0: score every entity (1-N, as released); K: score the batch's targets and K "
                                 "uniformly sampled entities, shared by the batch (sampled softmax, for graphs where "
                                 "1-N exceeds the budget)")
    regularizer: str | None = opt(None, "regulariser (default: the teacher's; the release uses dura, whose "
                                        "weight then defaults to 0.05 unless the teacher used dura)")
    teacher_weight: float = opt(6.0, "beyond the paper: weight of KL(teacher || pruned branch) at temperature 1 "
                                     "from the teacher run's frozen model in the mutual step (0: off, as released: "
                                     "MetaSD never reads the teacher; 6 measured ahead of 0, 1, 3 and 12 on "
                                     "kinship, BENCHMARKS.md)")


#: DURA weight used when the teacher was trained with another regulariser (released: 0.05 on FB15k-237, 0.1 on
#: WN18RR); a teacher trained with DURA passes on its own weight.
DURA_DEFAULT_WEIGHT = 0.05
QUIZ_MODES = ("set", "batch")
LOOKAHEAD_MODES = ("copy", "live")
MUTUAL_KL_MODES = ("release", "same")


def check_config(config: MetaSDConfig) -> None:
    """Refuse unknown option values before any training starts."""
    from kgdistill.distill.pruning import PRUNING_SCOPES

    for name, value, known in (("quiz", config.quiz, QUIZ_MODES), ("lookahead", config.lookahead, LOOKAHEAD_MODES),
                               ("mutual_kl", config.mutual_kl, MUTUAL_KL_MODES),
                               ("pruning", config.pruning, tuple(PRUNING_SCOPES)),
                               ("init", config.init, ("scratch", "teacher"))):
        if value not in known:
            raise ConfigError(f"metasd: {name} must be one of {', '.join(known)}, got {value!r}")
    if not 0.0 <= config.sparsity < 1.0:
        raise ConfigError(f"metasd: sparsity must be in [0, 1), got {config.sparsity}")
    if config.teacher_weight < 0:
        raise ConfigError(f"metasd: teacher_weight must be ≥ 0, got {config.teacher_weight}")
    if config.nonzeros_per_entity is not None and config.nonzeros_per_entity < 1:
        raise ConfigError(f"metasd: nonzeros_per_entity must be ≥ 1, got {config.nonzeros_per_entity}")


def ramp_epochs(epochs: int, pruning: str = "global") -> int:
    """The default sparsity ramp: none for ``dims`` pruning (kinship ComplEx-64 → 8 coordinates, 3 seeds: 0.702 fixed,
    0.686 with a ⅔ ramp, 0.672 with ⅓), two thirds of the epochs for entry pruning (measured on kinship ComplEx-64 at
    90 %: pruned test MRR 0.30 with a fixed sparsity, 0.54 with this ramp; BENCHMARKS.md)."""
    return 0 if pruning == "dims" else int(round(2 * epochs / 3))


def dense_dim(teacher_model_: EmbeddingModel, config: MetaSDConfig) -> int:
    """The dense source model's dim: ``dims[-1]``, else from ``nonzeros_per_entity``, else the teacher's."""
    if config.dims:
        return int(config.dims[-1])
    if config.nonzeros_per_entity is not None:
        reals_per_dim = teacher_model_.entity.shape[1] // teacher_model_.dim
        return max(1, int(round(config.nonzeros_per_entity / ((1.0 - config.sparsity) * reals_per_dim))))
    return teacher_model_.dim


def split_quiz(train: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded random split of ``train[n, 3]`` into ``(supervised, quiz)``; the quiz holds ``ceil(fraction·n)``."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"quiz_fraction must be in (0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(train.shape[0], generator=gen)
    k = max(1, int(-(-fraction * train.shape[0] // 1)))
    return train[perm[k:]], train[perm[:k]]


def queries_of(triples: Tensor, num_relations: int) -> Tensor:
    """Both 1-N queries of every triple: ``[2n, 3]`` = (anchor, relation (≥ R: inverse), target)."""
    h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
    return torch.stack([torch.cat([h, t]), torch.cat([r, r + num_relations]), torch.cat([t, h])], dim=1)


class MetaSDStep:
    """The per-batch MetaSD update as a trainer ``step_loss`` on 1-N queries ``[B, 3]``."""

    def __init__(self, model: PrunedModel, config: MetaSDConfig, quiz: Tensor, device: str = "cpu",
                 teacher: EmbeddingModel | None = None) -> None:
        self.model, self.config = model, config
        self.teacher = teacher  # the frozen teacher run's model (``teacher_weight`` > 0 only)
        self.quiz_queries = queries_of(quiz, model.num_relations).to(device)
        self.meta_optimizer = make_optimizer("adagrad", model.base.parameters(), config.teacher_lr)
        self.quiz_generator = torch.Generator().manual_seed(config.seed + 1)
        self.candidate_generator = torch.Generator().manual_seed(config.seed + 2)
        self.trainer: Any = None
        self.epoch = 0
        self.batches = 0
        self.supervised_seen: list[Tensor] = []  # filled only when ``record_batches`` (tests)
        self.quiz_seen: list[Tensor] = []
        self.record_batches = False
        self.last_flip = 0.0
        self.rank_mismatch = 0

    def bind(self, trainer: Any) -> MetaSDStep:
        """Attach the trainer; validations before the sparsity ramp ends cannot select the final model (a pruned
        model must have the asked sparsity)."""
        self.trainer = trainer
        ramp = self.ramp_epochs
        trainer.selectable = lambda epoch: epoch >= ramp
        return self

    @property
    def ramp_epochs(self) -> int:
        """The sparsity ramp's length: the option, or (unset) two thirds of the trainer's epochs."""
        if self.config.sparsity_ramp_epochs is not None:
            return self.config.sparsity_ramp_epochs
        return ramp_epochs(self.trainer.config.epochs, self.config.pruning)

    @property
    def ctx(self) -> DistContext:
        return getattr(self.trainer, "ctx", None) or DistContext()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs beyond the trainer's checkpoint: meta optimiser, quiz generator, batch count."""
        return {"meta_optimizer": self.meta_optimizer.state_dict(), "quiz_generator": self.quiz_generator.get_state(),
                "candidate_generator": self.candidate_generator.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.quiz_generator.set_state(state["quiz_generator"])
        if "candidate_generator" in state:
            self.candidate_generator.set_state(state["candidate_generator"])
        self.batches = int(state["batches"])

    def update_masks(self, sparsity: float, scope: str = "global") -> float:
        """Recompute the masks (every rank, from its weights), then make them rank 0's; returns the flipped
        fraction and records in ``self.rank_mismatch`` how many entries differed from rank 0's over all ranks."""
        pm, ctx = self.model, self.ctx
        flipped = pm.update_masks(sparsity, scope)
        self.rank_mismatch = 0
        if ctx.enabled:
            mine = [pm.entity_mask.clone(), pm.relation_mask.clone()]
            for m in (pm.entity_mask, pm.relation_mask):
                broadcast_tensor_(m, ctx)
            local = sum(int((a != b).sum()) for a, b in zip(mine, (pm.entity_mask, pm.relation_mask)))
            self.rank_mismatch = sum(all_gather_objects(local, ctx))
        return flipped

    # ---- pieces --------------------------------------------------------------------------------------------------
    def kd(self, learner: Tensor, target: Tensor) -> Tensor:
        """The lookahead's KD: ``kl_forward · KL(target || learner) + kl_reverse · KL(learner || target)``."""
        c = self.config
        return terms.symmetric_kl(learner, target, c.kd_temperature, c.kl_forward, c.kl_reverse)

    def mutual_kd(self, learner: Tensor, target: Tensor) -> Tensor:
        """The mutual step's KD; ``mutual_kl="release"`` puts ``kl_forward`` on ``KL(learner || target)``."""
        c = self.config
        if c.mutual_kl == "release":
            return terms.symmetric_kl(learner, target, c.kd_temperature, c.kl_reverse, c.kl_forward)
        return self.kd(learner, target)

    def reg(self, params: dict[str, Tensor], q: Tensor) -> Tensor:
        reg = self.trainer.regularizer
        if not reg.weight:
            return params["entity"].new_zeros(())
        base = self.model.base
        inter = base.interaction
        rel = q[:, 1] if base.reciprocal else q[:, 1] % base.num_relations  # inverse query: relation r - R's row
        rows = [(F.embedding(q[:, 0], params["entity"]), inter.entity_kind),
                (F.embedding(rel, params["relation"]), inter.relation_kind),
                (F.embedding(q[:, 2], params["entity"]), inter.entity_kind)]
        return reg(rows)

    def relation_ce(self, params: dict[str, Tensor], q: Tensor) -> Tensor:
        """Relation prediction ``CE(score(a, ·, target), r)`` over all relation rows (auxiliary loss)."""
        base = self.model.base
        a, t = F.embedding(q[:, 0], params["entity"]), F.embedding(q[:, 2], params["entity"])
        scores = base.interaction(a[:, None, :], params["relation"][None, :, :], t[:, None, :])
        labels = q[:, 1] if base.reciprocal else q[:, 1] % base.num_relations
        return F.cross_entropy(scores[:, : (2 if base.reciprocal else 1) * base.num_relations], labels)

    def candidates(self, q: Tensor) -> Tensor | None:
        """``None`` (all entities), or the batch's shared candidates ``[B + K]``: the targets of its ``B`` queries
        (query ``i``'s own target in column ``i``), then ``K`` uniformly sampled entities. Another query's target
        may be a true answer too; as with in-batch negatives, it counts as a negative."""
        k = self.config.num_candidates
        if not k:
            return None
        sampled = torch.randint(self.model.num_entities, (k,), generator=self.candidate_generator)
        return torch.cat([q[:, 2], sampled.to(q.device)])

    def scores(self, params: dict[str, Tensor], q: Tensor, cands: Tensor | None = None) -> Tensor:
        """``[B, E]`` over all entities, or ``[B, B + K]`` over the shared ``cands`` (see :meth:`candidates`)."""
        if cands is None:
            return self.model.call(params, "queries", q[:, 0], q[:, 1])
        return self.model.call(params, "query_candidates", q[:, 0], q[:, 1], cands)

    @staticmethod
    def targets(q: Tensor, cands: Tensor | None) -> Tensor:
        """Column of each query's target: its entity id (1-N), or its row index (shared candidates)."""
        return q[:, 2] if cands is None else torch.arange(q.shape[0], device=q.device)

    def supervised(self, params: dict[str, Tensor], q: Tensor,
                   cands: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = self.scores(params, q, cands)
        loss = F.cross_entropy(s, self.targets(q, cands)) + self.reg(params, q)
        if self.config.relation_weight:
            loss = loss + self.config.relation_weight * self.relation_ce(params, q)
        return loss, s

    def dense_params(self, rows: Tensor | None = None) -> dict[str, Tensor]:
        """The dense tables, or (``rows`` given) the entity rows ``rows`` of them (a differentiable gather)."""
        base = self.model.base
        if rows is None:
            return {"entity": base.entity, "relation": base.relation}
        return {"entity": F.embedding(rows, base.entity, sparse=self.row_sparse_updates()), "relation": base.relation}

    def row_sparse_updates(self) -> bool:
        """Whether the entity table may get row-sparse gradients (a gather of the touched rows): the optimisers
        handle them (Adagrad, as released, or SGD; their update of an untouched row is a no-op, so the trajectory
        is the dense one), in one process, with no gradient clipping."""
        tr = self.trainer
        return (not self.ctx.enabled and not tr.config.max_grad_norm
                and isinstance(tr.optimizer, (torch.optim.Adagrad, torch.optim.SGD)))

    def masked(self, params: dict[str, Tensor], rows: Tensor | None = None) -> dict[str, Tensor]:
        """``params ⊙ masks`` (the pruned branch); ``rows``: ``params`` hold only those entity rows."""
        masks = self.model.masks()
        if rows is not None:
            masks = {"entity": masks["entity"].index_select(0, rows), "relation": masks["relation"]}
        return {k: params[k] * masks[k] for k in params}

    def touched_rows(self, *batches: tuple[Tensor, Tensor | None]) -> tuple[Tensor | None, list]:
        """With sampled candidates, a step reads only the entity rows of its queries and candidates: their sorted
        ids ``U`` and each ``(queries, candidates)`` renumbered into ``U``, so the step runs on ``[|U|, D]`` tables
        instead of ``[E, D]`` ones (the same losses and gradients; one gather links them to the full tables).
        1-N (no candidates) reads every row: ``(None, batches)`` unchanged."""
        if any(c is None for _, c in batches):
            return None, list(batches)
        rows = torch.unique(torch.cat([torch.cat([q[:, 0], q[:, 2], c]) for q, c in batches]))  # type: ignore
        local = []
        for q, c in batches:
            anchors, targets = torch.searchsorted(rows, q[:, [0, 2]].T.contiguous())
            lq = torch.stack([anchors, q[:, 1], targets], 1)
            local.append((lq, torch.searchsorted(rows, c)))  # type: ignore[arg-type]
        return rows, local

    # ---- the step --------------------------------------------------------------------------------------------
    def __call__(self, model: KGCModel, q: Tensor, generator: torch.Generator) -> Tensor:
        tr, c, pm = self.trainer, self.config, self.model
        epoch = tr.state.epoch + 1
        if epoch != self.epoch:  # a new epoch: recompute the mask
            self.epoch = epoch
            target = sparsity_at(epoch, c.sparsity, self.ramp_epochs)
            self.last_flip = self.update_masks(target, c.pruning)
            extra = {"rank_mismatch": self.rank_mismatch} if self.ctx.enabled else {}
            tr.trace.write("mask", epoch=epoch, sparsity=target,
                           flipped=round(self.last_flip, 6), **extra)
        if self.record_batches:
            self.supervised_seen.append(q.detach().cpu())
        cands = self.candidates(q)  # the same candidates for every branch of this batch
        rows, [(lq, lc)] = self.touched_rows((q, cands))
        if c.supervised_step:  # (1)
            loss, _ = self.supervised(self.dense_params(rows), lq, lc)
            tr.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # inside DDP's forward: DDP ignores it, so the ranks average here
            all_reduce_grads_(list(pm.base.parameters()), self.ctx)
            tr.optimizer.step()
            pm.apply_constraints()
            tr.optimizer.zero_grad(set_to_none=True)
        if self.batches % max(1, c.meta_every) == 0:
            self.meta_step(q, cands)
        self.batches += 1
        # (4) mutual learning between the dense and the pruned branch
        dense = self.dense_params(rows)
        t_loss, t_scores = self.supervised(dense, lq, lc)
        s_loss, s_scores = self.supervised(self.masked(dense, rows), lq, lc)
        loss = (t_loss + s_loss + self.mutual_kd(t_scores, s_scores.detach())
                + self.mutual_kd(s_scores, t_scores.detach()))
        if c.teacher_weight and self.teacher is not None:
            loss = loss + c.teacher_weight * terms.kl_with_temperature(s_scores, self.teacher_scores(q, cands))
        return loss

    @torch.no_grad()
    def teacher_scores(self, q: Tensor, cands: Tensor | None) -> Tensor:
        """The frozen teacher's scores ``[B, E]`` (or ``[B, B + K]`` on ``cands``) of the global queries ``q``."""
        assert self.teacher is not None
        if cands is None:
            return score_queries(self.teacher, q[:, 0], q[:, 1])
        return score_query_candidates(self.teacher, q[:, 0], q[:, 1], cands)

    def quiz_batch(self, q: Tensor) -> Tensor:
        """The quiz queries of a meta step: with ``quiz="set"`` the whole quiz set (this rank's share), else this
        rank's share of a global quiz batch as large as the global training batch (seeded draw)."""
        n, ctx = self.quiz_queries.shape[0], self.ctx
        if self.config.quiz == "set":
            lo, hi = shard_bounds(n, ctx.rank, ctx.world_size) if ctx.enabled else (0, n)
            return self.quiz_queries[lo:hi]
        global_batch = sum(gather_sizes(q.shape[0], ctx)) if ctx.enabled else q.shape[0]
        idx = torch.randint(n, (min(n, global_batch),), generator=self.quiz_generator).to(q.device)
        if ctx.enabled:  # the same global quiz batch on every rank; each takes its share
            lo, hi = shard_bounds(idx.shape[0], ctx.rank, ctx.world_size)
            idx = idx[lo:hi]
        return self.quiz_queries[idx]

    def meta_step(self, q: Tensor, cands: Tensor | None = None) -> None:
        """(2) + (3): the lookahead student on the batch, its quiz loss updates the dense (teacher) parameters."""
        pm, c = self.model, self.config
        quiz = self.quiz_batch(q)
        if self.record_batches:
            self.quiz_seen.append(quiz.detach().cpu())
        quiz_cands = self.candidates(quiz) if cands is not None else None
        rows, [(lq, lc), (lquiz, lquiz_c)] = self.touched_rows((q, cands), (quiz, quiz_cands))
        full = self.dense_params()
        dense = self.dense_params(rows)
        masked = self.masked(dense, rows)
        if c.lookahead == "copy":  # a detached copy of the pruned branch: only the KD path reaches the dense model
            masked = {k: v.detach().clone().requires_grad_(True) for k, v in masked.items()}
        s_loss, s_scores = self.supervised(masked, lq, lc)
        t_scores = self.scores(dense, lq, lc)
        inner = s_loss + self.kd(s_scores, t_scores)
        grads = torch.autograd.grad(inner, list(masked.values()), create_graph=True)
        fast = self.masked({k: v - c.lookahead_lr * g for (k, v), g in zip(masked.items(), grads)}, rows)
        quiz_loss = F.cross_entropy(self.scores(fast, lquiz, lquiz_c), self.targets(lquiz, lquiz_c))
        meta_grads = [g.clone() for g in torch.autograd.grad(quiz_loss, list(full.values()))]
        all_reduce_mean_(meta_grads, self.ctx)
        params = list(full.values())
        saved = [p.grad for p in params]
        for p, g in zip(params, meta_grads):
            p.grad = g
        self.meta_optimizer.step()
        for p, g in zip(params, saved):
            p.grad = g
        pm.apply_constraints()


def run_metasd(teacher: Run, config: MetaSDConfig, out: Path, *, base: EmbeddingModel | None = None,
               name: str | None = None, device: str = "cpu", progress: bool = False,
               method: str = "metasd", ctx: DistContext | None = None, resume: bool = False) -> StageResult:
    """Train MetaSD from ``base`` (default: the teacher's weights or a fresh model, per ``config.init``)."""
    t_model = teacher_model(teacher)
    dataset = teacher.dataset
    assert dataset is not None
    check_config(config)
    if base is None:
        dim = dense_dim(t_model, config)
        if config.init == "teacher":
            if dim != t_model.dim:
                raise ConfigError(f"metasd: init=teacher keeps the teacher's dim {t_model.dim} (asked: {dim}); "
                                  f"use init=scratch for another dim")
            base = copy.deepcopy(t_model)
        else:
            base = make_student(t_model, dim, config.seed)
    base = base.to(device)
    for p in base.parameters():
        p.requires_grad_(True)
    model = PrunedModel(base).to(device)
    supervised, quiz = split_quiz(dataset.train, config.quiz_fraction, config.seed)
    train_ds = KGDataset(dataset.name, dataset.entities, dataset.relations, {**dataset.splits, "train": supervised})
    fixed: dict[str, Any] = {}
    if config.regularizer == "dura" and config.regularizer_weight is None \
            and teacher.config.training.regularizer != "dura":
        fixed["regularizer_weight"] = DURA_DEFAULT_WEIGHT
    training = stage_training(teacher, config, mode="1vsall", **fixed)
    if config.sparsity_ramp_epochs is None:
        config = replace(config, sparsity_ramp_epochs=ramp_epochs(training.epochs, config.pruning))
    if training.training_mode != "1vsall":
        raise ConfigError("metasd: trains 1-N (cross-entropy over all entities): training_mode must be 1vsall")
    frozen = None
    if config.teacher_weight:
        frozen = t_model.to(device).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
    step = MetaSDStep(model, config, quiz, device, teacher=frozen)
    stage_name = name or f"metasd-{base.dim}-s{config.sparsity:g}"
    holder: dict[str, Any] = {}

    def after_fit(trainer: Any) -> dict[str, Any]:
        run_dir = Path(out) / stage_name
        main = trainer.ctx.is_main
        sparse_path: Path | None = run_dir / "sparse" / SPARSE_WEIGHTS
        if config.pruning == "dims":  # whole coordinates pruned: the student is a dense model of the kept dim
            holder["pruned"], sparse_path = model.compact_copy(), None
        else:
            holder["pruned"] = model.pruned_copy()
            if main:
                sparse_path = export_sparse(holder["pruned"], run_dir / "sparse")
        if main:
            save_model(base, run_dir / "dense")
        from kgdistill.evaluate import DatasetEvaluator

        ev = DatasetEvaluator(dataset, teacher.config.evaluation.eval_batch_size, device=device, ctx=trainer.ctx)
        dense_test = ev.evaluate(base, "test").summary()["both"]  # sharded: every rank
        return {"_bytes_file": sparse_path, "dense_test": dense_test, "dense_bytes": (run_dir / "dense" /
                "model.safetensors").stat().st_size if main else None, "sparsity": config.sparsity,
                "quiz_triples": int(quiz.shape[0]), "supervised_triples": int(supervised.shape[0])}

    # the run folder's model is the pruned copy: evaluate/predict read model.safetensors (zeros where pruned)
    result = run_stage(stage_name, run_dir=Path(out) / stage_name, model=model, student=base, dataset=dataset,
                       base_config=teacher.config, training=training, step_loss=step, method=method,
                       method_config=config, teacher_dir=str(teacher.path), device=device, progress=progress,
                       train_dataset=train_ds, on_trainer=step.bind, after_fit=after_fit,
                       final_model=lambda: holder["pruned"], ctx=ctx, resume=resume)
    return result


@methods.register("metasd")
class MetaSD(Method):
    name = "metasd"
    Config = MetaSDConfig

    def run(self, teacher: Run, config: MetaSDConfig, out: Path, *, device: str = "cpu", progress: bool = False,
            ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
        return [run_metasd(teacher, config, out, device=device, progress=progress, ctx=ctx, resume=resume)]
