"""``kgdistill distill``: one command for every method of the registry (embedding and text), options from each
method's config dataclass.

Picked up by :func:`kgdistill.cli._plugin_parsers`. ``kgdistill distill --help`` lists the methods;
``kgdistill distill --method NAME --help`` shows that method's options only, with their defaults, typed
placeholders and listed choices. Every method's options are parsed (an option that the chosen method does not
have is an error naming the method's options); an unknown method is a usage error with the close matches.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
import typing
from collections.abc import Callable
from typing import Any

from kgdistill.config import _base_types
from kgdistill.distill.method import methods

#: placeholders of options whose type alone says too little
METAVARS = {"dims": "DIM", "more_teachers": "RUN_DIR", "layers": "LAYER", "plm_layers": "LAYER", "grades": "LAYERS",
            "mask_rates": "RATE", "dataset": "NAME", "data_dir": "DIR", "data_url": "URL", "plm": "PLM",
            "hrkd_domains": "SPEC", "eval_splits": "SPLIT"}
TYPE_METAVARS = {int: "N", float: "X", str: "TEXT", bool: "BOOL"}


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _choices() -> dict[str, tuple[str, ...]]:
    """The fixed values of options that have them (shown in help; each method checks them as before)."""
    from kgdistill.distill import dualde, iterde, kd, metasd, pruning, text_pmd
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
            "mgfd_unmasked": text_pmd.MGFD_UNMASKED, "eval_splits": ("train", "valid", "test")}


def _kind(tp: Any) -> tuple[Any, bool]:
    """``(base type, is a list)`` of a config annotation."""
    base, _ = _base_types(tp)
    return base, base is list or typing.get_origin(base) is list


def _metavar(name: str, base: Any, choices: dict[str, tuple[str, ...]]) -> str:
    if name in choices:
        return "{" + ",".join(choices[name]) + "}"
    return METAVARS.get(name, TYPE_METAVARS.get(base, "VALUE"))


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else "none"
    return str(value)


def _all_options() -> dict[str, tuple[bool, bool]]:
    """``option -> (is a boolean, takes several values)`` over every method's config (imports each method's
    module; none imports ``transformers``)."""
    out: dict[str, tuple[bool, bool]] = {}
    for name in methods.names():
        cls = methods.get(name).Config
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            base, many = _kind(hints[f.name])
            was = out.get(f.name, (False, False))
            out[f.name] = (was[0] or base is bool, was[1] or many)
    return out


def _add_option(group: Any, name: str, boolean: bool, many: bool, help_text: str, metavar: str) -> None:
    flag = name.replace("_", "-")
    if boolean:  # --flag / --no-flag; --flag true|false is still understood
        group.add_argument(f"--{flag}", dest=f"opt_{name}", default=None, nargs="?", const="true", metavar="BOOL",
                           help=help_text)
        group.add_argument(f"--no-{flag}", dest=f"opt_{name}", action="store_const", const="false",
                           help=argparse.SUPPRESS)
    else:
        group.add_argument(f"--{flag}", dest=f"opt_{name}", default=None, metavar=metavar, help=help_text,
                           **({"nargs": "+"} if many else {}))


def _add_file_flags(p: Any) -> None:
    p.add_argument("--config", default=None, metavar="FILE", help="text methods: a text run config YAML (as "
                   "text-distill reads it; e.g. a run's text_config.yaml) whose values this method's options start "
                   "from; flags override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any option of the method, e.g. --set temperature=2 or --set training.lr=1e-4 (repeatable; "
                        "wins over the flags)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default=None, metavar="RUN_DIR", help="run folder of the trained teacher (required), "
                   "or a PyKEEN result folder (with --dataset; imported into OUT/teacher-pykeen first)")
    p.add_argument("--trust-pickle", action="store_true", help="with a PyKEEN --teacher: load its pickles (required: "
                   "unpickling a file from an untrusted source can run arbitrary code)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/distill-<method>-<time>); "
                   "a single-stage text method writes its run folder there")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--progress", nargs="?", const="true", default="true", metavar="BOOL",
                   help="progress bars when stderr is a terminal (default: true); --no-progress: none")
    p.add_argument("--no-progress", dest="progress", action="store_const", const="false", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    p.add_argument("--resume", action="store_true",
                   help="continue the distillation in --out (same method and options): finished stages are kept, "
                        "an interrupted one continues from its checkpoint")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="run N data-parallel processes on this machine (torchrun --standalone --nproc-per-node N)")


def _doc(cls: type) -> str:
    """The method's docstring, else its module's."""
    import sys

    own = cls.__dict__.get("__doc__")
    return (own or sys.modules[cls.__module__].__doc__ or "").strip()


def _summary(name: str) -> str:
    cls = methods.get(name)
    doc = _doc(cls).splitlines()
    return f"{name} ({cls.family}){': ' + doc[0] if doc else ''}"


def method_help(method: str) -> str:
    """The help of ``kgdistill distill --method METHOD``: the common options and that method's options only, with
    their defaults (``None`` of an embedding method: the teacher run's value)."""
    name = methods.canonical(method)
    cls = methods.get(name)
    doc = _doc(cls)
    p = argparse.ArgumentParser(prog=f"kgdistill distill --method {name}", description=doc, add_help=False)
    p.add_argument("-h", "--help", action="store_true", help="show this help")
    _add_common(p)
    if cls.family == "embedding":
        p.add_argument("--dataset", default=None, metavar="NAME", help="with a PyKEEN --teacher: the kgdistill "
                       "dataset (name or folder) whose ids it is mapped onto, by label")
    _add_file_flags(p)
    from kgdistill.tracking import add_tracker_flags

    add_tracker_flags(p)
    title = f"{name} options" + (" (no default shown: the teacher run's value)" if cls.family == "embedding" else "")
    group = p.add_argument_group(title)
    choices = _choices()
    hints = typing.get_type_hints(cls.Config)
    for f in dataclasses.fields(cls.Config):
        base, many = _kind(hints[f.name])
        default = _default(f)
        text = f.metadata.get("help", "")
        if default is not None and default != []:  # the real default replaces a description of the inherited one
            text = f"{re.sub(r'[ ;]*[(]default: [^)]*[)]', '', text)} (default: {_shown(default)})"
        elif default == [] and "(default:" not in text:
            text = f"{text} (default: none)"
        _add_option(group, f.name, base is bool, many, text.replace("%", "%%"), _metavar(f.name, base, choices))
    return p.format_help()


def general_help(parser: argparse.ArgumentParser) -> str:
    lines = [parser.format_help().rstrip(), "", "methods (kgdistill distill --method NAME --help: its options):"]
    lines += [f"  {_summary(n)}" for n in methods.names()]
    return "\n".join(lines) + "\n"


def register(subparsers: Any, command: Callable) -> None:
    names = methods.names()
    p = subparsers.add_parser("distill", add_help=False,
                              help=f"distil a teacher run into smaller students ({', '.join(names)}); one run folder "
                                   f"per stage",
                              description="Distil a teacher run (an embedding model or a text bi-encoder) with one "
                                          "of the registered methods.")
    p.add_argument("-h", "--help", dest="distill_help", action="store_true",
                   help="show this help; with --method NAME: that method's options")
    p.add_argument("--method", default=None, metavar="METHOD", help=f"one of: {', '.join(names)} (required)")
    _add_common(p)
    p.add_argument("--dataset", default=None, metavar="NAME", help="with a PyKEEN --teacher: the kgdistill dataset "
                   "(name or folder) whose ids it is mapped onto, by label; a text method's graph")
    p.add_argument("--num-threads", dest="threads", type=int, default=None, help=argparse.SUPPRESS)  # text flag
    _add_file_flags(p)
    group = p.add_argument_group("method options (kgdistill distill --method NAME --help)")
    for name, (boolean, many) in _all_options().items():
        if name == "dataset":
            continue
        _add_option(group, name, boolean, many, argparse.SUPPRESS, "VALUE")

    def handler(args: argparse.Namespace) -> int:
        return run(args, p)

    command("distill")(handler)


def file_options(method: str, path: str | None) -> dict[str, Any]:
    """A text method's options read from a text run config YAML (``--config``): every field the method has (the
    file's distillation method, teacher and output folder are the command's)."""
    if path is None:
        return {}
    from kgdistill.config import flat_fields, load_yaml
    from kgdistill.errors import ConfigError
    from kgdistill.text.config import TextRunConfig

    cls = methods.get(method)
    if cls.family != "text":
        raise ConfigError(f"--config is a text run config, for the text methods; {method}'s options are flags "
                          f"(or --set KEY=VALUE)")
    config = load_yaml(path, TextRunConfig)  # type: ignore[arg-type]
    own = {f.name for f in dataclasses.fields(cls.Config)}
    out: dict[str, Any] = {}
    for name, (section, _, _) in flat_fields(TextRunConfig).items():
        if name in own:
            out[name] = getattr(getattr(config, section) if section else config, name)
    return out


def set_options(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as options (a dotted key's last part is the option: ``training.lr`` → ``lr``)."""
    from kgdistill.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip().rsplit(".", 1)[-1].replace("-", "_")] = value
    return out


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    import os

    from kgdistill.config import coerce
    from kgdistill.distill.api import distill
    from kgdistill.errors import ConfigError

    if args.distill_help:
        if args.method is None:
            print(general_help(parser) if parser is not None else "", end="")
        else:
            print(method_help(args.method), end="")  # an unknown name: one line with the close matches (exit 2)
        return 0
    if args.method is None or args.teacher is None:
        missing = " and ".join(f for f, v in (("--method", args.method), ("--teacher", args.teacher)) if v is None)
        if parser is not None:
            parser.error(f"the following arguments are required: {missing} (methods: {', '.join(methods.names())})")
        raise ConfigError(f"distill needs {missing}")
    method = methods.canonical(args.method)  # unknown: a usage error naming the close matches
    family = methods.get(method).family
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from kgdistill.cli import strip_nproc
        from kgdistill.distributed import launch_torchrun

        if args.out is None:  # every process must write into the same folder
            args.argv = [*args.argv, "--out", f"runs/distill-{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"]
        return launch_torchrun(args.nproc, strip_nproc(args.argv))
    if args.resume and args.out is None:
        raise ConfigError("--resume needs the --out folder of the distillation to continue")

    list_options = {k for k, (_, many) in _all_options().items() if many}
    options: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("opt_") and value is not None:
            if key[4:] in list_options:
                value = [d for v in value for d in str(v).split(",") if d]
            options[key[4:]] = value
    if family == "text" and args.dataset is not None:
        options["dataset"] = args.dataset
    options = {**file_options(method, args.config), **options, **set_options(args.set)}
    out = args.out or f"runs/distill-{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress = coerce("progress", args.progress, bool)
    if family != "text":
        from kgdistill.interop.teacher import teacher_folder

        args.teacher = teacher_folder(args.teacher, args.dataset, out, resume=args.resume,
                                      trust_pickle=args.trust_pickle)
    report = distill(method, args.teacher, out, device=args.device, progress=progress,
                     num_threads=args.threads, resume=args.resume, **options)
    if os.environ.get("RANK", "0") == "0":
        print(f"method {report.method}: run folders under {report.out}")
        print(report.table())
    return 0
