"""The SimKGC bi-encoder as a :class:`~kgdistill.models.base.KGCModel` (Wang et al., ACL 2022, §3).

Two encoders of one PLM architecture, no shared weights: ``hr_encoder`` reads the pair
``[CLS] head text [SEP] relation text [SEP]``, ``tail_encoder`` reads ``[CLS] entity text [SEP]``; both are mean-pooled
over real tokens and L2-normalised, so the score is a cosine. Head prediction ``(?, r, t)`` is tail prediction of
``(t, inverse r, ?)``. Every entity is encoded once (batched) and cached; the cache lives in the state dict, so a
saved run folder (``model.safetensors``) carries it and ``kgdistill predict`` / ``evaluate`` need not re-encode.
Optional SimKGC re-ranking adds ``rerank_weight`` to the scores of entities within ``rerank_hops`` hops of the anchor
in the training graph.

``encode_dtype`` sets how entities and queries are encoded outside training (evaluation, the entity cache, predict,
serving): ``fp32``; ``bf16`` (autocast: matrix products in bfloat16, on CPUs with AVX512-BF16 / AMX ≈ 3× fp32; the
embeddings are returned in fp32); ``int8`` (a copy of the encoder with dynamically quantised Linear layers, per-output
channel weights, CPU only; see :func:`quantize_int8`). Training forward passes never use it.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgdistill.errors import ConfigError
from kgdistill.models.base import KGCModel, model_classes
from kgdistill.text import plm as plm_mod
from kgdistill.text.textdata import EntityTexts, Tokenized, relation_text


@dataclass
class EncoderOutput:
    """``pooled: [B, d]`` (L2-normalised), ``last_hidden: [B, L, d]``, ``attention_mask: [B, L]``; optional
    ``hidden_states``: ``num_layers + 1`` tensors ``[B, L, d]`` (embeddings first) and ``attentions``:
    ``num_layers`` tensors ``[B, heads, L, L]``."""

    pooled: Tensor
    last_hidden: Tensor
    attention_mask: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class BiEncoderOutput:
    hr: EncoderOutput
    tail: EncoderOutput
    head: EncoderOutput | None = None


def mean_pool(last_hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of ``last_hidden[B, L, d]`` over positions where ``attention_mask[B, L]`` is 1 → ``[B, d]``."""
    m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * m).sum(1) / m.sum(1).clamp_min(1e-6)


ENCODE_DTYPES = ("fp32", "bf16", "int8")


