"""Link-prediction evaluation: filtered realistic ranks (chunked, model-agnostic) and rank-based metrics."""

from kgdistill.evaluation.metrics import HEAD, TAIL, EvaluationResult, metrics_from_ranks, relation_categories
from kgdistill.evaluation.ranking import (
    SIDES,
    FilterIndex,
    RankingEvaluator,
    Ranks,
    ScoreFn,
    ranks_from_scores,
    realistic_ranks,
)

__all__ = [
    "HEAD",
    "SIDES",
    "TAIL",
    "EvaluationResult",
    "FilterIndex",
    "RankingEvaluator",
    "Ranks",
    "ScoreFn",
    "metrics_from_ranks",
    "ranks_from_scores",
    "realistic_ranks",
    "relation_categories",
]
