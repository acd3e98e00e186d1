"""``kgdistill hpo``: hyperparameter search (optuna) over a training config or a distillation method's options
(the work is :func:`kgdistill.hpo.hpo`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import yaml

from kgdistill.cli._common import Args, progress_option, tracker_options, verb
from kgdistill.errors import ConfigError, KGDistillError


def search_from_args(args: Args) -> Any:
    """The :class:`~kgdistill.hpo.Search` of ``kgdistill hpo`` flags (everything checked here, before any trial)."""
    from kgdistill.config import load_yaml
    from kgdistill.hpo import Search, load_space

    space = load_space(args.space)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: expected an integer ≥ 1")
    if args.method or args.teacher:
        if not (args.method and args.teacher):
            raise ConfigError("--method and --teacher go together (a distillation search)")
        from kgdistill.distill.method import methods
        from kgdistill.runs import read_run_config

        try:
            method = methods.canonical(args.method)
        except KGDistillError as err:
            raise ConfigError(f"--method {args.method}: {err}") from None
        read_run_config(args.teacher, kind=None)  # a run folder (of any model kind), before any trial
        base: dict[str, Any] = {}
        if args.config:
            try:
                base = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as err:
                raise ConfigError(f"{args.config}: cannot read the method options ({err})") from None
            if not isinstance(base, dict):
                raise ConfigError(f"{args.config}: expected a mapping of {method} options")
        out = Path(args.out or f"runs/hpo-{method}")
        return Search("distill", base, space, out, method=method, teacher=str(args.teacher), threads=args.threads,
                      where=str(args.space), progress=args.progress)
    if not args.config:
        raise ConfigError("--config: the base run config to search from (a YAML file, e.g. from "
                          "kgdistill reference show NAME)")
    config = load_yaml(args.config)
    out = Path(args.out or f"runs/hpo-{Path(args.config).stem}")
    return Search("train", config, space, out, threads=args.threads, where=str(args.space), progress=args.progress)


def cmd_hpo(args: Args) -> int:
    from kgdistill.hpo import hpo

    search = search_from_args(args)
    logging.getLogger("kgdistill.training").setLevel(logging.WARNING)  # trial lines come from optuna
    result = hpo(search, storage=args.storage, n_trials=args.trials, study_name=args.study_name,
                 workers=args.workers, sampler=args.sampler, pruner=args.pruner, seed=args.seed, timeout=args.timeout,
                 trackers=list(args.tracker), tracker_uri=args.tracker_uri, tracker_experiment=args.tracker_experiment)
    print(result.files["markdown"].read_text(encoding="utf-8"))
    print(f"summary: {result.files['json']}" + (f"; best config: {result.files['best']}" if "best" in result.files
                                                  else ""))
    return 0


def register(root: click.Group) -> None:
    """Add ``hpo``."""
    from kgdistill.hpo import PRUNERS, SAMPLERS

    verb(root, "hpo", [
        click.Option(["--config"], default=None, metavar="YAML",
                     help="base: a run config (train; required) or the method's options (with --method)"),
        click.Option(["--space"], required=True, metavar="YAML", help="the searched keys and their distributions"),
        click.Option(["--trials"], type=int, required=True, metavar="N",
                     help="finished trials (completed or pruned) the study should hold; re-running continues it"),
        click.Option(["--storage"], required=True, metavar="URL",
                     help="optuna RDB storage: sqlite:///study.db, postgresql://..., mysql://..."),
        click.Option(["--study-name"], default=None, metavar="NAME",
                     help="default: the output folder's name (with --method: METHOD-<folder name>)"),
        click.Option(["--out"], default=None, metavar="DIR",
                     help="folder of the trial run folders and the summary (default: runs/hpo-<config or method>)"),
        click.Option(["--workers"], type=int, default=1, metavar="K", help="worker processes on this machine"),
        progress_option(default=False, help="progress bars in each trial when stderr is a terminal (default: false: "
                                            "a line per trial)"),
        click.Option(["--threads"], type=int, default=None, metavar="T", help="torch CPU threads per worker"),
        click.Option(["--sampler"], default="tpe", metavar="{" + ",".join(SAMPLERS) + "}",
                     help="the sampler (default: tpe)"),
        click.Option(["--pruner"], default="median", metavar="{" + ",".join(PRUNERS) + "}",
                     help="the pruner (default: median, on validation MRR)"),
        click.Option(["--seed"], type=int, default=0, metavar="N", help="sampler seed (worker i uses seed + 1000 i)"),
        click.Option(["--timeout"], type=float, default=None, metavar="S",
                     help="stop starting trials after S seconds"),
        click.Option(["--method"], default=None, metavar="METHOD",
                     help="search a distillation method's options (with --teacher)"),
        click.Option(["--teacher"], default=None, metavar="RUN_DIR", help="teacher run folder (with --method)"),
        *tracker_options()],
        help="hyperparameter search (optuna) over a training config or a distillation method's options")(cmd_hpo)
