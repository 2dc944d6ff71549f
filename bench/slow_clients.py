"""Slow and idle clients against the explainer's signed-URL HTTP server (waitress).

Starts an explainer with a ``file://`` store (no backends: nothing here reaches them), opens N
connections (default 500) of which half send nothing and half a request line that never ends,
and reports the explainer's threads and open file descriptors before, with the connections open
and after the server closed them, how long the server took to close them all (``--http-timeout``
plus waitress' cleanup interval), and whether a real request was answered meanwhile.

    PYTHONPATH=src python bench/slow_clients.py [--connections 500] [--timeout 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from audiolime.processes import free_port, terminate, wait_serving

HOST = "127.0.0.1"


def threads_and_fds(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--timeout", type=int, default=10, help="--http-timeout of the explainer")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.connections)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        port, http_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "audiolime.explainer.server", "--host", HOST, "--port", str(port),
               "--metrics-port", "0", "--store", Path(tmp, "store").as_uri(), "--separator", f"{HOST}:1",
               "--tagger", f"{HOST}:1", "--http-port", str(http_port), "--http-timeout", str(args.timeout)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(Path(tmp, "log"), "wb"))
        try:
            wait_serving(f"{HOST}:{port}", proc, 120, "explainer")
            before = threads_and_fds(proc.pid)
            socks = []
            for i in range(args.connections):
                s = socket.create_connection((HOST, http_port))
                if i % 2:
                    s.sendall(b"GET /o/explanations/x HTTP/1.1\r\nHost: a")
                socks.append(s)
            opened = time.monotonic()
            time.sleep(1)
            during = threads_and_fds(proc.pid)
            asked = time.monotonic()
            try:
                urllib.request.urlopen(f"http://{HOST}:{http_port}/o/jobs/x?expires=1&sig=0", timeout=30)
                answered = "200"
            except urllib.error.HTTPError as exc:
                answered = str(exc.code)
            except OSError as exc:
                answered = f"no answer ({exc})"
            answered += f" in {1000 * (time.monotonic() - asked):.0f} ms"
            closed_at = []
            for s in socks:
                s.settimeout(args.timeout * 10)
                try:
                    eof = s.recv(1) == b""
                except OSError:
                    eof = False
                closed_at.append(time.monotonic() - opened if eof else float("nan"))
                s.close()
            time.sleep(1)
            after = threads_and_fds(proc.pid)
        finally:
            terminate(proc)
    closed = [t for t in closed_at if t == t]
    print(f"connections: {args.connections} (half idle, half an unfinished request line); --http-timeout {args.timeout}")
    print(f"explainer threads / fds: before {before[0]} / {before[1]}, with the connections open {during[0]} / "
          f"{during[1]}, after {after[0]} / {after[1]}")
    print(f"a real request meanwhile: HTTP {answered}")
    print(f"closed by the server: {len(closed)}/{args.connections}, "
          f"after {min(closed):.1f}-{max(closed):.1f} s" if closed else "closed by the server: none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
