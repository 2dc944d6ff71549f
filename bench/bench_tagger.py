"""Throughput of the in-process tagger (LocalTagger) in windows/s per batch size.

    python bench/bench_tagger.py [--model-dir models] [--model musicnn-msd] [--repeats 5]

Loads ``<model-dir>/serving/<model>/<newest version>``, warms every batch size up, then times
``--repeats`` calls per batch size on noise windows (the cost does not depend on the content).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from audiolime.tagger.savedmodel import LocalTagger

REPO = Path(__file__).resolve().parents[1]


def bench(tagger: LocalTagger, batch_size: int, repeats: int,
          warmup: int = 2) -> tuple[float, float]:
    """(windows/s, seconds per call) of ``tagger.predict`` at ``batch_size``."""
    rng = np.random.default_rng(batch_size)
    x = rng.uniform(-0.3, 0.3, (batch_size, tagger.window_samples)).astype(np.float32)
    for _ in range(warmup):
        tagger.predict(x)
    start = time.perf_counter()
    for _ in range(repeats):
        tagger.predict(x)
    per_call = (time.perf_counter() - start) / repeats
    return batch_size / per_call, per_call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("AUDIOLIME_MODEL_DIR", REPO / "models")))
    parser.add_argument("--model", default="musicnn-msd")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    args = parser.parse_args(argv)

    tagger = LocalTagger.load(args.model_dir / "serving", args.model, args.version)
    print(f"{tagger.name} v{tagger.version}: window {tagger.window_samples} samples "
          f"@ {tagger.sample_rate} Hz, {len(tagger.labels)} tags, "
          f"{os.cpu_count()} CPUs, {args.repeats} repeats")
    print(f"{'batch':>5}  {'ms/call':>9}  {'windows/s':>9}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        rate, per_call = bench(tagger, batch_size, args.repeats)
        print(f"{batch_size:>5}  {per_call * 1e3:>9.1f}  {rate:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
