"""Frozen dataclass configurations, saved with every run (YAML), with dotted overrides and clear key errors.

Each field's ``metadata["help"]`` is the documentation shown by the CLI (``metadata["choices"]``: the values it
accepts, checked by :func:`kgdistill.validate.validate_config`; ``metadata["item"]``: the type of a list's items).
Field names are unique across the sections of :class:`RunConfig`, so every field is also a CLI flag
``--field-name``.

This module is the one coercion layer of every configuration (KGE runs, text runs, distillation methods): a value
from YAML, a flag or a keyword argument becomes the field's type in :func:`coerce_field`, reached through
:func:`from_dict` (nested mappings), :func:`from_options` (flat ``{field: value}``) and :func:`with_overrides`
(dotted or flat keys over an existing config). Range and name checks follow in :mod:`kgdistill.validate`.

A run configuration class names its model kind (``KIND``: ``kge`` or ``text``); :func:`save_yaml` records it as the
top-level ``kind`` key of the file and :func:`load_yaml` / :func:`load_config` read it back (a file without it is
a ``kge`` config, as written before kinds were recorded).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from kgdistill.errors import ConfigError
from kgdistill.registry import suggest

C = TypeVar("C")


def opt(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" reads best at the call sites
    """A dataclass field with a default and its help text."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = opt("nations", "dataset name (nations, kinship, umls, wn18rr, fb15k-237) or a folder path")
    data_dir: str | None = opt(None, "folder holding named datasets (default: $KGDISTILL_DATA)")
    download: bool = opt(False, "download a named dataset that is not found locally (checked by sha256)")
    data_url: str | None = opt(None, "mirror for --download (default: $KGDISTILL_DATA_URL)")


@dataclass(frozen=True)
class ModelConfig:
    model: str = opt("transe", "interaction: transe, distmult, complex, rotate, simple")
    dim: int = opt(64, "model dimension (complex models store 2·dim reals per row)")
    model_options: dict = opt({}, "interaction options, e.g. {p: 2} for TransE-L2, {norm: l2} for RotatE")
    reciprocal: bool | None = opt(None, "inverse relations (default: on for 1-N training, off otherwise)")
    entity_constraint: str | None = opt(None, "none | unit_norm (default: unit_norm for TransE)")
    init_scale: float | None = opt(None, "normal(0, scale) initialisation instead of the paper's")


@dataclass(frozen=True)
class TrainingConfig:
    training_mode: str = opt("slcwa", "slcwa (negative sampling) | 1vsall | kvsall (1-N with reciprocal relations)")
    epochs: int = opt(100, "number of epochs")
    batch_size: int = opt(1024, "training batch size (triples; queries for kvsall)")
    optimizer: str = opt("adam", "adam | adagrad | sgd | adamw")
    lr: float = opt(1e-3, "learning rate")
    weight_decay: float = opt(0.0, "optimiser weight decay")
    loss: str = opt("nssa", "negative-sampling loss: nssa | margin | softplus")
    margin: float = opt(9.0, "margin γ of the nssa / margin loss")
    adversarial_temperature: float = opt(1.0, "self-adversarial temperature α (0 = uniform negatives)")
    num_negatives: int = opt(64, "negatives per positive (half heads, half tails for the uniform sampler)")
    negative_sampler: str = opt("uniform", "uniform | bernoulli (Wang et al., 2014)")
    regularizer: str = opt("none", "none | l2 | n3 | dura")
    regularizer_weight: float = opt(0.0, "regulariser weight")
    label_smoothing: float = opt(0.0, "label smoothing of kvsall")
    seed: int = opt(42, "random seed (initialisation, shuffling, negatives)")
    eval_every: int = opt(10, "validation every N epochs (0: only at the end)")
    patience: int = opt(5, "early stopping: validations without improvement (0: off)")
    checkpoint_every: int = opt(1, "write checkpoints/last.pt every N epochs")
    max_grad_norm: float | None = opt(None, "clip the gradient norm")
    grad_sync: str = opt("dense", "several processes: gradient synchronisation of embedding tables: dense "
                         "(DDP all-reduce) | sparse (exchange the touched rows) | auto (per step, by rows touched)")
    num_threads: int | None = opt(None, "torch CPU threads (default: torch's choice)")
    retain_memory: bool = opt(True, "keep freed memory in the process (glibc) instead of returning it to the OS; "
                                    "a process-wide setting, applied by the command line")


