"""Deadline-aware answers: the same adaptive Explain through the services (``audiolime up`` on
loopback, warm separator cache and song scan, explanation cache off) under a gRPC deadline (or, with
``--budget``, the request's ``time_budget_s`` and a generous deadline), ``--runs`` times per deadline
with different seeds. Counts what the caller got: an explanation (and its stopping reason, masks
and stability) or an error (DEADLINE_EXCEEDED, ...), the wall time and the median stage times.
Target (issue 23): with a 5 s budget on a 3-minute song, warm stems, a ranking every time.
"""

from __future__ import annotations

import argparse
import collections
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
    p.add_argument("--deadlines", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--budget", action="store_true",
                   help="send each deadline as time_budget_s (gRPC deadline: 10x it) instead of a gRPC deadline")
    p.add_argument("--store", type=Path, default=Path("/tmp/audiolime-bench-deadline-store"))
    args = p.parse_args(argv)

    import grpc

    from audiolime.v1 import common_pb2, explainer_pb2, explainer_pb2_grpc

    base = free_base(PORT_OFFSETS)
    up = start_up(args.model_dir, args.store, base, [], cache=False)
    channel = grpc.insecure_channel(f"{HOST}:{base + 1}", options=[("grpc.max_send_message_length", 256 << 20)])
    stub = explainer_pb2_grpc.ExplainerStub(channel)
    audio = common_pb2.AudioInput(content=args.song.read_bytes(), filename=args.song.name)

    def rpc(seed: int, budget: float = 0.0) -> explainer_pb2.ExplainRequest:
        return explainer_pb2.ExplainRequest(audio=audio, model="musicnn-msd", tags=[args.tag], seed=seed,
                                            time_budget_s=budget)

    try:
        t = time.perf_counter()
        free = stub.Explain(rpc(0), timeout=1800)  # fills the separator's cache; no deadline to speak of
        print(f"request: {args.song.name}, tag {args.tag!r}, adaptive (default), musicnn-msd")
        print(f"without a binding deadline: {time.perf_counter() - t:.2f} s, stopping {free.stopping.reason} "
              f"after {free.stopping.masks} masks, stability {free.stopping.stability:.2f}; stages "
              f"{ {k: round(v, 2) for k, v in free.timings_s.items()} }")
        for deadline in args.deadlines:
            outcomes: collections.Counter = collections.Counter()
            walls, masks, stab, sets, curves = [], [], [], [], 0
            stages: collections.defaultdict = collections.defaultdict(list)
            for run in range(args.runs):
                t = time.perf_counter()
                try:
                    if args.budget:
                        resp = stub.Explain(rpc(1000 + run, deadline), timeout=10 * deadline)
                    else:
                        resp = stub.Explain(rpc(1000 + run), timeout=deadline)
                except grpc.RpcError as exc:
                    outcomes[exc.code().name] += 1
                else:
                    outcomes[f"OK/{resp.stopping.reason}"] += 1
                    masks.append(resp.stopping.masks)
                    stab.append(resp.stopping.stability)
                    faith = resp.targets[0].faithfulness
                    sets.append(faith.verdict.random_sets)
                    curves += faith.HasField("deletion")
                    for k, v in resp.timings_s.items():
                        stages[k].append(v)
                walls.append(time.perf_counter() - t)
            got = sum(v for k, v in outcomes.items() if k.startswith("OK"))
            kind = "budget" if args.budget else "deadline"
            line = f"{kind} {deadline:5.1f} s: {got}/{args.runs} answered {dict(outcomes)}; wall median " \
                   f"{statistics.median(walls):.2f} s, max {max(walls):.2f} s"
            if masks:
                line += (f"; masks median {statistics.median(masks):.0f}, stability median {statistics.median(stab):.2f}"
                         f"; checks: verdict random sets median {statistics.median(sets):.0f}, curves in "
                         f"{curves}/{len(masks)}")
            if stages:
                line += "; stage medians " + str({k: round(statistics.median(v), 2) for k, v in stages.items()})
            print(line, flush=True)
    finally:
        channel.close()
        up.send_signal(signal.SIGTERM)
        up.wait(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
