"""Time a full test evaluation of a text run with each encode dtype: every entity and query encoded afresh, then again
with the entity encodings cached.

    python benchmarks/text_full_eval.py RUN --threads 1 --dtypes bf16,fp32 [--split test] [--out result.json]

Prints one JSON line per measurement (seconds, MRR, H@1, H@10) and writes them all to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    from kgdistill.evaluate import evaluate
    from kgdistill.runs import load_run

    torch.set_num_threads(a.threads)
    run = load_run(a.run_dir)
    model = run.model.eval()
    rows = []
    for dtype in [d for d in a.dtypes.split(",") if d]:
        model.set_encode_dtype(dtype)
        for cached in (False, True):
            if not cached:
                model.invalidate_cache()
            t0 = time.perf_counter()
            s = evaluate(model, run.dataset, a.split).summary()["both"]
            rows.append({"encode_dtype": dtype, "entities_cached": cached, "threads": a.threads,
                         "seconds": round(time.perf_counter() - t0, 1),
                         **{k: round(float(s[k]), 5) for k in ("mrr", "hits@1", "hits@10", "count")}})
            print(json.dumps(rows[-1]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"run": a.run_dir, "split": a.split, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