@dataclass(frozen=True)
class EvaluationConfig:
    eval_batch_size: int = opt(256, "queries per evaluation chunk (bounds peak memory: batch × entities scores)")
    filtered: bool = opt(True, "filtered ranking against train ∪ valid ∪ test")
    eval_splits: list = opt(["valid", "test"], "splits evaluated at the end of training")


@dataclass(frozen=True)
class RunConfig:
    """A KGE (embedding model) run: the ``kge`` kind of :data:`CONFIG_KINDS`."""

    KIND: ClassVar[str] = "kge"

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    device: str = opt("cpu", "cpu | cuda | cuda:N")
    output_dir: str | None = opt(None, "run folder (default: runs/<dataset>-<model>-<time>)")
    progress: bool = opt(True, "show a progress bar")


# ---- generic helpers -------------------------------------------------------------------------------------------
def _sections(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}


def flat_fields(cls: type = RunConfig) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
    """``field name -> (section or None, Field, type)`` over all sections."""
    out: dict[str, tuple[str | None, dataclasses.Field, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            sub_hints = typing.get_type_hints(hints[f.name])
            for sf in fields(hints[f.name]):
                out[sf.name] = (f.name, sf, sub_hints[sf.name])
        else:
            out[f.name] = (None, f, hints[f.name])
    return out


def _base_types(tp: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of an annotation like ``int | None``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return non_none[0], len(non_none) < len(args)
    return tp, False


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field type or raise :class:`ConfigError` naming the key."""
    base, optional = _base_types(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required (expected {getattr(base, '__name__', base)})")
    if isinstance(value, str) and base in (dict, list):
        try:
            value = yaml.safe_load(value) if value.strip() else base()
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot read {value!r} as a YAML {'mapping' if base is dict else 'list'} "
                              f"({getattr(err, 'problem', None) or err}); e.g. "
                              f"{'{p: 2}' if base is dict else '[valid, test]'}") from None
        if base is list and isinstance(value, str):
            value = [v for v in value.split(",") if v]
    try:
        if base is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if base is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
        if base is list:
            if isinstance(value, (tuple, list)):
                return list(value)
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def coerce_field(key: str, value: Any, f: dataclasses.Field, tp: Any) -> Any:
    """:func:`coerce` to the field's type ``tp``, then each item of a list to the field's ``metadata["item"]``
    type (``dims: [8, "4"]`` → ``[8, 4]``)."""
    value = coerce(key, value, tp)
    item = f.metadata.get("item")
    if item is not None and isinstance(value, list):
        try:
            value = [coerce(key, v, item) for v in value]
        except ConfigError:
            raise ConfigError(f"{key}: expected {getattr(item, '__name__', item)} items, got {value!r}") from None
    return value


def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "") -> C:
    """Build ``cls`` from nested dicts; unknown keys raise :class:`ConfigError` with the allowed keys."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    names = list(by_name)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}; allowed keys{' in ' + where.rstrip('.') if where else ''}:"
                              f" {', '.join(names)}.{suggest(key, names)}")
        if is_dataclass(hints[key]):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of {', '.join(f.name for f in fields(hints[key]))}")
            kwargs[key] = from_dict(hints[key], value, where=f"{path}.")
        else:
            kwargs[key] = coerce_field(path, value, by_name[key], hints[key])
    return cls(**kwargs)


def from_options(cls: type[C], options: dict[str, Any], owner: str = "") -> C:
    """Build the flat config ``cls`` (no sections, e.g. a distillation method's) from ``{field: value}``: names may
    use dashes, values are coerced by :func:`coerce_field`; an unknown name is refused naming ``owner``'s options."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    names = list(by_name)
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        key = key.replace("-", "_")
        if key not in by_name:
            raise ConfigError(f"{owner + ': ' if owner else ''}unknown option {key!r}; options"
                              f"{' of this method' if owner else ''}: {', '.join(names)}.{suggest(key, names)}")
        kwargs[key] = coerce_field(key, value, by_name[key], hints[key])
    return cls(**kwargs)


#: model kind -> ``module:class`` of its run configuration (imported on first use)
CONFIG_KINDS = {"kge": "kgdistill.config:RunConfig", "text": "kgdistill.text.config:TextRunConfig"}


def config_class(kind: str) -> type:
    """The run configuration class of the model kind ``kind`` (``kge`` or ``text``)."""
    import importlib

    if kind not in CONFIG_KINDS:
        raise ConfigError(f"kind must be one of {', '.join(CONFIG_KINDS)}, got {kind!r}")
    module, _, name = CONFIG_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def config_kind(config: Any) -> str:
    """The model kind of a run configuration (instance or class): ``kge`` or ``text``."""
    cls = config if isinstance(config, type) else type(config)
    kind = getattr(cls, "KIND", None)
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"{cls.__name__} is not a run configuration (no model kind)")
    return str(kind)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def with_overrides(config: C, overrides: dict[str, Any]) -> C:
    """Apply ``{"training.lr": 0.1, "dim": 32, ...}``: dotted paths or unique flat field names."""
    nested = to_dict(config)
    flat = flat_fields(type(config))
    for key, value in overrides.items():
        parts = key.replace("-", "_").split(".")
        if len(parts) == 1:
            if parts[0] not in flat:
                raise ConfigError(f"unknown option {key!r}; known options: {', '.join(sorted(flat))}."
                                  f"{suggest(parts[0], list(flat))}")
            section = flat[parts[0]][0]
            parts = [section, parts[0]] if section else parts
        target = nested
        for p in parts[:-1]:
            if p not in target or not isinstance(target[p], dict):
                raise ConfigError(f"unknown config section {p!r} in {key!r}; sections: "
                                  f"{', '.join(k for k, v in nested.items() if isinstance(v, dict))}")
            target = target[p]
        target[parts[-1]] = value
    return from_dict(type(config), nested)


def _read_mapping(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML text file (invalid UTF-8 at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _file_kind(path: Path, data: dict[str, Any] | None) -> str | None:
    """The ``kind`` recorded in a config file (removed from ``data``), None when the file has none."""
    if not data or "kind" not in data:
        return None
    kind = data.pop("kind")
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"{path}: kind must be one of {', '.join(CONFIG_KINDS)}, got {kind!r}")
    return str(kind)


def load_yaml(path: str | Path, cls: type[C] = RunConfig) -> C:  # type: ignore[assignment]
    """Read the YAML config file ``path`` as ``cls``; a ``kind`` recorded in the file must be ``cls``'s."""
    path = Path(path)
    data = _read_mapping(path)
    kind, want = _file_kind(path, data), getattr(cls, "KIND", None)
    if kind is not None and want is not None and kind != want:
        raise ConfigError(f"{path}: the config of a {kind} run (kind: {kind}); this reads {want} run configs")
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_config(path: str | Path, kind: str | None = None) -> Any:
    """Read a run config file as the class of the model kind it records (``kind: text`` → a text run config; a
    file without ``kind`` is a ``kge`` one). With ``kind`` given, a file of another kind is refused."""
    path = Path(path)
    data = _read_mapping(path)
    found = _file_kind(path, data) or "kge"
    if kind is not None and found != kind:
        raise ConfigError(f"{path}: the config of a {found} run (kind: {found}); expected a {kind} run config")
    try:
        return from_dict(config_class(found), data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dump_yaml(config: Any) -> str:
    """The YAML text of ``config``: its fields, after the ``kind`` line of a run configuration."""
    kind = getattr(type(config), "KIND", None)
    return yaml.safe_dump({**({"kind": kind} if kind else {}), **to_dict(config)}, sort_keys=False)


def save_yaml(config: Any, path: str | Path) -> None:
    """Write :func:`dump_yaml` of ``config`` to ``path`` atomically."""
    from kgdistill.atomicio import atomic_write_text

    atomic_write_text(path, dump_yaml(config))


__all__ = ["DataConfig", "ModelConfig", "TrainingConfig", "EvaluationConfig", "RunConfig", "CONFIG_KINDS", "from_dict",
           "from_options", "to_dict", "with_overrides", "load_yaml", "load_config", "save_yaml", "dump_yaml",
           "flat_fields", "coerce", "coerce_field", "config_class", "config_kind", "replace"]
