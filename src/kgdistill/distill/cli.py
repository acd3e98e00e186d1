"""``kgdistill distill``: one flag per option of any method's config (help from the config fields).

Picked up by :func:`kgdistill.cli._plugin_parsers`; an option that the chosen method does not have is an error
naming the method's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from kgdistill.distill.method import methods

#: options that take several values (``--dims 64 32`` or ``--dims 64,32``)
LIST_OPTIONS = ("dims", "more_teachers")


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _method_fields() -> dict[str, tuple[dataclasses.Field, str]]:
    """``name -> (field, shown default)``; a default that differs between methods is listed per method."""
    found: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for name in methods.names():
        for f in dataclasses.fields(methods.get(name).Config):
            found.setdefault(f.name, []).append((name, f))
    out = {}
    for key, items in found.items():
        defaults = {m: _default(f) for m, f in items}
        same = len({str(d) for d in defaults.values()}) == 1
        shown = str(_default(items[0][1])) if same else "; ".join(f"{m}: {d}" for m, d in defaults.items())
        out[key] = (items[0][1], shown)
    return out


def register(subparsers: Any, command: Callable) -> None:
    p = subparsers.add_parser("distill", help="distil a teacher run into smaller students (kd, dualde, iterde, "
                                              "metasd, iterde-metasd, scratch); one run folder per stage")
    p.add_argument("--method", required=True, help=f"one of: {', '.join(methods.names())}")
    p.add_argument("--teacher", required=True, metavar="RUN_DIR", help="run folder of the trained teacher, or a "
                   "PyKEEN result folder (with --dataset; imported into OUT/teacher-pykeen first)")
    p.add_argument("--dataset", default=None, help="with a PyKEEN --teacher: the kgdistill dataset (name or folder) "
                   "whose ids it is mapped onto, by label")
    p.add_argument("--out", default=None, help="output folder (default: runs/distill-<method>-<time>)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--progress", nargs="?", const="true", default="true", metavar="BOOL",
                   help="progress bars when stderr is a terminal (default: true); --no-progress: none")
    p.add_argument("--no-progress", dest="progress", action="store_const", const="false", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--resume", action="store_true",
                   help="continue the distillation in --out (same method and options): finished stages are kept, "
                        "an interrupted one continues from its checkpoint")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="run N data-parallel processes on this machine (torchrun --standalone --nproc-per-node N)")
    group = p.add_argument_group("method options (None: the teacher run's value)")
    for name, (f, shown) in _method_fields().items():
        kwargs: dict[str, Any] = {"nargs": "+"} if name in LIST_OPTIONS else {}
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"opt_{name}", default=None, metavar="VALUE",
                           help=f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%"), **kwargs)
    command("distill")(run)


def run(args: argparse.Namespace) -> int:
    import os

    from kgdistill.config import coerce
    from kgdistill.distill.api import distill
    from kgdistill.errors import ConfigError

    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from kgdistill.cli import strip_nproc
        from kgdistill.distributed import launch_torchrun

        if args.out is None:  # every process must write into the same folder
            args.argv = [*args.argv, "--out", f"runs/distill-{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"]
        return launch_torchrun(args.nproc, strip_nproc(args.argv))
    if args.resume and args.out is None:
        raise ConfigError("--resume needs the --out folder of the distillation to continue")

    options: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("opt_") and value is not None:
            if key[4:] in LIST_OPTIONS:
                value = [d for v in value for d in str(v).split(",") if d]
            options[key[4:]] = value
    out = args.out or f"runs/distill-{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress = coerce("progress", args.progress, bool)
    from kgdistill.interop.teacher import teacher_folder

    args.teacher = teacher_folder(args.teacher, args.dataset, out, resume=args.resume)
    report = distill(args.method, args.teacher, out, device=args.device, progress=progress,
                     num_threads=args.threads, resume=args.resume, **options)
    if os.environ.get("RANK", "0") == "0":
        print(f"method {report.method}: run folders under {report.out}")
        print(report.table())
    return 0
