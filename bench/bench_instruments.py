"""Explanations checked against a cause known without planting: taggers whose tags name an instrument
or a voice (fcn-mtat, fcn-jamendo: `audiolime setup --tagger fcn-mtat --tagger fcn-jamendo`).

An explained "vocal" (MTAT) or "instrument---voice" (MTG-Jamendo) on a song with a singer must rank a
vocals component first; "drums" / "instrument---drums" under `2stems+hpss` a percussive one. Every
window of each song (the song scan's grid, hop = half a window) is explained with the product's
default request (adaptive sampling, seed 0) by the library itself, as the CLI does; printed per case:
windows, the share whose top-1 component is of the expected stem, the share with one in the top 3,
what a random ranking would give (the expected stem's share of the components), median masks and
the tag's probability. Numbers go to docs/evaluation.md.

    python bench/bench_instruments.py [--model-dir models] [--audio ../shared/audio]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# (tagger, separator, song, tag, stem the cause lives in)
CASES = [
    ("fcn-mtat", "2stems", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg", "vocal", "vocals"),
    ("fcn-mtat", "2stems", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg", "female", "vocals"),
    ("fcn-jamendo", "2stems", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg", "instrument---voice", "vocals"),
    ("fcn-mtat", "2stems+hpss", "admiralbob77_-_Choice_-_Drum-bass.ogg", "drums", "percussive"),
    ("fcn-mtat", "2stems+hpss", "Kevin_MacLeod_-_Vibe_Ace.ogg", "drums", "percussive"),
    ("fcn-jamendo", "2stems+hpss", "admiralbob77_-_Choice_-_Drum-bass.ogg", "instrument---drums", "percussive"),
    ("fcn-jamendo", "2stems+hpss", "Kevin_MacLeod_-_Vibe_Ace.ogg", "instrument---drums", "percussive"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--audio", type=Path, default=REPO.parent / "shared" / "audio")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--only", default="", metavar="TAGGER:TAG",
                   help="run only the cases of this tagger and tag, e.g. fcn-mtat:vocal (default: all)")
    args = p.parse_args(argv)

    import numpy as np

    from audiolime.audio import decode
    from audiolime.method.engine import Engine
    from audiolime.method.pipeline import explain_song
    from audiolime.method.plan import make_plan
    from audiolime.method.request import ExplainRequest
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.models import load_separator, load_tagger, quiet_tensorflow

    quiet_tensorflow()
    taggers, separators, audios = {}, {}, {}
    print("tagger       separator    song                    tag                   windows  top-1  top-3  "
          "random top-1  masks  p(tag)")
    for tagger_name, sep_name, song, tag, stem in CASES:
        if args.only and args.only != f"{tagger_name}:{tag}":
            continue
        t0 = time.perf_counter()
        if tagger_name not in taggers:
            taggers[tagger_name] = load_tagger(args.model_dir, tagger_name)
        if sep_name not in separators:
            separators[sep_name] = load_separator(args.model_dir, sep_name)
        if song not in audios:
            audios[song] = decode(args.audio / song)
        tagger, sep, audio = taggers[tagger_name], separators[sep_name], audios[song]
        source = LocalSeparation(lambda wave, sep=sep: sep.separate(wave, STEM_RATE).stems, sep.name, cache_chunks=64)
        engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
        window_s = tagger.window_samples / tagger.sample_rate
        starts = np.arange(0.0, max(audio.duration_s - window_s, 0.0) + 1e-9, window_s / 2)
        top1 = top3 = 0
        masks, probs = [], []
        for start in starts:
            request = ExplainRequest(model=tagger_name, tags=(tag,), separator=sep_name,
                                     window_start_s=float(start)).validate()
            plan = make_plan(request, tagger, audio.header)
            result = explain_song(plan, audio, song, tagger, source, engine)
            ranking = result.explanation.targets[0].ranking
            top1 += ranking[0].component.source == stem
            top3 += any(rc.component.source == stem for rc in ranking[:3])
            masks.append(result.explanation.stopping.masks)
            probs.append(float(result.explanation.prediction[tagger.labels.index(tag)]))
        n = len(starts)
        chance = 1 / len(request.stems)
        print(f"{tagger_name:12s} {sep_name:12s} {song[:22]:23s} {tag:21s} {n:7d}  {top1 / n:5.2f}  {top3 / n:5.2f}  "
              f"{chance:6.2f}  {statistics.median(masks):5.0f}  {statistics.median(probs):6.3f}"
              f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
