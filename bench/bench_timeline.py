"""A song timeline's cost and song-level faithfulness on one song range (one run).

Prints (a) the tagger windows the timeline ran against windows x masks per window (the sampling
alone; issue 24's target: within 1.5 x), by what for, and (b) the song-level keep/drop of the top
moments next to the random k-sets of the song's components: the song aggregate (mean over windows)
of the tag with only the top moments kept, and with them removed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--song", type=Path, default=REPO.parent / "shared" / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    p.add_argument("--tagger", default="musicnn-msd")
    p.add_argument("--tag", default="female vocalists")
    p.add_argument("--start", type=float, default=30.0)
    p.add_argument("--end", type=float, default=90.0)
    p.add_argument("--num-samples", type=int, default=128, help="masks per window (0: adaptive)")
    p.add_argument("--segments", type=int, default=6)
    p.add_argument("--moments", type=int, default=5)
    p.add_argument("--random-sets", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="write the timeline document here")
    args = p.parse_args(argv)

    from audiolime.models import quiet_tensorflow

    quiet_tensorflow()
    from audiolime.audio import decode
    from audiolime.explanation.timeline import describe_timeline
    from audiolime.method.engine import Engine
    from audiolime.method.request import ExplainRequest
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.method.timeline import TimelineRequest, explain_timeline, make_timeline_plan
    from audiolime.models import load_separator, load_tagger

    audio = decode(args.song)
    tagger = load_tagger(args.model_dir, args.tagger)
    separator = load_separator(args.model_dir, "2stems")
    request = ExplainRequest(model=args.tagger, tags=(args.tag,), num_samples=args.num_samples,
                             segments=args.segments).validate()
    tplan = make_timeline_plan(request, TimelineRequest(args.start, args.end, top_k=args.moments,
                                                        random_sets=args.random_sets), tagger, audio.header)
    source = LocalSeparation(lambda w: separator.separate(w, STEM_RATE).stems, separator.name, cache_chunks=2)
    engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
    t = time.perf_counter()
    r = explain_timeline(tplan, audio, args.song.name, tagger, source, engine)
    wall = time.perf_counter() - t
    c, f = r.cost, r.faithfulness
    print(f"{args.song.name} {tplan.start_s:g}-{tplan.end_s:g} s, {args.tagger}, '{r.tag}': {len(r.windows)} windows "
          f"x {request.num_components} components, {args.num_samples or 'adaptive'} masks per window")
    print(f"(a) tagger windows {c.tagger_calls} vs windows x masks {c.masks_x_windows}: {c.ratio:.3f} x "
          f"(predictions {c.predictions}, masks {c.masks}, window checks {c.window_checks}, "
          f"song checks {c.song_checks}, scan {c.scan})")
    print(f"    wall {wall:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in r.timings_s.items() if v))
    kr, dr = np.asarray(f.keep_random), np.asarray(f.drop_random)
    print(f"(b) song probability {f.original_probability:.4f} (mean of windows {r.song_probability:.4f})")
    print(f"    keep top {f.top_k}: {f.keep_probability:.4f} (top tag {f.keep_top_tag}); random {len(kr)} sets: "
          f"mean {kr.mean():.4f}, max {kr.max():.4f}, as good {f.verdict.keep_random_as_good:.2f}")
    print(f"    drop top {f.top_k}: {f.drop_probability:.4f} (top tag {f.drop_top_tag}); random: "
          f"mean {dr.mean():.4f}, min {dr.min():.4f}, as good {f.verdict.drop_random_as_good:.2f}")
    print(f"    verdict: {f.verdict.summary}")
    print("    top moments: " + ", ".join(f"{m.stem} {m.start_s:.2f}-{m.end_s:.2f} s {m.weight:+.4f}"
                                          for m in r.moments))
    for s in r.stems:
        pos = np.clip(s.weights, 0, None)
        print(f"    {s.stem}: positive weight {pos.sum():.4f}, peak at {s.starts_s[int(np.argmax(s.weights))]:.2f} s")
    if args.out:
        args.out.write_bytes(describe_timeline(r).dumps())
    print(json.dumps({"windows": len(r.windows), "tagger_calls": c.tagger_calls, "masks_x_windows": c.masks_x_windows,
                      "ratio": round(c.ratio, 4), "keep": round(f.keep_probability, 4),
                      "drop": round(f.drop_probability, 4), "keep_random_as_good": f.verdict.keep_random_as_good,
                      "drop_random_as_good": f.verdict.drop_random_as_good, "wall_s": round(wall, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
