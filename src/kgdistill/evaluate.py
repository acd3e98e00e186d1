"""Link-prediction evaluation of any :class:`~kgdistill.models.base.KGCModel` on a dataset split.

A thin layer over :mod:`kgdistill.evaluation`: the evaluator itself consumes score matrices only.
"""

from __future__ import annotations

import torch

from kgdistill.data.triples import KGDataset
from kgdistill.distributed import DistContext, all_gather_objects, shard_bounds
from kgdistill.errors import ConfigError
from kgdistill.evaluation import HEAD, TAIL, EvaluationResult, FilterIndex, RankingEvaluator
from kgdistill.models.base import KGCModel


class DatasetEvaluator:
    """Filtered evaluation on one dataset; the filter index is built once and reused (e.g. every validation).

    With a multi-process ``ctx`` each rank ranks a contiguous shard of the triples and the ranks are gathered, so
    every rank returns the result of a single-process evaluation.
    """

    def __init__(self, dataset: KGDataset, batch_size: int = 256, filtered: bool = True,
                 device: str | torch.device = "cpu", ctx: DistContext | None = None) -> None:
        self.dataset = dataset
        self.ctx = ctx or DistContext(device=str(device))
        self.filter_index = FilterIndex.from_triples(dataset.all_triples(), dataset.num_entities,
                                                     dataset.num_relations) if filtered else None
        self.evaluator = RankingEvaluator(self.filter_index, dataset.num_entities, batch_size=batch_size,
                                          device=device)

    def evaluate(self, model: KGCModel, split: str = "test", progress: bool = False,
                 triples: torch.Tensor | None = None) -> EvaluationResult:
        if triples is None:
            if split not in self.dataset.splits:
                raise ConfigError(f"unknown split {split!r}; known: {', '.join(self.dataset.splits)}")
            triples = self.dataset.splits[split]
        full = triples
        if self.ctx.enabled:
            lo, hi = shard_bounds(triples.shape[0], self.ctx.rank, self.ctx.world_size)
            triples = triples[lo:hi]
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                result = self.evaluator.evaluate(model.score, triples, progress=progress and self.ctx.is_main)
        finally:
            model.train(was_training)
        if not self.ctx.enabled:
            return result
        return _merge_shards(all_gather_objects(_to_cpu_fields(result), self.ctx), full)


def _to_cpu_fields(result: EvaluationResult) -> dict[str, torch.Tensor | int]:
    return {"realistic": result.realistic.cpu(), "optimistic": result.optimistic.cpu(),
            "pessimistic": result.pessimistic.cpu(), "triples": result.triples.cpu(), "sides": result.sides.cpu(),
            "num_entities": result.num_entities}


def _merge_shards(shards: list[dict], full: torch.Tensor) -> EvaluationResult:
    """Reassemble per-rank results in single-process order: side by side, then triples in order."""
    merged: dict[str, list[torch.Tensor]] = {k: [] for k in ("realistic", "optimistic", "pessimistic", "triples",
                                                             "sides")}
    for side in (HEAD, TAIL):
        for shard in shards:
            mask = shard["sides"] == side
            for key in merged:
                merged[key].append(shard[key][mask])
    out = {k: torch.cat(v) for k, v in merged.items()}
    if out["triples"].shape[0] != 2 * full.shape[0]:
        raise RuntimeError("sharded evaluation lost queries: gathered "
                           f"{out['triples'].shape[0]} of {2 * full.shape[0]}")
    return EvaluationResult(out["realistic"], out["optimistic"], out["pessimistic"], out["triples"], out["sides"],
                            num_entities=shards[0]["num_entities"])


def evaluate(model: KGCModel, dataset: KGDataset, split: str = "test", batch_size: int = 256,
             filtered: bool = True, device: str | torch.device = "cpu", progress: bool = False) -> EvaluationResult:
    """Filtered (default) link prediction on ``split``: ranks of heads and tails, realistic ranks for ties."""
    return DatasetEvaluator(dataset, batch_size, filtered, device).evaluate(model, split, progress)
