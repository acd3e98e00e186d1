"""Peak memory and time of one all-entity complex-L1 (RotatE) scoring with backward, as in a 1-N training step.

    python benchmarks/complex_l1_memory.py --queries 10 100 [--entities 40943 --dim 512]

Each size runs in a fresh process (peak RSS is per process). Past ``CHECKPOINT_BUDGET`` elements the chunks of
``Similarity.all_pairs`` are recomputed in backward instead of being kept (see kgdistill.models.similarity).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(queries: int, entities: int, dim: int) -> dict:
    import torch

    from kgdistill.models.similarity import similarities

    torch.set_num_threads(1)
    sim = similarities.get("complex_l1")()
    q = torch.randn(queries, dim, requires_grad=True)
    e = torch.randn(entities, dim, requires_grad=True)
    start = time.perf_counter()
    sim.all_pairs(q, e).logsumexp(-1).sum().backward()
    return {"queries": queries, "entities": entities, "dim": dim, "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, nargs="+", default=[10, 100])
    p.add_argument("--entities", type=int, default=40943)
    p.add_argument("--dim", type=int, default=512, help="reals a row (RotatE-256: 512)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.queries[0], args.entities, args.dim)))
        return
    for n in args.queries:
        cmd = [sys.executable, __file__, "--one", "--queries", str(n), "--entities", str(args.entities),
               "--dim", str(args.dim)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
