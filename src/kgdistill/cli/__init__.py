"""The ``kgdistill`` command line (click): a thin layer over the library, every verb calls library functions.

One module per group of verbs: :mod:`~kgdistill.cli.train` (train, evaluate, predict), :mod:`~kgdistill.cli.data`
(datasets, info, demo), :mod:`~kgdistill.cli.distill` (distill, benchmark), :mod:`~kgdistill.cli.text`
(text-train, text-distill), :mod:`~kgdistill.cli.serve` (export, load, serve), :mod:`~kgdistill.cli.report`
(compare, report), :mod:`~kgdistill.cli.reference`, :mod:`~kgdistill.cli.interop` (import-pykeen) and
:mod:`~kgdistill.cli.hpo`; :mod:`~kgdistill.cli._common` holds what they share. The library never imports this
package.

Exit status: 0 done, 1 a valid request that failed, 2 bad input (an unknown option or name, with the close
matches; a bad value; a missing file), 130 interrupted. Errors are one line on stderr:
``kgdistill VERB: error: ...``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from kgdistill.cli._common import Args, Group, Session, strip_nproc
from kgdistill.errors import KGDistillError

__all__ = ["Args", "build_cli", "main", "parse_args", "strip_nproc"]


def build_cli() -> click.Group:
    """The ``kgdistill`` group with every verb (imports each method's module for ``distill``'s options; no
    optional extra)."""
    from kgdistill.cli import data, distill, hpo, interop, reference, report, serve, text, train

    root = Group("kgdistill", help="Train, distil, evaluate and serve KGC models.")
    for module in (train, data, distill, text, serve, report, reference, interop, hpo):
        module.register(root)
    return root


def parse_args(argv: Sequence[str]) -> Args:
    """The options that ``kgdistill ARGV`` gives its verb, without running it (usage errors raise
    :class:`click.UsageError`)."""
    root = build_cli()
    with root.make_context("kgdistill", list(argv), obj=Session(list(argv), dry=True)) as ctx:
        return root.invoke(ctx)


def usage_message(err: click.UsageError) -> str:
    """One line; an unknown option or verb with its close matches, as the library names unknown names."""
    if isinstance(err, (click.NoSuchOption, click.exceptions.NoSuchCommand)):
        option = isinstance(err, click.NoSuchOption)
        kind, name = ("option", err.option_name) if option else ("command", err.command_name)  # type: ignore[union-attr]
        close = err.possibilities or []
        return f"unknown {kind} {name!r}." + (f" Did you mean {', '.join(map(repr, close))}?" if close else "")
    return " ".join(err.format_message().split())


def process_defaults() -> None:
    """Settings of the ``kgdistill`` process itself, made here and never by importing the library: no model hub
    is contacted (the library also loads pretrained folders with ``local_files_only=True``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kgdistill ARGV`` (default: ``sys.argv[1:]``); the exit status."""
    from kgdistill.progress import configure_logging

    process_defaults()
    configure_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    root = build_cli()
    session = Session(argv)
    if not argv:
        with click.Context(root, info_name="kgdistill") as ctx:
            click.echo(root.get_help(ctx))
        return 2
    try:
        with root.make_context("kgdistill", list(argv), obj=session) as ctx:
            status = root.invoke(ctx)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below, not at interpreter exit
        return int(status or 0)
    except click.exceptions.Exit as done:  # --help
        return done.exit_code
    except click.exceptions.NoArgsIsHelpError as err:  # a verb with actions, without one
        click.echo(err.ctx.get_help() if err.ctx is not None else "")
        return 2
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else session.name
        print(f"{where}: error: {usage_message(err)}", file=sys.stderr)
        return 2
    except click.ClickException as err:
        print(f"{session.name}: error: {err.format_message()}", file=sys.stderr)
        return err.exit_code
    except KGDistillError as err:
        if os.environ.get("WORLD_SIZE", "1") != "1":
            print(f"{session.name}: rank {os.environ.get('RANK')}: error: {err}", file=sys.stderr)
            return err.exit_code
        print(f"{session.name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{session.name}: interrupted; a training run continues with `kgdistill train --resume RUN_DIR`",
              file=sys.stderr)
        return 130
    finally:
        _close_process_group()


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
