"""Batch requests against the HTTP service: queries/s vs queries per request (issue 17 #4).

Exports RUN (reused when the artifact exists), starts ``kgdistill serve ARTIFACT --threads 1`` on 127.0.0.1 and a
free port, then, for every batch size B, sends ``POST /predict/batch`` requests of B top-k tail queries (``B = 1``
also as plain ``POST /predict/tail``) from one keep-alive client for at most ``--seconds`` seconds and
``--requests`` requests after a warm-up. Reports requests/s, queries/s and the median / p99 latency per request.
Bounded in count and time; traffic only to 127.0.0.1. Usage::

    python benchmarks/serve_batch.py RUN --batch-sizes 1 8 64 256 --seconds 5 --out benchmarks/out/serve_batch
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kgdistill.export import export_run, load_artifact
from kgdistill.tables import format_table

HOST = "127.0.0.1"  # never anything else


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not answer /health within {timeout} s")


def measure(port: int, path: str, bodies: list[bytes], queries_per_request: int, seconds: float,
            max_requests: int) -> dict[str, float]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"content-type": "application/json"}
    for body in bodies[:20]:  # warm-up
        conn.request("POST", path, body, headers)
        conn.getresponse().read()
    latencies: list[float] = []
    start = time.perf_counter()
    i = 0
    while i < max_requests and time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        conn.request("POST", path, bodies[i % len(bodies)], headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: status {response.status}")
        latencies.append(time.perf_counter() - t0)
        i += 1
    wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": i, "requests/s": round(i / wall, 1), "queries/s": round(i * queries_per_request / wall, 1),
            "p50 ms": round(1000 * statistics.median(latencies), 3),
            "p99 ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="run folder to export and serve")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 64, 256])
    p.add_argument("--seconds", type=float, default=5.0, help="most seconds per batch size")
    p.add_argument("--requests", type=int, default=5000, help="most requests per batch size")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default="benchmarks/out/serve_batch")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / "model.safetensors"
    if not artifact.exists():
        export_run(args.run, artifact)
    art = load_artifact(artifact)
    known = art.known.tolist() if art.known is not None else [[0, 0, 0]]
    rng = random.Random(0)
    pairs = [(art.entities[h], art.relations[r]) for h, r, _ in rng.sample(known, min(len(known), 4096))]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kgdistill", "serve", str(artifact), "--host", HOST, "--port",
                               str(port), "--threads", "1", "--max-triples", str(max(args.batch_sizes))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_ready(port)
        single = [json.dumps({"head": h, "relation": r, "k": args.k}).encode() for h, r in pairs]
        rows.append({"endpoint": "/predict/tail", "queries/request": 1,
                     **measure(port, "/predict/tail", single, 1, args.seconds, args.requests)})
        for b in args.batch_sizes:
            bodies = [json.dumps({"queries": [{"head": h, "relation": r, "k": args.k}
                                              for h, r in (pairs[(i * b + j) % len(pairs)] for j in range(b))]}
                                 ).encode() for i in range(64)]
            rows.append({"endpoint": "/predict/batch", "queries/request": b,
                         **measure(port, "/predict/batch", bodies, b, args.seconds, args.requests)})
    finally:
        server.terminate()
        server.wait(timeout=30)
    columns = ["endpoint", "queries/request", "requests", "requests/s", "queries/s", "p50 ms", "p99 ms"]
    table = format_table(rows, columns)
    (out / "results.json").write_text(json.dumps({"run": args.run, "rows": rows}, indent=2))
    (out / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
