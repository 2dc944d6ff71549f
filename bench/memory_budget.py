"""Peak RSS of the explainer's worst admitted mix, with and without the memory budget.

Four concurrent explanations of 600 s of a constant at 96 kHz stereo (a 223 KB FLAC that the
default limits allow: it decodes to 440 MiB) run through the real ``ExplainerService`` (decode,
scan, the window's stems, masks, publishing to a ``file://`` store) in a fresh process, with a
fast numpy tagger (16 kHz, 3 s windows, like musicnn) and the window's region of a fake
separation (as ``RemoteStems`` reads it from the store) standing in for the backends, which are
other processes and not what is measured. Reported:
which calls ran and which were refused (RESOURCE_EXHAUSTED at once), and the process's peak RSS
(VmHWM) over its baseline. ``--budget 0`` is the old admission (4 slots, no memory budget).

    PYTHONPATH=src python bench/memory_budget.py [--budget-mib 1536] [--calls 4]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def child(budget_mib: int, calls: int) -> dict:
    import numpy as np
    import soundfile as sf

    from audiolime import errors
    from audiolime.explainer.service import ExplainerService, ServiceConfig, Task
    from audiolime.inputs import AudioSource
    from audiolime.method.request import ExplainRequest
    from audiolime.method.stems import STEM_RATE, Stems, stem_rate_region, window_stems
    from audiolime.method.waveform import resample
    from audiolime.processes import memory
    from audiolime.store import LocalStore

    rate, seconds = 96000, 600
    buf = io.BytesIO()
    block = np.full((rate * 10, 2), 0.25, dtype=np.float32)
    block[::2] *= -1  # not silence
    with sf.SoundFile(buf, "w", rate, 2, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds // 10):
            f.write(block)
    flac = buf.getvalue()

    class Tagger:
        name, version, labels, sample_rate, window_samples = "fast", 1, ["a", "b", "c"], 16000, 48000

        def predict(self, x):
            e = np.sqrt(np.mean(x ** 2, axis=1))
            return np.stack([np.tanh(e), 1 - np.tanh(e), 0.1 + 0 * e], axis=1).astype(np.float32)

    class WindowStems:  # what RemoteStems does: only the window's region of the (cached) stems
        def __init__(self, model):
            self.model = model

        def window(self, audio, start, end):
            n = round(audio.num_samples * STEM_RATE / audio.sample_rate)
            a, b = stem_rate_region(audio.sample_rate, start, end, n)
            mix = resample(audio.waveform[:, a * audio.sample_rate // STEM_RATE:b * audio.sample_rate // STEM_RATE + 1],
                           audio.sample_rate, STEM_RATE)[:, :b - a]
            region = {"vocals": mix * 0.5, "accompaniment": mix * 0.5}
            return Stems(window_stems(region, a, audio, start, end), audio.sample_rate, self.model, 0.0, True)

    class Separator:
        def stems(self, audio, model):
            return WindowStems(model)

    tmp = tempfile.mkdtemp()
    store = LocalStore(Path(tmp), public_url="http://127.0.0.1:9", secret=b"k" * 16)
    budget = budget_mib << 20 if budget_mib else 1 << 50
    service = ExplainerService(store, lambda n, v: Tagger(), Separator(),
                               ServiceConfig(batch_size=64, max_in_flight=2, memory_budget=budget))
    import gc

    gc.collect()
    base, _ = memory(__import__("os").getpid())
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        request = ExplainRequest(model="fast", tags=("a",), num_samples=64, segments=4, top_k=2).validate()
        t = time.perf_counter()
        try:
            service.run(Task(request, AudioSource(content=flac, filename=f"song{i}.flac"), 0))
            out = f"OK in {time.perf_counter() - t:.1f} s"
        except errors.AudiolimeError as exc:
            out = f"{exc.code} in {time.perf_counter() - t:.3f} s"
        with lock:
            outcomes.append(out)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, peak = memory(__import__("os").getpid())
    return {"flac_bytes": len(flac), "budget_mib": budget_mib, "outcomes": sorted(outcomes),
            "baseline_mb": round(base / 1e6), "peak_mb": round(peak / 1e6), "growth_mb": round((peak - base) / 1e6)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-mib", type=int, default=1536, help="0: no memory budget (the old admission)")
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.budget_mib, args.calls)))
        return 0
    out = subprocess.run([sys.executable, __file__, "--child", "--budget-mib", str(args.budget_mib), "--calls",
                          str(args.calls)], capture_output=True, text=True, check=True)
    print(out.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
