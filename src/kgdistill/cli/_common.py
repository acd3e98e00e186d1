"""What every ``kgdistill`` verb shares: the option kinds, the help layout, the verb wrapper (tracking, the parsed
options as one object), config flags generated from the config dataclasses, the one ``--nproc`` relaunch, and the
printing helpers."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import click

from kgdistill.config import RunConfig, flat_fields, load_yaml, with_overrides
from kgdistill.errors import ConfigError
from kgdistill.registry import suggest
from kgdistill.tables import format_table

METRIC_COLUMNS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")
#: the help of every verb: ``-h`` too, wrapped at the terminal's width up to 120 columns
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}
#: verbs that take ``--tracker``
TRACKED_COMMANDS = ("train", "distill", "text-train", "text-distill")


class Args(SimpleNamespace):
    """The parsed options of one verb, one attribute each, with ``command`` (the verb) and ``argv`` (the whole
    command line after ``kgdistill``)."""


@dataclasses.dataclass
class Session:
    """What one ``main`` call knows across click's contexts: its argv, the verb that runs (for error lines) and
    whether to return the parsed options instead of running (:func:`kgdistill.cli.parse_args`)."""

    argv: list[str]
    verb: str = ""
    dry: bool = False

    @property
    def name(self) -> str:
        """``kgdistill VERB`` (``kgdistill`` before a verb runs): how error lines start."""
        return f"kgdistill {self.verb}".strip()


# ---- option kinds --------------------------------------------------------------------------------------------------
class BoolOption(click.Option):
    """``--flag [BOOL]`` / ``--no-flag``: ``--flag`` alone is true, ``--flag true|false`` (also yes/no, on/off,
    1/0) gives the value, ``--no-flag`` is false; the last one given wins. The value stays the text given
    (``"true"``/``"false"``) unless ``type`` converts it (:class:`Bool`)."""

    def __init__(self, decls: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("metavar", "[BOOL]")
        super().__init__(decls, is_flag=False, flag_value="true", **kwargs)
        long = [o for o in self.opts if o.startswith("--")][0]
        self.negative = f"--no-{long[2:]}"

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        parser.add_option(obj=self, opts=[self.negative], dest=self.name, action="store_const", const="false")

    def get_help_spec(self, ctx: click.Context) -> str:
        return f"{', '.join(self.opts)} {self.metavar} / {self.negative}"


class ListOption(click.Option):
    """An option taking one or more values: ``--dims 32 16`` (values up to the next option), also repeated
    (``--dims 32 --dims 16``); the value is a list, or ``None`` when not given and without a default."""

    def __init__(self, decls: Sequence[str], **kwargs: Any) -> None:
        super().__init__(decls, multiple=True, **kwargs)

    def get_help_spec(self, ctx: click.Context) -> str:
        metavar = self.make_metavar(ctx)
        return f"{', '.join(self.opts)} {metavar} [{metavar} ...]"

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        value = super().process_value(ctx, value)
        return list(value) if value else None


class Choice(click.Choice):
    """A fixed set of names; an unknown one is a usage error naming the close matches."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        known = [str(c) for c in self.choices]
        self.fail(f"{value!r} is not one of {', '.join(known)}.{suggest(str(value), known)}", param, ctx)


