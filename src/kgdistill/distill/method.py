"""Distillation methods by name: a frozen config dataclass per method and a ``run`` that writes one folder a stage.

Training options left at ``None`` are inherited from the teacher run's training config (its optimiser, learning
rate, batch size, negatives, loss and regulariser were tuned for that model and dataset), so that a student differs
from its teacher only in what the method changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from kgdistill.config import TrainingConfig, opt
from kgdistill.distributed import DistContext
from kgdistill.errors import ConfigError
from kgdistill.models.embedding import EmbeddingModel
from kgdistill.registry import Registry
from kgdistill.runs import Run
from kgdistill.distill.distiller import TEACHER_PRECISIONS
from kgdistill.distill.stage import StageResult, summary_row

methods: Registry[type[Method]] = Registry("distillation method")
# declared here, imported on first use (each module also registers its class with the decorator)
methods.declare("kd", "kgdistill.distill.kd:KD")
methods.declare("kd-huber", "kgdistill.distill.kd:KDHuber", "bkd")
methods.declare("scratch", "kgdistill.distill.kd:Scratch", "from_scratch")
methods.declare("dualde", "kgdistill.distill.dualde:DualDE")
methods.declare("iterde", "kgdistill.distill.iterde:IterDE")
methods.declare("metasd", "kgdistill.distill.metasd:MetaSD")
methods.declare("iterde-metasd", "kgdistill.distill.combo:IterDEMetaSD")
# text bi-encoders (their options: kgdistill.distill.text_method.TextCommonConfig and the method's own)
methods.declare("pmd", "kgdistill.distill.text_pmd:PMD")
methods.declare("hrkd", "kgdistill.distill.text_hrkd:HRKD")
methods.declare("logit", "kgdistill.distill.text_kd:LogitKDMethod", "logit-kd")
methods.declare("patient", "kgdistill.distill.text_kd:PatientKDMethod", "patient-kd", "pkd")


@dataclass(frozen=True)
class CommonConfig:
    """Options shared by every method (None = the teacher run's value)."""

    dims: list = opt([32], "student dimension(s); IterDE: the chain (default: halving from the teacher's dim)",
                     item=int)
    epochs: int | None = opt(None, "epochs per stage / step")
    batch_size: int | None = opt(None, "training batch size")
    optimizer: str | None = opt(None, "optimiser: adam | adagrad | sgd | adamw")
    lr: float | None = opt(None, "learning rate")
    training_mode: str | None = opt(None, "slcwa | 1vsall (default: the method's, else the teacher's)")
    num_negatives: int | None = opt(None, "negatives per positive (sLCWA)")
    loss: str | None = opt(None, "hard loss in sLCWA: nssa | margin | softplus")
    margin: float | None = opt(None, "margin of the hard loss")
    adversarial_temperature: float | None = opt(None, "self-adversarial temperature of the hard loss")
    regularizer: str | None = opt(None, "regulariser of the student: none | l2 | n3 | dura")
    regularizer_weight: float | None = opt(None, "regulariser weight")
    seed: int = opt(42, "seed of the student's initialisation, batches and negatives")
    eval_every: int | None = opt(None, "validation every N epochs")
    patience: int | None = opt(None, "early stopping patience (validations)")


def teacher_precision_opt() -> Any:
    """The ``teacher_precision`` option of the methods that score a frozen teacher (KD, IterDE, DualDE)."""
    return opt("fp32", "precision of the frozen teacher's scores: fp32 | bf16 (autocast: matrix products in "
                       "bfloat16, several times faster on CPUs with AVX512-BF16; BENCHMARKS.md)",
               choices=TEACHER_PRECISIONS)


TRAINING_OVERRIDES = ("epochs", "batch_size", "optimizer", "lr", "training_mode", "num_negatives", "loss", "margin",
                      "adversarial_temperature", "regularizer", "regularizer_weight", "eval_every", "patience")

#: sLCWA hard losses used when the teacher was trained 1-N (its config has no tuned sLCWA loss): the IterDE
#: release's self-adversarial softplus for bilinear models, self-adversarial margin loss for distance models.
SLCWA_PRESETS: dict[str, dict[str, Any]] = {
    "transe": {"loss": "nssa", "margin": 6.0, "adversarial_temperature": 1.0},
    "rotate": {"loss": "nssa", "margin": 6.0, "adversarial_temperature": 1.0},
}
SLCWA_DEFAULT = {"loss": "softplus", "margin": 0.0, "adversarial_temperature": 1.0}
#: 1-N optimiser used when the teacher was trained by negative sampling (its Adam settings are tuned for sampled
#: losses): Adagrad lr 0.1, the 1-N recipe of Lacroix et al. (2018) and MetaSD's release.
ONE_N_PRESET: dict[str, Any] = {"optimizer": "adagrad", "lr": 0.1}


def stage_training(teacher: Run, config: CommonConfig, mode: str | None = None, **fixed: Any) -> TrainingConfig:
    """The teacher's training config with the method's choices (``mode``, ``fixed``) and the user's overrides."""
    base = teacher.config.training
    chosen_mode = config.training_mode or mode or base.training_mode
    changes: dict[str, Any] = {"training_mode": chosen_mode, "seed": config.seed, "checkpoint_every": 1}
    if chosen_mode == "slcwa" and base.training_mode != "slcwa":
        interaction = getattr(teacher.model, "interaction_name", "")
        changes.update(SLCWA_PRESETS.get(interaction, SLCWA_DEFAULT))
    if chosen_mode == "1vsall" and base.training_mode == "slcwa":
        changes.update(ONE_N_PRESET)
    changes.update(fixed)
    for name in TRAINING_OVERRIDES:
        value = getattr(config, name)
        if value is not None:
            changes[name] = value
    if changes["training_mode"] not in ("slcwa", "1vsall"):
        raise ConfigError(f"training_mode: distillation supports slcwa and 1vsall, got {changes['training_mode']!r}")
    return replace(base, **changes)


def teacher_model(teacher: Run) -> EmbeddingModel:
    if not isinstance(teacher.model, EmbeddingModel):
        raise ConfigError(f"{teacher.path}: the teacher must be an embedding model "
                          f"(got {type(teacher.model).__name__})")
    return teacher.model


def more_teacher_models(teacher: Run, run_dirs: list[str], device: str = "cpu") -> list[Any]:
    """The models of further teacher runs for a multi-teacher stage; each must use the main teacher's entity and
    relation ids (same graph, same id maps). Any model kind or size will do: only their scores are used."""
    from kgdistill.runs import load_run

    assert teacher.dataset is not None
    models = []
    for run_dir in run_dirs:
        run = load_run(run_dir, device=device)
        assert run.dataset is not None
        if run.dataset.entities != teacher.dataset.entities or run.dataset.relations != teacher.dataset.relations:
            raise ConfigError(f"{run_dir}: this teacher's entities.tsv / relations.tsv differ from those of the main "
                              f"teacher {teacher.path} (teachers must share the graph and its ids)")
        models.append(run.model)
    return models


def teacher_test_metrics(teacher: Run) -> dict[str, Any]:
    """The teacher's test metrics (``{"both": …, "head": …, "tail": …}``): from its ``metrics.json``, or, for a run
    trained with ``eval_splits [valid]``, evaluated now (once; kept in ``teacher.metrics``, the folder untouched) —
    students and teacher are compared on test."""
    if "test" not in teacher.metrics:
        from kgdistill.evaluate import evaluate

        assert teacher.dataset is not None
        evaluation = teacher.config.evaluation
        teacher.metrics["test"] = evaluate(teacher.model, teacher.dataset, "test", evaluation.eval_batch_size,
                                           evaluation.filtered, next(teacher.model.parameters()).device).summary()
    return teacher.metrics["test"]


def teacher_row(teacher: Run) -> dict[str, Any]:
    """The teacher's summary row (from its metrics; size and throughput measured now)."""
    from kgdistill.distill.stage import scoring_throughput
    from kgdistill.models.base import MODEL_WEIGHTS

    teacher_test_metrics(teacher)
    metrics = dict(teacher.metrics)
    metrics["num_nonzero"] = teacher.model.num_parameters(nonzero=True)
    metrics["num_parameters"] = teacher.model.num_parameters()
    metrics["bytes_on_disk"] = (teacher.path / MODEL_WEIGHTS).stat().st_size
    assert teacher.dataset is not None
    metrics["queries_per_second"] = round(scoring_throughput(teacher.model, teacher.dataset), 1)
    metrics.setdefault("epochs_done", teacher.config.training.epochs)
    return summary_row("teacher", teacher.model, metrics)


class Method:
    """A distillation method: ``run(teacher, config, out) -> [StageResult]`` (one result per stage / step)."""

    name: ClassVar[str]
    #: the model kind of its teachers and students: ``embedding`` or ``text`` (bi-encoders)
    family: ClassVar[str] = "embedding"
    Config: ClassVar[type] = CommonConfig

    def run(self, teacher: Run, config: Any, out: Path, *, device: str = "cpu", progress: bool = False,
            ctx: DistContext | None = None, resume: bool = False) -> list[StageResult]:
        """Train every stage into ``out``; ``ctx``: the process group (default one process), passed on to each
        :func:`~kgdistill.distill.stage.run_stage`; ``resume``: continue the stages already in ``out``."""
        raise NotImplementedError

    def teacher_row(self, teacher: Run) -> dict[str, Any]:
        """The teacher's summary row (first row of the table)."""
        return teacher_row(teacher)


def model_family(model_name: str) -> str:
    """``text`` for a text bi-encoder's model class name (``biencoder``), else ``embedding``."""
    return "text" if model_name == "biencoder" else "embedding"


def make_config(method: str, options: dict[str, Any]) -> Any:
    """The frozen config of ``method`` from ``{field: value}``: values coerced and every option checked by the one
    configuration layer (:func:`kgdistill.config.from_options`, :func:`kgdistill.validate.validate_config`);
    unknown fields are named."""
    from kgdistill.config import from_options
    from kgdistill.validate import validate_config

    config = from_options(methods.get(method).Config, options, owner=methods.canonical(method))
    if any(k.replace("-", "_") == "dims" for k in options) and not config.dims:
        raise ConfigError("dims: expected positive integers, got []")
    return validate_config(config)


__all__ = ["methods", "Method", "CommonConfig", "teacher_precision_opt", "model_family", "stage_training",
           "teacher_model", "teacher_test_metrics", "more_teacher_models", "teacher_row", "make_config"]
