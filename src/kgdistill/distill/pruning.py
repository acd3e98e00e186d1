"""Global magnitude pruning of embedding tables, the masked model, and sparse export with its true size.

The pruned model of MetaSD is the dense model's own parameters under a mask (Li et al., Findings of EMNLP 2022):
:class:`PrunedModel` scores with ``functional_call`` on ``{entity: E ⊙ M_E, relation: R ⊙ M_R}`` and keeps the
masks as buffers, so checkpoints and best-on-validation snapshots carry them.

Sparse storage (``model.sparse.safetensors``): per table a packed bitmap of the non-zeros (1 bit per entry) and
the non-zero values in row-major order (float32), plus the shapes. At 90% sparsity that is 1/8 + 0.1 · 4 = 0.525
bytes per entry instead of 4 (COO with int64 indices would need 2 bytes per entry).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.func import functional_call

from kgdistill.errors import RunFolderError
from kgdistill.models.base import MODEL_CONFIG, KGCModel, build_model, model_classes
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.training.steps import score_queries, score_query_candidates

SPARSE_WEIGHTS = "model.sparse.safetensors"
TABLES = ("entity", "relation")


def global_magnitude_masks(tensors: list[Tensor], sparsity: float) -> list[Tensor]:
    """Boolean masks keeping the ``round((1 - sparsity) · n)`` largest-magnitude entries over all tensors together.

    Exact: ties are broken by ``topk``, so the kept count is exact whatever the values.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    flat = torch.cat([t.detach().abs().flatten() for t in tensors])
    keep = flat.numel() - int(round(sparsity * flat.numel()))
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[torch.topk(flat, keep, sorted=False).indices] = True
    out, start = [], 0
    for t in tensors:
        out.append(mask[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


def row_magnitude_masks(tensors: list[Tensor], sparsity: float) -> list[Tensor]:
    """Boolean masks keeping, in every row of every table ``[n, D]``, its ``max(1, round((1 - sparsity) · D))``
    largest-magnitude entries (beyond MetaSD: no entity or relation loses all its entries, as rare ones do under
    global pruning). Exact counts, ties broken by ``topk``."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    out = []
    for t in tensors:
        keep = max(1, int(round((1.0 - sparsity) * t.shape[-1])))
        mask = torch.zeros_like(t, dtype=torch.bool)
        mask.scatter_(-1, torch.topk(t.detach().abs(), keep, dim=-1, sorted=False).indices, True)
        out.append(mask)
    return out


def coordinate_columns(width: int, dim: int, coordinates: Tensor) -> Tensor:
    """Columns of a table of ``width`` reals per row that hold model coordinates ``coordinates`` ``[k]``: rows are
    ``[part_0 | part_1 | …]`` of ``dim`` reals each (``[re | im]`` for complex rows, ``[as head | as tail]`` for
    SimplE), so coordinate ``i`` is columns ``i, i + dim, …`` → ``[k · width / dim]``."""
    if width % dim:
        raise ValueError(f"a table of width {width} is not made of parts of the model dim {dim}")
    return torch.cat([coordinates + part * dim for part in range(width // dim)])


def coordinate_magnitude_masks(tensors: list[Tensor], sparsity: float, dim: int) -> list[Tensor]:
    """Structured pruning of whole model coordinates (beyond MetaSD): keep the ``max(1, round((1 - sparsity) ·
    dim))`` coordinates of the largest importance ``Σ_tables ||columns of the coordinate||² / ||table||²`` in every
    row of every table ``[n, w]`` alike. A coordinate of TransE, DistMult, ComplEx, RotatE or SimplE left out adds
    nothing to any score, so the pruned model *is* a dense model of the kept dim (:meth:`PrunedModel.compact_copy`)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    keep = max(1, int(round((1.0 - sparsity) * dim)))
    importance = torch.zeros(dim, device=tensors[0].device)
    for t in tensors:
        sq = t.detach().float().pow(2)
        parts = sq.view(sq.shape[0], -1, dim).sum(dim=(0, 1))  # [dim]: every part of coordinate i together
        importance += parts / sq.sum().clamp_min(1e-30)
    kept = torch.topk(importance, keep, sorted=False).indices.sort().values
    out = []
    for t in tensors:
        mask = torch.zeros_like(t, dtype=torch.bool)
        mask[:, coordinate_columns(t.shape[1], dim, kept)] = True
        out.append(mask)
    return out


def kept_coordinates(entity_mask: Tensor, dim: int) -> Tensor:
    """The coordinates ``[k]`` a :func:`coordinate_magnitude_masks` mask of the entity table keeps (sorted)."""
    return entity_mask[0, :dim].nonzero().flatten()


#: ``scope(tables, sparsity, dim) -> masks``: entry pruning ignores the model dim, coordinate pruning needs it
PRUNING_SCOPES: dict[str, Callable[[list[Tensor], float, int], list[Tensor]]] = {
    "global": lambda tables, sparsity, dim: global_magnitude_masks(tables, sparsity),
    "row": lambda tables, sparsity, dim: row_magnitude_masks(tables, sparsity),
    "dims": coordinate_magnitude_masks,
}


class _Scorer(nn.Module):
    """``forward(kind, *args)``: a scoring mode of ``base`` (so ``functional_call`` can swap its tables)."""

    def __init__(self, base: EmbeddingModel) -> None:
        super().__init__()
        self.base = base

    def forward(self, kind: str, *args: Tensor) -> Tensor:
        if kind == "queries":
            return score_queries(self.base, *args)
        if kind == "query_candidates":
            return score_query_candidates(self.base, *args)
        return getattr(self.base, kind)(*args)


class PrunedModel(KGCModel):
    """The dense ``base`` model and its pruned branch ``base(E ⊙ M_E, R ⊙ M_R)``; scoring uses the pruned branch."""

    def __init__(self, base: EmbeddingModel) -> None:
        super().__init__()
        self.base = base
        self.scorer = _Scorer(base)
        self.num_entities, self.num_relations = base.num_entities, base.num_relations
        self.register_buffer("entity_mask", torch.ones_like(base.entity, dtype=torch.bool))
        self.register_buffer("relation_mask", torch.ones_like(base.relation, dtype=torch.bool))

    def masks(self) -> dict[str, Tensor]:
        return {"entity": self.entity_mask, "relation": self.relation_mask}

    def update_masks(self, sparsity: float, scope: str = "global") -> float:
        """Recompute both masks by magnitude pruning (``scope``: ``global`` over both tables together, as MetaSD
        releases, ``row``: the same count in every row, or ``dims``: whole model coordinates); returns the fraction
        of mask entries that flipped."""
        new_e, new_r = PRUNING_SCOPES[scope]([self.base.entity, self.base.relation], sparsity, self.base.dim)
        flipped = int((new_e != self.entity_mask).sum()) + int((new_r != self.relation_mask).sum())
        self.entity_mask.copy_(new_e)
        self.relation_mask.copy_(new_r)
        return flipped / (new_e.numel() + new_r.numel())

    def masked_params(self, params: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """``{entity: E ⊙ M_E, relation: R ⊙ M_R}`` of ``params`` (default: the base's own, with grad)."""
        params = params or {"entity": self.base.entity, "relation": self.base.relation}
        return {k: params[k] * self.masks()[k] for k in TABLES}

    def call(self, params: dict[str, Tensor], kind: str, *args: Tensor) -> Tensor:
        """Score with the tables ``params`` (e.g. the lookahead copy) via ``torch.func.functional_call``."""
        return functional_call(self.scorer, {f"base.{k}": v for k, v in params.items()}, (kind, *args))

    def score_hrt(self, hrt: Tensor) -> Tensor:
        return self.call(self.masked_params(), "score_hrt", hrt)

    def score_t(self, h: Tensor, r: Tensor, candidates: Tensor | None = None) -> Tensor:
        args = (h, r) if candidates is None else (h, r, candidates)
        return self.call(self.masked_params(), "score_t", *args)

    def score_h(self, r: Tensor, t: Tensor, candidates: Tensor | None = None) -> Tensor:
        args = (r, t) if candidates is None else (r, t, candidates)
        return self.call(self.masked_params(), "score_h", *args)

    def apply_constraints(self) -> None:
        self.base.apply_constraints()

    def pruned_copy(self) -> EmbeddingModel:
        """A plain :class:`EmbeddingModel` holding the pruned weights (zeros where masked)."""
        model = build_model("embedding", self.base.config())
        with torch.no_grad():
            for k, v in self.masked_params().items():
                getattr(model, k).copy_(v.detach())
        return model.to(self.base.device)

    def compact_copy(self) -> EmbeddingModel:
        """The pruned model as a dense :class:`EmbeddingModel` of the kept dim, for masks that keep whole coordinates
        (``dims`` pruning): the same scores as the pruned branch, ``k / dim`` of the parameters, scored densely."""
        base = self.base
        kept = kept_coordinates(self.entity_mask, base.dim)
        expected = [coordinate_columns(t.shape[1], base.dim, kept) for t in (base.entity, base.relation)]
        for mask, cols in zip((self.entity_mask, self.relation_mask), expected):
            want = torch.zeros(mask.shape[1], dtype=torch.bool, device=mask.device)
            want[cols] = True
            if not bool((mask == want).all()):
                raise ValueError("compact_copy: the masks do not keep whole coordinates (use dims pruning)")
        model = build_model("embedding", {**base.config(), "dim": int(kept.numel())})
        with torch.no_grad():
            for name, cols in zip(TABLES, expected):
                getattr(model, name).copy_(getattr(base, name).detach()[:, cols])
        return model.to(base.device)


def export_sparse(model: EmbeddingModel, folder: str | Path) -> Path:
    """Write ``model.sparse.safetensors`` (bitmaps + non-zero values) and ``model.json``; returns the weights path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, p in model.state_dict().items():
        dense = p.detach().cpu().contiguous()
        nz = dense != 0
        bits = np.packbits(nz.flatten().numpy())
        tensors[f"{name}.bitmap"] = torch.from_numpy(bits)
        tensors[f"{name}.values"] = dense[nz].contiguous()
        shapes[name] = list(dense.shape)
    path = folder / SPARSE_WEIGHTS
    from safetensors.torch import save as safetensors_save

    from kgdistill.atomicio import atomic_write_bytes, atomic_write_text

    atomic_write_bytes(path, safetensors_save(tensors, metadata={"format": "bitmap+values",
                                                                 "shapes": json.dumps(shapes)}))
    kind = model_classes.canonical(type(model).registry_name)  # type: ignore[attr-defined]
    atomic_write_text(folder / MODEL_CONFIG, json.dumps({"class": kind, "config": model.config()}, indent=2))
    return path


def load_sparse(folder: str | Path, device: str | torch.device = "cpu") -> EmbeddingModel:
    """Rebuild the (dense-layout) model from ``model.sparse.safetensors`` + ``model.json``."""
    folder = Path(folder)
    path = folder / SPARSE_WEIGHTS
    if not path.exists() or not (folder / MODEL_CONFIG).exists():
        raise RunFolderError(f"{folder}: missing {SPARSE_WEIGHTS} or {MODEL_CONFIG}")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        shapes = json.loads(f.metadata()["shapes"])
    raw = load_file(str(path))
    meta = json.loads((folder / MODEL_CONFIG).read_text())
    model = build_model(meta["class"], meta["config"])
    state = {}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        nz = torch.from_numpy(np.unpackbits(raw[f"{name}.bitmap"].numpy())[:n].astype(bool)).view(shape)
        dense = torch.zeros(shape, dtype=raw[f"{name}.values"].dtype)
        dense[nz] = raw[f"{name}.values"]
        state[name] = dense
    model.load_state_dict(state)
    return model.to(device)  # type: ignore[return-value]


__all__ = ["global_magnitude_masks", "row_magnitude_masks", "coordinate_magnitude_masks", "coordinate_columns",
           "kept_coordinates", "PRUNING_SCOPES", "PrunedModel", "export_sparse",
           "load_sparse", "SPARSE_WEIGHTS"]
