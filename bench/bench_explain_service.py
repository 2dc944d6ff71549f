"""Explain through the services vs the in-process engine, same request (one run, ratio).

(a) in-process: LocalTagger + in-process Spleeter + Engine, as ``audiolime explain`` runs it;
(b) through the services: ``audiolime up`` (separator, tagger with server-side batching, explainer
    as separate processes on loopback), one ``Explain`` RPC, results published to the local store.
Separation is excluded on both sides, fairly: (a) subtracts its Spleeter stage; (b) warms the
separator's cache first and subtracts its "separate" stage (fetching the cached stems). Each side
runs ``--repeats`` times, interleaved, and the best time counts (the machine is shared).
Target: (b) / (a) <= 1.10.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from audiolime.commands.up import PORT_OFFSETS
from audiolime.processes import free_base

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def start_up(model_dir: Path, store: Path, base: int, extra: list[str], cache: bool = False) -> subprocess.Popen:
    """``audiolime up``; the explanation cache off unless ``cache`` (the repeats must compute)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "AUDIOLIME_CACHE": "on" if cache else "off"}
    proc = subprocess.Popen([sys.executable, "-m", "audiolime.cli", "up", "--model-dir", str(model_dir), "--store",
                             store.as_uri(), "--base-port", str(base), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("try:"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(600) or proc.poll() is not None:
        proc.terminate()
        raise SystemExit("audiolime up did not start")
    return proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--song", type=Path, default=REPO.parent / "shared" / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    p.add_argument("--tag", default="female vocalists")
    p.add_argument("--num-samples", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--store", type=Path, default=Path("/tmp/audiolime-bench-store"))
    args = p.parse_args(argv)

    from audiolime.models import quiet_tensorflow

    quiet_tensorflow()
    import grpc

    from audiolime.audio import decode
    from audiolime.method.engine import Engine
    from audiolime.method.pipeline import explain_song
    from audiolime.method.plan import make_plan
    from audiolime.method.request import ExplainRequest
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.models import load_separator, load_tagger
    from audiolime.v1 import common_pb2, explainer_pb2, explainer_pb2_grpc

    tagger = load_tagger(args.model_dir, "musicnn-msd")
    separator = load_separator(args.model_dir, "2stems")
    audio = decode(args.song)
    engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
    req = ExplainRequest(tags=(args.tag,), num_samples=args.num_samples, seed=0)
    stem_source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name)

    def in_process() -> tuple[float, float, int]:
        t = time.perf_counter()
        plan = make_plan(req.validate(), tagger, audio.header)
        result = explain_song(plan, audio, str(args.song), tagger, stem_source, engine)
        wall = time.perf_counter() - t
        return wall - result.timings_s["separate"], result.timings_s["separate"], result.explanation.unique_samples

    base = free_base(PORT_OFFSETS)
    up = start_up(args.model_dir, args.store, base, [])
    channel = grpc.insecure_channel(f"{HOST}:{base + 1}", options=[("grpc.max_send_message_length", 256 << 20)])
    stub = explainer_pb2_grpc.ExplainerStub(channel)
    rpc = explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=args.song.read_bytes(),
                                                                   filename=args.song.name),
                                       model="musicnn-msd", tags=[args.tag], num_samples=args.num_samples, seed=0)

    def service() -> tuple[float, float, int, dict]:
        t = time.perf_counter()
        resp = stub.Explain(rpc, timeout=1800)
        wall = time.perf_counter() - t
        return wall - resp.timings_s["separate"], resp.timings_s["separate"], resp.unique_samples, dict(resp.timings_s)

    try:
        in_process()  # warm-up: graph tracing, caches
        warm = stub.Explain(rpc, timeout=1800)  # warm-up: fills the separator cache
        print(f"warm-up through the services: separator cache_hit={warm.separator.cache_hit}, "
              f"timings {dict(warm.timings_s)}")
        a_runs, b_runs = [], []
        for _ in range(args.repeats):
            a_runs.append(in_process())
            b_runs.append(service())
        a = min(a_runs)
        b = min(b_runs, key=lambda r: r[0])
        print(f"request: {args.song.name}, tag {args.tag!r}, N={args.num_samples} ({a[2]} unique masks), "
              f"batch {args.batch_size}, best of {args.repeats}")
        print(f"(a) in-process engine:      {a[0]:7.2f} s  "
              f"(+ Spleeter on the chunks covering the window {a[1]:.2f} s, excluded)")
        print(f"(b) through the services:   {b[0]:7.2f} s  (+ cached stems fetch {b[1]:.2f} s, excluded)")
        print(f"    service stages: {b[3]}")
        print(f"ratio (b)/(a) = {b[0] / a[0]:.3f}   (target <= 1.10)")
        print(f"ratio incl. separation stages = {(b[0] + b[1]) / (a[0] + a[1]):.3f}")
    finally:
        channel.close()
        up.send_signal(signal.SIGTERM)
        up.wait(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
