"""The ``kgdistill`` command line: a thin layer over the library (every command calls one library function)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kgdistill.config import RunConfig, flat_fields, load_yaml, with_overrides
from kgdistill.errors import ConfigError, KGDistillError
from kgdistill.tables import format_table

METRIC_COLUMNS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn
    return deco


def add_config_flags(parser: argparse.ArgumentParser, cls: type = RunConfig) -> None:
    """One ``--flag`` per config field (help from the field metadata); values are parsed by the config layer."""
    groups: dict[str | None, Any] = {}
    for name, (section, f, tp) in flat_fields(cls).items():
        group = groups.setdefault(section, parser.add_argument_group(f"{section or 'run'} options"))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = "" if default is None or isinstance(default, (dict, list)) and not default else f" (default: {default})"
        flag = name.replace('_', '-')
        if tp is bool:  # --flag / --no-flag; --flag true|false is still understood
            group.add_argument(f"--{flag}", dest=f"cfg_{name}", default=None, nargs="?", const="true", metavar="BOOL",
                               help=f"{f.metadata.get('help', '')}{shown}; --no-{flag} switches it off")
            group.add_argument(f"--no-{flag}", dest=f"cfg_{name}", action="store_const", const="false",
                               help=argparse.SUPPRESS)
            continue
        group.add_argument(f"--{flag}", dest=f"cfg_{name}", default=None, metavar="VALUE",
                           help=f"{f.metadata.get('help', '')}{shown}")
    parser.add_argument("--config", help="YAML config file (flags override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set training.lr=0.01 (repeatable)")


def config_from_args(args: argparse.Namespace, base: Any = None) -> Any:
    """``base`` (default: ``RunConfig()``), or the ``--config`` YAML read as ``base``'s type, then every flag and
    ``--set`` applied."""
    base = base if base is not None else RunConfig()
    config = load_yaml(args.config, type(base)) if getattr(args, "config", None) else base
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg_") and value is not None:
            overrides[key[4:]] = value
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    return with_overrides(config, overrides)


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


# ---- commands ---------------------------------------------------------------------------------------------------
@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from kgdistill import runs

    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from kgdistill.distributed import launch_torchrun
        from kgdistill.validate import resume_options, validate_config

        # one message here rather than one per process after the launch
        resume_options(args) if args.resume else validate_config(config_from_args(args))
        return launch_torchrun(args.nproc, strip_nproc(args.argv))
    if args.resume:
        from kgdistill.validate import resume_options

        options = resume_options(args)  # only --epochs and run-independent flags; checked before anything is read
        config = runs.read_run_config(args.resume)
        if config.training.retain_memory:
            retain_freed_memory()
        run = runs.resume(args.resume, **options)
    elif getattr(args, "print_config", False):
        import yaml

        from kgdistill.config import to_dict
        from kgdistill.validate import validate_config

        print(yaml.safe_dump(to_dict(validate_config(config_from_args(args))), sort_keys=False), end="")
        return 0  # resolved and checked; nothing is written
    else:
        config = config_from_args(args)
        if config.training.retain_memory:
            retain_freed_memory()
        run = runs.train(config)
    if is_main_process():
        print_metrics(run.metrics, f"run folder: {run.path}")
    return 0


def retain_freed_memory() -> None:
    """glibc keeps freed memory in this process (``training.retain_memory``): a process-wide setting that the
    library never makes on its own."""
    from kgdistill.training.memory import retain_freed_memory as apply

    apply()


def is_main_process() -> bool:
    """False on ranks other than 0 of a torchrun job (they stay silent)."""
    return os.environ.get("RANK", "0") == "0"


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from kgdistill.distributed import init_distributed, launch_torchrun
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.evaluation import relation_categories
    from kgdistill.runs import load_run

    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_torchrun(args.nproc, strip_nproc(args.argv))
    ctx = init_distributed(args.device)
    run = load_run(args.run_dir, device=ctx.device)
    assert run.dataset is not None
    evaluator = DatasetEvaluator(run.dataset, args.batch_size, filtered=not args.raw, device=ctx.device, ctx=ctx)
    out: dict[str, Any] = {}
    for split in args.split:
        result = evaluator.evaluate(run.model, split, progress=args.progress)
        out[split] = result.summary()
        if args.per_relation:
            out[f"{split}_per_relation"] = result.per_relation(run.dataset.relations)
            cats = relation_categories(run.dataset.train, run.dataset.num_relations)
            out[f"{split}_per_category"] = result.per_category(cats)
    if not ctx.is_main:
        return 0
    print_metrics(out, f"run folder: {run.path}")
    for split in args.split:
        if args.per_relation:
            rows = [{"relation": rel, **{c: m.get(c) for c in ("count", *METRIC_COLUMNS)}}
                    for rel, m in out[f"{split}_per_category"].items()]
            print(f"\n{split}: per relation category")
            print(format_table(rows))
            rows = [{"relation": rel, **{c: m.get(c) for c in ("count", *METRIC_COLUMNS)}}
                    for rel, m in out[f"{split}_per_relation"].items()]
            print(f"\n{split}: per relation")
            print(format_table(rows))
    if args.json:
        from kgdistill.atomicio import atomic_write_json

        atomic_write_json(args.json, out)
    return 0


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    from kgdistill.predict import predict
    from kgdistill.runs import load_run

    run = load_run(args.run_dir, device=args.device)
    assert run.dataset is not None
    preds = predict(run.model, run.dataset, args.relation, head=args.head, tail=args.tail, k=args.k,
                    exclude_known=args.exclude_known)
    query = f"({args.head}, {args.relation}, ?)" if args.head else f"(?, {args.relation}, {args.tail})"
    print(query)
    print(format_table([{"rank": p.rank, "entity": p.label, "name": p.name, "score": p.score,
                         "known": "yes" if p.known else ""} for p in preds]))
    return 0


@command("datasets")
def cmd_datasets(args: argparse.Namespace) -> int:
    from kgdistill.data.datasets import list_datasets

    rows = list_datasets(args.data_dir)
    print(format_table(rows, ["name", "kind", "entities", "relations", "train", "valid", "test", "text", "location"]))
    return 0


@command("info")
def cmd_info(args: argparse.Namespace) -> int:
    from kgdistill.data.datasets import get_spec, load_dataset, resolve_dataset_path, verify_folder

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    stats = ds.statistics()
    print(format_table([{"statistic": k, "value": v} for k, v in stats.items()]))
    for kind, labels in ds.only_in_evaluation().items():
        if labels:
            shown = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
            print(f"{kind} only in valid/test (never in train): {shown}")
    if args.verify:
        folder = resolve_dataset_path(args.dataset, args.data_dir)
        result = verify_folder(get_spec(args.dataset), folder)  # type: ignore[arg-type]
        print(format_table([{"file": f, "sha256": s} for f, s in result.items()]))
        if any(s not in ("ok", "absent") for s in result.values()):
            return 1
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from kgdistill.demo import run_demo

    retain_freed_memory()  # every demo run keeps the default training.retain_memory
    run_demo(Path(args.out), epochs=args.epochs, dataset=args.dataset)
    return 0


def parse_bool(value: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (for flags that take an optional boolean)."""
    from kgdistill.config import coerce

    try:
        return coerce("progress", value, bool)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_progress_flag(parser: Any, default: bool = True) -> None:
    """``--progress`` / ``--no-progress`` (``--progress true|false`` too): bars are drawn only when stderr is a
    terminal; per-epoch lines are logged either way."""
    parser.add_argument("--progress", nargs="?", const=True, default=default, type=parse_bool, metavar="BOOL",
                        help="progress bars when stderr is a terminal (default: %(default)s); --no-progress: none")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False, help=argparse.SUPPRESS)


