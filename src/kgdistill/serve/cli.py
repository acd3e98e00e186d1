"""Subcommands ``export``, ``load`` and ``serve`` (added to ``kgdistill`` by :func:`kgdistill.cli._plugin_parsers`).

FastAPI / uvicorn are imported only when ``serve`` runs, so the other commands work without the serve extra.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

from kgdistill.errors import KGDistillError
from kgdistill.tables import format_table

Handler = Callable[[argparse.Namespace], int]


def _size_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"tensor": name, "shape": "×".join(map(str, info["shape"])), "layout": info["layout"],
             "stored": info["stored"], "non-zero": info.get("nnz"), "bytes": info.get("bytes")}
            for name, info in meta.get("tensors", {}).items()]


def cmd_export(args: argparse.Namespace) -> int:
    from kgdistill.export import export_run, read_metadata

    start = time.perf_counter()
    split = None if args.eval_split in ("none", "") else args.eval_split
    if args.format == "hf":
        from kgdistill.export_hf import export_hf, print_export

        result = export_hf(args.run_dir, args.out, dtype=args.dtype, include_known=not args.no_known,
                           force=args.force, license=args.license, eval_split=split)
        print_export(result, time.perf_counter() - start)
        return 0
    path = export_run(args.run_dir, args.out, args.dtype, eval_split=split, include_known=not args.no_known,
                      force=args.force)
    meta = read_metadata(path)
    print(f"artifact: {path} ({path.stat().st_size:,} bytes, {time.perf_counter() - start:.1f}s)")
    print(format_table(_size_rows(meta)))
    q = meta["quantization"]
    err = f"max |Δscore| {q['max_abs_score_error']:.3g} (max |score| {q['max_abs_score']:.3g})"
    if args.dtype == "float32":
        print(f"float32: lossless; {err}")
    elif "mrr_change" in q:
        print(f"{args.dtype}: {q['split']} MRR {q['mrr_float32']:.4f} → {q[f'mrr_{args.dtype}']:.4f} "
              f"(change {q['mrr_change']:+.4f}); Hits@10 {q['hits10_float32']:.4f} → "
              f"{q[f'hits10_{args.dtype}']:.4f}; {err}")
    else:
        print(f"{args.dtype}: MRR change not measured (no dataset / --eval-split none); {err}")
    for note in meta.get("notes", []):
        print(f"note: {note}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from kgdistill.export import load_artifact

    start = time.perf_counter()
    art = load_artifact(args.artifact)
    seconds = time.perf_counter() - start
    summary = art.summary()
    if args.json:
        print(json.dumps({**summary, "load_seconds": seconds}, indent=2))
    else:
        keys = ("model", "interaction", "dim", "layers", "dtype", "dataset", "method", "entities", "relations",
                "known_triples", "artifact_bytes")
        rows = [{"field": k, "value": summary[k]} for k in keys if summary.get(k) is not None]
        rows += [{"field": "parameters", "value": summary["parameters"]["total"]},
                 {"field": "non-zero parameters", "value": summary["parameters"]["nonzero"]},
                 {"field": "load seconds", "value": round(seconds, 3)}]
        test = summary["metrics"].get("test", {}).get("both")
        if test:
            rows.append({"field": "test MRR (run)", "value": test.get("mrr")})
        print(format_table(rows))
    if args.relation:
        if not (args.head or args.tail):
            raise KGDistillError("--relation needs --head or --tail")
        preds = art.predict(args.relation, head=args.head, tail=args.tail, k=args.k,
                            exclude_known=args.exclude_known)
        print(f"\n({args.head}, {args.relation}, ?)" if args.head else f"\n(?, {args.relation}, {args.tail})")
        print(format_table([{"rank": p.rank, "entity": p.label, "name": p.name, "score": p.score,
                             "known": "yes" if p.known else ""} for p in preds]))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from kgdistill.serve.server import serve
    except ModuleNotFoundError as err:
        raise KGDistillError(f"serving needs the serve extra ({err.name} is missing): "
                             f"pip install 'kgdistill[serve]'") from None
    if args.max_batch < 1 or args.max_k < 1 or args.max_triples < 1 or args.max_body_bytes < 1:
        raise KGDistillError("--max-batch, --max-k, --max-triples and --max-body-bytes must be ≥ 1")
    from kgdistill.validate import RULES, check_port

    check_port(args.port)
    RULES["num_threads"]("threads", args.threads)
    if not (args.max_wait_ms >= 0 and math.isfinite(args.max_wait_ms)):
        raise KGDistillError(f"--max-wait-ms {args.max_wait_ms}: expected a finite number ≥ 0")
    serve(args.artifact, args.host, args.port, threads=args.threads, log_level=args.log_level,
          access_log=args.access_log, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_k=args.max_k,
          max_triples=args.max_triples, max_body_bytes=args.max_body_bytes, http=args.http, loop=args.loop,
          inline_when_idle=not args.always_batch, hot_path=not args.no_hot_path)
    return 0


def register(sub: Any, command: Callable[[str], Callable[[Handler], Handler]]) -> None:
    """Add ``export``, ``load`` and ``serve`` to the ``kgdistill`` parser."""
    e = sub.add_parser("export", help="export a run to one self-contained artifact file (optionally quantised), or "
                                      "to a Hugging Face-style folder with a model card (--format hf)")
    e.add_argument("run_dir")
    e.add_argument("out", help="artifact file (or an existing folder: <run>-<dtype>.safetensors inside); with "
                               "--format hf the folder to write")
    e.add_argument("--format", choices=("artifact", "hf"), default="artifact",
                   help="artifact: one .safetensors file; hf: a folder with config.json, model.safetensors, id maps, "
                        "known.safetensors and a README.md model card (default: %(default)s)")
    e.add_argument("--license", default=None, help="--format hf: the licence field of the model card (e.g. mit)")
    e.add_argument("--dtype", choices=("float32", "float16", "int8"), default="float32",
                   help="embedding tables as float32 (lossless), float16 or int8 with a per-row scale")
    e.add_argument("--eval-split", default="test",
                   help="split on which the MRR change of float16 / int8 is measured ('none': skip)")
    e.add_argument("--no-known", action="store_true",
                   help="leave out the known triples (train ∪ valid ∪ test, int32): a smaller export whose "
                        "predictions cannot hide known answers (no --exclude-known / filtering in serve)")
    e.add_argument("--force", action="store_true", help="replace OUT if it exists (never a file of the run folder)")
    command("export")(cmd_export)

    lo = sub.add_parser("load", help="load an artifact (no training data needed): summary and optional top-k")
    lo.add_argument("artifact")
    g = lo.add_mutually_exclusive_group()
    g.add_argument("--head", help="predict tails of (HEAD, RELATION, ?)")
    g.add_argument("--tail", help="predict heads of (?, RELATION, TAIL)")
    lo.add_argument("--relation")
    lo.add_argument("-k", type=int, default=10)
    lo.add_argument("--exclude-known", action="store_true")
    lo.add_argument("--json", action="store_true", help="print the summary as JSON")
    command("load")(cmd_load)

    s = sub.add_parser("serve", help="serve an artifact over HTTP (JSON API, OpenAPI at /docs)")
    s.add_argument("artifact")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads for scoring")
    s.add_argument("--max-batch", type=int, default=64, help="most queries scored by one model call")
    s.add_argument("--max-wait-ms", type=float, default=0.0, help="wait this long to fill a batch (0: never)")
    s.add_argument("--max-k", type=int, default=1000)
    s.add_argument("--max-triples", type=int, default=1000, help="most triples per /score request")
    s.add_argument("--max-body-bytes", type=int, default=1 << 20)
    s.add_argument("--always-batch", action="store_true",
                   help="hand every query to the batching thread, also when no other one waits")
    s.add_argument("--no-hot-path", action="store_true",
                   help="answer prediction requests through FastAPI's routes only (slower; for comparison)")
    s.add_argument("--http", default="auto", choices=("auto", "httptools", "h11"),
                   help="HTTP parser (auto: httptools when installed)")
    s.add_argument("--loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                   help="event loop (auto: uvloop when installed)")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--access-log", action="store_true", help="log every request (slower)")
    command("serve")(cmd_serve)
