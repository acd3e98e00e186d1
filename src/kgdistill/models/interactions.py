"""Stateless interaction functions of KGE models on broadcastable shapes.

An interaction turns representations into scores (higher = better). Each one is written as
``sim(tail_query(h, r), t)`` and, equivalently, ``sim(head_query(r, t), h)``, so one function scores single
triples, all-entity candidates (a matrix product where possible) and per-query candidates.

Representation layouts (``d`` = model dimension):

=========  ====================  =======================  ==============================================
model      entity row            relation row             score
=========  ====================  =======================  ==============================================
TransE     ``d``                 ``d``                    ``-||h + r - t||_p`` (Bordes et al., 2013)
DistMult   ``d``                 ``d``                    ``<h, r, t>`` (Yang et al., 2015)
ComplEx    ``2d`` = [re | im]    ``2d``                   ``Re<h, r, conj(t)>`` (Trouillon et al., 2016)
RotatE     ``2d`` = [re | im]    ``d`` phases             ``-||h ∘ e^{iθ} - t||`` (Sun et al., 2019)
SimplE     ``2d`` = [as head |   ``2d`` = [r | r⁻¹]      ``½(<h_H, r, t_T> + <t_H, r⁻¹, h_T>)``
           as tail]                                       (Kazemi & Poole, 2018)
=========  ====================  =======================  ==============================================
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kgdistill.models.similarity import Dot, NegativeComplexL1, NegativeL1, NegativeL2, Similarity
from kgdistill.registry import Registry

interactions: Registry[type[Interaction]] = Registry("model")


def _halves(x: Tensor) -> tuple[Tensor, Tensor]:
    d = x.shape[-1] // 2
    return x[..., :d], x[..., d:]


def _complex_mul(a: Tensor, b: Tensor, conj_b: bool = False) -> Tensor:
    """``a ∘ b`` (or ``a ∘ conj(b)``) for complex vectors stored as ``[re | im]``; broadcasts."""
    ar, ai = _halves(a)
    br, bi = _halves(b)
    if conj_b:
        bi = -bi
    return torch.cat([ar * br - ai * bi, ar * bi + ai * br], dim=-1)


class Interaction:
    """Base class. ``entity_width(d)`` / ``relation_width(d)`` give row widths for model dimension ``d``."""

    similarity: Similarity = Dot()
    #: "real" or "complex": how regularisers such as N3 read the rows (complex: moduli of [re | im] pairs)
    entity_kind = "real"
    relation_kind = "real"

    def __init__(self, **options: object) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    def entity_width(self, dim: int) -> int:
        return dim

    def relation_width(self, dim: int) -> int:
        return dim

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        """``h[..., De]``, ``r[..., Dr]`` → query ``[..., De]`` compared with tail rows."""
        raise NotImplementedError

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        """``r[..., Dr]``, ``t[..., De]`` → query ``[..., De]`` compared with head rows."""
        raise NotImplementedError

    def __call__(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Score broadcastable ``h[..., De]``, ``r[..., Dr]``, ``t[..., De]`` → ``[...]``."""
        return self.similarity.pairwise(self.tail_query(h, r), t)

    def extra_options(self) -> dict[str, object]:
        return {}

    # initialisation of the paper ------------------------------------------------------------------------------
    def init_entities(self, weight: Tensor, dim: int) -> None:
        torch.nn.init.xavier_normal_(weight)

    def init_relations(self, weight: Tensor, dim: int) -> None:
        torch.nn.init.xavier_normal_(weight)