class Bool(click.ParamType):
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` as a bool (a usage error otherwise)."""

    name = "boolean"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from kgdistill.config import coerce

        if isinstance(value, bool):
            return value
        try:
            return coerce("value", value, bool)
        except ConfigError:
            self.fail(f"cannot read {value!r} as a boolean (true/false, yes/no, on/off, 1/0)", param, ctx)


def choice(decl: str, names: Sequence[str], **kwargs: Any) -> click.Option:
    """``decl`` taking one of ``names`` (listed in the help as ``{a,b,c}``)."""
    return click.Option([decl], type=Choice(list(names)), metavar="{" + ",".join(names) + "}", **kwargs)


def _looks_like_option(token: str) -> bool:
    if not token.startswith("-") or len(token) == 1:
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def expand_lists(params: Sequence[click.Parameter], args: Sequence[str]) -> list[str]:
    """``--dims 32 16`` → ``--dims 32 --dims 16`` for the :class:`ListOption` s among ``params`` (the values up to
    the next option or ``--``)."""
    many = {opt for p in params if isinstance(p, ListOption) for opt in p.opts}
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        out.append(token)
        i += 1
        if token == "--":
            out += args[i:]
            break
        if token in many and i < len(args):
            out.append(args[i])  # the first value, as click takes it
            i += 1
            while i < len(args) and not _looks_like_option(args[i]) and args[i] != "--":
                out += [token, args[i]]
                i += 1
    return out


# ---- commands and their help ---------------------------------------------------------------------------------------
class Command(click.Command):
    """A verb: an argparse-like ``usage:`` line, options under their ``group`` title (``options`` without one),
    list options that take several values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", dict(CONTEXT))
        super().__init__(*args, **kwargs)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, " ".join(self.collect_usage_pieces(ctx)), prefix="usage: ")

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [p.get_help_record(ctx) for p in self.get_params(ctx) if isinstance(p, click.Argument)]
        if rows:
            with formatter.section("arguments"):
                formatter.write_dl(rows)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_grouped_options(self, ctx, formatter)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_lists(self.get_params(ctx), args))


class Group(click.Group):
    """A verb with actions (``kgdistill reference list``), or ``kgdistill`` itself; an unknown name is a usage error
    with the close matches."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", dict(CONTEXT))
        super().__init__(*args, **kwargs)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, " ".join(self.collect_usage_pieces(ctx)), prefix="usage: ")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they were added, related verbs together

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_grouped_options(self, ctx, formatter)
        rows = [(name, self.commands[name].get_short_help_str(limit=formatter.width)) for name in self.commands
                if not self.commands[name].hidden]
        with formatter.section("commands"):
            formatter.write_dl(rows)


def write_grouped_options(command: click.Command, ctx: click.Context, formatter: click.HelpFormatter) -> None:
    groups: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None and not isinstance(param, click.Argument):  # those: format_arguments
            groups.setdefault(getattr(param, "group", None) or "options", []).append(record)
    for title, records in groups.items():
        with formatter.section(title):
            formatter.write_dl(records)


def grouped(option: click.Option, title: str) -> click.Option:
    """``option`` listed under ``title`` in the help."""
    option.group = title  # type: ignore[attr-defined]
    return option


def verb(group: click.Group, name: str, params: Sequence[click.Parameter], help: str,  # noqa: A002
         short_help: str | None = None, **settings: Any) -> Callable[[Callable[[Args], int]], Callable[[Args], int]]:
    """Add ``name`` to ``group``, running the decorated ``fn(args) -> status`` with the parsed options as
    :class:`Args` (inside the ``--tracker`` session of the tracked verbs)."""

    def deco(fn: Callable[[Args], int]) -> Callable[[Args], int]:
        def callback(**values: Any) -> Any:
            ctx = click.get_current_context()
            session: Session = ctx.find_root().obj
            top = ctx.command_path.split(" ")[1]  # the verb under ``kgdistill`` (``reference`` of reference run)
            args = Args(command=top, argv=list(session.argv), **values)
            if session.dry:
                return args
            session.verb = top
            with tracking_from_args(args):  # trackers made (and reached) before the command trains anything
                return fn(args)

        group.add_command(Command(name, params=list(params), callback=callback, help=help,
                                  short_help=short_help or help.split("\n")[0], **settings))
        return fn
    return deco


# ---- config flags ----------------------------------------------------------------------------------------------
def _field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def config_options(cls: type = RunConfig) -> list[click.Parameter]:
    """One ``--flag`` per field of the config dataclass ``cls`` (help from the field metadata, listed under its
    section), ``--config`` and ``--set KEY=VALUE``; the values are parsed by the config layer
    (:func:`config_from_args`), so a bad value is the config's one-line error."""
    from kgdistill.cli._choices import field_metavar

    out: list[click.Parameter] = []
    for name, (section, f, tp) in flat_fields(cls).items():
        default = _field_default(f)
        shown = "" if default is None or isinstance(default, (dict, list)) and not default else f" (default: {default})"
        flag = f"--{name.replace('_', '-')}"
        title = f"{section or 'run'} options"
        help_text = f"{f.metadata.get('help', '')}{shown}"
        if tp is bool:
            out.append(grouped(BoolOption([flag, f"cfg_{name}"], default=None, help=help_text), title))
        else:
            out.append(grouped(click.Option([flag, f"cfg_{name}"], default=None, help=help_text,
                                            metavar=field_metavar(name, tp, f.metadata.get("choices"))), title))
    out.append(click.Option(["--config"], default=None, metavar="FILE", help="YAML config file (flags override it)"))
    out.append(click.Option(["--set"], multiple=True, metavar="KEY=VALUE",
                            help="override any config key, e.g. --set training.lr=0.01 (repeatable)"))
    return out


def config_from_args(args: Any, base: Any = None) -> Any:
    """``base`` (default: ``RunConfig()``), or the ``--config`` YAML read as ``base``'s type, then every flag and
    ``--set`` applied."""
    base = base if base is not None else RunConfig()
    config = load_yaml(args.config, type(base)) if getattr(args, "config", None) else base
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg_") and value is not None:
            overrides[key[4:]] = value
    for item in getattr(args, "set", ()) or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    return with_overrides(config, overrides)


# ---- shared options --------------------------------------------------------------------------------------------
def progress_option(default: bool = True, help: str | None = None, as_text: bool = False) -> click.Option:  # noqa: A002
    """``--progress [BOOL]`` / ``--no-progress``: bars are drawn only when stderr is a terminal; per-epoch lines
    are logged either way. ``as_text``: the value stays ``"true"``/``"false"`` (read later by the config layer)."""
    return BoolOption(["--progress"], default=str(default).lower() if as_text else default,
                      type=None if as_text else Bool(),
                      help=help or f"progress bars when stderr is a terminal (default: {str(default).lower()}); "
                                   f"--no-progress: none")


def nproc_option() -> click.Option:
    return click.Option(["--nproc"], type=int, default=None, metavar="N",
                        help="run N processes on this machine (torchrun --standalone --nproc-per-node N)")


def print_config_option() -> click.Option:
    return click.Option(["--print-config"], is_flag=True,
                        help="print the fully resolved, checked config as YAML (usable as --config) and exit; writes "
                             "nothing")


def print_resolved_config(config: Any) -> int:
    """``--print-config``: ``config`` checked (one-line error otherwise) and printed as YAML with its ``kind``."""
    from kgdistill.config import dump_yaml
    from kgdistill.validate import validate_config

    print(dump_yaml(validate_config(config)), end="")
    return 0


def tracker_options() -> list[click.Option]:
    """``--tracker NAME`` (repeatable), ``--tracker-uri URI``, ``--tracker-experiment NAME``."""
    from kgdistill.tracking import DEFAULT_EXPERIMENT, TRACKERS

    title = "experiment tracking"
    return [grouped(click.Option(["--tracker"], multiple=True, metavar="NAME",
                                 help=f"log every run folder to a tracker: {' | '.join(TRACKERS)} (repeatable); see "
                                      "kgdistill.tracking"), title),
            grouped(click.Option(["--tracker-uri"], default=None, metavar="URI",
                                 help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                                      "here)"), title),
            grouped(click.Option(["--tracker-experiment"], default=None, metavar="NAME",
                                 help=f"MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else "
                                      f"{DEFAULT_EXPERIMENT})"), title)]


def tracking_from_args(args: Any) -> Any:
    """The session the ``--tracker`` flags ask for (a null context without them, or for a verb that opens its own
    sessions: ``hpo`` opens one in each worker process)."""
    if getattr(args, "command", None) not in TRACKED_COMMANDS:
        return nullcontext()
    names = list(getattr(args, "tracker", None) or [])
    if not names:
        if getattr(args, "tracker_uri", None):
            raise ConfigError("--tracker-uri is for --tracker mlflow; add --tracker mlflow")
        return nullcontext()
    from kgdistill.tracking import tracking

    return tracking(names, uri=getattr(args, "tracker_uri", None), experiment=getattr(args, "tracker_experiment",
                                                                                       None))


# ---- --nproc ---------------------------------------------------------------------------------------------------
def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the relaunched processes must not relaunch)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def relaunch(args: Args, extra: Sequence[str] = (), check: Callable[[], Any] | None = None) -> int | None:
    """``--nproc N`` (N > 1) outside torchrun: ``check()`` (one message here rather than one per process), then
    this command again under ``torchrun --standalone --nproc-per-node N`` with ``extra`` arguments added; its exit
    status. ``None`` when there is nothing to relaunch."""
    if not args.nproc or args.nproc <= 1 or "WORLD_SIZE" in os.environ:
        return None
    from kgdistill.distributed import launch_torchrun

    if check is not None:
        check()
    return launch_torchrun(args.nproc, strip_nproc([*args.argv, *extra]))


# ---- output ----------------------------------------------------------------------------------------------------
def is_main_process() -> bool:
    """False on ranks other than 0 of a torchrun job (they stay silent)."""
    return os.environ.get("RANK", "0") == "0"


def print_metrics(metrics: dict[str, Any], title: str = "") -> None:
    rows = []
    for split, value in metrics.items():
        if not isinstance(value, dict) or "both" not in value:
            continue
        for side in ("both", "head", "tail"):
            if side in value:
                rows.append({"split": split, "side": side, **{c: value[side].get(c) for c in METRIC_COLUMNS}})
    if title:
        print(title)
    print(format_table(rows, ["split", "side", *METRIC_COLUMNS]))


def retain_freed_memory() -> None:
    """glibc keeps freed memory in this process (``training.retain_memory``): a process-wide setting that the
    library never makes on its own."""
    from kgdistill.training.memory import retain_freed_memory as apply

    apply()

