"""Link-prediction evaluation of any :class:`~kgdistill.models.base.KGCModel` on a dataset split.

A thin layer over :mod:`kgdistill.evaluation`: the evaluator itself consumes score matrices only.
"""

from __future__ import annotations

import torch

from kgdistill.data.triples import KGDataset
from kgdistill.errors import ConfigError
from kgdistill.evaluation import EvaluationResult, FilterIndex, RankingEvaluator
from kgdistill.models.base import KGCModel


class DatasetEvaluator:
    """Filtered evaluation on one dataset; the filter index is built once and reused (e.g. every validation)."""

    def __init__(self, dataset: KGDataset, batch_size: int = 256, filtered: bool = True,
                 device: str | torch.device = "cpu") -> None:
        self.dataset = dataset
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
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return self.evaluator.evaluate(model.score, triples, progress=progress)
        finally:
            model.train(was_training)


def evaluate(model: KGCModel, dataset: KGDataset, split: str = "test", batch_size: int = 256,
             filtered: bool = True, device: str | torch.device = "cpu", progress: bool = False) -> EvaluationResult:
    """Filtered (default) link prediction on ``split``: ranks of heads and tails, realistic ranks for ties."""
    return DatasetEvaluator(dataset, batch_size, filtered, device).evaluate(model, split, progress)
