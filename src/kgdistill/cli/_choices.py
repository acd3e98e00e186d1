"""Placeholders and listed choices of the options generated from config dataclasses (``train``, ``text-train``,
``distill --method NAME``): the values themselves are checked by the config layer and each method, as in the
library."""

from __future__ import annotations

import functools
import typing
from collections.abc import Sequence
from typing import Any

from kgdistill.config import _base_types

#: placeholders of options whose type alone says too little
METAVARS = {"dims": "DIM", "step_lrs": "LR", "stage_steps": "STEPS",
            "more_teachers": "RUN_DIR", "layers": "LAYER", "plm_layers": "LAYER", "grades": "LAYERS",
            "mask_rates": "RATE", "dataset": "NAME", "data_dir": "DIR", "data_url": "URL", "plm": "PLM",
            "hrkd_domains": "SPEC", "eval_splits": "SPLIT", "output_dir": "DIR", "teacher": "RUN_DIR"}
TYPE_METAVARS = {int: "N", float: "X", str: "TEXT", bool: "BOOL"}


@functools.cache
def choices() -> dict[str, tuple[str, ...]]:
    """The fixed values of options that have them (shown in help; each method checks them as before)."""
    from kgdistill.distill import distiller, dualde, iterde, kd, metasd, pruning, text_pmd
    from kgdistill.distill.schedules import schedules
    from kgdistill.losses import regularizers
    from kgdistill.text.config import CHOICES
    from kgdistill.training.optim import optimizers

    return {**CHOICES, "optimizer": tuple(optimizers.names()), "regularizer": tuple(regularizers.names()),
            "training_mode": ("slcwa", "1vsall"), "loss": ("nssa", "margin", "softplus"),
            "schedule": tuple(schedules.names()), "kd_loss": kd.KD_LOSSES, "weighting": dualde.WEIGHTINGS,
            "soft_loss": iterde.SOFT_LOSSES, "huber_reduction": iterde.HUBER_REDUCTIONS,
            "swda_weight": iterde.SWDA_WEIGHTS, "quiz": metasd.QUIZ_MODES, "lookahead": metasd.LOOKAHEAD_MODES,
            "mutual_kl": metasd.MUTUAL_KL_MODES, "pruning": tuple(pruning.PRUNING_SCOPES),
            "init": ("scratch", "teacher"), "pooling": ("mean", "cls"), "student_init": ("teacher", "pretrained"),
            "mgfd_variant": text_pmd.MGFD_VARIANTS, "mgfd_reduction": text_pmd.MGFD_REDUCTIONS,
            "mgfd_unmasked": text_pmd.MGFD_UNMASKED, "eval_splits": ("train", "valid", "test"),
            "teacher_precision": distiller.TEACHER_PRECISIONS}


def kind(tp: Any) -> tuple[Any, bool]:
    """``(base type, is a list)`` of a config annotation."""
    base, _ = _base_types(tp)
    return base, base is list or typing.get_origin(base) is list


def metavar(name: str, base: Any) -> str:
    """``{a,b,c}`` of an option with fixed values, else its placeholder."""
    fixed = choices()
    if name in fixed:
        return "{" + ",".join(fixed[name]) + "}"
    return METAVARS.get(name, TYPE_METAVARS.get(base, "VALUE"))


def field_metavar(name: str, tp: Any, fixed: Sequence[str] | None = None) -> str:
    """The placeholder of a run config field's flag: ``{a,b,c}`` of a field declared with ``choices``
    (``fixed``), else by name or type; a list is one value, ``a,b`` or ``[a, b]``."""
    base, many = kind(tp)
    shown = "{" + ",".join(fixed) + "}" if fixed else METAVARS.get(name, TYPE_METAVARS.get(base, "VALUE"))
    return f"{shown}[,{shown}...]" if many else shown
