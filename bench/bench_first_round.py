"""How small can adaptive sampling's first round be? (issue 23 item 2)

Two phases, both on the product's default factorization (d' = 12: 2stems x 6 segments, fade edges):

``tables``: for each window, ALL 2^d' masks are evaluated once with the real tagger (in-process
SavedModel, Spleeter 2stems, through the product's own pipeline: ``explain_song`` with a fixed
N = 2^d', which enumerates every mask) and the prediction table is cached in
``OUT/<tagger>/<song>-<start>.npz`` (reruns are free). Windows: first each song's product window
(``explain_song``'s choice: the song's top tag where it is most probable), then the evaluation's
evenly spaced windows (``audiolime.evaluation.plan.window_starts``) with the window's top tag.

``simulate``: the REAL engine (``Engine.explain`` with the product's default request, as
``make_plan`` caps it) over a lookup factorization (``compose`` returns the masks, ``predict`` the
cached probabilities of each mask), for several seeds and variants (first round, growth, paired,
kernel). The reference per window: the same engine on all 2^d' masks (the product's surrogate,
exhaustive); a run agrees when its top-3 set equals the reference's up to ties
(``surrogate.agrees_up_to_ties``, the evaluation's definition). Prints one table.

    nice -n 10 python bench/bench_first_round.py tables --tagger musicnn-msd --windows 6
    python bench/bench_first_round.py simulate --seeds 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
D = 12  # the default d' (2 stems x 6 segments)


# --------------------------------------------------------------------------------------- tables

def window_list(songs: list[Path], tagger: Any, extra_per_song: int) -> list[tuple[Path, str, int | None]]:
    """(song, kind, start at the tagger rate or None for the product's choice), interleaved over songs."""
    from audiolime.evaluation.plan import song_seconds, window_starts, windows_for

    out: list[tuple[Path, str, int | None]] = [(s, "product", None) for s in songs]
    per_song = {}
    for s in songs:
        n = windows_for(extra_per_song, song_seconds(s), tagger.window_samples / tagger.sample_rate)
        samples = int(song_seconds(s) * tagger.sample_rate)
        per_song[s] = window_starts(samples, tagger.window_samples, n)
    for i in range(extra_per_song):
        out += [(s, f"eval w{i}", per_song[s][i]) for s in songs if i < len(per_song[s])]
    return out


def tables(args: argparse.Namespace) -> int:
    from audiolime.models import quiet_tensorflow

    quiet_tensorflow()
    from audiolime.audio import decode
    from audiolime.evaluation.plan import find_songs, tagger_batch
    from audiolime.method.engine import Engine
    from audiolime.method.limits import DEFAULT
    from audiolime.method.pipeline import explain_song
    from audiolime.method.plan import make_plan
    from audiolime.method.request import ExplainRequest
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.method.waveform import fit_length, resample_mono
    from audiolime.models import load_separator, load_tagger

    tagger = load_tagger(args.model_dir, args.tagger)
    separator = load_separator(args.model_dir, "2stems")
    source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name)
    engine = Engine(tagger.predict, tagger.labels, batch_size=tagger_batch(64, tagger.window_samples))
    limits = replace(DEFAULT, max_tagger_seconds=1e9)  # 2^12 FCN windows exceed the default budget
    out_dir = args.out / args.tagger
    out_dir.mkdir(parents=True, exist_ok=True)
    songs = find_songs(args.audio)
    todo = window_list(songs, tagger, args.extra_per_song)[args.first:args.first + args.windows]
    for song, kind, start in todo:
        audio = decode(song)
        sr = tagger.sample_rate
        tags: tuple[str, ...] = ()
        if start is not None:  # the evaluation's window and its top tag
            mono = resample_mono(audio.waveform, audio.sample_rate, sr)
            window = fit_length(mono[None, start:start + tagger.window_samples], tagger.window_samples)
            tags = (tagger.labels[int(np.argmax(tagger.predict(window)[0]))],)
        req = ExplainRequest(model=args.tagger, tags=tags, num_samples=2 ** D,
                             window_start_s=None if start is None else start / sr)
        plan = make_plan(req.validate(limits), tagger, audio.header, limits)
        t = time.perf_counter()
        res = explain_song(plan, audio, song.name, tagger, source, engine)
        exp = res.explanation
        assert exp.masks.exhaustive and exp.masks.num_unique == 2 ** D
        name = f"{song.stem[:40]}-{int(round(res.window_start_s * 1000))}ms.npz"
        table = np.empty_like(exp.mask_predictions)
        table[codes(exp.masks.unique)] = exp.mask_predictions
        target = exp.targets[0].tag_index
        np.savez_compressed(out_dir / name, table=table, target=target, tag=tagger.labels[target],
                            song=song.name, kind=kind, window_start_s=res.window_start_s,
                            window_prediction=exp.prediction, labels=np.array(tagger.labels))
        print(f"{args.tagger} {song.name[:30]:30} {kind:8} {res.window_start_s:7.2f} s  {tagger.labels[target]:>18}"
              f"  {time.perf_counter() - t:5.0f} s -> {name}", flush=True)
    return 0


