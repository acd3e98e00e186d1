"""The text family of the one distillation framework: options shared by every text method and its stage runner.

The text methods (:mod:`.text_pmd`, :mod:`.text_hrkd`, :mod:`.text_kd`) are entries of
:data:`kgdistill.distill.method.methods` beside the embedding methods; ``kgdistill distill --method pmd`` and
``kgdistill.distill("pmd", teacher, out, ...)`` reach them through the one dispatcher
(:func:`kgdistill.distill.api.distill`). Each one's ``Config`` is a frozen dataclass: :class:`TextCommonConfig`
(the student's model, its training budget, the graph and the evaluation: every field of a
:class:`~kgdistill.text.config.TextRunConfig` but the distillation section, with the same defaults and help) plus
the method's own options. ``run`` turns it into a ``TextRunConfig`` and trains with :func:`distil_text`, the function
``kgdistill text-distill`` (the alias taking a whole text run config) calls too.

Layout: a single-stage method writes its run folder at ``out`` itself (``--out runs/pkd`` is the student's run
folder, as ``text-distill`` writes it); the PMD chain (``grades``) writes one folder per stage under ``out``.
Nothing here imports ``transformers`` before a method runs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from kgdistill.config import flat_fields
from kgdistill.distill.method import Method, methods
from kgdistill.distributed import DistContext
from kgdistill.errors import ConfigError
from kgdistill.runs import Run
from kgdistill.text.config import DistillConfig, TextRunConfig

#: fields of a text run config given by ``distill`` itself (``device=``, ``out``, ``progress=``, ``num_threads=``)
RUN_LEVEL = ("device", "output_dir", "progress", "num_threads")
#: model fields a student takes from its teacher run unless given (a student keeps its teacher's PLM and vocabulary)
TEACHERS_OWN = ("plm",)
#: options of a method that are not fields of the text run config (the PMD chain's)
CHAIN_OPTIONS = ("grades", "mask_rates", "pre_distill", "stage_steps")


def _copied(f: dataclasses.Field, default: Any = dataclasses.MISSING, help_text: str | None = None) -> Any:
    """A field with ``f``'s default (or ``default``) and help (or ``help_text``)."""
    metadata = {**f.metadata, **({"help": help_text} if help_text else {})}
    if default is not dataclasses.MISSING:
        return field(default=default, metadata=metadata)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field(default_factory=f.default_factory, metadata=metadata)  # type: ignore[misc]
    return field(default=f.default, metadata=metadata)


def text_option(name: str) -> Any:
    """The field ``name`` of the text run config's distillation section (same default, same help): a method's own
    option, declared once in :class:`~kgdistill.text.config.DistillConfig`."""
    return _copied({f.name: f for f in dataclasses.fields(DistillConfig)}[name])


def _run_options() -> list[tuple[str, Any, Any]]:
    """Every field of the text run config's data, model, training and evaluation sections; the data fields default
    to the teacher run's graph (``None``)."""
    out = []
    for name, (section, f, tp) in flat_fields(TextRunConfig).items():
        if section is None or section == "distill" or name in RUN_LEVEL:
            continue
        if section == "data" or name in TEACHERS_OWN:
            text = re.sub(r"\s*\(default: [^)]*\)", "", f.metadata.get("help", name))
            out.append((name, tp | None, _copied(f, None, f"{text} (default: the teacher run's)")))
        else:
            out.append((name, tp, _copied(f)))
    return out


_TextRunOptions = make_dataclass("_TextRunOptions", _run_options(), frozen=True)


@dataclass(frozen=True)
class TextCommonConfig(_TextRunOptions):  # type: ignore[misc, valid-type]
    """Options of every text method: the student (its layers), the weight of the logit term and every field of the
    text run config's data, model, training and evaluation sections."""

    layers: list = text_option("layers")
    student_layers: int | None = text_option("student_layers")
    student_init: str = text_option("student_init")
    layer_choice: str = text_option("layer_choice")
    alpha: float = text_option("alpha")
    hrkd_holdout: float = text_option("hrkd_holdout")