def add_nproc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="run N processes on this machine (torchrun --standalone --nproc-per-node N)")


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


# ---- parser -----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kgdistill", description="Train, distil, evaluate and serve KGC models.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a KGE model; writes a run folder")
    add_config_flags(t)
    t.add_argument("--out", dest="cfg_output_dir", default=None, help="run folder (alias of --output-dir)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--print-config", action="store_true",
                   help="print the fully resolved, checked config as YAML (usable as --config) and exit; writes nothing")
    add_nproc_flag(t)

    e = sub.add_parser("evaluate", help="re-evaluate a run folder (filtered ranking)")
    e.add_argument("run_dir")
    e.add_argument("--split", nargs="+", default=["test"], help="splits to evaluate (default: test)")
    e.add_argument("--batch-size", type=int, default=256, help="queries per chunk (bounds peak memory)")
    e.add_argument("--raw", action="store_true", help="unfiltered ranking")
    e.add_argument("--per-relation", action="store_true", help="also per relation and per relation category")
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", help="write the metrics to this JSON file")
    add_progress_flag(e)
    add_nproc_flag(e)

    pr = sub.add_parser("predict", help="top-k tails (--head) or heads (--tail) of a relation, by name")
    pr.add_argument("run_dir")
    g = pr.add_mutually_exclusive_group(required=True)
    g.add_argument("--head", help="entity label or name")
    g.add_argument("--tail", help="entity label or name")
    pr.add_argument("--relation", required=True, help="relation label or text")
    pr.add_argument("-k", type=int, default=10)
    pr.add_argument("--exclude-known", action="store_true", help="hide answers already in the graph")
    pr.add_argument("--device", default="cpu")

    d = sub.add_parser("datasets", help="list bundled and named datasets")
    d.add_argument("--data-dir", default=None)

    i = sub.add_parser("info", help="statistics of a dataset (name or folder)")
    i.add_argument("dataset")
    i.add_argument("--data-dir", default=None)
    i.add_argument("--verify", action="store_true", help="check the sha256 of the files")

    dm = sub.add_parser("demo", help="the quick start: teacher → distilled student → table on bundled data")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--dataset", default="kinship")
    dm.add_argument("--epochs", type=int, default=None, help="override the demo's epochs (smaller = faster)")

    for extra in _plugin_parsers():
        extra(sub)
    from kgdistill.tracking import TRACKED_COMMANDS, add_tracker_flags

    for name in TRACKED_COMMANDS:  # --tracker on every training and distillation verb
        if name in sub.choices:
            add_tracker_flags(sub.choices[name])
    return p


