"""``kgdistill distill``: one command for every method of the registry (embedding and text), options from each
method's config dataclass.

``kgdistill distill --help`` lists the methods; ``kgdistill distill --method NAME --help`` shows that method's
options only, with their defaults, typed placeholders and listed choices. Every method's options are parsed (an
option that the chosen method does not have is an error naming the method's options); an unknown method is a
usage error with the close matches. ``kgdistill benchmark`` is in :mod:`kgdistill.cli.benchmark`.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
import typing
from pathlib import Path
from typing import Any

import click

from kgdistill.cli._choices import kind, metavar
from kgdistill.cli._common import (Args, BoolOption, Command, ListOption, grouped, is_main_process,
                                   print_config_option, relaunch, tracker_options, verb)
from kgdistill.distill.method import methods
from kgdistill.errors import ConfigError, KGDistillError


class MethodName(click.ParamType):
    """A registered distillation method (any spelling or alias); kept as given. Unknown: a usage error with the
    close matches."""

    name = "method"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            methods.canonical(value)
        except KGDistillError as err:
            self.fail(str(err), param, ctx)
        return value


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


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
            base, many = kind(hints[f.name])
            was = out.get(f.name, (False, False))
            out[f.name] = (was[0] or base is bool, was[1] or many)
    return out


def _option(name: str, boolean: bool, many: bool, help_text: str | None, shown: str, title: str) -> click.Option:
    """A method option (``opt_NAME``), hidden without ``help_text``."""
    decls = [f"--{name.replace('_', '-')}", f"opt_{name}"]
    hidden = help_text is None
    if boolean:
        option: click.Option = BoolOption(decls, default=None, help=help_text, hidden=hidden)
    elif many:
        option = ListOption(decls, default=None, metavar=shown, help=help_text, hidden=hidden)
    else:
        option = click.Option(decls, default=None, metavar=shown, help=help_text, hidden=hidden)
    return grouped(option, title)


def _file_options() -> list[click.Option]:
    return [click.Option(["--config"], default=None, metavar="FILE",
                         help="the method's options as YAML (what --print-config prints), or for a text method a "
                              "text run config (e.g. a run's config.yaml); flags override it"),
            print_config_option(),
            click.Option(["--set"], multiple=True, metavar="KEY=VALUE",
                         help="set any option of the method, e.g. --set temperature=2 or --set training.lr=1e-4 "
                              "(repeatable; wins over the flags)")]


def _common() -> list[click.Parameter]:
    return [
        click.Option(["--teacher"], default=None, metavar="RUN_DIR",
                     help="run folder of the trained teacher (required), or a PyKEEN result folder (with --dataset; "
                          "imported into OUT/teacher-pykeen first)"),
        click.Option(["--trust-pickle"], is_flag=True,
                     help="with a PyKEEN --teacher: load its pickles (required: unpickling a file from an untrusted "
                          "source can run arbitrary code)"),
        click.Option(["--out"], default=None, metavar="DIR",
                     help="output folder (default: runs/distill-<method>-<time>); a single-stage text method writes "
                          "its run folder there"),
        click.Option(["--device"], default="cpu", metavar="DEVICE", help="cpu | cuda | cuda:N (default: cpu)"),
        BoolOption(["--progress"], default="true",
                   help="progress bars when stderr is a terminal (default: true); --no-progress: none"),
        click.Option(["--threads"], type=int, default=None, metavar="N", help="torch CPU threads"),
        click.Option(["--resume"], is_flag=True,
                     help="continue the distillation in --out (same method and options): finished stages are kept, "
                          "an interrupted one continues from its checkpoint"),
        click.Option(["--nproc"], type=int, default=None, metavar="N",
                     help="run N data-parallel processes on this machine (torchrun --standalone --nproc-per-node N)")]


def _doc(cls: type) -> str:
    """The method's docstring, else its module's."""
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
    params: list[click.Parameter] = [click.Option(["-h", "--help"], is_flag=True, help="show this help"), *_common()]
    if cls.family == "embedding":
        params.append(click.Option(["--dataset"], default=None, metavar="NAME",
                                   help="with a PyKEEN --teacher: the kgdistill dataset (name or folder) whose ids it "
                                        "is mapped onto, by label"))
    params += [*_file_options(), *tracker_options()]
    title = f"{name} options" + (" (no default shown: the teacher run's value)" if cls.family == "embedding" else "")
    hints = typing.get_type_hints(cls.Config)
    for f in dataclasses.fields(cls.Config):
        base, many = kind(hints[f.name])
        default = _default(f)
        text = f.metadata.get("help", "")
        if default is not None and default != []:  # the real default replaces a description of the inherited one
            text = f"{re.sub(r'[ ;]*[(]default: [^)]*[)]', '', text)} (default: {_shown(default)})"
        elif default == [] and "(default:" not in text:
            text = f"{text} (default: none)"
        params.append(_option(f.name, base is bool, many, text, metavar(f.name, base), title))
    command = Command(name, params=params, help=_doc(cls), add_help_option=False)
    with click.Context(command, info_name=f"kgdistill distill --method {name}") as ctx:
        return command.get_help(ctx) + "\n"


def file_options(method: str, path: str | None) -> dict[str, Any]:
    """The method's options from ``--config``: a mapping of the method's options (what ``--print-config`` prints;
    its ``method`` must be this one), or, for a text method, a text run config YAML (e.g. a text run's
    ``config.yaml``: every field the method has; its distillation method, teacher and output folder are the
    command's)."""
    if path is None:
        return {}
    import yaml

    from kgdistill.config import flat_fields, load_yaml
    from kgdistill.text.config import TextRunConfig

    cls = methods.get(method)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"--config {path}: cannot read it ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of {method}'s options")
    run_config = bool({"kind", "data", "model", "training", "distill"} & set(raw))
    if run_config and cls.family != "text":
        raise ConfigError(f"--config {path}: a run config is read by the text methods; {method}'s --config is a "
                          f"mapping of its options (as --print-config prints them)")
    if not run_config:
        named = raw.pop("method", method)
        if methods.canonical(str(named)) != method:
            raise ConfigError(f"--config {path}: holds the options of method {named}, not {method}")
        own = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(raw) - own)
        if unknown:
            raise ConfigError(f"--config {path}: not options of {method}: {', '.join(unknown)}")
        return raw
    config = load_yaml(path, TextRunConfig)  # type: ignore[arg-type]
    own = {f.name for f in dataclasses.fields(cls.Config)}
    out: dict[str, Any] = {}
    for name, (section, _, _) in flat_fields(TextRunConfig).items():
        if name in own:
            out[name] = getattr(getattr(config, section) if section else config, name)
    return out


