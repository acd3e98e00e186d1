"""Knowledge distillation of KG models, one framework for both model kinds: KD, DualDE, IterDE, MetaSD and their
combination for embedding models; PMD, HRKD, logit and patient KD for text bi-encoders (:mod:`.text_method`).

Library entry point: :func:`distill` (``kgdistill distill`` on the command line). A method is a frozen config
dataclass + small pure loss terms (:mod:`.terms`) + weight schedules (:mod:`.schedules`) + its stages, registered
by name in :data:`methods` (declared there, each method's module imported on first use).
"""

from kgdistill.distill.api import DistillReport, distill
from kgdistill.distill.distiller import DistillModel, Distiller, LossTerm, Scores, StepContext, freeze
from kgdistill.distill.method import CommonConfig, Method, make_config, methods
from kgdistill.distill.pruning import PrunedModel, export_sparse, global_magnitude_masks, load_sparse
from kgdistill.distill.schedules import make_schedule, schedules
from kgdistill.distill.stage import StageResult, scoring_throughput

__all__ = ["distill", "DistillReport", "Distiller", "DistillModel", "LossTerm", "Scores", "StepContext", "freeze",
           "methods", "Method", "CommonConfig", "make_config", "PrunedModel", "export_sparse", "load_sparse",
           "global_magnitude_masks", "schedules", "make_schedule", "StageResult", "scoring_throughput"]
