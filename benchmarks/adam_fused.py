"""kgdistill's hand-written fused Adam kernel vs ``torch.optim.Adam(fused=True)`` (and foreach / for-loop) on CPU.

One optimiser step over dense float32 tables shaped like embedding training (entity + relation tables), all
implementations side by side in alternating order, one torch thread; the figure is the median over rounds of the
mean step time within a round. Also checks that the implementations follow the same trajectory.

    python benchmarks/adam_fused.py --rounds 15 --steps 20 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

SHAPES = {  # name: [(rows, cols), ...]  (ComplEx stores 2·dim reals per row)
    "kinship-complex-64": [(104, 128), (50, 128)],
    "fb15k237-complex-256": [(14541, 512), (474, 512)],
    "wn18rr-complex-512": [(40943, 1024), (22, 1024)],
}


def make_impls() -> dict[str, callable]:
    impls = {
        "torch fused": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
        "torch foreach": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        "torch for-loop": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False),
    }
    try:
        from kgdistill import kernels
        from kgdistill.training.optim import Adam as KernelAdam  # the hand-written kernel, where it still exists

        if issubclass(KernelAdam, torch.optim.Adam) and KernelAdam is not torch.optim.Adam and kernels.available():
            impls["kgdistill kernel"] = lambda ps: KernelAdam(ps, lr=1e-3, foreach=True)
    except ImportError:
        pass
    return impls


def params_for(shapes: list[tuple[int, int]], seed: int = 0) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    return ps, grads


def time_steps(opt: torch.optim.Optimizer, ps: list[torch.nn.Parameter], grads: list[torch.Tensor], steps: int
               ) -> float:
    for p, gr in zip(ps, grads):
        p.grad = gr
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def same_trajectory(impls: dict, shapes: list[tuple[int, int]], steps: int = 5) -> dict[str, float]:
    """Max |difference| of the parameters after ``steps`` steps vs torch's for-loop Adam (same grads)."""
    out = {}
    ref_ps, grads = params_for(shapes)
    ref = torch.optim.Adam(ref_ps, lr=1e-3, foreach=False)
    time_steps(ref, ref_ps, grads, steps)
    for name, make in impls.items():
        ps, _ = params_for(shapes)
        time_steps(make(ps), ps, grads, steps)
        out[name] = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(ps, ref_ps))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    impls = make_impls()
    results = {}
    for shape_name in args.shapes:
        shapes = SHAPES[shape_name]
        state = {}
        for name, make in impls.items():
            ps, grads = params_for(shapes)
            opt = make(ps)
            time_steps(opt, ps, grads, 2)  # warm-up: state allocated, kernel built
            state[name] = (opt, ps, grads)
        times = {name: [] for name in impls}
        names = list(impls)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                opt, ps, grads = state[name]
                times[name].append(time_steps(opt, ps, grads, args.steps))
        med = {name: statistics.median(v) for name, v in times.items()}
        results[shape_name] = {"floats": sum(a * b for a, b in shapes), "median_step_ms": {
            k: round(v * 1e3, 4) for k, v in med.items()},
            "vs_torch_fused": {k: round(v / med["torch fused"], 3) for k, v in med.items()},
            "max_abs_diff_vs_torch_after_5_steps": same_trajectory(impls, shapes)}
        row = "  ".join(f"{k}: {v * 1e3:8.3f} ms ({v / med['torch fused']:.2f}x)" for k, v in med.items())
        print(f"{shape_name:22s} {row}", flush=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds,
            "steps": args.steps, "machine": platform.platform(), "processor": platform.processor(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