def _plugin_parsers() -> list[Callable[[Any], None]]:
    """Subcommands defined next to their library modules (distillation, serving, reports)."""
    out: list[Callable[[Any], None]] = []
    for module in ("kgdistill.distill.cli", "kgdistill.text.cli", "kgdistill.serve.cli", "kgdistill.report.cli",
                   "kgdistill.reference.cli", "kgdistill.distill.benchmark_cli",
                   "kgdistill.interop.cli", "kgdistill.hpo"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                continue
            raise
        out.append(lambda sub, mod=mod: mod.register(sub, command))
    return out


def process_defaults() -> None:
    """Settings of the ``kgdistill`` process itself, made here and never by importing the library: no model hub
    is contacted (the library also loads pretrained folders with ``local_files_only=True``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    from kgdistill.progress import configure_logging

    process_defaults()
    configure_logging()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not args.command:
        parser.print_help()
        return 2
    try:
        from kgdistill.tracking import tracking_from_args

        with tracking_from_args(args):  # trackers made (and reached) before the command trains anything
            status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below, not at interpreter exit
        return status
    except KGDistillError as err:
        if os.environ.get("WORLD_SIZE", "1") != "1":
            print(f"kgdistill {args.command}: rank {os.environ.get('RANK')}: error: {err}", file=sys.stderr)
            return err.exit_code
        print(f"kgdistill {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"kgdistill {args.command}: interrupted; a training run continues with "
              f"`kgdistill train --resume RUN_DIR`", file=sys.stderr)
        return 130
    finally:
        _close_process_group()


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
