"""``kgdistill text-train`` and ``kgdistill text-distill``: the CLI of text bi-encoders (a plugin of kgdistill.cli).

``kgdistill evaluate`` / ``predict`` load text runs through the model-class registry (``biencoder`` is declared
there and imported on first use).

    kgdistill text-train --dataset umls --plm minilm-l6 --epochs 3 --out runs/umls-simkgc
    kgdistill text-distill --method pmd --teacher runs/umls-simkgc --grades 6,3 --mask-rates 0.2,0 --out runs/pmd
    kgdistill text-distill --method patient --teacher runs/umls-simkgc --layers 1,4 --out runs/pkd

``text-distill`` is the alias of ``kgdistill distill --method pmd|hrkd|logit|patient`` (the one ``distill``
command; the methods live in :mod:`kgdistill.distill`) that also takes ``--config`` / ``--set`` and ``--method none``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any


def _config(args: argparse.Namespace) -> Any:
    from kgdistill.cli import config_from_args
    from kgdistill.text.config import TextRunConfig

    return config_from_args(args, base=TextRunConfig())  # type: ignore[arg-type]


def _relaunch(args: argparse.Namespace) -> int | None:
    """``--nproc N`` outside torchrun: run this command again under ``torchrun`` (the exit code), else None."""
    import os

    if not args.nproc or args.nproc <= 1 or "WORLD_SIZE" in os.environ:
        return None
    from kgdistill.cli import strip_nproc
    from kgdistill.distributed import launch_torchrun
    from kgdistill.errors import ConfigError

    if args.cfg_output_dir is None and not getattr(args, "resume", None):
        raise ConfigError("--nproc needs --out (every process writes into the same folder)")
    return launch_torchrun(args.nproc, strip_nproc(args.argv))


def _print(run: Any) -> None:
    from kgdistill.cli import is_main_process, print_metrics

    if not is_main_process():
        return
    extra = {k: run.metrics.get(k) for k in ("encoder_layers", "num_parameters", "entity_encoding_per_s")}
    print_metrics(run.metrics, f"run folder: {run.path}  {extra}")


def cmd_text_train(args: argparse.Namespace) -> int:
    from kgdistill.text.trainer import resume_text, train_text

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


def cmd_text_distill(args: argparse.Namespace) -> int:
    """``text-distill``: the alias of ``distill --method pmd|hrkd|logit|patient`` (and ``none``) taking a whole text
    run config (``--config``, ``--set`` and every text flag); both train through
    :func:`kgdistill.distill.text_method.distil_text`."""
    from kgdistill.distill.text_method import distil_text

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
    if grades and _is_main():
        print(f"summary: {config.output_dir}/pmd_summary.json")
    return 0


def _is_main() -> bool:
    from kgdistill.cli import is_main_process

    return is_main_process()


def register(subparsers: Any, command: Callable[[str], Callable[[Any], Any]]) -> None:
    """Add ``text-train`` and ``text-distill`` to the ``kgdistill`` parser (``command`` registers handlers)."""
    from kgdistill.cli import add_config_flags, add_nproc_flag
    from kgdistill.text.config import TextRunConfig

    t = subparsers.add_parser("text-train", help="train a text bi-encoder (SimKGC); writes a run folder")
    add_config_flags(t, TextRunConfig)
    t.add_argument("--out", dest="cfg_output_dir", default=None, help="run folder (alias of --output-dir)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the text run in RUN_DIR from its last checkpoint")
    add_nproc_flag(t)
    command("text-train")(cmd_text_train)

    d = subparsers.add_parser("text-distill", help="compress a text bi-encoder: pmd | hrkd | logit | patient | none")
    add_config_flags(d, TextRunConfig)
    d.add_argument("--out", dest="cfg_output_dir", default=None, help="run folder (PMD chain: root folder)")
    d.add_argument("--grades", default=None, help="PMD chain: student layer counts, e.g. 6,4,2 (pre-distillation "
                                                  "at the teacher's size is added when missing)")
    d.add_argument("--mask-rates", default=None, help="PMD: one mask rate per stage, e.g. 0.2,0.1,0")
    d.add_argument("--no-pre-distill", action="store_true", help="PMD chain without the same-size first stage")
    add_nproc_flag(d)
    command("text-distill")(cmd_text_distill)
