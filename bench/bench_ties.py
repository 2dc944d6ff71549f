"""Adaptive sampling with and without the tie rule, against the large-N references an evaluation
run recorded: for every window of ``OUT/items.jsonl`` whose ``default`` item has a reference,
explain the same window and tag in-process with the product's default request (tie tolerance
``surrogate.TIE``), and print the masks it needed and whether its top-k set equals the
reference's (exactly, and up to components tied within TIE x the reference's largest weight),
beside the same for the checkpoint's ``default`` item (run with the exact-set rule, tie 0).

    python bench/bench_ties.py out/eval-faith-musicnn [--tie 0.05] [--windows N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from audiolime.audio import decode
from audiolime.method import surrogate
from audiolime.method.engine import Engine
from audiolime.method.pipeline import explain_song
from audiolime.method.plan import make_plan
from audiolime.method.request import ExplainRequest
from audiolime.method.stems import STEM_RATE, LocalSeparation
from audiolime.models import load_separator, load_tagger, quiet_tensorflow


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--audio", type=Path, default=Path("../shared/audio"))
    p.add_argument("--model-dir", type=Path, default=Path("models"))
    p.add_argument("--tie", type=float, default=None, help="the tie tolerance to try (default: surrogate.TIE)")
    p.add_argument("--windows", type=int, default=0, help="at most this many windows (0: all)")
    args = p.parse_args()
    items = [json.loads(line) for line in (args.out / "items.jsonl").open()]
    items = [r for r in items if r["method"] == "default" and isinstance(r["result"].get("reference"), dict)]
    items = items[:args.windows or None]
    if args.tie is not None:
        surrogate.TIE = args.tie  # read by every round's fit (surrogate.fit_round)
    quiet_tensorflow()
    model_dir = args.model_dir
    tagger = load_tagger(model_dir, items[0]["tagger"], None)
    separator = load_separator(model_dir, "2stems")
    source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name)
    engine = Engine(tagger.predict, tagger.labels, batch_size=16 if tagger.name == "fcn-msd" else 64)
    rows = []
    for r in items:
        audio = decode(args.audio / r["song"])
        ref = np.asarray(r["result"]["reference"]["weights"])
        req = ExplainRequest(model=r["tagger"], tags=(r["top_tag"],), window_start_s=r["window_start_s"])
        ref_top = set(r["result"]["reference"]["top_k_set"])
        t = time.perf_counter()
        res = explain_song(make_plan(req.validate(), tagger, audio.header), audio, r["song"], tagger, source, engine)
        top = {rc.component.index for rc in res.explanation.targets[0].top(req.top_k)}
        stop = res.explanation.stopping
        old_top, old_stop = set(r["result"]["top_k_set"]), r["result"]["stopping"]
        out = {"tie": (stop.masks, stop.reason, top == ref_top, surrogate.agrees_up_to_ties(sorted(top), ref, surrogate.TIE),
                       time.perf_counter() - t),
               "exact": (old_stop["masks"], old_stop["reason"], old_top == ref_top,
                         surrogate.agrees_up_to_ties(sorted(old_top), ref, surrogate.TIE), r["result"]["seconds"])}
        rows.append(out)
        print(f"{r['song'][:24]:24} w{r['window']} {r['top_tag']:>18}: " + "  ".join(
            f"{n}: {m} masks ({why}), same {s}, same up to ties {u}, {sec:.0f} s" for n, (m, why, s, u, sec) in out.items()),
            flush=True)
    ref_calls = items[0]["result"]["reference"]["unique"]
    for n in ("tie", "exact"):
        masks = [o[n][0] for o in rows]
        print(f"{n}: windows {len(rows)}, same top-{3} {sum(o[n][2] for o in rows)}/{len(rows)}, up to ties "
              f"{sum(o[n][3] for o in rows)}/{len(rows)}, median masks {statistics.median(masks):.0f} "
              f"= {statistics.median(masks) / ref_calls:.3f} of the reference's {ref_calls} calls")


if __name__ == "__main__":
    main()
