"""HRKD for the text bi-encoder (Dong et al., EMNLP 2021, "HRKD: Hierarchical Relational Knowledge Distillation
for Cross-domain Language Model Compression"; METHODS.md §5).

Domains are groups of relations (each relation by default; or FB15k-style first path segments; or K clusters of the
teacher's relation-text embeddings); the inverse of ``r`` shares ``r``'s domain. Per student layer ``l`` and domain
``d``, a prototype is the mean pooled student hidden state of the batch's examples of ``d``. A meta network turns
prototypes into one weight per (layer, domain):

1. *compare*: cross-domain attention ``F + softmax(F W₁ Fᵀ) F`` over the projected prototypes ``F`` of one layer;
2. *aggregate*: attention of layer ``l`` over itself and every lower layer;
3. a graph attention network (``heads`` heads, with a skip connection) over the fully connected graph of the batch's
   domains, then a softmax over domains.

The residual of step 1 and the skip of step 3 are kgdistill's: without them both steps average every domain into the
same vector, the weights come out 1/D whatever the graph's parameters and the meta-gradients vanish (≈ 1e-15), so
the graph could not learn at any meta learning rate.

Loss ``(1 − α − β)·CE + α·(1/D)·Σ_d softCE_d + β·[Σ_l Σ_d w_ld (attention MSE + hidden MSE)_ld + Σ_d w̄_d emb MSE_d]``.
The released code never trains the graph (its optimiser only sees the student); here it *is* trained: every
``hrkd_meta_every`` steps (default 5) a lookahead student ``θ' = θ − ξ ∇θ L_train(θ, w_φ)`` (second order,
``torch.func.functional_call``, ξ = the student's learning rate) is scored by CE on a meta batch, and ``φ`` takes an
Adam step (``hrkd_meta_lr``, default 1e-3) on that. The meta batch is a random batch of the triples the trainer
passes as ``holdout``: the training triples themselves by default (``hrkd_holdout: 0``, so HRKD's student trains on
exactly the baselines' triples), or a hold-out split off *every* method's training alike (``hrkd_holdout > 0``).
At the old defaults (a meta step every 10 steps, lr 1e-3) the graph hardly moved in a CPU-budget run.
``hrkd_weights: uniform`` is the ablation without the graph: every domain present in the batch weighs the same.
The graph's weights on a fixed probe (prototypes of a fixed set of training examples under the initial student) are
recorded at the start and the end of a run (:meth:`HRKDObjective.report`: the run's ``metrics.json`` ``objective``
entry and the trace's ``objective`` event), so one sees how far the meta steps moved them.
Over several processes the lookahead uses the rank's own share of the batch (its in-batch negatives only) and the
graph's gradients are averaged over the ranks before its step, so every rank keeps the same graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from kgdistill.distill.method import methods
from kgdistill.distill.terms import soft_cross_entropy_per_triple
from kgdistill.distill.text_method import TextCommonConfig, TextMethod, text_option
from kgdistill.distributed import DistContext, all_reduce_grads_
from kgdistill.errors import ConfigError
from kgdistill.text.biencoder import BiEncoderOutput, EncoderOutput, mean_pool
from kgdistill.text.contrastive import simkgc_logits, simkgc_loss
from kgdistill.text.objective import Objective, objectives
from kgdistill.text.textdata import TextBatch, make_batch, with_inverses

NEG = -1e9
META_EPS = 1e-12


def relation_domains(spec: str, relation_labels: list[str], relation_embeddings: Tensor | None = None,
                     seed: int = 0) -> tuple[Tensor, int]:
    """``(domain of each relation id [R], number of domains)`` for ``spec`` = ``relation`` | ``prefix`` |
    ``clusters:K`` (k-means on ``relation_embeddings [R, d]``)."""
    R = len(relation_labels)
    if spec == "relation":
        return torch.arange(R), R
    if spec == "prefix":
        keys = [lab.strip("/").split("/")[0] if lab.startswith("/") else lab for lab in relation_labels]
        uniq = sorted(set(keys))
        return torch.tensor([uniq.index(k) for k in keys]), len(uniq)
    if spec.startswith("clusters:"):
        k = int(spec.split(":", 1)[1])
        if relation_embeddings is None:
            raise ConfigError("hrkd_domains clusters:K needs relation embeddings")
        return kmeans(relation_embeddings, min(k, R), seed), min(k, R)
    raise ConfigError(f"hrkd_domains must be relation, prefix or clusters:K, got {spec!r}")


def kmeans(x: Tensor, k: int, seed: int = 0, iters: int = 25) -> Tensor:
    """Cluster ids ``[n]`` of ``x [n, d]`` (cosine k-means, seeded, empty clusters re-seeded)."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(x.float(), dim=-1)
    centers = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    assign = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iters):
        assign = (x @ centers.T).argmax(1)
        for c in range(k):
            members = x[assign == c]
            centers[c] = F.normalize(members.mean(0), dim=-1) if len(members) else x[torch.randint(
                x.shape[0], (1,), generator=g)][0]
    return assign


