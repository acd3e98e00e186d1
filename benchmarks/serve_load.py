"""Serving benchmark (issue 5): artifact bytes, load time, and QPS / p50 / p99 latency of the HTTP service under a
closed-loop load from this (second) process, for every (run, dtype) given.

For each run and dtype: export the run (reused when the artifact exists), time ``load_artifact`` (median of 3,
warm page cache), start ``kgdistill serve ARTIFACT --threads 1`` as a subprocess on 127.0.0.1 and a free port,
send bounded load (at most ``--requests`` requests and ``--seconds`` seconds per level, after a warm-up) with
``--concurrency`` client threads, each with its own keep-alive connection (``http.client`` by default, far cheaper
per request than ``httpx``: the client shares the machine's cores with the server). Besides wall-clock QPS and
latency it
records the CPU milliseconds per request of the server process (from /proc) and of this client process: on a
machine shared with other jobs they tell the cost of a request apart from the waiting for a core. The queries
are ``POST /predict/tail`` with ``k`` (default 10) for (head, relation) pairs of the known triples, in a fixed
random order. ``--repeat R`` measures everything R times, interleaved (every run and dtype once per repetition, so
that the runs of one repetition see the same load on the machine), and the table gives medians with all values;
``--baseline`` adds, for the float32 artifacts, the server as it was before the hot path (``h11``, asyncio's loop,
FastAPI routes only, every query handed to the batching thread). The load average is recorded around every level.
Usage::

    python benchmarks/serve_load.py --run teacher=runs/serve-bench/teacher-d512 \\
        --run student=runs/serve-bench/student-d32 --dtypes float32 int8 --repeat 3 --out benchmarks/out/serve

Writes ``OUT/results.json`` (every level of every repetition) and ``OUT/table.md`` (medians; QPS ratio to the first
run with the same dtype, variant and clients, per repetition).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shlex
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
BASELINE_ARGS = ["--http", "h11", "--loop", "asyncio", "--no-hot-path", "--always-batch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def start_server(artifact: Path, port: int, max_batch: int, extra: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "kgdistill.cli", "serve", str(artifact), "--host", HOST, "--port", str(port),
           "--threads", "1", "--max-batch", str(max_batch), "--log-level", "warning", *(extra or [])]
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


class Poster:
    """One keep-alive connection that POSTs JSON bodies: ``http.client`` (default; the cheapest on the client's
    CPU, which shares the machine with the server) or ``httpx``."""

    def __init__(self, url: str, client: str = "http.client") -> None:
        self.kind = client
        if client == "httpx":
            self.httpx = httpx.Client(base_url=url, timeout=30)
        else:
            host, _, port = url.removeprefix("http://").partition(":")
            self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.kind == "httpx":
            r = self.httpx.post(path, content=body, headers={"content-type": "application/json"})
            return r.status_code, r.content
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        (self.httpx if self.kind == "httpx" else self.conn).close()


def load_level(url: str, queries: list[dict[str, Any]], concurrency: int, max_requests: int, seconds: float,
               server_pid: int | None = None, warmup: int = 30, client: str = "http.client") -> dict[str, Any]:
    """Closed loop: ``concurrency`` threads send requests back to back until ``max_requests`` are done or
    ``seconds`` have passed; returns QPS and latency percentiles (ms) of the measured requests and, with
    ``server_pid``, the server's CPU milliseconds per request (independent of other load on the machine)."""
    bodies = [json.dumps(q).encode() for q in queries]
    warm = Poster(url, client)  # warm-up (not measured)
    for body in bodies[:warmup]:
        status, text = warm.post("/predict/tail", body)
        if status != 200:
            raise RuntimeError(f"warm-up request failed: {status} {text[:200]!r}")
    warm.close()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    counter = {"next": 0}
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        poster = Poster(url, client)
        try:
            while True:
                with lock:
                    i = counter["next"]
                    counter["next"] += 1
                if i >= max_requests or time.perf_counter() > stop_at:
                    return
                t0 = time.perf_counter()
                status, content = poster.post("/predict/tail", bodies[i % len(bodies)])
                dt = time.perf_counter() - t0
                ok = status == 200 and len(json.loads(content)["predictions"]) == queries[i % len(queries)]["k"]
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors.append(f"{status}: {content[:100]!r}")
        finally:
            poster.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    load_before = os.getloadavg()[0]
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
    return {"concurrency": concurrency, "client": client, "requests": len(latencies), "errors": len(errors),
            "seconds": round(wall, 2),
            "qps": round(len(latencies) / wall, 1), "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "mean_ms": round(statistics.fmean(ms), 2),
            "server_cpu_ms": round(1000 * cpu / max(1, len(latencies) + len(errors)), 3),
            "client_cpu_ms": round(1000 * client_cpu / max(1, len(latencies) + len(errors)), 3),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "error_sample": errors[:3]}


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over repetitions per (run, dtype, variant, clients), with every value, and the QPS ratio to the first
    run of the same dtype, variant and clients, taken within each repetition."""
    first_run = results[0]["run"] if results else None
    keys = list(dict.fromkeys((r["run"], r["dtype"], r["variant"], r["concurrency"]) for r in results))
    rows = []
    for run, dtype, variant, clients in keys:
        group = [r for r in results if (r["run"], r["dtype"], r["variant"], r["concurrency"]) == (run, dtype, variant,
                                                                                                    clients)]
        ratios = []
        for r in group:
            ref = [x for x in results if (x["run"], x["dtype"], x["variant"], x["concurrency"], x["repetition"]) ==
                   (first_run, dtype, variant, clients, r["repetition"])]
            if ref and ref[0]["qps"]:
                ratios.append(round(r["qps"] / ref[0]["qps"], 2))

        def med(key: str, group: list[dict[str, Any]] = group) -> float:
            return round(statistics.median(r[key] for r in group), 2)

        def every(key: str, group: list[dict[str, Any]] = group) -> str:
            return ", ".join(f"{r[key]:g}" for r in group)

        rows.append({"run": run, "dtype": dtype, "variant": variant, "clients": clients, "reps": len(group),
                     "qps": f"{med('qps'):g} [{every('qps')}]", "p50_ms": med("p50_ms"),
                     "p99_ms": f"{med('p99_ms'):g} [{every('p99_ms')}]", "server_cpu_ms": med("server_cpu_ms"),
                     "client_cpu_ms": med("client_cpu_ms"),
                     "qps_ratio": f"{statistics.median(ratios):g} [{', '.join(map(str, ratios))}]" if ratios else "",
                     "load": f"{min(r['load_before'] for r in group):g}–{max(r['load_after'] for r in group):g}",
                     "errors": sum(r["errors"] for r in group)})
    return rows


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
    p.add_argument("--client", choices=("http.client", "httpx"), default="http.client",
                   help="HTTP client of the load generator (one keep-alive connection per thread)")
    p.add_argument("--repeat", type=int, default=1, help="repetitions (interleaved over the runs)")
    p.add_argument("--server-args", default="", help="more arguments for `kgdistill serve` (e.g. '--http h11')")
    p.add_argument("--baseline", action="store_true",
                   help=f"also measure the float32 artifacts with `serve {' '.join(BASELINE_ARGS)}`")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.server_args)
    prepared: list[tuple[str, str, Path, dict[str, Any], float, list[dict[str, Any]]]] = []
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
            prepared.append((name, dtype, artifact, meta, statistics.median(load_times), queries))
    variants = [("new", extra)] + ([("baseline", BASELINE_ARGS + extra)] if args.baseline else [])
    results: list[dict[str, Any]] = []
    for repetition in range(args.repeat):
        for variant, server_args in variants:
            for name, dtype, artifact, meta, load_s, queries in prepared:
                if variant == "baseline" and dtype != "float32":
                    continue
                port = free_port()
                proc = start_server(artifact, port, args.max_batch, server_args)
                try:
                    for c in args.concurrency:
                        level = load_level(f"http://{HOST}:{port}", queries, c, args.requests, args.seconds, proc.pid,
                                           client=args.client)
                        row = {"repetition": repetition, "variant": variant, "run": name, "dtype": dtype,
                               "dim": meta["model_config"].get("dim"), "artifact_bytes": artifact.stat().st_size,
                               "load_s": round(load_s, 3), "parameters": meta["num_parameters"], **level,
                               "mrr_change": meta["quantization"].get("mrr_change"), "server_args": server_args}
                        results.append(row)
                        print(json.dumps(row), flush=True)
                    results[-1]["batching"] = httpx.get(f"http://{HOST}:{port}/metadata").json()["batching"]
                finally:
                    stop_server(proc)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "platform": platform.platform(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv}
    summary = summarise(results)
    (out / "results.json").write_text(json.dumps({"results": results, "summary": summary, "environment": env},
                                                 indent=2))
    sizes = format_table([{"run": n, "dtype": d, "artifact_bytes": a.stat().st_size, "load_s": round(ls, 3),
                           "parameters": m["num_parameters"], "mrr_change": m["quantization"].get("mrr_change")}
                          for n, d, a, m, ls, _ in prepared])
    table = format_table(summary)
    (out / "table.md").write_text(sizes + "\n\n" + table + "\n")
    print(sizes + "\n")
    print(table)
    print(f"environment: {env}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
