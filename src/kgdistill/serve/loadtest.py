"""The slow-client load test (issue 16): many connections that never finish their request headers, while
well-formed clients keep sending requests; bounded in time, it stops by itself.

``slow_client_load(host, port)`` opens ``slow`` sockets that each send ``GET /health HTTP/1.1\\r\\nHost: x\\r\\n``
and nothing more, then runs ``clients`` threads that, for ``seconds``, each open a connection, send one
well-formed request (alternately ``GET /health`` and ``POST /predict/tail`` when a query is given), read the answer
and close. It returns the requests answered (2xx), the other statuses (503 ...), the errors (refused, reset, no
answer within ``request_timeout``), latency percentiles, and how many slow sockets the server had closed by the end.
Only ``127.0.0.1``-style local addresses are meant: this is a test of our own server.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any

PARTIAL_REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\n"  # no blank line: the headers never end


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _open_slow(host: str, port: int, count: int, connect_timeout: float) -> tuple[list[socket.socket], int]:
    socks, failed = [], 0
    for _ in range(count):
        try:
            s = socket.create_connection((host, port), timeout=connect_timeout)
            s.sendall(PARTIAL_REQUEST)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            failed += 1
    return socks, failed


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1 << 16) == b""  # EOF: the server closed it (or answered and closed)
    except BlockingIOError:
        return False
    except OSError:
        return True


def slow_client_load(host: str, port: int, *, slow: int = 520, seconds: float = 5.0, clients: int = 4,
                     request_timeout: float = 5.0, query: dict[str, Any] | None = None,
                     settle: float = 0.5) -> dict[str, Any]:
    """Run the load (see the module docstring); every loop is bounded by ``seconds`` and ``request_timeout``."""
    slow_socks, slow_failed = _open_slow(host, port, slow, connect_timeout=request_timeout)
    time.sleep(settle)  # the stall is in place before the well-formed traffic starts
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    body = json.dumps(query).encode() if query else b""

    def worker(index: int) -> None:
        n = index
        while time.monotonic() < stop_at:
            n += 1
            post = bool(query) and n % 2 == 0
            start = time.perf_counter()
            conn = http.client.HTTPConnection(host, port, timeout=request_timeout)
            try:
                if post:
                    conn.request("POST", "/predict/tail", body=body, headers={"Content-Type": "application/json"})
                else:
                    conn.request("GET", "/health")
                response = conn.getresponse()
                response.read()
                status = str(response.status)
                elapsed = time.perf_counter() - start
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status.startswith("2"):
                        latencies.append(elapsed)
            except (OSError, http.client.HTTPException) as err:
                with lock:
                    errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                time.sleep(0.01)
            finally:
                conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 2 * request_timeout + 5)
    closed = sum(_closed_by_peer(s) for s in slow_socks)
    for s in slow_socks:
        s.close()
    answered = sum(v for k, v in statuses.items() if k.startswith("2"))
    return {"slow_sockets": len(slow_socks), "slow_connect_failed": slow_failed,
            "slow_closed_by_server": closed, "seconds": seconds, "clients": clients,
            "answered_2xx": answered, "other_status": {k: v for k, v in statuses.items() if not k.startswith("2")},
            "errors": errors, "p50_s": _percentile(latencies, 0.5), "p99_s": _percentile(latencies, 0.99),
            "max_s": max(latencies) if latencies else None}


__all__ = ["slow_client_load", "PARTIAL_REQUEST"]
