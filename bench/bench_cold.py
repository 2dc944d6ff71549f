"""Cold latency through the services, against its floor (issue 23, item 1).

For each song length (default: 3 and 10 minutes, a shared song tiled), ``audiolime up`` starts on an
empty store (no cached stems, song scan or explanation) and one default ``Explain`` (adaptive, a
fixed seed) is timed end to end, with the stage breakdown the document records. Then, on the same
stack, the two references the ratios need:

* the floor: the window's separation (the document's ``separate`` stage: only the chunks that cover
  the window run) + every tagger window the explanation evaluated (unique masks + faithfulness
  masks + the unperturbed window) x the tagger's cost per window, measured here by a direct
  ``Predict`` of one batch of the explainer's size;
* what the whole-song separation would add (the old order: the whole recording separated before
  the first mask): a ``Separate`` of the whole song, timed, minus the window's separation.

Prints, from one run: latency / floor (target <= 1.5), (latency + whole - window) / latency (the
old cold latency over the new, target >= 2) and the 10-minute song's latency over the 3-minute
song's (target <= 1.2).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_explain_service import HOST, REPO, start_up

from audiolime.commands.up import PORT_OFFSETS
from audiolime.processes import free_base


def tiled(song: Path, seconds: float, out: Path) -> Path:
    """The song repeated to ``seconds`` (FLAC), a recording of that length with real music in it."""
    import numpy as np
    import soundfile as sf

    data, rate = sf.read(str(song), dtype="float32", always_2d=True)
    n = int(seconds * rate)
    sf.write(str(out), np.tile(data, (-(-n // len(data)), 1))[:n], rate, subtype="PCM_16")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--song", type=Path, default=REPO.parent / "shared" / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    p.add_argument("--tag", default="female vocalists")
    p.add_argument("--minutes", type=float, nargs="+", default=[3.0, 10.0])
    p.add_argument("--batch-size", type=int, default=64, help="the explainer's (audiolime up's default)")
    args = p.parse_args(argv)

    import grpc
    import numpy as np

    from audiolime.explainer.remote import PREDICT
    from audiolime.tfs import tfs_pb2
    from audiolime.tfs.tensors import make_tensor_proto
    from audiolime.v1 import common_pb2, explainer_pb2, explainer_pb2_grpc, separator_pb2, separator_pb2_grpc

    latencies: dict[float, float] = {}
    with tempfile.TemporaryDirectory(prefix="audiolime-bench-cold-") as tmp:
        for minutes in args.minutes:
            song = tiled(args.song, minutes * 60, Path(tmp) / f"song-{minutes:g}min.flac")
            content = song.read_bytes()
            base = free_base(PORT_OFFSETS)
            up = start_up(args.model_dir, Path(tmp) / f"store-{minutes:g}", base, [], cache=False)
            opts = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]
            try:
                with grpc.insecure_channel(f"{HOST}:{base + 1}", options=opts) as ch:
                    req = explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=content, filename=song.name),
                                                       model="musicnn-msd", tags=[args.tag], seed=0)
                    t = time.perf_counter()
                    doc = explainer_pb2_grpc.ExplainerStub(ch).Explain(req, timeout=3600)
                    latency = time.perf_counter() - t
                tm = dict(doc.timings_s)
                windows = 1 + doc.unique_samples + doc.faithfulness_cost.tagger_calls
                with grpc.insecure_channel(f"{HOST}:{base + 2}", options=opts) as ch:
                    predict = ch.unary_unary(PREDICT, request_serializer=tfs_pb2.PredictRequest.SerializeToString,
                                             response_deserializer=tfs_pb2.PredictResponse.FromString)
                    batch = np.zeros((args.batch_size, doc.model.window_samples), np.float32)
                    batch += np.random.default_rng(0).normal(0, 0.1, batch.shape).astype(np.float32)
                    pred = tfs_pb2.PredictRequest()
                    pred.model_spec.name = "musicnn-msd"
                    pred.inputs["waveform"].CopyFrom(make_tensor_proto(batch))
                    costs = []
                    for _ in range(3):
                        t = time.perf_counter()
                        predict(pred, timeout=600)
                        costs.append((time.perf_counter() - t) / args.batch_size)
                    per_window = statistics.median(costs)
                with grpc.insecure_channel(f"{HOST}:{base}", options=opts) as ch:
                    t = time.perf_counter()
                    whole = separator_pb2_grpc.SeparatorStub(ch).Separate(
                        separator_pb2.SeparateRequest(audio=common_pb2.AudioInput(content=content, filename=song.name)),
                        timeout=3600)
                    whole_s = time.perf_counter() - t
                assert not whole.cache_hit, "the whole song must not be cached by a windowed explanation"
            finally:
                up.send_signal(signal.SIGTERM)
                up.wait(120)
            floor = tm.get("separate", 0.0) + windows * per_window
            old = latency + whole_s - tm.get("separate", 0.0)
            latencies[minutes] = latency
            print(f"{minutes:g} min: cold latency {latency:.2f} s; stages "
                  f"{ {k: round(v, 2) for k, v in tm.items()} }; {windows} tagger windows at "
                  f"{per_window * 1000:.1f} ms = {windows * per_window:.2f} s; floor {floor:.2f} s -> "
                  f"latency / floor {latency / floor:.3f} (target <= 1.5); whole-song Separate {whole_s:.2f} s, "
                  f"so with it before the first mask {old:.2f} s -> old / new {old / latency:.2f} (target >= 2)",
                  flush=True)
    if len(latencies) > 1:
        short, long_ = min(latencies), max(latencies)
        print(f"{long_:g} min / {short:g} min latency: {latencies[long_] / latencies[short]:.3f} (target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
