"""``kgdistill export``, ``load`` and ``serve``: a run as one artifact file (or a Hugging Face-style folder), the
artifact loaded and queried, and served over HTTP.

FastAPI / uvicorn are imported only when ``serve`` runs, so the other verbs work without the serve extra.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import click

from kgdistill.cli._common import Args, choice, verb
from kgdistill.errors import KGDistillError
from kgdistill.tables import format_table


def _size_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"tensor": name, "shape": "×".join(map(str, info["shape"])), "layout": info["layout"],
             "stored": info["stored"], "non-zero": info.get("nnz"), "bytes": info.get("bytes")}
            for name, info in meta.get("tensors", {}).items()]


def cmd_export(args: Args) -> int:
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


def cmd_load(args: Args) -> int:
    from kgdistill.artifact import load_artifact

    if args.head is not None and args.tail is not None:
        raise click.UsageError("--head and --tail exclude each other")
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


def cmd_serve(args: Args) -> int:
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


def register(root: click.Group) -> None:
    """Add ``export``, ``load`` and ``serve``."""
    verb(root, "export", [
        click.Argument(["run_dir"], help="the run folder"),
        click.Argument(["out"], help="artifact file (or an existing folder: <run>-<dtype>.safetensors inside); with "
                                     "--format hf the folder to write"),
        choice("--format", ("artifact", "hf"), default="artifact",
               help="artifact: one .safetensors file; hf: a folder with config.json, model.safetensors, id maps, "
                    "known.safetensors and a README.md model card (default: artifact)"),
        click.Option(["--license"], default=None, metavar="TEXT",
                     help="--format hf: the licence field of the model card (e.g. mit)"),
        choice("--dtype", ("float32", "float16", "int8"), default="float32",
               help="embedding tables as float32 (lossless), float16 or int8 with a per-row scale (default: float32)"),
        click.Option(["--eval-split"], default="test", metavar="SPLIT",
                     help="split on which the MRR change of float16 / int8 is measured ('none': skip; default: test)"),
        click.Option(["--no-known"], is_flag=True,
                     help="leave out the known triples (train ∪ valid ∪ test, int32): a smaller export whose "
                          "predictions cannot hide known answers (no --exclude-known / filtering in serve)"),
        click.Option(["--force"], is_flag=True, help="replace OUT if it exists (never a file of the run folder)")],
        help="export a run to one self-contained artifact file (optionally quantised), or to a Hugging Face-style "
             "folder with a model card (--format hf)")(cmd_export)

    verb(root, "load", [
        click.Argument(["artifact"], help="an artifact file written by kgdistill export"),
        click.Option(["--head"], default=None, metavar="ENTITY", help="predict tails of (HEAD, RELATION, ?)"),
        click.Option(["--tail"], default=None, metavar="ENTITY", help="predict heads of (?, RELATION, TAIL)"),
        click.Option(["--relation"], default=None, metavar="RELATION", help="relation label or text"),
        click.Option(["-k"], type=int, default=10, metavar="N", help="answers shown (default: 10)"),
        click.Option(["--exclude-known"], is_flag=True, help="hide answers already in the graph"),
        click.Option(["--json"], is_flag=True, help="print the summary as JSON")],
        help="load an artifact (no training data needed): summary and optional top-k")(cmd_load)

    verb(root, "serve", [
        click.Argument(["artifact"], help="an artifact file written by kgdistill export"),
        click.Option(["--host"], default="127.0.0.1", metavar="HOST", help="address to listen on (default: 127.0.0.1)"),
        click.Option(["--port"], type=int, default=8000, metavar="N", help="port (default: 8000)"),
        click.Option(["--threads"], type=int, default=None, metavar="N", help="torch CPU threads for scoring"),
        click.Option(["--max-batch"], type=int, default=64, metavar="N",
                     help="most queries scored by one model call (default: 64)"),
        click.Option(["--max-wait-ms"], type=float, default=0.0, metavar="X",
                     help="wait this long to fill a batch (0: never; default: 0)"),
        click.Option(["--max-k"], type=int, default=1000, metavar="N", help="largest k of a query (default: 1000)"),
        click.Option(["--max-triples"], type=int, default=1000, metavar="N",
                     help="most triples per /score request (default: 1000)"),
        click.Option(["--max-body-bytes"], type=int, default=1 << 20, metavar="N",
                     help="largest request body (default: 1048576)"),
        click.Option(["--always-batch"], is_flag=True,
                     help="hand every query to the batching thread, also when no other one waits"),
        click.Option(["--no-hot-path"], is_flag=True,
                     help="answer prediction requests through FastAPI's routes only (slower; for comparison)"),
        choice("--http", ("auto", "httptools", "h11"), default="auto",
               help="HTTP parser (auto: httptools when installed)"),
        choice("--loop", ("auto", "uvloop", "asyncio"), default="auto",
               help="event loop (auto: uvloop when installed)"),
        choice("--log-level", ("critical", "error", "warning", "info", "debug"), default="info",
               help="uvicorn's log level (default: info)"),
        click.Option(["--access-log"], is_flag=True, help="log every request (slower)")],
        help="serve an artifact over HTTP (JSON API, OpenAPI at /docs)")(cmd_serve)