def quantize_int8(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` whose ``nn.Linear`` layers are dynamically quantised to int8 (weights per output
    channel, activations per tensor at run time; ``torch.ao.quantization.quantize_dynamic``, CPU kernels). The
    embeddings and LayerNorms stay fp32."""
    import copy

    from torch.ao import quantization as tq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        return tq.quantize_dynamic(copy.deepcopy(encoder).eval(), {nn.Linear: tq.per_channel_dynamic_qconfig},
                                   dtype=torch.qint8)


@model_classes.register("biencoder", "simkgc")
class BiEncoder(KGCModel):
    """SimKGC bi-encoder over ``len(entity_texts)`` entities and ``len(relation_texts)`` relations.

    Build one from a PLM with :meth:`from_plm`; the constructor builds randomly initialised encoders of the
    architecture ``plm_config`` (what :func:`~kgdistill.models.base.load_model` does before loading weights).
    """

    registry_name = "biencoder"

    def __init__(self, plm_config: dict[str, Any], tokenizer: dict[str, Any], entity_names: list[str],
                 entity_texts: list[str], relation_texts: list[str], num_train_triples: int = 0,
                 max_length: int = 50, pooling: str = "mean", init_temperature: float = 0.05,
                 learn_temperature: bool = True, additive_margin: float = 0.02, neighbour_names: int = 0,
                 neighbour_min_words: int = 20, rerank_hops: int = 0, rerank_weight: float = 0.05,
                 encode_batch_size: int = 128, attn_implementation: str = "sdpa", plm_name: str = "",
                 encode_dtype: str = "fp32") -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if encode_dtype not in ENCODE_DTYPES:
            raise ConfigError(f"encode_dtype must be one of {', '.join(ENCODE_DTYPES)}, got {encode_dtype!r}")
        if len(entity_names) != len(entity_texts):
            raise ConfigError("entity_names and entity_texts must have one entry per entity")
        self._args = dict(plm_config=plm_config, tokenizer=tokenizer, entity_names=list(entity_names),
                          entity_texts=list(entity_texts), relation_texts=list(relation_texts),
                          num_train_triples=int(num_train_triples), max_length=int(max_length), pooling=pooling,
                          init_temperature=float(init_temperature), learn_temperature=bool(learn_temperature),
                          additive_margin=float(additive_margin), neighbour_names=int(neighbour_names),
                          neighbour_min_words=int(neighbour_min_words), rerank_hops=int(rerank_hops),
                          rerank_weight=float(rerank_weight), encode_batch_size=int(encode_batch_size),
                          attn_implementation=attn_implementation, plm_name=plm_name, encode_dtype=encode_dtype)
        self.num_entities = len(entity_texts)
        self.num_relations = len(relation_texts)
        self.max_length, self.pooling = int(max_length), pooling
        self.additive_margin = float(additive_margin)
        self.rerank_hops, self.rerank_weight = int(rerank_hops), float(rerank_weight)
        self.encode_batch_size = int(encode_batch_size)
        self.encode_dtype = encode_dtype
        self._int8: dict[str, nn.Module] = {}
        self.relation_texts = list(relation_texts)
        self.tokenizer = plm_mod.tokenizer_from_dict(tokenizer)
        self.hr_encoder = plm_mod.encoder_from_config(plm_config, attn_implementation)
        self.tail_encoder = plm_mod.encoder_from_config(plm_config, attn_implementation)
        self.log_inv_t = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)),
                                      requires_grad=bool(learn_temperature))
        hidden = int(plm_config["hidden_size"])
        self.register_buffer("train_triples", torch.zeros(int(num_train_triples), 3, dtype=torch.long))
        self.register_buffer("entity_cache", torch.zeros(0, hidden))
        self._texts: EntityTexts | None = None
        self._adjacency: Tensor | None = None

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_plm(cls, plm: str, entity_names: list[str], entity_texts: list[str], relation_texts: list[str],
                 train_triples: Tensor | None = None, attn_implementation: str = "sdpa", seed: int = 0,
                 **options: Any) -> BiEncoder:
        """Both encoders from one PLM (``minilm-l6``, ``mpnet``, a folder, or ``tiny:...`` random)."""
        spec = plm_mod.resolve_plm(plm)
        n_train = 0 if train_triples is None else int(train_triples.shape[0])
        if spec.tiny is not None:
            from kgdistill.text.textdata import build_wordpiece_tokenizer

            tok = build_wordpiece_tokenizer([*entity_texts, *relation_texts], max_words=spec.tiny["vocab_words"])
            torch.manual_seed(seed)
            cfg = plm_mod.tiny_config(len(tok), spec.tiny)
            model = cls(cfg, plm_mod.tokenizer_to_dict(tok), entity_names, entity_texts, relation_texts, n_train,
                        attn_implementation=attn_implementation, plm_name=plm, **options)
        else:
            tok, enc = plm_mod.load_pretrained(spec.path, attn_implementation)  # type: ignore[arg-type]
            model = cls(plm_mod.plm_config_dict(enc), plm_mod.tokenizer_to_dict(tok), entity_names, entity_texts,
                        relation_texts, n_train, attn_implementation=attn_implementation, plm_name=spec.name,
                        **options)
            model.hr_encoder.load_state_dict(enc.state_dict())
            model.tail_encoder.load_state_dict(enc.state_dict())
        if train_triples is not None:
            model.train_triples.copy_(train_triples)
        return model

    def config(self) -> dict[str, Any]:
        return dict(self._args)

    def with_args(self, **changes: Any) -> dict[str, Any]:
        """This model's constructor arguments with ``changes`` applied (students, attention implementation)."""
        return {**self._args, **changes}

    @property
    def hidden_size(self) -> int:
        return int(self._args["plm_config"]["hidden_size"])

    @property
    def num_layers(self) -> int:
        return len(plm_mod.encoder_layers(self.hr_encoder))

    @property
    def inv_t(self) -> Tensor:
        return self.log_inv_t.exp()

    @property
    def entity_texts(self) -> EntityTexts:
        if self._texts is None:
            self._texts = EntityTexts(self._args["entity_names"], self._args["entity_texts"], self.train_triples.cpu(),
                                      self._args["neighbour_names"], self._args["neighbour_min_words"])
        return self._texts

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "entity_cache"
        if key in state_dict:
            self.entity_cache = torch.empty_like(state_dict[key], device=self.entity_cache.device)
        self._texts, self._adjacency = None, None
        self._int8 = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- encoding ----------------------------------------------------------------------------------------------
    def set_encode_dtype(self, encode_dtype: str) -> BiEncoder:
        """Switch the inference encoding (``fp32`` | ``bf16`` | ``int8``); drops the entity cache when it changes."""
        if encode_dtype not in ENCODE_DTYPES:
            raise ConfigError(f"encode_dtype must be one of {', '.join(ENCODE_DTYPES)}, got {encode_dtype!r}")
        if encode_dtype != self.encode_dtype:
            self.encode_dtype, self._args["encode_dtype"], self._int8 = encode_dtype, encode_dtype, {}
            self.invalidate_cache()
        return self

    @contextlib.contextmanager
    def inference_precision(self) -> Iterator[None]:
        """The context of inference encoding: bf16 autocast with ``encode_dtype="bf16"``, nothing otherwise."""
        if self.encode_dtype == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def inference_encoder(self, which: str) -> nn.Module:
        """The encoder inference runs: the model's own, or (``int8``) its quantised copy, made once and dropped when
        the model trains or loads weights."""
        encoder = self.hr_encoder if which == "hr" else self.tail_encoder
        if self.encode_dtype != "int8":
            return encoder
        if self.device.type != "cpu":
            raise ConfigError("encode_dtype int8 (dynamically quantised Linear layers) runs on CPU only; use bf16 "
                              "on a GPU")
        if which not in self._int8:
            self._int8[which] = quantize_int8(encoder)
        return self._int8[which]

    def encode(self, which: str, inputs: dict[str, Tensor], output_hidden_states: bool = False,
               output_attentions: bool = False, encoder: nn.Module | None = None) -> EncoderOutput:
        """Run ``hr_encoder`` (``which="hr"``) or ``tail_encoder`` (``"tail"``), or ``encoder`` when given, on
        tokenised ``inputs``."""
        if encoder is None:
            encoder = self.hr_encoder if which == "hr" else self.tail_encoder
        out = encoder(**inputs, output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                      return_dict=True)
        last = out.last_hidden_state
        mask = inputs["attention_mask"]
        pooled = mean_pool(last, mask) if self.pooling == "mean" else last[:, 0]
        if pooled.dtype != torch.float32 and not torch.is_autocast_enabled(pooled.device.type):
            pooled = pooled.float()
        return EncoderOutput(F.normalize(pooled, dim=-1), last, mask, out.hidden_states if output_hidden_states
                             else None, out.attentions if output_attentions else None)

    def forward(self, hr_inputs: dict[str, Tensor], tail_inputs: dict[str, Tensor],
                head_inputs: dict[str, Tensor] | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> BiEncoderOutput:
        """Training forward: ``(h, r)`` pairs, their tails and (for self-negatives) their heads as entities."""
        kw = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        hr = self.encode("hr", hr_inputs, **kw)
        tail = self.encode("tail", tail_inputs, **kw)
        head = self.encode("tail", head_inputs, **kw) if head_inputs is not None else None
        return BiEncoderOutput(hr, tail, head)

    def train(self, mode: bool = True) -> BiEncoder:
        if mode and self.entity_cache.numel():
            self.invalidate_cache()
        if mode:
            self._int8 = {}
        return super().train(mode)

    def invalidate_cache(self) -> None:
        self.entity_cache = torch.zeros(0, self.hidden_size, device=self.entity_cache.device)

    @torch.no_grad()
    def encode_entities(self, ids: list[int] | None = None, batch_size: int | None = None,
                        sort_by_length: bool = True) -> Tensor:
        """L2-normalised entity embeddings ``[n, d]`` (all entities by default), encoded in batches, eval mode.

        ``sort_by_length`` batches texts of similar token length together (the rows come back in ``ids`` order): a
        batch is padded to its longest text, so on WN18RR's descriptions this halves the padded positions; the
        embeddings are those of unsorted batching up to float rounding."""
        ids = list(range(self.num_entities)) if ids is None else ids
        was = self.training
        super().train(False)
        try:
            return self._encode_texts("tail", self.entity_texts.texts(ids), None, batch_size or self.encode_batch_size,
                                      sort_by_length)
        finally:
            super().train(was)

    def _encode_texts(self, which: str, first: list[str], second: list[str] | None, batch_size: int,
                      sort_by_length: bool) -> Tensor:
        """Encode ``first`` (paired with ``second`` when given) with the ``which`` encoder at inference precision:
        L2-normalised fp32 ``[n, d]`` in input order."""
        n = len(first)
        out = torch.empty(n, self.hidden_size, device=self.device)
        if n == 0:
            return out
        tokens = Tokenized(self.tokenizer, first, second, self.max_length)
        order = tokens.by_length() if sort_by_length else list(range(n))
        encoder = self.inference_encoder(which)
        for i in range(0, n, batch_size):
            rows = order[i:i + batch_size]
            inputs = tokens.batch(rows, self.device)
            with self.inference_precision():
                pooled = self.encode(which, inputs, encoder=encoder).pooled
            out[torch.tensor(rows, device=self.device)] = F.normalize(pooled.float(), dim=-1)
        return out

    def entity_embeddings(self) -> Tensor:
        """The cached ``[E, d]`` entity embeddings, encoding all entities once when the cache is empty."""
        if self.entity_cache.shape[0] != self.num_entities:
            with torch.inference_mode(False), torch.no_grad():
                self.entity_cache = self.encode_entities().to(self.entity_cache.device).clone()
        return self.entity_cache

    def refresh_cache(self) -> Tensor:
        self.invalidate_cache()
        return self.entity_embeddings()

    def encode_queries(self, h: Tensor, r: Tensor, sort_by_length: bool = True) -> Tensor:
        """``(h[n], r[n])`` → L2-normalised query embeddings ``[n, d]``; ``r ≥ R`` are inverse relations.
        ``sort_by_length`` as in :meth:`encode_entities`."""
        heads = self.entity_texts.texts(h.tolist())
        rels = [relation_text(self.relation_texts, x) for x in r.tolist()]
        with torch.inference_mode(False), torch.no_grad():
            return self._encode_texts("hr", heads, rels, self.encode_batch_size, sort_by_length)

    # ---- KGCModel scoring --------------------------------------------------------------------------------------
    def score_t(self, h: Tensor, r: Tensor, candidates: Tensor | None = None) -> Tensor:
        q = self.encode_queries(h, r)
        ent = self.entity_embeddings()
        if candidates is None:
            scores = q @ ent.T
        elif candidates.dim() == 1:
            scores = q @ ent[candidates].T
        else:
            scores = torch.einsum("nd,nkd->nk", q, ent[candidates])
        if self.rerank_hops > 0 and self.rerank_weight != 0 and self.train_triples.numel():
            near = self.n_hop_mask(h.to(self.device))
            if candidates is not None:
                near = near[:, candidates] if candidates.dim() == 1 else torch.gather(near, 1, candidates)
            scores = scores + self.rerank_weight * near.to(scores.dtype)
        return scores

    def score_h(self, r: Tensor, t: Tensor, candidates: Tensor | None = None) -> Tensor:
        return self.score_t(t, r + self.num_relations, candidates)

    def score_hrt(self, hrt: Tensor) -> Tensor:
        q = self.encode_queries(hrt[:, 0], hrt[:, 1])
        return (q * self.entity_embeddings()[hrt[:, 2].to(q.device)]).sum(-1)

    def n_hop_mask(self, anchors: Tensor) -> Tensor:
        """``[q, E]`` bool: entities within ``rerank_hops`` undirected hops of each anchor (anchor excluded)."""
        E = self.num_entities
        if self._adjacency is None or self._adjacency.device != anchors.device:
            tt = self.train_triples.to(anchors.device)
            idx = torch.cat([tt[:, [0, 2]].T, tt[:, [2, 0]].T], dim=1)
            self._adjacency = torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1], device=anchors.device),
                                                      (E, E), check_invariants=False).coalesce()
        reached = torch.zeros(anchors.numel(), E, device=anchors.device)
        reached[torch.arange(anchors.numel(), device=anchors.device), anchors] = 1.0
        for _ in range(self.rerank_hops):
            reached = ((torch.sparse.mm(self._adjacency, reached.T).T + reached) > 0).float()
        reached[torch.arange(anchors.numel(), device=anchors.device), anchors] = 0.0
        return reached > 0

    def encoder_parameters(self) -> int:
        """Parameters of the two encoders (what the PMD paper's tables count)."""
        return sum(p.numel() for p in self.hr_encoder.parameters()) + \
            sum(p.numel() for p in self.tail_encoder.parameters())
