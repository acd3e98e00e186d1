"""Slow-client load test of ``kgdistill serve`` (issue 16): SLOW connections that never finish their request
headers while CLIENTS threads keep sending well-formed requests (GET /health and POST /predict/tail, a new
connection each) for SECONDS; reports requests answered, p50 / p99 latency and the errors / non-2xx statuses
during the stall. The server is the real CLI (``kgdistill serve ARTIFACT``) in a subprocess on 127.0.0.1.

Usage::

    python benchmarks/slow_clients.py                      # trains + exports a small nations model first
    python benchmarks/slow_clients.py --artifact A.safetensors --slow 520 --seconds 20 --clients 4
    git worktree add /tmp/old COMMIT && python benchmarks/slow_clients.py --server-src /tmp/old/src   # before

Everything is bounded: the load stops after SECONDS, the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kgdistill.serve.loadtest import slow_client_load

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def small_artifact(folder: Path) -> Path:
    """TransE-16 on nations, 5 epochs, exported (a few seconds)."""
    run, art = folder / "run", folder / "nations.safetensors"
    subprocess.run([sys.executable, "-m", "kgdistill", "train", "--dataset", "nations", "--model", "transe", "--dim",
                    "16", "--epochs", "5", "--eval-every", "0", "--eval-splits", "test", "--progress", "false",
                    "--out", str(run)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "kgdistill", "export", str(run), str(art)], check=True,
                   capture_output=True)
    return art


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.communicate()[1][-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, help="artifact to serve (default: a small nations model, built now)")
    p.add_argument("--slow", type=int, default=520, help="connections that never finish their headers")
    p.add_argument("--seconds", type=float, default=20.0, help="duration of the well-formed traffic")
    p.add_argument("--clients", type=int, default=4, help="threads sending well-formed requests")
    p.add_argument("--serve-args", default="", help="extra arguments for kgdistill serve (e.g. '--http h11')")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--server-src", type=Path,
                   help="run the server from this source folder (e.g. a `git worktree` of an older commit's src/, "
                        "for a before/after comparison); the load side always runs this checkout")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = args.artifact or small_artifact(Path(tmp))
        port = free_port()
        cmd = [sys.executable, "-m", "kgdistill", "serve", str(artifact), "--host", HOST, "--port", str(port),
               "--threads", "1", "--log-level", "warning", *args.serve_args.split()]
        env = {**os.environ, "PYTHONPATH": str(args.server_src.resolve())} if args.server_src else None
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_ready(port, server)
            result = slow_client_load(HOST, port, slow=args.slow, seconds=args.seconds, clients=args.clients,
                                      query={"head": "usa", "relation": "embassy", "k": 5})
        finally:
            server.terminate()
            try:
                server.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    result["command"] = " ".join(["python", *sys.argv])
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