@interactions.register("transe")
class TransE(Interaction):
    """TransE: ``-||h + r - t||_p``; ``p`` = 1 (default, as the paper and PyKEEN) or 2."""

    def __init__(self, p: int = 1) -> None:
        if p not in (1, 2):
            raise ValueError(f"transe: p must be 1 or 2, got {p}")
        self.p = p
        self.similarity = NegativeL1() if p == 1 else NegativeL2()

    def extra_options(self) -> dict[str, object]:
        return {"p": self.p}

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return h + r

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return t - r  # ||h + r - t|| = ||h - (t - r)||

    def init_entities(self, weight: Tensor, dim: int) -> None:
        bound = 6.0 / math.sqrt(dim)  # Bordes et al. (2013)
        torch.nn.init.uniform_(weight, -bound, bound)

    def init_relations(self, weight: Tensor, dim: int) -> None:
        self.init_entities(weight, dim)
        with torch.no_grad():
            weight.div_(weight.norm(dim=-1, keepdim=True).clamp_min(1e-12))


@interactions.register("distmult")
class DistMult(Interaction):
    """DistMult: trilinear product ``Σ h·r·t``."""

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return h * r

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return r * t


@interactions.register("complex")
class ComplEx(Interaction):
    """ComplEx: ``Re(Σ h · r · conj(t))`` with rows ``[re | im]``."""

    entity_kind = "complex"
    relation_kind = "complex"

    def entity_width(self, dim: int) -> int:
        return 2 * dim

    def relation_width(self, dim: int) -> int:
        return 2 * dim

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return _complex_mul(h, r)  # Re<h∘r, conj t> = <[re|im](h∘r), [re|im](t)>

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return _complex_mul(t, r, conj_b=True)  # Re(h r t̄) = Re(h̄ r̄ t) = <[re|im](t∘r̄), [re|im](h)>


@interactions.register("rotate")
class RotatE(Interaction):
    """RotatE: ``-||h ∘ e^{iθ_r} - t||``; ``norm="complex_l1"`` (paper: sum of moduli) or ``"l2"`` (PyKEEN)."""

    entity_kind = "complex"

    def __init__(self, norm: str = "complex_l1", init_bound: float | None = None) -> None:
        if norm not in ("complex_l1", "l2"):
            raise ValueError(f"rotate: norm must be 'complex_l1' or 'l2', got {norm!r}")
        self.norm = norm
        self.init_bound = init_bound
        self.similarity = NegativeComplexL1() if norm == "complex_l1" else NegativeL2()

    def extra_options(self) -> dict[str, object]:
        return {"norm": self.norm, "init_bound": self.init_bound}

    def entity_width(self, dim: int) -> int:
        return 2 * dim

    @staticmethod
    def _rotation(phase: Tensor) -> Tensor:
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return _complex_mul(h, self._rotation(r))

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return _complex_mul(t, self._rotation(r), conj_b=True)  # |h∘r - t| = |h - t∘r̄| as |r| = 1

    def init_entities(self, weight: Tensor, dim: int) -> None:
        bound = self.init_bound if self.init_bound is not None else (9.0 + 2.0) / dim  # (γ + ε) / d, Sun et al.
        torch.nn.init.uniform_(weight, -bound, bound)

    def init_relations(self, weight: Tensor, dim: int) -> None:
        torch.nn.init.uniform_(weight, -math.pi, math.pi)


@interactions.register("simple")
class SimplE(Interaction):
    """SimplE: ``½(<h_H, r, t_T> + <t_H, r⁻¹, h_T>)``; entity rows ``[as head | as tail]``, relations ``[r | r⁻¹]``."""

    def entity_width(self, dim: int) -> int:
        return 2 * dim

    def relation_width(self, dim: int) -> int:
        return 2 * dim

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        h_head, h_tail = _halves(h)
        r_fwd, r_inv = _halves(r)
        # score = <t_T, ½ h_H r> + <t_H, ½ r⁻¹ h_T>; tail rows are [t_H | t_T]
        return 0.5 * torch.cat([r_inv * h_tail, h_head * r_fwd], dim=-1)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        t_head, t_tail = _halves(t)
        r_fwd, r_inv = _halves(r)
        return 0.5 * torch.cat([r_fwd * t_tail, r_inv * t_head], dim=-1)
