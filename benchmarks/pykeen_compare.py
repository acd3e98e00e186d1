"""Side-by-side speed comparison with PyKEEN (issue 2, item 9): training seconds per epoch and full filtered test
evaluation (wall time, peak RSS), both libraries alternating in one run, under each allocator.

Every measurement is a fresh subprocess: PyKEEN through ``benchmarks/pykeen_reference.py`` (the peer runner
``../shared/bench/pykeen_reference.py`` plus per-epoch CPU time; PyKEEN lives in its own venv, ``.bench-venv``),
kgdistill through ``benchmarks/pykeen_kgdistill.py``.
Runs alternate A B B A per round (rounds × epochs epochs per library), so drift and load spikes hit both. Each
subprocess records the machine's load average before and after, and its own CPU time, so a run that shared the CPU
with something else can be spotted in the JSON.

Configuration (both libraries, the same models): WN18RR, dim 256, batch 1024, 64 negatives per positive (half heads,
half tails), self-adversarial loss (margin 9, temperature 1), Adam lr 1e-3, seed 42. TransE: L1 distance, entity
rows renormalised to unit L2 norm after every step. RotatE: complex L2 norm (kgdistill ``{norm: l2}``).

Usage (see benchmarks/README.md):
  python benchmarks/pykeen_compare.py --allocators stock,jemalloc --rounds 2 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true"


def find_jemalloc() -> str | None:
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                   "/usr/local/lib"):
        path = Path(folder) / "libjemalloc.so.2"
        if path.exists():
            return str(path)
    return None


def allocator_env(name: str, threads: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if name == "jemalloc":
        lib = find_jemalloc()
        if lib is None:
            raise SystemExit("jemalloc not found: apt-get install -y libjemalloc2")
        env["LD_PRELOAD"] = lib
        env["MALLOC_CONF"] = JEMALLOC_CONF
    return env


def machine() -> dict:
    info: dict = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "L3 cache", "Flags"):
                info[key.strip()] = value.strip() if key.strip() != "Flags" else \
                    " ".join(f for f in value.split() if f.startswith("avx512f") or f == "avx2")
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["MemTotal"] = f.readline().split(":")[1].strip()
    except OSError:
        pass
    return info


def run(cmd: list[str], env: dict[str, str], log) -> dict:
    """Run one measurement subprocess; returns its RESULT json plus load/CPU bookkeeping."""
    load_before = os.getloadavg()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr[-4000:]}\n")
    log.flush()
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    result["_process"] = {
        "wall_seconds": wall,
        "user_seconds": usage_after.ru_utime - usage_before.ru_utime,
        "sys_seconds": usage_after.ru_stime - usage_before.ru_stime,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--dataset", default="WN18RR")
    p.add_argument("--pykeen-python", default=str(REPO / ".bench-venv" / "bin" / "python"))
    p.add_argument("--pykeen-runner", default=str(REPO / "benchmarks" / "pykeen_reference.py"),
                   help="PyKEEN runner: a copy of ../shared/bench/pykeen_reference.py that also records CPU time")
    p.add_argument("--ours-python", default=sys.executable)
    p.add_argument("--allocators", default="stock,jemalloc")
    p.add_argument("--models", default="TransE,RotatE", help="models whose training is timed")
    p.add_argument("--eval-models", default="TransE", help="models whose full test evaluation is timed")
    p.add_argument("--epochs", type=int, default=3, help="epochs per training run")
    p.add_argument("--rounds", type=int, default=2, help="A B B A rounds of training runs per configuration")
    p.add_argument("--eval-rounds", type=int, default=2)
    p.add_argument("--pykeen-eval-batch-size", type=int, default=32)
    p.add_argument("--ours-eval-batch-size", type=int, default=256)
    p.add_argument("--ours-variants", default="default",
                   help="comma list: default, no-retain (no glibc mallopt), no-kernels (pure PyTorch paths)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for both libraries (default: torch's choice, one per core)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    p.add_argument("--summarize", default=None, metavar="JSON", help="only re-render the tables of an earlier run")
    args = p.parse_args()
    if args.summarize:
        report = json.loads(Path(args.summarize).read_text())
        report["summary"] = summarize(report)
        print(markdown(report))
        return

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, md_path = out_dir / f"pykeen_compare-{stamp}.json", out_dir / f"pykeen_compare-{stamp}.md"
    log = open(out_dir / f"pykeen_compare-{stamp}.log", "w")
    work = Path(tempfile.mkdtemp(prefix="pykeen_compare-"))
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine(), "args": vars(args),
                    "train": [], "eval": []}

    def save() -> None:
        json_path.write_text(json.dumps(report, indent=2))

    def pykeen_cmd(model: str, extra: list[str]) -> list[str]:
        return [args.pykeen_python, args.pykeen_runner, "--data-root", args.data_dir, "--dataset", args.dataset,
                "--model", model, *extra]

    def ours_cmd(model: str, variant: str, extra: list[str]) -> list[str]:
        flags = {"default": [], "no-retain": ["--no-retain-memory"], "no-kernels": ["--no-kernels"]}[variant]
        return [args.ours_python, str(REPO / "benchmarks" / "pykeen_kgdistill.py"), "--data-dir", args.data_dir,
                "--dataset", args.dataset, "--model", model, *flags, *extra]

    variants = [v for v in args.ours_variants.split(",") if v]
    for alloc in [a for a in args.allocators.split(",") if a]:
        env = allocator_env(alloc, args.threads)
        for model in [m for m in args.models.split(",") if m]:
            saved = {"pykeen": work / f"{alloc}-{model}-pykeen.pt", "ours": work / f"{alloc}-{model}-ours"}
            for rnd in range(args.rounds):
                order = ["pykeen", *variants] if rnd % 2 == 0 else [*reversed(variants), "pykeen"]
                for who in order:
                    epochs = ["--epochs", str(args.epochs)]
                    if who == "pykeen":
                        cmd = pykeen_cmd(model, [*epochs, *(["--save", str(saved["pykeen"])] if rnd == 0 else [])])
                    else:
                        save_to = ["--save", str(saved["ours"])] if rnd == 0 and who == "default" else []
                        cmd = ours_cmd(model, who, [*epochs, *save_to])
                    print(f"[{alloc}] train {model} round {rnd + 1}: {who}", flush=True)
                    res = run(cmd, env, log)
                    report["train"].append({"allocator": alloc, "model": model, "round": rnd + 1,
                                            "library": "pykeen" if who == "pykeen" else "kgdistill",
                                            "variant": None if who == "pykeen" else who, "result": res})
                    print(f"    epochs {[round(t, 2) for t in res['epoch_seconds']]}", flush=True)
                    save()
            if model not in args.eval_models.split(","):
                continue
            for rnd in range(args.eval_rounds):
                order = ["pykeen", "ours-all", "ours-pykeen"] if rnd % 2 == 0 else ["ours-pykeen", "ours-all",
                                                                                   "pykeen"]
                for who in order:
                    if who == "pykeen":
                        cmd = pykeen_cmd(model, ["--epochs", "0", "--load", str(saved["pykeen"]), "--evaluate",
                                                 "--eval-batch-size", str(args.pykeen_eval_batch_size)])
                    else:
                        cmd = ours_cmd(model, "default", ["--epochs", "0", "--load", str(saved["ours"]),
                                                          "--evaluate", "--eval-batch-size",
                                                          str(args.ours_eval_batch_size), "--test-subset",
                                                          "pykeen" if who == "ours-pykeen" else "all"])
                    print(f"[{alloc}] evaluate {model} round {rnd + 1}: {who}", flush=True)
                    res = run(cmd, env, log)
                    report["eval"].append({"allocator": alloc, "model": model, "round": rnd + 1,
                                           "library": "pykeen" if who == "pykeen" else "kgdistill",
                                           "test_subset": {"pykeen": "pykeen", "ours-all": "all",
                                                           "ours-pykeen": "pykeen"}[who], "result": res})
                    print(f"    {res['eval_seconds']:.1f}s peak RSS {res['peak_rss_after_eval_mib']:.0f} MiB",
                          flush=True)
                    save()
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    report["summary"] = summarize(report)
    save()
    md_path.write_text(markdown(report))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    shutil.rmtree(work, ignore_errors=True)


def summarize(report: dict) -> dict:
    summary: dict = {"train": [], "eval": []}
    keys = sorted({(r["allocator"], r["model"]) for r in report["train"]}, key=lambda k: (k[0] != "stock", k))
    for alloc, model in keys:
        rows = [r for r in report["train"] if r["allocator"] == alloc and r["model"] == model]
        pk = [t for r in rows if r["library"] == "pykeen" for t in r["result"]["epoch_seconds"]]
        pk_cpu = [t for r in rows if r["library"] == "pykeen" for t in r["result"].get("epoch_cpu_seconds", [])]
        entry = {"allocator": alloc, "model": model, "pykeen_epochs": pk, "pykeen_median": statistics.median(pk),
                 "pykeen_cpu_median": statistics.median(pk_cpu) if pk_cpu else None,
                 "pykeen_peak_rss_mib": max(r["result"]["peak_rss_after_train_mib"] for r in rows
                                            if r["library"] == "pykeen"), "kgdistill": {}}
        for variant in sorted({r["variant"] for r in rows if r["library"] == "kgdistill"}):
            ours = [t for r in rows if r["variant"] == variant for t in r["result"]["epoch_seconds"]]
            ours_cpu = [t for r in rows if r["variant"] == variant for t in r["result"].get("epoch_cpu_seconds", [])]
            cpu_median = statistics.median(ours_cpu) if ours_cpu else None
            entry["kgdistill"][variant] = {
                "epochs": ours, "median": statistics.median(ours),
                "speedup": statistics.median(pk) / statistics.median(ours), "cpu_median": cpu_median,
                "cpu_speedup": entry["pykeen_cpu_median"] / cpu_median if cpu_median and entry["pykeen_cpu_median"]
                else None,
                "peak_rss_mib": max(r["result"]["peak_rss_after_train_mib"] for r in rows if r["variant"] == variant)}
        summary["train"].append(entry)
    keys = sorted({(r["allocator"], r["model"]) for r in report["eval"]}, key=lambda k: (k[0] != "stock", k))
    for alloc, model in keys:
        rows = [r for r in report["eval"] if r["allocator"] == alloc and r["model"] == model]
        pk = [r["result"] for r in rows if r["library"] == "pykeen"]
        entry = {"allocator": alloc, "model": model,
                 "pykeen": {"seconds": [x["eval_seconds"] for x in pk],
                            "median": statistics.median(x["eval_seconds"] for x in pk),
                            "cpu_median": statistics.median(x.get("eval_cpu_seconds", float("nan")) for x in pk),
                            "peak_rss_mib": max(x["peak_rss_after_eval_mib"] for x in pk),
                            "triples": pk[0]["num_triples"]["test"],
                            "mrr": pk[0]["metrics"]["both.realistic.inverse_harmonic_mean_rank"]}}
        for subset in ("pykeen", "all"):
            ours = [r["result"] for r in rows if r["library"] == "kgdistill" and r["test_subset"] == subset]
            if ours:
                med = statistics.median(x["eval_seconds"] for x in ours)
                entry[f"kgdistill_{subset}"] = {
                    "seconds": [x["eval_seconds"] for x in ours], "median": med,
                    "cpu_median": statistics.median(x.get("eval_cpu_seconds", float("nan")) for x in ours),
                    "speedup": entry["pykeen"]["median"] / med,
                    "peak_rss_mib": max(x["peak_rss_after_eval_mib"] for x in ours),
                    "triples": ours[0]["eval_triples"], "mrr": ours[0]["metrics"]["both"]["mrr"]}
        summary["eval"].append(entry)
    loads = [x["result"]["_process"]["loadavg_before"][0] for x in report["train"] + report["eval"]] + \
        [x["result"]["_process"]["loadavg_after"][0] for x in report["train"] + report["eval"]]
    summary["loadavg_1min"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)} \
        if loads else {}
    return summary


def markdown(report: dict) -> str:
    s = report["summary"]
    m = report["machine"]
    lines = [f"Run {report['started']} – {report.get('finished', '?')}; {m.get('Model name', '?')}, "
             f"{m.get('CPU(s)', '?')} CPUs, {m.get('MemTotal', '?')} RAM; torch threads: "
             f"{report['args'].get('threads') or 'the default (one per core)'} in both libraries. 1-minute load "
             f"average around the runs: {s.get('loadavg_1min', {})}.",
             "", "Training, seconds per epoch (median over all epochs of all rounds; speed-up = PyKEEN / kgdistill):",
             "", "| allocator | model | PyKEEN s/epoch | kgdistill s/epoch | speed-up | CPU s/epoch PyKEEN / kgdistill "
             "| CPU speed-up | PyKEEN epochs | kgdistill epochs |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for e in s["train"]:
        for variant, o in e["kgdistill"].items():
            name = "" if variant == "default" else f" ({variant})"
            cpu = f"{e['pykeen_cpu_median']:.2f} / {o['cpu_median']:.2f} | {o['cpu_speedup']:.1f}×" \
                if o.get("cpu_speedup") else "– | –"
            lines.append(f"| {e['allocator']} | {e['model']}{name} | {e['pykeen_median']:.2f} | {o['median']:.2f} | "
                         f"{o['speedup']:.1f}× | {cpu} | {', '.join(f'{t:.1f}' for t in e['pykeen_epochs'])} | "
                         f"{', '.join(f'{t:.2f}' for t in o['epochs'])} |")
    if s["eval"]:
        lines += ["", "Full filtered test evaluation (head + tail; filter train + valid + test), fresh process, "
                  "wall seconds (median) and process peak RSS:", "",
                  "| allocator | model | library | test triples | eval batch | seconds | speed-up | CPU s | peak RSS | MRR |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        args = report["args"]
        for e in s["eval"]:
            pk = e["pykeen"]
            lines.append(f"| {e['allocator']} | {e['model']} | PyKEEN | {pk['triples']} | "
                         f"{args['pykeen_eval_batch_size']} | {pk['median']:.1f} | 1× | {pk['cpu_median']:.1f} | "
                         f"{pk['peak_rss_mib'] / 1024:.2f} GiB | {pk['mrr']:.4f} |")
            for subset in ("pykeen", "all"):
                o = e.get(f"kgdistill_{subset}")
                if o:
                    lines.append(f"| {e['allocator']} | {e['model']} | kgdistill ({subset} test triples) | "
                                 f"{o['triples']} | {args['ours_eval_batch_size']} | {o['median']:.2f} | "
                                 f"{o['speedup']:.1f}× | {o['cpu_median']:.1f} | {o['peak_rss_mib'] / 1024:.2f} GiB | "
                                 f"{o['mrr']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
