"""Epoch time of WN18RR TransE with 1 process and 2 processes (1 thread each) under each gradient synchronisation,
sharded vs single evaluation, and the cost of one gradient exchange of the entity table.

Usage (from the repository root, data in ../shared/data or $KGDISTILL_DATA):
    python benchmarks/distributed_scaling.py --epochs 2 --out benchmarks/out/distributed
    python benchmarks/distributed_scaling.py --exchange      # only the exchange micro-benchmark
Prints Markdown tables and writes results.json into --out. Each training configuration runs the `kgdistill` CLI as a
separate process (torchrun for 2 processes), the configurations alternating within each repeat. The exchange
micro-benchmark runs 2 processes that each hold a 40,943 × 256 gradient with a given fraction of random rows
touched, and times DDP-style dense all-reduce (scale + all-reduce) against :class:`kgdistill.distributed.GradSync`
(sparse: find the touched rows, all-gather ids and rows, zero and add).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = (("1proc", 1, None), ("2proc_dense", 2, "dense"), ("2proc_sparse", 2, "sparse"), ("2proc_auto", 2, "auto"))
FRACTIONS = (0.05, 0.1, 0.25, 0.4, 0.56, 0.75, 1.0)


def kgdistill(args: list[str], nproc: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "kgdistill.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "kgdistill.cli", *args]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def epoch_seconds(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in records if r["event"] == "epoch"]


def exchange_worker(out: Path, rows: int, width: int, repeats: int) -> None:
    """Under torchrun: median seconds of one exchange per touched fraction (dense all-reduce vs sparse)."""
    import torch
    import torch.distributed as dist

    from kgdistill.distributed import GradSync, init_distributed, touched_rows

    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    table = torch.nn.Parameter(torch.zeros(rows, width))
    g = torch.Generator().manual_seed(ctx.rank)
    results: dict[str, dict[str, float]] = {}
    for fraction in FRACTIONS:
        grad = torch.zeros(rows, width)
        picked = torch.randperm(rows, generator=g)[:int(fraction * rows)]
        grad[picked] = torch.randn(picked.numel(), width, generator=g)
        sync = GradSync([table], ctx, "sparse")
        timings: dict[str, list[float]] = {"dense": [], "sparse": [], "scan": []}
        for _ in range(repeats):
            for mode in ("dense", "sparse", "scan"):
                table.grad = grad.clone()
                dist.barrier()
                start = time.perf_counter()
                if mode == "dense":
                    table.grad.mul_(1.0 / ctx.world_size)
                    dist.all_reduce(table.grad)
                elif mode == "sparse":
                    sync()
                else:
                    touched_rows(table.grad)
                timings[mode].append(time.perf_counter() - start)
        # the slower rank decides the step
        med = {k: statistics.median(v) for k, v in timings.items()}
        worst = [torch.tensor([med[k] for k in ("dense", "sparse", "scan")]) for _ in range(ctx.world_size)]
        dist.all_gather(worst, torch.tensor([med[k] for k in ("dense", "sparse", "scan")]))
        top = torch.stack(worst).max(dim=0).values.tolist()
        results[str(fraction)] = {"dense": top[0], "sparse": top[1], "scan": top[2],
                                  "ratio": ctx.world_size * fraction}
    if ctx.is_main:
        (out / "exchange.json").write_text(json.dumps(results, indent=2))
    dist.destroy_process_group()


def run_exchange(out: Path, repeats: int, rows: int = 40943) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
           "--exchange-worker", "--out", str(out), "--repeats", str(repeats), "--exchange-rows", str(rows)]
    subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    results = json.loads((out / "exchange.json").read_text())
    print("\n| rows touched per rank | world × touched / rows | dense all-reduce (ms) | sparse exchange (ms) "
          "| of which row scan (ms) |\n|---:|---:|---:|---:|---:|")
    for fraction, r in results.items():
        print(f"| {float(fraction):.0%} | {r['ratio']:.2f} | {1e3 * r['dense']:.1f} | {1e3 * r['sparse']:.1f} | "
              f"{1e3 * r['scan']:.1f} |")
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=os.environ.get("KGDISTILL_DATA", "../shared/data"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="benchmarks/out/distributed")
    p.add_argument("--exchange", action="store_true", help="only the exchange micro-benchmark")
    p.add_argument("--no-exchange", action="store_true", help="skip the exchange micro-benchmark")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation timing")
    p.add_argument("--exchange-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--exchange-rows", type=int, default=40943, help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.exchange_worker:
        exchange_worker(out, args.exchange_rows, 256, max(5, args.repeats))
        return
    exchange = None if args.no_exchange else run_exchange(out, 15, args.exchange_rows)
    if args.exchange:
        return
    results: dict[str, list[float]] = {f"epoch_{name}": [] for name, _, _ in CONFIGS}
    results.update(eval_1proc=[], eval_2proc=[])
    for rep in range(args.repeats):
        for name, nproc, sync in CONFIGS:
            run = out / f"run-{name}-{rep}"
            train = ["train", "--dataset", "wn18rr", "--data-dir", args.data_dir, "--model", "transe", "--dim", "256",
                     "--batch-size", "1024", "--num-negatives", "64", "--lr", "1e-3", "--epochs", str(args.epochs),
                     "--eval-every", "0", "--eval-splits", "valid", "--progress", "false", "--out", str(run)]
            if sync is not None:
                train += ["--grad-sync", sync]
            if run.exists():
                subprocess.run(["rm", "-rf", str(run)], check=True)
            kgdistill(train, nproc)
            results[f"epoch_{name}"].extend(epoch_seconds(run)[1:] or epoch_seconds(run))
        if not args.no_eval:
            run = out / f"run-1proc-{rep}"
            for nproc in (1, 2):
                results[f"eval_{nproc}proc"].append(kgdistill(["evaluate", str(run), "--split", "test"], nproc))
    med = {k: statistics.median(v) for k, v in results.items() if v}
    (out / "results.json").write_text(json.dumps({"raw": results, "median": med, "exchange": exchange}, indent=2))
    one = med["epoch_1proc"]
    print("\n| configuration | TransE-256 epoch (s, median) | speed-up vs 1 process |\n|---|---:|---:|")
    for name, nproc, sync in CONFIGS:
        label = "1 process" if nproc == 1 else f"2 processes, `--grad-sync {sync}`"
        print(f"| {label} | {med[f'epoch_{name}']:.2f} | {one / med[f'epoch_{name}']:.2f}× |")
    if not args.no_eval:
        print(f"\n`kgdistill evaluate` test, whole command (s): 1 process {med['eval_1proc']:.1f}, "
              f"2 processes {med['eval_2proc']:.1f}")


if __name__ == "__main__":
    main()
