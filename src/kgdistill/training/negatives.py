"""Negative sampling by corruption of heads or tails (Bordes et al., 2013; Bernoulli: Wang et al., 2014)."""

from __future__ import annotations

import torch
from torch import Tensor

from kgdistill.registry import Registry

negative_samplers: Registry[type[NegativeSampler]] = Registry("negative sampler")


class NegativeSampler:
    """Draws ``num_negatives`` corrupted entities per positive.

    ``sample(batch[B, 3], generator) -> (ids[B, N], corrupt_head[B, N] | None)``. ``corrupt_head`` None means the
    fixed layout: the first ``N // 2`` columns replace the head, the rest the tail (as PyKEEN's basic sampler).
    Random numbers are drawn on the generator's device (a CPU generator is what the trainer keeps) and moved to the
    batch's device, so one seed gives the same negatives on CPU and on CUDA.
    """

    def __init__(self, num_entities: int, num_negatives: int, train: Tensor | None = None,
                 num_relations: int | None = None) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be ≥ 1, got {num_negatives}")
        self.num_entities, self.num_negatives = num_entities, num_negatives

    @property
    def num_head_negatives(self) -> int:
        return self.num_negatives // 2

    def sample(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        ids = torch.randint(self.num_entities, (batch.shape[0], self.num_negatives), device=generator.device,
                            generator=generator)
        return ids.to(batch.device, non_blocking=True), None


@negative_samplers.register("uniform")
class UniformSampler(NegativeSampler):
    """Uniform entities; half of the negatives corrupt the head, half the tail."""


@negative_samplers.register("bernoulli", "bern")
class BernoulliSampler(NegativeSampler):
    """Corrupt the head with probability ``tph / (tph + hpt)`` of the relation, per negative (Wang et al., 2014)."""

    def __init__(self, num_entities: int, num_negatives: int, train: Tensor | None = None,
                 num_relations: int | None = None) -> None:
        super().__init__(num_entities, num_negatives)
        if train is None or num_relations is None:
            raise ValueError("the bernoulli sampler needs the training triples and the number of relations")
        self.head_probability = relation_head_probability(train, num_relations)

    def sample(self, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        ids, _ = super().sample(batch, generator)
        p = self.head_probability.to(batch.device)[batch[:, 1]]
        draws = torch.rand(ids.shape, device=generator.device, generator=generator).to(batch.device, non_blocking=True)
        corrupt_head = draws < p[:, None]
        return ids, corrupt_head


def relation_head_probability(train: Tensor, num_relations: int) -> Tensor:
    """``tph / (tph + hpt)`` per relation: tails per head and heads per tail averaged over distinct anchors."""
    train = train.cpu()
    probs = torch.full((num_relations,), 0.5)
    for rel in range(num_relations):
        sub = train[train[:, 1] == rel]
        if sub.shape[0] == 0:
            continue
        n = float(sub.shape[0])
        tph = n / torch.unique(sub[:, 0]).numel()
        hpt = n / torch.unique(sub[:, 2]).numel()
        probs[rel] = tph / (tph + hpt)
    return probs