def per_domain_mean(values: Tensor, domain: Tensor, num_domains: int) -> Tensor:
    """``values [..., B]`` averaged per domain ``domain [B]`` → ``[..., D]`` (0 for absent domains)."""
    shape = (*values.shape[:-1], num_domains)
    sums = torch.zeros(shape, device=values.device, dtype=values.dtype).index_add_(-1, domain, values)
    counts = torch.zeros(num_domains, device=values.device, dtype=values.dtype).index_add_(
        0, domain, torch.ones_like(domain, dtype=values.dtype))
    return sums / counts.clamp_min(1.0)


def hidden_mse(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """Per-example MSE ``[B]`` of hidden states ``[B, L, d]`` over real tokens (``mask [B, L]``)."""
    m = mask.unsqueeze(-1).to(s.dtype)
    return ((s - t).pow(2) * m).sum((1, 2)) / (m.sum((1, 2)) * s.shape[-1]).clamp_min(1.0)


def attention_mse(s: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """Per-example MSE ``[B]`` of attention maps ``[B, heads_S, L, L]`` vs ``[B, heads_T, L, L]`` (head-averaged
    when the head counts differ) over real (query, key) pairs."""
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    pair = (mask.unsqueeze(2) & mask.unsqueeze(1)).unsqueeze(1).to(s.dtype)
    return ((s - t).pow(2) * pair).sum((1, 2, 3)) / (pair.sum((1, 2, 3)) * s.shape[1]).clamp_min(1.0)


class DomainRelationalGraph(nn.Module):
    """Meta network: prototypes ``[layers, D, hidden]`` (+ present ``[D]`` bool) → weights ``[layers, D]``, each
    layer's weights a softmax over the present domains (compare → aggregate → graph attention)."""

    def __init__(self, hidden: int, proj: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, proj)
        self.compare = nn.Linear(proj, proj, bias=False)
        self.q, self.k = nn.Linear(proj, proj, bias=False), nn.Linear(proj, proj, bias=False)
        self.heads, self.head_dim = heads, proj
        self.gat = nn.Linear(proj, heads * proj, bias=False)
        self.a_src = nn.Parameter(torch.randn(heads, proj) * 0.1)
        self.a_dst = nn.Parameter(torch.randn(heads, proj) * 0.1)
        self.out = nn.Linear(heads * proj, 1)

    def forward(self, prototypes: Tensor, present: Tensor) -> Tensor:
        Ls, D, _ = prototypes.shape
        f = torch.tanh(self.proj(prototypes))  # [Ls, D, p]
        absent_cols = (~present).view(1, 1, D)
        att = (f @ self.compare(f).transpose(1, 2)).masked_fill(absent_cols, NEG).softmax(-1)
        c = f + att @ f  # compare, with a residual: [Ls, D, p] (without it every domain became the same mean)
        scores = torch.einsum("ldp,kdp->ldk", self.q(c), self.k(c)) / math.sqrt(c.shape[-1])  # layer l over k
        causal = torch.ones(Ls, Ls, dtype=torch.bool, device=c.device).tril()  # k ≤ l
        scores = scores.masked_fill(~causal.unsqueeze(1), NEG).softmax(-1)
        a = torch.einsum("ldk,kdp->ldp", scores, c)  # aggregate: [Ls, D, p]
        wh = self.gat(a).view(Ls, D, self.heads, self.head_dim)
        e = (wh * self.a_src).sum(-1).unsqueeze(2) + (wh * self.a_dst).sum(-1).unsqueeze(1)  # [Ls, D, D, H]
        e = F.leaky_relu(e, 0.2).masked_fill((~present).view(1, 1, D, 1), NEG).softmax(2)
        h = (F.elu(torch.einsum("lijh,ljhp->lihp", e, wh)) + wh).reshape(Ls, D, -1)  # GAT with a skip
        logits = self.out(h).squeeze(-1).masked_fill(~present.view(1, D), NEG)
        return logits.softmax(-1)


@objectives.register("hrkd")
class HRKDObjective(Objective):
    needs_teacher = True
    uses_holdout = True
    #: the layer terms compare attention maps (the trainer builds the models with eager attention)
    needs_attentions = True

    def __init__(self, student: Any, teacher: Any, config: Any, known: Any, layer_map: list[int] | None = None,
                 holdout: Tensor | None = None, relation_labels: list[str] | None = None,
                 ctx: DistContext | None = None) -> None:
        super().__init__(student, teacher, config, known, layer_map, ctx=ctx)
        d = config.distill
        labels = relation_labels or list(student.relation_texts)
        rel_emb = None
        if d.hrkd_domains.startswith("clusters:"):
            from kgdistill.text.textdata import tokenize

            with torch.no_grad():
                inputs = tokenize(teacher.tokenizer, teacher.relation_texts, None, teacher.max_length, teacher.device)
                rel_emb = teacher.encode("tail", inputs).pooled.cpu()
        self.domain_of, self.num_domains = relation_domains(d.hrkd_domains, labels, rel_emb, config.training.seed)
        self.domain_of = self.domain_of.to(student.device)
        self.meta = DomainRelationalGraph(student.hidden_size, d.hrkd_proto_dim, d.hrkd_heads).to(student.device)
        # meta-gradients are second-order and small (≈ 1e-7 on the tiny test model): an ε below them, so that Adam
        # does not swallow them
        self.meta_opt = torch.optim.Adam(self.meta.parameters(), lr=d.hrkd_meta_lr, eps=META_EPS)
        self.meta_every, self.xi = int(d.hrkd_meta_every), float(config.training.lr)
        self.uniform = getattr(d, "hrkd_weights", "learned") == "uniform"
        if getattr(d, "hrkd_weights", "learned") not in ("learned", "uniform"):
            raise ConfigError(f"hrkd_weights must be learned or uniform, got {d.hrkd_weights!r}")
        self.holdout = with_inverses(holdout, student.num_relations) if holdout is not None else None
        self.gen = torch.Generator().manual_seed(config.training.seed + 7)
        self.temperature = float(d.kd_temperature)
        self._last: tuple[TextBatch, BiEncoderOutput] | None = None
        self.meta_steps = 0
        self._probe = self._probe_prototypes(config.training.seed)
        self.weights_start = self.probe_weights()

    # ---- the probe: the graph's weights on fixed prototypes, to see it move -------------------------------------
    def _probe_prototypes(self, seed: int, size: int = 64) -> tuple[Tensor, Tensor] | None:
        """``(prototypes [Ls, D, d], present [D])`` of up to ``size`` training examples (one per domain first),
        under the initial student in eval mode; None when the student has no training triples."""
        student = self.student
        triples = student.train_triples.cpu()
        if triples.numel() == 0:
            return None
        examples = with_inverses(triples, student.num_relations)
        perm = torch.randperm(examples.shape[0], generator=torch.Generator().manual_seed(seed + 11))
        dom = self.domain_of.cpu()[examples[perm, 1] % student.num_relations]
        first: dict[int, int] = {}
        for i, dd in enumerate(dom.tolist()):
            first.setdefault(dd, i)
        pick = list(first.values())[:size]
        taken = set(pick)
        for i in range(len(perm)):
            if len(pick) >= size:
                break
            if i not in taken:
                pick.append(i)
        chosen = examples[perm[torch.tensor(pick)]]
        batch = make_batch(student.tokenizer, student.entity_texts, student.relation_texts, chosen,
                           student.max_length, False).to(student.device)
        was = student.training
        student.eval()
        try:
            with torch.no_grad():
                out = student(batch.hr_inputs, batch.tail_inputs, None, output_hidden_states=True)
                protos, present = self.prototypes(out, self.domains(batch))
        finally:
            student.train(was)
        return protos, present

    def probe_weights(self) -> Tensor | None:
        """The graph's current ``[Ls, D]`` weights on the fixed probe prototypes (absent domains 0)."""
        if self._probe is None:
            return None
        with torch.no_grad():
            return self._weights_of(*self._probe).detach().cpu()

    def report(self) -> dict[str, Any]:
        """What the run records of the graph: meta steps taken, weights on the probe at start and end, and how far
        they moved (max |Δw|, and the mean over layers of the total variation ½·Σ_d |Δw_ld|)."""
        end = self.probe_weights()
        rep: dict[str, Any] = {"hrkd_weights": "uniform" if self.uniform else "learned",
                               "hrkd_meta_steps": self.meta_steps}
        if end is not None and self.weights_start is not None:
            delta = (end - self.weights_start).abs()
            rep.update(hrkd_weights_start=[[round(float(x), 6) for x in row] for row in self.weights_start],
                       hrkd_weights_end=[[round(float(x), 6) for x in row] for row in end],
                       hrkd_weight_change_max=float(delta.max()),
                       hrkd_weight_change_tv=float(0.5 * delta.sum(-1).mean()))
        return rep

    def domains(self, batch: TextBatch) -> Tensor:
        return self.domain_of[batch.r % self.student.num_relations]

    def prototypes(self, out: BiEncoderOutput, dom: Tensor) -> tuple[Tensor, Tensor]:
        """``(prototypes [Ls, D, d], present [D])``: the student's (detached) per-layer per-domain mean pooled
        hidden states, and which domains the batch holds."""
        hs = out.hr.hidden_states
        assert hs is not None
        pooled = torch.stack([mean_pool(h, out.hr.attention_mask) for h in hs[1:]]).detach()  # [Ls, B, d]
        protos = per_domain_mean(pooled.transpose(1, 2).float(), dom, self.num_domains).transpose(1, 2)
        present = torch.zeros(self.num_domains, dtype=torch.bool, device=dom.device)
        present[dom] = True
        return protos, present

    def _weights_of(self, protos: Tensor, present: Tensor) -> Tensor:
        if self.uniform:
            w = present.to(protos.dtype) / present.sum().clamp_min(1)
            return w.expand(protos.shape[0], -1).clone()
        return self.meta(protos, present)

    def weights(self, out: BiEncoderOutput, dom: Tensor) -> Tensor:
        """``[Ls, D]`` domain weights from the student's (detached) per-layer per-domain prototypes (uniform over
        the present domains with ``hrkd_weights: uniform``)."""
        return self._weights_of(*self.prototypes(out, dom))

    def kd_terms(self, out: BiEncoderOutput, t_out: BiEncoderOutput, batch: TextBatch, w: Tensor
                 ) -> tuple[Tensor, Tensor]:
        """``(soft CE averaged over domains, weighted layer + embedding term)``."""
        dom = self.domains(batch)
        D, layers = self.num_domains, torch.zeros(0)
        per_layer = []
        emb = torch.zeros(batch.h.shape[0], device=dom.device)
        for side in ("hr", "tail"):
            s, t = getattr(out, side), getattr(t_out, side)
            per_layer.append(self._layer_losses(s, t))
            emb = emb + hidden_mse(s.hidden_states[0], t.hidden_states[0], s.attention_mask.bool())
        layers = per_domain_mean(sum(per_layer), dom, D)  # [Ls, D]
        present = torch.zeros(D, dtype=torch.bool, device=dom.device)
        present[dom] = True
        feature = (w * layers).sum() + (w.mean(0) * per_domain_mean(emb, dom, D)).sum()
        s_logits, _ = self.aligned_logits(self.student, out, batch)
        t_logits, _ = self.aligned_logits(self.teacher, t_out, batch)  # type: ignore[arg-type]
        soft = soft_cross_entropy_per_triple(s_logits, t_logits, self.temperature)  # [B]
        soft_ce = per_domain_mean(soft, dom, D)[present].mean()
        return soft_ce, feature

    def _layer_losses(self, s: EncoderOutput, t: EncoderOutput) -> Tensor:
        mask = s.attention_mask.bool()
        rows = []
        for i, j in enumerate(self.layer_map):
            loss = hidden_mse(s.hidden_states[i + 1], t.hidden_states[j + 1], mask)  # type: ignore[index]
            if s.attentions is not None and t.attentions is not None:
                loss = loss + attention_mse(s.attentions[i], t.attentions[j], mask)
            rows.append(loss)
        return torch.stack(rows)  # [Ls, B]

    def loss(self, batch: TextBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        kw = dict(output_hidden_states=True, output_attentions=True)
        out = self.forward(self.student, batch, **kw)
        t_out = self.teacher_forward(batch, **kw)
        self._last = (batch, t_out)
        ce = self.ce(out, batch)
        with torch.no_grad():
            w = self.weights(out, self.domains(batch))
        soft_ce, feature = self.kd_terms(out, t_out, batch, w)
        return self.combine(ce, soft_ce, feature)

    def after_step(self, batch: TextBatch, step: int) -> dict[str, float]:
        if self.uniform or self.meta_every <= 0 or step % self.meta_every or self.holdout is None \
                or self._last is None:
            return {}
        _, t_out = self._last
        student = self.student
        params = {n: p for n, p in student.named_parameters() if p.requires_grad}
        buffers = dict(student.named_buffers())
        kw = dict(output_hidden_states=True, output_attentions=True)
        out = functional_call(student, (params, buffers), (batch.hr_inputs, batch.tail_inputs, batch.head_inputs),
                              kw)
        w = self.weights(out, self.domains(batch))
        in_batch, self_mask = self.masks(batch)
        logits = simkgc_logits(out.hr.pooled, out.tail.pooled, out_inv_t(params, student), student.additive_margin,
                               in_batch, out.head.pooled if out.head is not None else None, self_mask)
        soft_ce, feature = self.kd_terms(out, t_out, batch, w)
        loss, _ = self.combine(simkgc_loss(logits, batch.h.shape[0]), soft_ce, feature)
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
        new = {n: (params[n] - self.xi * g if g is not None else params[n]) for n, g in zip(names, grads)}
        idx = torch.randint(self.holdout.shape[0], (batch.h.shape[0],), generator=self.gen)
        vb = make_batch(student.tokenizer, student.entity_texts, student.relation_texts, self.holdout[idx],
                        student.max_length, batch.head_inputs is not None).to(student.device)
        v_out = functional_call(student, (new, buffers), (vb.hr_inputs, vb.tail_inputs, vb.head_inputs))
        vin, vself = self.masks(vb)
        v_logits = simkgc_logits(v_out.hr.pooled, v_out.tail.pooled, new["log_inv_t"].exp() if "log_inv_t" in new
                                 else student.inv_t, 0.0, vin, v_out.head.pooled if v_out.head is not None else None,
                                 vself)
        val = simkgc_loss(v_logits, vb.h.shape[0])
        self.meta_opt.zero_grad(set_to_none=True)
        meta_params = list(self.meta.parameters())
        meta_grads = torch.autograd.grad(val, meta_params, allow_unused=True)
        for p, g in zip(meta_params, meta_grads):
            p.grad = g
        all_reduce_grads_(meta_params, self.ctx)  # the graph stays the same on every rank
        self.meta_opt.step()
        self.meta_steps += 1
        return {"meta_val_ce": float(val.detach())}

    def modules(self) -> list[nn.Module]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {"meta": self.meta.state_dict(), "meta_opt": self.meta_opt.state_dict(),
                "meta_steps": self.meta_steps, "weights_start": self.weights_start, "probe": self._probe}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "meta" in state:
            self.meta.load_state_dict(state["meta"])
            self.meta_opt.load_state_dict(state["meta_opt"])
        self.meta_steps = int(state.get("meta_steps", self.meta_steps))
        if state.get("probe") is not None:  # the resumed run reports against its own start
            self._probe = tuple(x.to(self.student.device) for x in state["probe"])  # type: ignore[assignment]
            self.weights_start = state.get("weights_start", self.weights_start)


def out_inv_t(params: dict[str, Tensor], student: Any) -> Tensor:
    return params["log_inv_t"].exp() if "log_inv_t" in params else student.inv_t


@dataclass(frozen=True)
class HRKDConfig(TextCommonConfig):
    """HRKD's options: the text methods' common ones, the layer terms' weight, the soft CE's temperature and the
    domain-relational graph."""

    beta: float = text_option("beta")
    kd_temperature: float = text_option("kd_temperature")
    hrkd_domains: str = text_option("hrkd_domains")
    hrkd_meta_every: int = text_option("hrkd_meta_every")
    hrkd_meta_lr: float = text_option("hrkd_meta_lr")
    hrkd_weights: str = text_option("hrkd_weights")
    hrkd_heads: int = text_option("hrkd_heads")
    hrkd_proto_dim: int = text_option("hrkd_proto_dim")


@methods.register("hrkd")
class HRKD(TextMethod):
    """HRKD (EMNLP 2021) of a text bi-encoder: per-domain layer terms weighted by a meta-learned relational graph."""

    name = "hrkd"
    objective = "hrkd"
    Config = HRKDConfig
