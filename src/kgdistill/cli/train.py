"""``kgdistill train``, ``evaluate`` and ``predict``: a run folder made, measured and queried."""

from __future__ import annotations

from typing import Any

import click

from kgdistill.cli._common import (METRIC_COLUMNS, Args, ListOption, config_from_args, config_options, is_main_process,
                                   nproc_option, print_config_option, print_metrics,
                                   print_resolved_config, progress_option, relaunch, retain_freed_memory,
                                   tracker_options, verb)
from kgdistill.tables import format_table


def cmd_train(args: Args) -> int:
    from kgdistill import runs
    from kgdistill.validate import resume_options, validate_config

    status = relaunch(args, check=lambda: resume_options(args) if args.resume else validate_config(
        config_from_args(args)))
    if status is not None:
        return status
    if args.resume:
        options = resume_options(args)  # only --epochs and run-independent flags; checked before anything is read
        config = runs.read_run_config(args.resume)
        if config.training.retain_memory:
            retain_freed_memory()
        run = runs.resume(args.resume, **options)
    elif args.print_config:
        return print_resolved_config(config_from_args(args))  # resolved and checked; nothing is written
    else:
        config = config_from_args(args)
        if config.training.retain_memory:
            retain_freed_memory()
        run = runs.train(config)
    if is_main_process():
        print_metrics(run.metrics, f"run folder: {run.path}")
    return 0


def cmd_evaluate(args: Args) -> int:
    from kgdistill.distributed import init_distributed
    from kgdistill.evaluate import DatasetEvaluator
    from kgdistill.evaluation import relation_categories
    from kgdistill.runs import load_run

    status = relaunch(args)
    if status is not None:
        return status
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


def cmd_predict(args: Args) -> int:
    from kgdistill.predict import predict
    from kgdistill.runs import load_run

    if (args.head is None) == (args.tail is None):
        raise click.UsageError("one of --head and --tail is required (not both)")
    run = load_run(args.run_dir, device=args.device)
    assert run.dataset is not None
    preds = predict(run.model, run.dataset, args.relation, head=args.head, tail=args.tail, k=args.k,
                    exclude_known=args.exclude_known)
    query = f"({args.head}, {args.relation}, ?)" if args.head else f"(?, {args.relation}, {args.tail})"
    print(query)
    print(format_table([{"rank": p.rank, "entity": p.label, "name": p.name, "score": p.score,
                         "known": "yes" if p.known else ""} for p in preds]))
    return 0


def device_option() -> click.Option:
    return click.Option(["--device"], default="cpu", metavar="DEVICE", help="cpu | cuda | cuda:N (default: cpu)")


def register(root: click.Group) -> None:
    """Add ``train``, ``evaluate`` and ``predict``."""
    verb(root, "train", [
        *config_options(),
        click.Option(["--out", "cfg_output_dir"], default=None, metavar="DIR",
                     help="run folder (alias of --output-dir)"),
        click.Option(["--resume"], default=None, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its last checkpoint"),
        print_config_option(),
        nproc_option(), *tracker_options()],
        help="train a KGE model; writes a run folder")(cmd_train)

    verb(root, "evaluate", [
        click.Argument(["run_dir"], help="a run folder"),
        ListOption(["--split"], default=["test"], metavar="SPLIT", help="splits to evaluate (default: test)"),
        click.Option(["--batch-size"], type=int, default=256, metavar="N",
                     help="queries per chunk (bounds peak memory; default: 256)"),
        click.Option(["--raw"], is_flag=True, help="unfiltered ranking"),
        click.Option(["--per-relation"], is_flag=True, help="also per relation and per relation category"),
        device_option(),
        click.Option(["--json"], default=None, metavar="FILE", help="write the metrics to this JSON file"),
        progress_option(), nproc_option()],
        help="re-evaluate a run folder (filtered ranking)")(cmd_evaluate)

    verb(root, "predict", [
        click.Argument(["run_dir"], help="a run folder"),
        click.Option(["--head"], default=None, metavar="ENTITY", help="entity label or name (tails are predicted)"),
        click.Option(["--tail"], default=None, metavar="ENTITY", help="entity label or name (heads are predicted)"),
        click.Option(["--relation"], required=True, metavar="RELATION", help="relation label or text"),
        click.Option(["-k"], type=int, default=10, metavar="N", help="answers shown (default: 10)"),
        click.Option(["--exclude-known"], is_flag=True, help="hide answers already in the graph"),
        device_option()],
        help="top-k tails (--head) or heads (--tail) of a relation, by name")(cmd_predict)
