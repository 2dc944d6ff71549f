"""Overload: 3x the explainer's admission for a few minutes, every call with a deadline.

Starts ``audiolime up`` (local store, our tagger with batching), then keeps ``3 x
--max-concurrent`` (12) Explain calls of a shared recording in flight for ``--seconds`` (180),
each with a ``--deadline`` (120 s). Reports the status codes, how fast refusals came back, the
explainer's tagger retries (its log lines), the tagger's dropped queued requests and the tagger's
peak RSS (VmHWM). What should hold: no retry storm (retries bounded by the per-explanation
budget), the tagger's memory bounded, every call OK or a fast RESOURCE_EXHAUSTED /
DEADLINE_EXCEEDED / UNAVAILABLE.

    PYTHONPATH=src python bench/overload.py [--seconds 180] [--calls 12] [--deadline 120]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--calls", type=int, default=12)
    ap.add_argument("--deadline", type=float, default=120)
    ap.add_argument("--song", default="admiralbob77_-_Choice_-_Drum-bass.ogg")
    args = ap.parse_args()
    import grpc

    from audiolime.processes import memory, metric_value, scrape
    from conftest import audiolime_up, explain_request

    with tempfile.TemporaryDirectory() as tmp, audiolime_up(Path(tmp)) as stack:
        tagger_pid = stack.pid("tagger")
        base_rss = memory(tagger_pid)[0]
        request = explain_request(args.song, num_samples=256)
        outcomes: collections.Counter = collections.Counter()
        times: dict[str, list[float]] = collections.defaultdict(list)
        stop = time.monotonic() + args.seconds
        lock = threading.Lock()
        seeds = iter(range(1, 1 << 30))

        def worker() -> None:
            while time.monotonic() < stop:
                t = time.monotonic()
                with lock:
                    request.seed = next(seeds)  # every call computes (the same request would be a cache hit)
                    call = type(request)()
                    call.CopyFrom(request)
                try:
                    stack.stub.Explain(call, timeout=args.deadline)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with lock:
                    outcomes[code] += 1
                    times[code].append(time.monotonic() - t)
                if code != "OK":
                    time.sleep(0.5)

        threads = [threading.Thread(target=worker) for _ in range(args.calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        text = scrape(stack.metrics["tagger"])
        dropped = sum(metric_value(text, "audiolime_tagger_dropped_total", model="musicnn-msd", reason=r)
                      for r in ("deadline", "cancelled"))
        peak = memory(tagger_pid)[1]
        log = stack.log.read_text(errors="replace")
        retries = log.count('"message": "retrying tagger Predict"')
    print(f"{args.calls} callers for {args.seconds:.0f} s, deadline {args.deadline:.0f} s each, song {args.song}")
    for code, n in sorted(outcomes.items()):
        ts = sorted(times[code])
        print(f"  {code}: {n} calls, time median {ts[len(ts) // 2]:.2f} s, max {ts[-1]:.2f} s")
    print(f"tagger Predict retries by the explainer: {retries}; queued tagger requests dropped: {dropped:.0f}")
    print(f"tagger RSS: {base_rss / 1e6:.0f} MB at start, peak {peak / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