def codes(masks: np.ndarray) -> np.ndarray:
    """Binary code of every mask row (component 0 the most significant bit)."""
    d = masks.shape[1]
    return (np.asarray(masks, np.int64).round().astype(np.int64) << np.arange(d - 1, -1, -1)).sum(axis=1)

# ------------------------------------------------------------------------------------- simulate

class LookupFactorization:
    """d' components whose composition is the mask itself: the lookup ``predict`` reads the tagger's
    cached probabilities of each mask (by its binary code)."""

    def __init__(self, d: int) -> None:
        from audiolime.method.factorization import Component

        self.info = [Component(i, "vocals" if i < d // 2 else "accompaniment", i % (d // 2), 0.0, 0.0)
                     for i in range(d)]

    @property
    def num_components(self) -> int:
        return len(self.info)

    def compose(self, masks: np.ndarray) -> np.ndarray:
        return np.asarray(masks, np.float32)


def lookup(table: np.ndarray):
    def predict(rows: np.ndarray) -> np.ndarray:
        return table[codes(rows)]
    return predict


@dataclass(frozen=True)
class Variant:
    name: str
    first_round: int | None = None  # None: the product's (128 at d' = 12)
    growth: float = 1.5
    sampling: str = "paired"
    kernel: str = "lime"
    stability: float | None = None  # None: the request's default (0.95)


def _product() -> str:
    from audiolime.method.request import ExplainRequest
    from audiolime.method.sampling import round_sizes

    return f"product default (first {round_sizes(D, 4096)[0]}, x1.5, paired, lime, stability {ExplainRequest().stability:g})"


VARIANTS = (
    Variant(_product()),
    Variant("until 2026-12: first 256, stability 0.95", 256, stability=0.95),
    Variant("first 128, stability 0.95", 128, stability=0.95),
    Variant("first 64, stability 0.95", 64, stability=0.95),
    Variant("first 32, stability 0.95", 32, stability=0.95),
    Variant("first 128, x2, stability 0.95", 128, 2.0, stability=0.95),
    Variant("first 256, stability 0.90", 256, stability=0.90),
    Variant("first 128, stability 0.90", 128, stability=0.90),
    Variant("first 64, stability 0.90", 64, stability=0.90),
    Variant("first 128, stability 0.80", 128, stability=0.80),
    Variant("independent, first 256, stability 0.95", 256, sampling="independent", stability=0.95),
    Variant("independent, first 128, stability 0.90", 128, sampling="independent", stability=0.90),
    Variant("shap, first 256, stability 0.95", 256, kernel="shap", stability=0.95),
    Variant("shap, first 128, stability 0.90", 128, kernel="shap", stability=0.90),
)


def weights_by_index(exp: Any, d: int) -> np.ndarray:
    w = np.zeros(d)
    for rc in exp.targets[0].ranking:
        w[rc.component.index] = rc.weight
    return w


def simulate(args: argparse.Namespace) -> int:
    from audiolime.evaluation.aggregate import wilson
    from audiolime.evaluation.plan import tagger_window_seconds
    from audiolime.method.engine import Engine
    from audiolime.method.limits import DEFAULT
    from audiolime.method.request import TIE, ExplainRequest
    from audiolime.method.surrogate import agrees_up_to_ties
    from audiolime.modelstore import serving_dir

    files = [sorted((args.out / t).glob("*.npz")) for t in args.taggers]
    rows: list[dict] = []
    for tagger, paths in zip(args.taggers, files):
        window_s = tagger_window_seconds(serving_dir(args.model_dir), tagger)
        # the product's default request as make_plan caps it (FCN: the tagger-cost budget caps max_samples)
        base = ExplainRequest(model=tagger)
        base = replace(base, max_samples=min(base.max_samples, DEFAULT.most_samples(window_s or 3.0)))
        for path in paths[:args.windows or None]:
            z = np.load(path)
            table, target = z["table"], int(z["target"])
            fact = LookupFactorization(D)
            ones = np.ones(D, np.float32)
            refs = {}
            for kernel in ("lime", "shap"):
                eng = Engine(lookup(table), list(z["labels"]))
                ref = eng.explain(fact, ones, [target], replace(base, num_samples=2 ** D, kernel=kernel).validate())
                refs[kernel] = weights_by_index(ref, D)
            for v in VARIANTS:
                eng = Engine(lookup(table), list(z["labels"]), first_round=v.first_round, round_growth=v.growth)
                for seed in range(args.seeds):
                    req = replace(base, seed=seed, kernel=v.kernel, sampling=v.sampling,
                                  stability=base.stability if v.stability is None else v.stability).validate()
                    exp = eng.explain(fact, ones, [target], req)
                    top = sorted(rc.component.index for rc in exp.targets[0].top(req.top_k))
                    ref = refs[v.kernel]
                    rows.append({"tagger": tagger, "window": path.stem, "kind": str(z["kind"]), "tag": str(z["tag"]),
                                 "variant": v.name, "seed": seed,
                                 "masks": exp.stopping.masks, "unique": exp.unique_samples,
                                 "checks": exp.metric_calls, "reason": exp.stopping.reason,
                                 "rounds": exp.stopping.rounds, "stability": exp.stopping.stability,
                                 "same": agrees_up_to_ties(top, ref, TIE),
                                 "exact": top == sorted(np.argsort(-ref, kind="stable")[:3].tolist()),
                                 "same_lime_ref": agrees_up_to_ties(top, refs["lime"], TIE)})
            print(f"{tagger} {path.stem}: done", file=sys.stderr, flush=True)
    import json

    (args.out / "runs.json").write_text(json.dumps(rows, indent=0, default=float))
    print(f"\n{len(files)} taggers, seeds {args.seeds}; 'same': top-3 = the exhaustive reference's (same kernel) up to "
          f"ties (TIE {TIE}); masks = sampled (drawn) masks at the stop; calls = distinct sampled masks + checks\n")
    head = ("| tagger | variant | windows | median masks | mean masks | median calls (sampling + checks) | stop reasons "
            "| same top-3 runs | Wilson 95 % | windows all seeds same | exact |")
    print(head)
    print("|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|")
    for tagger in args.taggers:
        for v in VARIANTS:
            r = [x for x in rows if x["tagger"] == tagger and x["variant"] == v.name]
            if not r:
                continue
            wins = sorted({x["window"] for x in r})
            same = sum(x["same"] for x in r)
            lo, hi = wilson(same, len(r))
            all_same = sum(all(x["same"] for x in r if x["window"] == w) for w in wins)
            reasons: dict[str, int] = {}
            for x in r:
                reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
            print(f"| {tagger} | {v.name} | {len(wins)} | {statistics.median(x['masks'] for x in r):.0f} "
                  f"| {statistics.mean(x['masks'] for x in r):.0f} "
                  f"| {statistics.median(x['unique'] for x in r):.0f} + {statistics.median(x['checks'] for x in r):.0f} "
                  f"| {', '.join(f'{k} {n}' for k, n in sorted(reasons.items()))} "
                  f"| {same}/{len(r)} = {same / len(r):.2f} | {lo:.2f}-{hi:.2f} | {all_same}/{len(wins)} "
                  f"| {sum(x['exact'] for x in r)}/{len(r)} |")
    per_window = (VARIANTS[0], VARIANTS[1], VARIANTS[7], VARIANTS[4])
    print("\nper window: runs with the reference's top-3 up to ties / seeds (median masks)\n")
    names = [v.name.split(" (")[0].replace("until 2026-12: ", "") for v in per_window]
    print("| tagger | window | kind | tag | " + " | ".join(names) + " |")
    print("|" + "|".join("---" for _ in range(4 + len(per_window))) + "|")
    for tagger in args.taggers:
        for w in sorted({x["window"] for x in rows if x["tagger"] == tagger}):
            r = [x for x in rows if x["tagger"] == tagger and x["window"] == w]
            cells = []
            for v in per_window:
                rv = [x for x in r if x["variant"] == v.name]
                cells.append(f"{sum(x['same'] for x in rv)}/{len(rv)} ({statistics.median(x['masks'] for x in rv):.0f})")
            print(f"| {tagger} | {w} | {r[0]['kind']} | {r[0]['tag']} | " + " | ".join(cells) + " |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="phase", required=True)
    t = sub.add_parser("tables", help="evaluate every mask of each window with the real tagger (cached)")
    t.add_argument("--tagger", default="musicnn-msd")
    t.add_argument("--windows", type=int, default=6)
    t.add_argument("--first", type=int, default=0, help="skip this many windows of the list (already cached)")
    t.add_argument("--extra-per-song", type=int, default=2, help="evaluation windows per song after the product's")
    t.add_argument("--audio", type=Path, default=REPO.parent / "shared" / "audio")
    t.add_argument("--model-dir", type=Path, default=REPO / "models")
    s = sub.add_parser("simulate", help="the real engine over the cached tables, per variant and seed")
    s.add_argument("--taggers", nargs="+", default=["musicnn-msd", "fcn-msd"])
    s.add_argument("--seeds", type=int, default=8)
    s.add_argument("--windows", type=int, default=0, help="at most this many windows per tagger (0: all cached)")
    s.add_argument("--model-dir", type=Path, default=REPO / "models")
    for q in (t, s):
        q.add_argument("--out", type=Path, default=REPO / "out" / "first_round")
    args = p.parse_args(argv)
    return tables(args) if args.phase == "tables" else simulate(args)


if __name__ == "__main__":
    sys.exit(main())
