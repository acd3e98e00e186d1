"""The compiled kernels as PyTorch operators vs the ctypes library they replaced, side by side.

Two source trees of kgdistill (e.g. the commit before the switch and the current one, each exported with
``git archive``) are timed in alternating child processes, one torch thread each (``OMP_NUM_THREADS=1``), the order
of the two trees swapped every round; each figure is the median over rounds of a child's median over repetitions,
and the ratio column the median over rounds of the per-round ratio (the two trees of a round ran back to back,
which cancels most of the load of a shared machine).
Cases (the public entry points, so both trees run them unchanged):

* ``all_pairs-l1`` / ``all_pairs-complex_l1``: ``kernels.all_pairs`` without autograd (evaluation scoring),
  128 queries × 14,541 entities (FB15k-237) × 256 reals;
* ``corrupt-wn18rr``: a TransE-L1 negative-sampling step on a WN18RR-sized table (40,943 × 256, batch 1024,
  64 negatives): ``training.steps.negative_sampling_scores`` + self-adversarial loss + backward, so the anchor-row
  gather and the merge of the two table gradients (``GradientLink`` before, ``kernels.gather_rows`` now) count;
* ``corrupt-kinship``: the same step on kinship's size (104 × 64, batch 512, 32 negatives);
* ``corrupt-tiny``: the same step on 16 × 16, batch 8, 4 negatives: the per-call overhead (dispatch, autograd);
* ``pytorch-*``: the same with the kernels switched off (``kernels.disabled``), for scale;
* ``train-kinship`` (``--train``): ``kgdistill train`` TransE on kinship, median epoch seconds from the run's trace.

    git archive <old-commit> src | tar -x -C /tmp/kg-old; git archive HEAD src | tar -x -C /tmp/kg-new
    python benchmarks/kernels_ops.py --trees ctypes=/tmp/kg-old/src ops=/tmp/kg-new/src --rounds 7 --train \
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ["all_pairs-l1", "all_pairs-complex_l1", "corrupt-wn18rr", "corrupt-kinship", "corrupt-tiny",
         "pytorch-corrupt-wn18rr", "pytorch-corrupt-kinship"]


def _median_time(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _child(cases: list[str], reps: int) -> dict[str, float]:
    import torch

    from kgdistill import kernels
    from kgdistill.losses import SelfAdversarialLoss
    from kgdistill.models.embedding import EmbeddingModel
    from kgdistill.training.steps import negative_sampling_scores

    torch.set_num_threads(1)
    assert kernels.available(), kernels.load_error()
    out: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    for case in cases:
        if case.startswith("all_pairs-"):
            kind = case.split("-", 1)[1]
            q, e = torch.randn(128, 256, generator=gen), torch.randn(14541, 256, generator=gen)
            with torch.no_grad():
                assert kernels.all_pairs(kind, q, e) is not None
                out[case] = _median_time(lambda kind=kind, q=q, e=e: kernels.all_pairs(kind, q, e), max(3, reps // 2))
            continue
        size = case.rsplit("-", 1)[1]
        num_entities, dim, b, k = {"wn18rr": (40943, 256, 1024, 64), "kinship": (104, 64, 512, 32),
                                   "tiny": (16, 16, 8, 4)}[size]
        torch.manual_seed(0)
        model = EmbeddingModel("transe", num_entities, 11, dim)
        batch = torch.stack([torch.randint(num_entities, (b,), generator=gen), torch.randint(11, (b,), generator=gen),
                             torch.randint(num_entities, (b,), generator=gen)], 1)
        ids = torch.randint(num_entities, (b, k), generator=gen)
        loss_fn = SelfAdversarialLoss()

        def step(model=model, batch=batch, ids=ids, k=k, loss_fn=loss_fn) -> None:
            model.zero_grad(set_to_none=True)
            pos, neg, _ = negative_sampling_scores(model, batch, ids, None, k // 2)
            loss_fn(pos, neg).backward()

        with kernels.use(not case.startswith("pytorch-")):
            out[case] = _median_time(step, reps if size == "wn18rr" else reps * 20)
    return out


def _train_child(src: str, epochs: int) -> float:
    """Median epoch seconds of ``kgdistill train`` (TransE, kinship) run from the tree ``src``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", "import sys; from kgdistill.cli import main; sys.exit(main())", "train",
               "--dataset", "kinship", "--model", "transe", "--dim", "64", "--epochs", str(epochs),
               "--batch-size", "512", "--num-negatives", "32", "--eval-every", "0", "--patience", "0",
               "--eval-splits", "test", "--num-threads", "1", "--out", str(Path(tmp) / "run"), "--no-progress"]
        subprocess.run(cmd, check=True, env=_env(src), capture_output=True, text=True)
        trace = next((Path(tmp) / "run").glob("trace*.jsonl"))
        secs = [json.loads(line)["seconds"] for line in trace.read_text().splitlines()
                if json.loads(line).get("event") == "epoch"]
    return statistics.median(secs)


def _env(src: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("KGDISTILL_KERNELS", None)
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", nargs="+", metavar="NAME=SRC", help="source trees (their src/ folders) to compare")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=9, help="repetitions per case in a child (x20 for kinship steps)")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--train", action="store_true", help="also time kgdistill train TransE on kinship")
    p.add_argument("--train-epochs", type=int, default=15)
    p.add_argument("--json", help="write the raw figures here")
    p.add_argument("--summarize", metavar="JSON", help="only re-render the table of an earlier --json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.summarize:
        print(render(json.loads(Path(args.summarize).read_text())["raw"]))
        return
    cases = args.cases.split(",")
    if args.child:
        print(json.dumps(_child(cases, args.reps)))
        return
    trees = dict(t.split("=", 1) for t in args.trees)
    raw: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    names = list(trees)
    for rnd in range(args.rounds):
        for name in (names if rnd % 2 == 0 else names[::-1]):
            src = trees[name]
            proc = subprocess.run([sys.executable, __file__, "--child", "--cases", ",".join(cases),
                                   "--reps", str(args.reps)], check=False, env=_env(src), capture_output=True,
                                  text=True)
            if proc.returncode:
                sys.exit(f"{name}: {proc.stderr[-2000:]}")
            for case, sec in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                raw[name].setdefault(case, []).append(sec)
            if args.train:
                raw[name].setdefault("train-kinship", []).append(_train_child(src, args.train_epochs))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"raw": raw, "trees": trees, "machine": platform.processor(),
                                               "load": os.getloadavg()}, indent=1))
    print(render(raw))


def render(raw: dict[str, dict[str, list[float]]]) -> str:
    """Markdown table: per tree the median (and the minimum, the least disturbed round) over rounds; per other tree
    the median and range of the per-round ratios to the first tree."""
    names = list(raw)
    base = names[0]
    lines = ["| case | " + " | ".join(f"{n} ms: median (min)" for n in names) + " | " + " | ".join(
        f"{n} / {base}: median of per-round ratios (range); ratio of minima" for n in names[1:]) + " |",
        "|---|" + "---:|" * (2 * len(names) - 1)]
    for case in raw[base]:
        cells = [f"{statistics.median(raw[n][case]) * 1e3:.3f} ({min(raw[n][case]) * 1e3:.3f})" for n in names]
        for n in names[1:]:
            r = [a / b for a, b in zip(raw[n][case], raw[base][case])]
            cells.append(f"{statistics.median(r):.3f} ({min(r):.2f}–{max(r):.2f}); "
                         f"{min(raw[n][case]) / min(raw[base][case]):.3f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
