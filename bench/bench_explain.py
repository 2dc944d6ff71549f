"""Explanation cost vs its floor, and vs the research code's per-sample loop (one run, ratios).

(a) tagger cost per window at the engine's batch size;
(b) one explanation, N masks, through the engine (dedup + one matmul per batch + batched predict);
(c) the same explanation as the research code computes it: for every mask, compose that mask
    alone and call the tagger on it (batch of 1, no deduplication).
Target: (b) <= 1.15 x (unique masks x per-window cost) + separation time, and (b) faster than (c).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--song", type=Path, default=REPO.parent / "shared" / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    p.add_argument("--start", type=float, default=60.0)
    p.add_argument("--num-samples", type=int, default=1024)
    p.add_argument("--segments", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--naive-samples", type=int, default=None, help="masks for (c) (default: all N)")
    args = p.parse_args(argv)

    from audiolime.models import quiet_tensorflow

    quiet_tensorflow()
    from audiolime.audio import decode
    from audiolime.method.engine import Engine
    from audiolime.method.pipeline import explain_song
    from audiolime.method.plan import make_plan
    from audiolime.method.request import ExplainRequest
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.models import load_separator, load_tagger

    tagger = load_tagger(args.model_dir, "musicnn-msd")
    separator = load_separator(args.model_dir, "2stems")
    audio = decode(args.song)
    rng = np.random.default_rng(0)

    # (a) per-window cost at the engine's batch size, warm
    x = (0.1 * rng.standard_normal((args.batch_size, tagger.window_samples))).astype(np.float32)
    tagger.predict(x)
    reps = 4
    t = time.perf_counter()
    for _ in range(reps):
        tagger.predict(x)
    per_window = (time.perf_counter() - t) / (reps * args.batch_size)

    # (b) the engine, end to end from decoded audio (window given: no scan of the song)
    engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
    req = ExplainRequest(tags=("female vocalists",), window_start_s=args.start, segments=args.segments,
                         num_samples=args.num_samples, seed=0)
    stem_source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name)
    t = time.perf_counter()
    plan = make_plan(req.validate(), tagger, audio.header)
    result = explain_song(plan, audio, str(args.song), tagger, stem_source, engine)
    engine_s = time.perf_counter() - t
    unique = result.explanation.unique_samples
    sep_s = result.timings_s["separate"]
    floor = unique * per_window + sep_s

    # (c) the research code's loop: per mask, compose by summing components, predict a batch of 1
    fact = result.factorization
    masks = result.explanation.masks.masks
    n_naive = args.naive_samples or len(masks)
    t = time.perf_counter()
    naive = np.empty((n_naive, len(tagger.labels)), np.float32)
    for i in range(n_naive):
        mix = np.zeros(fact.num_samples, np.float32)
        for j in np.flatnonzero(masks[i]):
            mix += fact.components[j]
        naive[i] = tagger.predict(mix[None, :])[0]
    naive_s = (time.perf_counter() - t) * len(masks) / n_naive + sep_s
    # same numbers either way
    dev = float(np.abs(naive - result.explanation.mask_predictions[result.explanation.masks.inverse[:n_naive]]).max())

    rows = [
        (f"(a) tagger per window, batch {args.batch_size}", f"{per_window * 1000:.2f} ms",
         f"{1 / per_window:.1f} windows/s"),
        ("(b) engine, N=%d (%d unique)" % (len(masks), unique), f"{engine_s:.2f} s", f"separation {sep_s:.2f} s"),
        ("    floor: unique x per-window + separation", f"{floor:.2f} s", ""),
        ("(c) per-sample loop, N=%d%s" % (len(masks), "" if n_naive == len(masks) else f" (extrapolated from {n_naive})"),
         f"{naive_s:.2f} s", ""),
    ]
    for r in rows:
        print(f"{r[0]:<52} {r[1]:>10}  {r[2]}")
    print(f"ratio (b) / floor      = {engine_s / floor:.3f}   (target <= 1.15)")
    print(f"ratio (c) / (b)        = {naive_s / engine_s:.2f}x  (engine speed-up over the per-sample loop)")
    print(f"max |p_engine - p_loop| = {dev:.2e}")
    return 0 if engine_s <= 1.15 * floor and engine_s < naive_s else 1


if __name__ == "__main__":
    sys.exit(main())
