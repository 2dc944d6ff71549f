"""Fuzz the secured stack at length and print what happened (one run).

Runs tests/test_fuzz.py's stack fuzzer (``audiolime up --tls --auth-tokens`` on loopback,
hypothesis-generated requests: real and mutated recordings, extreme headers, raw messages, URIs,
random fields and tokens) with ``--examples`` requests (default 20,000; CI runs 2,000) and its
decoding-bomb test, then prints the counts by status code, the real explanations among them, the
refusals by reason, the peak RSS of each service, and how long the explainer and the separator
took to refuse each decoding bomb (best of three, client wall time over TLS on loopback).

    .venv/bin/python bench/fuzz_stack.py [--examples 20000] [--report out/fuzz_stack.json]

Numbers are recorded in docs/security.md with the machine load they ran under.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=20000)
    p.add_argument("--report", type=Path, default=REPO / "out" / "fuzz_stack.json")
    args = p.parse_args()
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.unlink(missing_ok=True)
    env = {**os.environ, "AUDIOLIME_SHARED": os.environ.get("AUDIOLIME_SHARED", str(REPO.parent / "shared"))}
    load_before = os.getloadavg()
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py",
                           "-k", "fuzzed or bombs", f"--fuzz-examples={args.examples}",
                           f"--fuzz-report={args.report}"], cwd=REPO, env=env)
    wall = time.monotonic() - t
    if proc.returncode != 0:
        print(f"the fuzzer found a problem (pytest exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    report = json.loads(args.report.read_text())
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    fuzz, bombs = report["fuzz"], report["bombs"]
    print(f"{fuzz['requests']} requests in {fuzz['seconds']:.0f} s ({fuzz['requests'] / fuzz['seconds']:.0f}/s; "
          f"{wall:.0f} s with start-up); {fuzz['explanations']} real explanations; "
          f"peak RSS explainer {fuzz['peak_rss_mb']['explainer']} MB; slowest bomb refusal "
          f"{max(bombs['refused_in_s'].values()) * 1000:.0f} ms, peak RSS growth "
          f"{max(bombs['peak_rss_growth_mb'].values())} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
