"""Serving benchmark (issue 5): artifact bytes, load time, and QPS / p50 / p99 latency of the HTTP service under a
closed-loop load from this (second) process, for every (run, dtype) given.

For each run and dtype: export the run (reused when the artifact exists), time ``load_artifact`` (median of 3,
warm page cache), start ``kgdistill serve ARTIFACT --threads 1`` as a subprocess on 127.0.0.1 and a free port,
send bounded load (at most ``--requests`` requests and ``--seconds`` seconds per level, after a warm-up) with
``--concurrency`` client threads, each with its own keep-alive connection. Besides wall-clock QPS and latency it
records the CPU milliseconds per request of the server process (from /proc) and of this client process: on a
machine shared with other jobs they tell the cost of a request apart from the waiting for a core. The queries
are ``POST /predict/tail`` with ``k`` (default 10) for (head, relation) pairs of the known triples, in a fixed
random order. Usage::

    python benchmarks/serve_load.py --run teacher=runs/serve-bench/teacher-d512 \\
        --run student=runs/serve-bench/student-d32 --dtypes float32 int8 --out benchmarks/out/serve

Writes ``OUT/results.json`` and ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from kgdistill.export import export_run, load_artifact, read_metadata
from kgdistill.tables import format_table

HOST = "127.0.0.1"  # never anything else


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def start_server(artifact: Path, port: int, max_batch: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "kgdistill.cli", "serve", str(artifact), "--host", HOST, "--port", str(port),
           "--threads", "1", "--max-batch", str(max_batch), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not come up within 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_level(url: str, queries: list[dict[str, Any]], concurrency: int, max_requests: int, seconds: float,
               server_pid: int | None = None, warmup: int = 30) -> dict[str, Any]:
    """Closed loop: ``concurrency`` threads send requests back to back until ``max_requests`` are done or
    ``seconds`` have passed; returns QPS and latency percentiles (ms) of the measured requests and, with
    ``server_pid``, the server's CPU milliseconds per request (independent of other load on the machine)."""
    with httpx.Client(base_url=url, timeout=30) as c:  # warm-up (not measured)
        for q in queries[:warmup]:
            c.post("/predict/tail", json=q).raise_for_status()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    counter = {"next": 0}
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                with lock:
                    i = counter["next"]
                    counter["next"] += 1
                if i >= max_requests or time.perf_counter() > stop_at:
                    return
                t0 = time.perf_counter()
                r = client.post("/predict/tail", json=queries[i % len(queries)])
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200 and len(r.json()["predictions"]) == queries[i % len(queries)]["k"]:
                        latencies.append(dt)
                    else:
                        errors.append(f"{r.status_code}: {r.text[:100]}")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    client0 = time.process_time()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = cpu_seconds(server_pid) - cpu0 if server_pid else float("nan")
    client_cpu = time.process_time() - client0
    ms = [x * 1000 for x in latencies]
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors), "seconds": round(wall, 2),
            "qps": round(len(latencies) / wall, 1), "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "mean_ms": round(statistics.fmean(ms), 2),
            "server_cpu_ms": round(1000 * cpu / max(1, len(latencies) + len(errors)), 3),
            "client_cpu_ms": round(1000 * client_cpu / max(1, len(latencies) + len(errors)), 3),
            "error_sample": errors[:3]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    p.add_argument("--dtypes", nargs="+", default=["float32", "int8"])
    p.add_argument("--out", default="benchmarks/out/serve")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4])
    p.add_argument("--requests", type=int, default=2000, help="most measured requests per load level")
    p.add_argument("--seconds", type=float, default=20.0, help="most seconds per load level")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-batch", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for spec in args.run:
        name, _, run_dir = spec.partition("=")
        for dtype in args.dtypes:
            artifact = out / f"{name}-{dtype}.safetensors"
            if not artifact.exists():
                t0 = time.perf_counter()
                export_run(run_dir, artifact, dtype)
                print(f"exported {artifact} in {time.perf_counter() - t0:.1f}s", flush=True)
            meta = read_metadata(artifact)
            load_times = []
            for _ in range(3):
                t0 = time.perf_counter()
                art = load_artifact(artifact)
                load_times.append(time.perf_counter() - t0)
            test = [tuple(x) for x in art.known.tolist()] if art.known is not None else []
            rng = random.Random(0)
            pairs = [(h, r) for h, r, _ in test]
            rng.shuffle(pairs)
            queries = [{"head": art.entities[h], "relation": art.relations[r], "k": args.k} for h, r in pairs[:5000]]
            del art
            port = free_port()
            proc = start_server(artifact, port, args.max_batch)
            try:
                for c in args.concurrency:
                    level = load_level(f"http://{HOST}:{port}", queries, c, args.requests, args.seconds, proc.pid)
                    row = {"run": name, "dtype": dtype, "dim": meta["model_config"].get("dim"),
                           "artifact_bytes": artifact.stat().st_size, "load_s": round(statistics.median(load_times), 3),
                           "parameters": meta["num_parameters"], **level,
                           "mrr_change": meta["quantization"].get("mrr_change")}
                    results.append(row)
                    print(json.dumps(row), flush=True)
                batching = httpx.get(f"http://{HOST}:{port}/metadata").json()["batching"]
                results[-1]["batching"] = batching
            finally:
                stop_server(proc)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "platform": platform.platform()}
    (out / "results.json").write_text(json.dumps({"results": results, "environment": env}, indent=2))
    cols = ["run", "dtype", "dim", "artifact_bytes", "load_s", "concurrency", "requests", "errors", "qps", "p50_ms",
            "p99_ms", "server_cpu_ms", "client_cpu_ms"]
    table = format_table(results, cols)
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"environment: {env}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
