"""Epoch time of WN18RR TransE with 1 vs 2 processes (1 thread each), and sharded vs single evaluation.

Usage (from the repository root, data in ../shared/data or $KGDISTILL_DATA):
    python benchmarks/distributed_scaling.py --epochs 3 --out benchmarks/out/distributed
Prints a Markdown table and writes results.json into --out. Each configuration runs the `kgdistill` CLI as a
separate process (torchrun for 2 processes), alternating 1 and 2 processes per repeat.
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=os.environ.get("KGDISTILL_DATA", "../shared/data"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="benchmarks/out/distributed")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[float]] = {"epoch_1proc": [], "epoch_2proc": [], "eval_1proc": [], "eval_2proc": []}
    for rep in range(args.repeats):
        for nproc in (1, 2):
            run = out / f"run-{nproc}p-{rep}"
            train = ["train", "--dataset", "wn18rr", "--data-dir", args.data_dir, "--model", "transe", "--dim", "256",
                     "--batch-size", "1024", "--num-negatives", "64", "--lr", "1e-3", "--epochs", str(args.epochs),
                     "--eval-every", "0", "--eval-splits", "valid", "--progress", "false", "--out", str(run)]
            if run.exists():
                subprocess.run(["rm", "-rf", str(run)], check=True)
            kgdistill(train, nproc)
            results[f"epoch_{nproc}proc"].extend(epoch_seconds(run)[1:] or epoch_seconds(run))
        run = out / f"run-1p-{rep}"
        for nproc in (1, 2):
            results[f"eval_{nproc}proc"].append(kgdistill(["evaluate", str(run), "--split", "test"], nproc))
    med = {k: statistics.median(v) for k, v in results.items()}
    (out / "results.json").write_text(json.dumps({"raw": results, "median": med}, indent=2))
    print("| measure | 1 process | 2 processes | speed-up |\n|---|---:|---:|---:|")
    print(f"| TransE-256 epoch (s, median) | {med['epoch_1proc']:.1f} | {med['epoch_2proc']:.1f} | "
          f"{med['epoch_1proc'] / med['epoch_2proc']:.2f}× |")
    print(f"| `kgdistill evaluate` test, whole command (s) | {med['eval_1proc']:.1f} | {med['eval_2proc']:.1f} | "
          f"{med['eval_1proc'] / med['eval_2proc']:.2f}× |")


if __name__ == "__main__":
    main()