def text_run_config(objective: str, teacher: Run, config: Any, out: str | Path | None, *, device: str = "cpu",
                    progress: bool = False) -> TextRunConfig:
    """The :class:`~kgdistill.text.config.TextRunConfig` of ``config`` (a text method's options) for the text
    objective ``objective``: the teacher run's graph and PLM unless an option says otherwise."""
    from kgdistill.config import with_overrides

    data_fields = {f.name for f in dataclasses.fields(type(teacher.config.data))}
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in CHAIN_OPTIONS or (f.name in data_fields and value is None):
            continue
        if f.name in TEACHERS_OWN and value is None:
            value = getattr(teacher.config.model, f.name)
        overrides[f.name] = value
    overrides.update(method=objective, teacher=str(teacher.path))
    base = TextRunConfig(data=teacher.config.data, device=device, progress=progress,
                         output_dir=None if out is None else str(out))
    return with_overrides(base, overrides)


def distil_text(config: TextRunConfig, grades: list[int] | None = None, mask_rates: list[float] | None = None,
                pre_distill: bool = True, *, resume: bool = False, ctx: DistContext | None = None,
                stage_steps: list[int] | None = None) -> list[Run]:
    """Train the student(s) ``config`` describes from its teacher run: the PMD chain when ``grades`` are given
    (one run folder per stage under ``config.output_dir``, default ``runs/pmd``), else one run folder at
    ``config.output_dir`` (``mask_rates[0]``, when given, is PMD's mask rate)."""
    from kgdistill.text.trainer import train_text

    d = config.distill
    if d.teacher is None:
        raise ConfigError("text distillation needs a teacher run folder (--teacher RUN_DIR)")
    if grades:
        if d.method != "pmd":
            raise ConfigError("--grades is the PMD chain: use it with --method pmd")
        if resume:
            raise ConfigError("the PMD chain cannot be resumed: run it again into a new --out")
        # the chain is PMD's: found through the method registry (imported on first use), as every method is
        return methods.get("pmd").run_chain(config, [int(g) for g in grades], [float(r) for r in mask_rates or []],
                                            pre_distill=pre_distill, ctx=ctx, stage_steps=stage_steps)
    if stage_steps:
        raise ConfigError("stage_steps splits the PMD chain's budget: give --grades too")
    if mask_rates:
        config = replace(config, distill=replace(d, mask_rate=float(mask_rates[0])))
    return [train_text(config, resume=resume, ctx=ctx)]


def text_row(name: str, run: Run) -> dict[str, Any]:
    """A summary row (the embedding methods' columns) of a text run: width = hidden size, throughput = entity
    encodings per second."""
    from kgdistill.distill.stage import summary_row
    from kgdistill.models.base import MODEL_WEIGHTS

    metrics = dict(run.metrics)
    weights = Path(run.path) / MODEL_WEIGHTS
    metrics.setdefault("bytes_on_disk", weights.stat().st_size if weights.exists() else None)
    metrics.setdefault("queries_per_second", metrics.get("entity_encoding_per_s"))
    metrics.setdefault("epochs_done", run.config.training.epochs)
    row = summary_row(name, run.model, metrics)
    row["dim"] = getattr(run.model, "hidden_size", None)
    return row


class TextMethod(Method):
    """A distillation method of text bi-encoders: its ``Config`` (a :class:`TextCommonConfig`) and the text
    objective (:data:`kgdistill.text.objective.objectives`) that trains each stage."""

    family: ClassVar[str] = "text"
    Config: ClassVar[type] = TextCommonConfig
    #: the name of the method's training objective in :data:`kgdistill.text.objective.objectives`
    objective: ClassVar[str]

    def chain(self, config: Any) -> dict[str, Any]:
        """The chain options of ``config`` (``grades``, ``mask_rates``, ``pre_distill``, ``stage_steps``; none for
        most methods)."""
        return {}

    def run(self, teacher: Run, config: Any, out: Path, *, device: str = "cpu", progress: bool = False,
            ctx: DistContext | None = None, resume: bool = False) -> list[Any]:
        from kgdistill.distill.stage import StageResult

        chain = self.chain(config)
        text_config = text_run_config(self.objective, teacher, config, out, device=device, progress=progress)
        runs = distil_text(text_config, resume=resume, ctx=ctx, **chain)
        return [StageResult(Path(r.path).name, Path(r.path), r.model, r.metrics, text_row(Path(r.path).name, r))
                for r in runs]

    def teacher_row(self, teacher: Run) -> dict[str, Any]:
        return text_row("teacher", teacher)


__all__ = ["TextCommonConfig", "TextMethod", "text_option", "text_run_config", "distil_text", "text_row",
           "CHAIN_OPTIONS"]
