"""``kgdistill benchmark``: every method from one teacher at an equal budget, several seeds, one leaderboard (the
work is :func:`kgdistill.distill.benchmark.benchmark`)."""

from __future__ import annotations

import logging
import shlex
import sys
from typing import Any

import click

from kgdistill.cli._common import Args, BoolOption, ListOption, choice, verb
from kgdistill.errors import ConfigError


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["kd.temperature=4", "eval_every=0"]`` → ``{"kd": {"temperature": "4"}, "*": {"eval_every": "0"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected [METHOD.]KEY=VALUE")
        method, dot, name = key.strip().rpartition(".")
        value = value.strip()
        out.setdefault(method if dot else "*", {})[name] = value.split(",") if name == "more_teachers" else value
    return out


def cmd_benchmark(args: Args) -> int:
    import torch

    from kgdistill.config import coerce
    from kgdistill.distill.benchmark import benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        dims = [int(d) for d in _split(args.dims)]
    except ValueError:
        raise ConfigError(f"--dims: expected integers, got {' '.join(args.dims)}") from None
    chosen = _split(args.methods) if args.methods else None
    epoch_lines = logging.getLogger("kgdistill.training")
    level = epoch_lines.level
    epoch_lines.setLevel(logging.WARNING)  # the benchmark's own lines say which epoch of which stage runs
    try:
        board = benchmark(args.teacher, args.out, chosen, dims, args.seeds, args.budget, args.epochs,
                          device=args.device, progress=coerce("progress", args.progress, bool),
                          method_options=parse_sets(args.set), metasd_sparsity=args.metasd_sparsity,
                          resume=args.resume, command=shlex.join(["kgdistill", *args.argv]))
    except KeyboardInterrupt:
        print(f"kgdistill benchmark: interrupted; the same command with --resume continues it (finished runs in "
              f"{args.out} are kept)", file=sys.stderr)
        return 130
    finally:
        epoch_lines.setLevel(level)
    print(board.markdown())
    print("wrote " + ", ".join(str(p) for p in board.files.values()))
    return 0


def register(root: click.Group) -> None:
    """Add ``benchmark``."""
    from kgdistill.distill.benchmark import BUDGETS, DEFAULT_METHODS

    verb(root, "benchmark", [
        click.Option(["--teacher"], required=True, metavar="RUN", help="run folder of the finished teacher"),
        ListOption(["--methods"], default=None, metavar="M[,M...]",
                   help=f"methods to compare (any registered one; default: those of {','.join(DEFAULT_METHODS)} "
                        f"that are registered)"),
        ListOption(["--dims"], default=["32"], metavar="D", help="student dim(s), below the teacher's (default: 32)"),
        click.Option(["--seeds"], type=int, default=3, metavar="N", help="seeds per method, 1..N (default: 3)"),
        choice("--budget", BUDGETS, default="final",
               help="final: every stage trains E epochs (the final student gets E); total: a method's stages share E "
                    "student epochs (⌊E/k⌋ per stage of a k-stage chain; DualDE ⌈E/2⌉ + ⌊E/2⌋) (default: final)"),
        click.Option(["--epochs"], type=int, default=None, metavar="E",
                     help="the budget's E (default: the teacher's epochs)"),
        click.Option(["--out"], required=True, metavar="DIR",
                     help="output folder: DIR/<method>/seed-<s>/ and DIR/leaderboard.{md,csv,json,png}"),
        click.Option(["--resume"], is_flag=True,
                     help="continue the benchmark in --out: finished (method, seed) runs are kept, an interrupted "
                          "one continues"),
        click.Option(["--metasd-sparsity"], type=float, default=None, metavar="S",
                     help="MetaSD's sparsity (default: the non-zeros of the dense student of --dims)"),
        click.Option(["--set"], multiple=True, metavar="[METHOD.]KEY=VALUE",
                     help="a method option (as `kgdistill distill --KEY`), for one method or, without METHOD., for "
                          "every method that has it; repeatable, e.g. --set eval_every=0 --set kd.temperature=4"),
        click.Option(["--device"], default="cpu", metavar="DEVICE", help="cpu | cuda | cuda:N (default: cpu)"),
        click.Option(["--threads"], type=int, default=None, metavar="N", help="torch CPU threads"),
        BoolOption(["--progress"], default="true",
                   help="log which stage of which method and seed runs and the time left, at each stage and every "
                        "minute; progress bars when stderr is a terminal (default: true; the runs' per-epoch lines "
                        "are left to their trace.jsonl); --no-progress: none")],
        help="run every distillation method from one teacher at an equal budget over several seeds and write a "
             "leaderboard (Markdown, CSV, JSON, Pareto plot)")(cmd_benchmark)
