"""Option validation before anything is created: each wrong value is one :class:`ConfigError` naming the option,
the value and what is expected, raised before a run folder (or its ``config.yaml``) exists.

The rules are keyed by field name, so they apply to every configuration that has the field (the KGE
:class:`~kgdistill.config.RunConfig` and the text runs' configuration alike).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from kgdistill.errors import ConfigError

C = TypeVar("C")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(name: str, value: Any) -> str:
    """``--dim 0 (dim)``: the flag as typed on the command line and the config key of YAML / library callers."""
    shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
    return f"{_flag(name)} {shown} ({name})"


def _number(name: str, value: Any, *, minimum: float | None = None, above: float | None = None,
            below: float | None = None, integer: bool = False, expected: str) -> None:
    if value is None:
        return
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or \
        (integer and not float(value).is_integer()) or not math.isfinite(value) or \
        (minimum is not None and value < minimum) or (above is not None and value <= above) or \
        (below is not None and value >= below)
    if bad:
        raise ConfigError(f"{_option(name, value)}: expected {expected}")


def _int_at_least(n: int) -> Callable[[str, Any], None]:
    return lambda name, v: _number(name, v, minimum=n, integer=True, expected=f"an integer ≥ {n}")


def _positive(name: str, v: Any) -> None:
    _number(name, v, above=0, expected="a finite number > 0")


def _non_negative(name: str, v: Any) -> None:
    _number(name, v, minimum=0, expected="a finite number ≥ 0")


#: field name -> check(name, value); a field that is None (optional, unset) passes
RULES: dict[str, Callable[[str, Any], None]] = {
    "dim": _int_at_least(1),
    "epochs": _int_at_least(0),
    "batch_size": _int_at_least(1),
    "lr": _positive,
    "weight_decay": _non_negative,
    "margin": _non_negative,
    "adversarial_temperature": _non_negative,
    "num_negatives": _int_at_least(1),
    "regularizer_weight": _non_negative,
    "label_smoothing": lambda n, v: _number(n, v, minimum=0, below=1, expected="a number in [0, 1)"),
    "seed": _int_at_least(0),
    "eval_every": _int_at_least(0),
    "patience": _int_at_least(0),
    "checkpoint_every": _int_at_least(0),
    "max_grad_norm": _positive,
    "num_threads": _int_at_least(1),
    "init_scale": _positive,
    "eval_batch_size": _int_at_least(1),
    "warmup_steps": _int_at_least(0),
    "steps_per_epoch": _int_at_least(0),
    "mask_rate": lambda n, v: _fraction(n, v, "a fraction of the tokens masked"),
    "hrkd_holdout": lambda n, v: _fraction(n, v, ""),
    "dims": lambda n, v: _positive_ints(n, v),
    # distillation options (every method that has them): temperatures divide scores, weights scale loss terms
    "temperature": _positive,
    "kd_temperature": _positive,
    "soft_weight": _non_negative,
    "hard_weight": _non_negative,
}


def _fraction(name: str, value: Any, what: str) -> None:
    """``name`` in [0, 1) (``what``: its meaning, shown in the message)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name} must be in [0, 1){f' ({what})' if what else ''}, got {value}")


def _positive_ints(name: str, value: Any) -> None:
    """A list of integers ≥ 1 (empty: the option's default applies, e.g. IterDE's halving chain)."""
    if not isinstance(value, list) or \
            any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ConfigError(f"{name}: expected positive integers, got {value!r}")


def _check_choices(config: Any) -> None:
    """Fields declared with ``choices`` (:func:`kgdistill.config.opt`) hold one of them."""
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            _check_choices(value)
        elif "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{f.name} must be one of {', '.join(f.metadata['choices'])}, got {value!r}")

EVAL_SPLITS = ("train", "valid", "test")


