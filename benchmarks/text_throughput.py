"""Entity-encoding throughput (entities/s) of text run folders, measured side by side in one process.

Each round encodes every entity of the run's graph once per model (no cache), models alternating; the median of the
rounds is reported, so that models are compared under the same machine load.

    python benchmarks/text_throughput.py runs/bench-text-umls/teacher runs/bench-text-umls/pmd/pmd-L3-m0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from kgdistill.runs import load_run
    from kgdistill.text import biencoder  # noqa: F401  (registers the model class)

    models = {r: load_run(r, device=a.device, with_dataset=False).model.eval() for r in a.runs}
    times: dict[str, list[float]] = {r: [] for r in a.runs}
    for _ in range(a.rounds):
        for r, m in models.items():
            start = time.perf_counter()
            m.encode_entities(batch_size=a.batch_size)
            times[r].append(time.perf_counter() - start)
    rows = [{"run": r, "layers": m.num_layers, "entities": m.num_entities,
             "entities_per_s": round(m.num_entities / statistics.median(times[r]), 1),
             "seconds": [round(t, 2) for t in times[r]]} for r, m in models.items()]
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
