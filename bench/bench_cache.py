"""Repeated-request latency with the explanation cache: the same Explain twice through the
services (``audiolime up`` on loopback, local store); the first computes, the repeats are answered
from the cache. Target: a repeat < 0.5 s, its document equal to the first's apart from URLs.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from pathlib import Path

from bench_explain_service import HOST, REPO, start_up

from audiolime.commands.up import PORT_OFFSETS
from audiolime.processes import free_base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--song", type=Path, default=REPO.parent / "shared" / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    p.add_argument("--tag", default="female vocalists")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--store", type=Path, default=Path("/tmp/audiolime-bench-cache-store"))
    args = p.parse_args(argv)

    import grpc

    from audiolime.v1 import common_pb2, explainer_pb2, explainer_pb2_grpc

    content = args.song.read_bytes()
    base = free_base(PORT_OFFSETS)
    up = start_up(args.model_dir, args.store, base, [], cache=True)
    channel = grpc.insecure_channel(f"{HOST}:{base + 1}", options=[("grpc.max_send_message_length", 256 << 20)])
    stub = explainer_pb2_grpc.ExplainerStub(channel)
    rpc = explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=content,
                                                                   filename=args.song.name),
                                       model="musicnn-msd", tags=[args.tag], seed=int(time.time()))
    try:
        t = time.perf_counter()
        first = stub.Explain(rpc, timeout=1800)
        cold = time.perf_counter() - t
        walls = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            again = stub.Explain(rpc, timeout=60)
            walls.append(time.perf_counter() - t)
            assert again.explanation_id == first.explanation_id, "not answered from the cache"
        print(f"request: {args.song.name} ({len(rpc.audio.content) / 1e6:.1f} MB), tag {args.tag!r}, adaptive, "
              f"{first.unique_samples} unique masks")
        print(f"first (computed):   {cold:7.2f} s")
        print(f"repeat (cache hit): median {statistics.median(walls):.3f} s, max {max(walls):.3f} s "
              f"over {args.repeats}   (target < 0.5 s)")
    finally:
        channel.close()
        up.send_signal(signal.SIGTERM)
        up.wait(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
