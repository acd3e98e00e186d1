"""``kgdistill text-train`` and ``kgdistill text-distill``: the verbs of text bi-encoders.

``kgdistill evaluate`` / ``predict`` load text runs through the model-class registry (``biencoder`` is declared
there and imported on first use).

    kgdistill text-train --dataset umls --plm minilm-l6 --epochs 3 --out runs/umls-simkgc
    kgdistill text-distill --method pmd --teacher runs/umls-simkgc --grades 6,3 --mask-rates 0.2,0 --out runs/pmd
    kgdistill text-distill --method patient --teacher runs/umls-simkgc --layers 1,4 --out runs/pkd

``text-distill`` is the alias of ``kgdistill distill --method pmd|hrkd|logit|patient`` (the one ``distill``
command; the methods live in :mod:`kgdistill.distill`) that also takes ``--config`` / ``--set`` and ``--method none``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from kgdistill.cli._common import (Args, config_from_args, config_options, is_main_process, nproc_option,
                                   print_config_option, print_metrics, print_resolved_config, relaunch,
                                   tracker_options, verb)


def _config(args: Args) -> Any:
    from kgdistill.text.config import TextRunConfig

    return config_from_args(args, base=TextRunConfig())  # type: ignore[arg-type]


def _relaunch(args: Args) -> int | None:
    """``--nproc N``: this command again under ``torchrun`` (every process writes into the same folder)."""
    def check() -> None:
        from kgdistill.errors import ConfigError

        if args.cfg_output_dir is None and not getattr(args, "resume", None):
            raise ConfigError("--nproc needs --out (every process writes into the same folder)")

    return relaunch(args, check=check)


def _print(run: Any) -> None:
    if not is_main_process():
        return
    extra = {k: run.metrics.get(k) for k in ("encoder_layers", "num_parameters", "entity_encoding_per_s")}
    print_metrics(run.metrics, f"run folder: {run.path}  {extra}")


def cmd_text_train(args: Args) -> int:
    from kgdistill.text.trainer import resume_text, train_text

    if args.print_config and not args.resume:
        return print_resolved_config(_config(args))  # resolved and checked; nothing is written
    code = _relaunch(args)
    if code is not None:
        return code
    if args.resume:
        from kgdistill.validate import resume_options

        options = resume_options(args, allowed=("epochs",))  # the others would be silently ignored: refused
        run = resume_text(args.resume, epochs=options.get("epochs"))
    else:
        run = train_text(_config(args))
    _print(run)
    return 0


def cmd_text_distill(args: Args) -> int:
    """``text-distill``: the alias of ``distill --method pmd|hrkd|logit|patient`` (and ``none``) taking a whole text
    run config (``--config``, ``--set`` and every text flag); both train through
    :func:`kgdistill.distill.text_method.distil_text`."""
    from kgdistill.distill.text_method import distil_text

    if args.print_config:
        return print_resolved_config(_config(args))  # resolved and checked; nothing is written
    code = _relaunch(args)
    if code is not None:
        return code
    config = _config(args)
    grades = [int(x) for x in (args.grades or "").split(",") if x.strip()]
    rates = [float(x) for x in (args.mask_rates or "").split(",") if x.strip()]
    if grades:
        config = replace(config, output_dir=config.output_dir or "runs/pmd")
    runs = distil_text(config, grades, rates, pre_distill=not args.no_pre_distill)
    for run in runs:
        _print(run)
    if grades and is_main_process():
        print(f"summary: {config.output_dir}/pmd_summary.json")
    return 0


def register(root: click.Group) -> None:
    """Add ``text-train`` and ``text-distill``."""
    from kgdistill.text.config import TextRunConfig

    verb(root, "text-train", [
        *config_options(TextRunConfig),
        click.Option(["--out", "cfg_output_dir"], default=None, metavar="DIR",
                     help="run folder (alias of --output-dir)"),
        click.Option(["--resume"], default=None, metavar="RUN_DIR",
                     help="continue the text run in RUN_DIR from its last checkpoint"),
        print_config_option(), nproc_option(), *tracker_options()],
        help="train a text bi-encoder (SimKGC); writes a run folder")(cmd_text_train)

    verb(root, "text-distill", [
        *config_options(TextRunConfig),
        click.Option(["--out", "cfg_output_dir"], default=None, metavar="DIR",
                     help="run folder (PMD chain: root folder)"),
        click.Option(["--grades"], default=None, metavar="LAYERS",
                     help="PMD chain: student layer counts, e.g. 6,4,2 (pre-distillation at the teacher's size is "
                          "added when missing)"),
        click.Option(["--mask-rates"], default=None, metavar="RATES",
                     help="PMD: one mask rate per stage, e.g. 0.2,0.1,0"),
        click.Option(["--no-pre-distill"], is_flag=True, help="PMD chain without the same-size first stage"),
        print_config_option(), nproc_option(), *tracker_options()],
        help="compress a text bi-encoder: pmd | hrkd | logit | patient | none")(cmd_text_distill)
