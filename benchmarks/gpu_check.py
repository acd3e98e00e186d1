"""Run every command path of kgdistill on one device (``--device cuda`` on a GPU) and check the results.

Each step is a real CLI command (``python -m kgdistill ...``) in a fresh process: KGE training in the three training
modes, evaluation on the device compared with evaluation of the same weights on CPU, prediction, every KGE
distillation method, export and load, text training and every text distillation method with a tiny random BERT and,
when ``--plm`` is given, with a real PLM folder. A step passes when its exit status is 0 and its check holds.
Results: ``<out>/gpu_check.json`` and a Markdown table ``<out>/gpu_check.md``.

Usage (a GPU machine)::

    python benchmarks/gpu_check.py --device cuda --out /tmp/gpu-check
    python benchmarks/gpu_check.py --device cuda --plm path/to/minilm --out /tmp/gpu-check

It also runs on CPU (``--device cpu``) in about two minutes, which is how it is checked on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

TINY = "tiny:layers=4,hidden=32"


def _metrics(run: Path, split: str = "test") -> dict:
    data = json.loads((run / "metrics.json").read_text())
    return data.get(split, data)


def _mrr(d: dict) -> float:
    """The overall MRR of a metrics dictionary (``{"both": {"mrr": ...}}`` or flat)."""
    for key in ("both", "overall"):
        if isinstance(d.get(key), dict) and "mrr" in d[key]:
            return float(d[key]["mrr"])
    if "mrr" in d:
        return float(d["mrr"])
    raise KeyError("no mrr in metrics")


def build_steps(device: str, runs: Path, plm: str | None, text_steps: int) -> list[tuple[str, list[str], Callable[[], str] | None]]:
    """The (name, argv, check) list; a check returns '' when it holds or a message saying what does not."""
    d = ["--device", device]
    k = runs / "kinship-complex"
    n_rot = runs / "nations-rotate"
    n_te = runs / "nations-transe"
    steps: list[tuple[str, list[str], Callable[[], str] | None]] = []

    def add(name: str, argv: list[str], check: Callable[[], str] | None = None) -> None:
        steps.append((name, argv, check))

    def learned(run: Path, floor: float) -> Callable[[], str]:
        def check() -> str:
            mrr = _mrr(_metrics(run))
            return "" if mrr > floor else f"test MRR {mrr:.4f} ≤ {floor}"
        return check

    add("train complex 1vsall", ["train", "--dataset", "kinship", "--model", "complex", "--dim", "64",
                                 "--training-mode", "1vsall", "--epochs", "20", "--lr", "0.1", "--optimizer", "adagrad",
                                 "--out", str(k), *d], learned(k, 0.3))
    add("train rotate nssa", ["train", "--dataset", "nations", "--model", "rotate", "--dim", "32", "--loss", "nssa",
                              "--epochs", "10", "--out", str(n_rot), *d], learned(n_rot, 0.3))
    add("train transe margin bernoulli", ["train", "--dataset", "nations", "--model", "transe", "--dim", "32",
                                          "--loss", "margin", "--negative-sampler", "bernoulli", "--epochs", "5",
                                          "--out", str(n_te), *d], learned(n_te, 0.2))
    add("train kvsall distmult", ["train", "--dataset", "nations", "--model", "distmult", "--dim", "32",
                                  "--training-mode", "kvsall", "--epochs", "5", "--out", str(runs / "n-distmult"), *d])
    add("train simple", ["train", "--dataset", "nations", "--model", "simple", "--dim", "32", "--epochs", "3",
                         "--out", str(runs / "n-simple"), *d])
    for name, run in (("complex", k), ("rotate", n_rot)):
        cpu_json, dev_json = runs / f"eval-{name}-cpu.json", runs / f"eval-{name}-dev.json"
        add(f"evaluate {name} on cpu", ["evaluate", str(run), "--device", "cpu", "--json", str(cpu_json)])

        def same(cpu_json: Path = cpu_json, dev_json: Path = dev_json) -> str:
            a = _mrr(json.loads(cpu_json.read_text()).get("test", json.loads(cpu_json.read_text())))
            b = _mrr(json.loads(dev_json.read_text()).get("test", json.loads(dev_json.read_text())))
            return "" if abs(a - b) < 1e-4 else f"MRR cpu {a:.6f} vs device {b:.6f}"
        add(f"evaluate {name} on device = cpu", ["evaluate", str(run), "--per-relation", "--json", str(dev_json), *d],
            same)
    add("predict", ["predict", str(k), "--head", "person0", "--relation", "term0", "-k", "5", *d])
    for method, extra in (("kd", ["--dims", "16"]), ("dualde", ["--dims", "16", "--stage2-epochs", "2"]),
                          ("iterde", ["--dims", "32", "16"]),
                          ("metasd", ["--sparsity", "0.9"]), ("iterde-metasd", ["--dims", "32", "16"])):
        add(f"distill {method}", ["distill", "--method", method, "--teacher", str(k), *extra, "--epochs", "5",
                                  "--out", str(runs / f"distill-{method}"), *d])
    add("export int8 + load", ["export", str(k), str(runs / "k-int8.safetensors"), "--dtype", "int8"])
    add("load", ["load", str(runs / "k-int8.safetensors")])

    t = runs / "umls-text-tiny"
    tiny = ["--plm", TINY, "--max-length", "32", "--batch-size", "32", "--steps-per-epoch", str(text_steps)]
    add("text-train tiny", ["text-train", "--dataset", "umls", *tiny, "--epochs", "1", "--pre-batch", "2",
                            "--self-negatives", "1", "--rerank-hops", "1", "--out", str(t), *d])
    for method, extra in (("pmd", ["--grades", "3,2", "--mask-rates", "0.2,0.1,0"]),
                          ("pmd", ["--grades", "2", "--mask-rates", "0.2,0", "--mgfd-variant", "feature-generator"]),
                          ("logit", ["--layers", "0,2"]), ("patient", ["--layers", "0,2"]),
                          ("hrkd", ["--layers", "0,2", "--hrkd-meta-every", "2"])):
        tag = method + ("-fg" if "feature-generator" in extra else "")
        add(f"text distill {tag}", ["distill", "--method", method, "--teacher", str(t), *extra,
                                    "--max-length", "32", "--batch-size", "32", "--steps-per-epoch", str(text_steps),
                                    "--epochs", "1", "--out", str(runs / f"text-{tag}"), *d])
    add("text predict", ["predict", str(t), "--head", "cell", "--relation", "location_of", "-k", "3", *d])
    add("text export + load", ["export", str(t), str(runs / "text.safetensors")])
    if plm:
        p = runs / "umls-plm"
        add("text-train real PLM", ["text-train", "--dataset", "umls", "--plm", plm, "--max-length", "48",
                                    "--batch-size", "64", "--epochs", "1", "--out", str(p), *d], learned(p, 0.05))
        add("pmd real PLM 6→3", ["distill", "--method", "pmd", "--teacher", str(p), "--grades", "3",
                                 "--mask-rates", "0.2,0", "--max-length", "48", "--batch-size", "64", "--epochs", "1",
                                 "--out", str(runs / "umls-plm-pmd"), *d])
    return steps


def group_of(step: str) -> str:
    """Steps of one group depend on each other; groups do not."""
    if "real PLM" in step:
        return "plm"
    return "text" if step.startswith("text") else "kge"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="runs/gpu-check")
    p.add_argument("--plm", default=None, help="a PLM folder or name for the real-PLM steps (skipped when absent)")
    p.add_argument("--text-steps", type=int, default=20, help="steps per text stage")
    p.add_argument("--group", default="all", choices=["all", "kge", "text", "plm"],
                   help="run one group of steps (groups are independent: run them side by side to save time)")
    a = p.parse_args(argv)
    out = Path(a.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results = []
    for name, args, check in build_steps(a.device, runs, a.plm, a.text_steps):
        if a.group != "all" and group_of(name) != a.group:
            continue
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kgdistill", *args], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        problem = "" if proc.returncode == 0 else f"exit {proc.returncode}"
        if not problem and check is not None:
            try:
                problem = check()
            except Exception as exc:  # noqa: BLE001 - a check that cannot read its inputs is a failure to report
                problem = f"check failed: {exc!r}"
        results.append({"step": name, "ok": not problem, "problem": problem, "seconds": round(wall, 2),
                        "command": "kgdistill " + " ".join(args),
                        "output_tail": (proc.stdout[-1500:] + proc.stderr[-3000:]) if problem else proc.stdout[-400:]})
        print(f"{'ok  ' if not problem else 'FAIL'} {wall:7.1f}s  {name}  {problem}", flush=True)
        if problem:
            print(proc.stderr[-3000:], flush=True)
    tag = "" if a.group == "all" else f"-{a.group}"
    (out / f"gpu_check{tag}.json").write_text(json.dumps({"device": a.device, "results": results}, indent=2))
    lines = ["| step | ok | s | problem |", "|---|---|--:|---|"]
    lines += [f"| {r['step']} | {'yes' if r['ok'] else '**no**'} | {r['seconds']} | {r['problem']} |" for r in results]
    (out / f"gpu_check{tag}.md").write_text("\n".join(lines) + "\n")
    failed = [r["step"] for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} steps passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