def check_device(device: str, option: str = "--device") -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` that this torch build and machine can use."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{option} {device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = f"this torch build ({torch.__version__}) has no CUDA support" if torch.version.cuda is None \
                else "no CUDA GPU is visible"
            raise ConfigError(f"{option} {device}: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {device}: only {torch.cuda.device_count()} CUDA device(s) visible "
                              f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    elif dev.type != "cpu":
        raise ConfigError(f"{option} {device!r}: expected cpu, cuda or cuda:N")


def _check_names(values: dict[str, Any]) -> None:
    """Names chosen from registries (training mode, optimiser, loss, ...), with close-match suggestions."""
    from kgdistill.registry import suggest

    checks: list[tuple[str, Callable[[], list[str]]]] = []
    if "training_mode" in values:
        checks.append(("training_mode", lambda: ["slcwa", "1vsall", "kvsall"]))
    if "grad_sync" in values:
        checks.append(("grad_sync", lambda: ["dense", "sparse", "auto"]))
    for name, registry in (("optimizer", "kgdistill.training.optim:optimizers"),
                           ("loss", "kgdistill.losses:losses"), ("regularizer", "kgdistill.losses:regularizers"),
                           ("negative_sampler", "kgdistill.training.negatives:negative_samplers")):
        if name in values:
            checks.append((name, _registry_names(registry)))
    for name, known in checks:
        value = values[name]
        if value is None:  # an option left unset (a distillation method's: the teacher run's value)
            continue
        names = known()
        exact = name in ("training_mode", "grad_sync")  # compared as written by the trainer
        if not isinstance(value, str) or (value not in names if exact else
                                          value.lower() not in {n.lower() for n in names}):
            raise ConfigError(f"{_option(name, value)}: unknown; known: {', '.join(names)}."
                              f"{suggest(str(value), names)}")


def _registry_names(spec: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        import importlib

        module, _, attr = spec.partition(":")
        registry = getattr(importlib.import_module(module), attr)
        return list(registry.names())

    return names


def _flat_values(config: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            out.update(_flat_values(value))
        else:
            out[f.name] = value
    return out


def validate_config(config: C) -> C:
    """Check every option of ``config`` (a run configuration dataclass); return it with ``data_dir`` made absolute.

    Raises :class:`ConfigError` on the first wrong value: numbers out of range (``--dim 0``, ``--lr nan``,
    ``--label-smoothing 2`` ...), unknown names, a device this machine does not have, a ``--data-dir`` that is not a
    folder (no silent fallback to ``$KGDISTILL_DATA``), evaluation splits other than train/valid/test.
    """
    values = _flat_values(config)
    _check_choices(config)
    for name, check in RULES.items():
        if name in values:
            check(name, values[name])
    _check_names(values)
    if isinstance(values.get("device"), str):
        check_device(values["device"])
    if "model_options" in values and not isinstance(values["model_options"], dict):
        raise ConfigError(f"--model-options {values['model_options']!r}: expected a mapping such as '{{p: 2}}'")
    splits = values.get("eval_splits")
    if splits is not None:
        wrong = [s for s in splits if s not in EVAL_SPLITS]
        if wrong or not splits:
            raise ConfigError(f"--eval-splits {','.join(map(str, splits))}: expected one or more of "
                              f"{', '.join(EVAL_SPLITS)}")
    data_dir = values.get("data_dir")
    if data_dir:
        folder = Path(os.path.expanduser(str(data_dir)))
        if not folder.is_dir() and not (values.get("download") and not folder.exists()):  # --download creates it
            what = "is a file" if folder.exists() else "does not exist"
            raise ConfigError(f"--data-dir {data_dir}: {what} (expected the folder holding the named datasets; "
                              f"nothing falls back to $KGDISTILL_DATA when --data-dir is given)")
        data = getattr(config, "data", None)
        if data is not None and hasattr(data, "data_dir"):
            config = replace(config, data=replace(data, data_dir=str(folder.resolve())))  # type: ignore[type-var]
    return config


def check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected a TCP port number in 0 … 65535 (0: any free port)")


#: options of ``train`` that do not change what a run computes: ``--resume`` accepts them
RESUME_OPTIONS = ("epochs", "num_threads", "progress", "device")


def check_resume_options(given: dict[str, Any], config_file: str | None, sets: list[str],
                         allowed: tuple[str, ...] = RESUME_OPTIONS) -> None:
    """``train --resume RUN`` continues RUN with its own ``config.yaml``: only ``--epochs`` and run-independent
    options (``allowed``) may be given; anything else is refused rather than silently ignored."""
    refused = sorted(_flag(k) for k, v in given.items() if v is not None and k not in allowed)
    if config_file:
        refused.append("--config")
    if sets:
        refused.append("--set")
    if refused:
        raise ConfigError(f"--resume continues a run with the options in its config.yaml; {', '.join(refused)} "
                          f"cannot change them (allowed with --resume: "
                          f"{', '.join(_flag(k) for k in allowed)}); start a new run with --out instead")


def resume_options(args: Any, allowed: tuple[str, ...] = RESUME_OPTIONS, config_class: type | None = None
                   ) -> dict[str, Any]:
    """The keyword arguments of :func:`kgdistill.runs.resume` from ``train --resume`` flags (``cfg_*`` attributes
    of the parsed arguments), each checked; other flags are refused (:func:`check_resume_options`). Values are
    coerced to the types of ``config_class``'s fields (default: the KGE run config), as on a new run."""
    from kgdistill.config import RunConfig, coerce_field, flat_fields

    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    check_resume_options(given, getattr(args, "config", None), getattr(args, "set", None) or [], allowed)
    flat = flat_fields(config_class or RunConfig)
    out = {k: coerce_field(k, v, flat[k][1], flat[k][2]) for k, v in given.items()}
    for name, value in out.items():
        if name in RULES:
            RULES[name](name, value)
    if "device" in out:
        check_device(out["device"])
    return out


__all__ = ["RULES", "RESUME_OPTIONS", "validate_config", "check_device", "check_port", "check_resume_options",
           "resume_options"]
