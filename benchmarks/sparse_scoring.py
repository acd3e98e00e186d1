"""Is scoring against a pruned (sparse) entity table faster than against the dense one? (issue 14, item 5)

All-entity scoring is ``Q @ Eᵀ`` (queries ``Q [B, D]``, entity table ``E [N, D]``; DistMult / ComplEx / the
inner-product part of every interaction). MetaSD prunes ``E`` to a density ``p``; this times the dense product
against ``torch.sparse`` products with ``E`` in CSR (and COO) at each density, on one thread, median of rounds, and
the matching dense product of a table with the same non-zeros as a *narrower* dense model (``D·p`` columns).

    python benchmarks/sparse_scoring.py --entities 40943 --dims 64 512 --batch 256 --densities 0.5 0.25 0.1 0.05 0.01
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def timed(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", type=int, default=40943)
    p.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05, 0.01])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for d in a.dims:
        q = torch.randn(a.batch, d, generator=g)
        dense_table = torch.randn(a.entities, d, generator=g)
        t_dense = timed(lambda: q @ dense_table.T, a.rounds)
        for density in a.densities:
            mask = torch.rand(a.entities, d, generator=g) < density
            pruned = dense_table * mask
            csr, coo = pruned.to_sparse_csr(), pruned.to_sparse()
            qt = q.T.contiguous()
            t_csr = timed(lambda: torch.sparse.mm(csr, qt), a.rounds)
            t_coo = timed(lambda: torch.sparse.mm(coo, qt), a.rounds)
            narrow = max(1, round(d * density))
            t_narrow = timed(lambda: q[:, :narrow] @ dense_table[:, :narrow].T, a.rounds)
            assert torch.allclose(torch.sparse.mm(csr, qt).T, q @ pruned.T, atol=1e-3, rtol=1e-4)
            rows.append({"dim": d, "density": density, "dense_ms": round(t_dense * 1e3, 2),
                         "csr_ms": round(t_csr * 1e3, 2), "coo_ms": round(t_coo * 1e3, 2),
                         "dense_same_nonzeros_ms": round(t_narrow * 1e3, 2), "narrow_dim": narrow,
                         "csr_speedup_over_dense": round(t_dense / t_csr, 2)})
            print(json.dumps(rows[-1]), flush=True)
    print("| dim | density | dense ms | CSR ms | COO ms | CSR speed-up | dense model of the same non-zeros (dim) ms |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['dim']} | {r['density']} | {r['dense_ms']} | {r['csr_ms']} | {r['coo_ms']} | "
              f"{r['csr_speedup_over_dense']}× | {r['dense_same_nonzeros_ms']} ({r['narrow_dim']}) |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