def set_options(items: typing.Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as options (a dotted key's last part is the option: ``training.lr`` → ``lr``)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip().rsplit(".", 1)[-1].replace("-", "_")] = value
    return out


def _flag_options(args: Args) -> dict[str, Any]:
    """The method options given as flags (list options split at commas)."""
    list_options = {k for k, (_, many) in _all_options().items() if many}
    options: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("opt_") and value is not None:
            if key[4:] in list_options:
                value = [d for v in value for d in str(v).split(",") if d]
            options[key[4:]] = value
    return options


def cmd_distill(args: Args) -> int:
    from kgdistill.config import coerce
    from kgdistill.distill.api import distill

    if args.distill_help:
        if args.method is None:
            ctx = click.get_current_context()
            lines = [ctx.get_help().rstrip(), "", "methods (kgdistill distill --method NAME --help: its options):"]
            print("\n".join([*lines, *(f"  {_summary(n)}" for n in methods.names())]))
        else:
            print(method_help(args.method), end="")
        return 0
    if args.print_config and args.method is not None:
        import yaml

        from kgdistill.config import to_dict
        from kgdistill.distill.method import make_config

        name = methods.canonical(args.method)
        config = make_config(name, {**file_options(name, args.config), **_flag_options(args), **set_options(args.set)})
        print(yaml.safe_dump({"method": name, **to_dict(config)}, sort_keys=False), end="")
        return 0  # resolved and checked; nothing is written (no teacher is read)
    if args.method is None or args.teacher is None:
        missing = " and ".join(f for f, v in (("--method", args.method), ("--teacher", args.teacher)) if v is None)
        raise click.UsageError(f"the following options are required: {missing} (methods: {', '.join(methods.names())})")
    method = methods.canonical(args.method)
    family = methods.get(method).family
    status = relaunch(args, extra=() if args.out is not None else  # every process must write into the same folder
                      ("--out", f"runs/distill-{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"))
    if status is not None:
        return status
    if args.resume and args.out is None:
        raise ConfigError("--resume needs the --out folder of the distillation to continue")

    options = _flag_options(args)
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
    if is_main_process():
        print(f"method {report.method}: run folders under {report.out}")
        print(report.table())
    return 0


def register(root: click.Group) -> None:
    """Add ``distill`` and ``benchmark``."""
    from kgdistill.cli import benchmark

    names = methods.names()
    params: list[click.Parameter] = [
        click.Option(["-h", "--help", "distill_help"], is_flag=True,
                     help="show this help; with --method NAME: that method's options"),
        click.Option(["--method"], type=MethodName(), default=None, metavar="METHOD",
                     help=f"one of: {', '.join(names)} (required)"),
        *_common(),
        click.Option(["--dataset"], default=None, metavar="NAME",
                     help="with a PyKEEN --teacher: the kgdistill dataset (name or folder) whose ids it is mapped "
                          "onto, by label; a text method's graph"),
        click.Option(["--num-threads", "threads"], type=int, default=None, hidden=True),  # the text flag's name
        *_file_options(), *tracker_options()]
    for name, (boolean, many) in _all_options().items():
        if name != "dataset":
            params.append(_option(name, boolean, many, None, "VALUE", "method options"))
    verb(root, "distill", params, add_help_option=False,
         help="Distil a teacher run (an embedding model or a text bi-encoder) with one of the registered methods.",
         short_help=f"distil a teacher run into smaller students ({', '.join(names)}); one run folder per stage"
         )(cmd_distill)
    benchmark.register(root)


__all__ = ["cmd_distill", "file_options", "method_help", "register", "set_options"]
