"""``audiolime timeline``: one tag explained over a whole song (or ``--start``/``--end``), window by
window (:mod:`audiolime.method.timeline`), in-process; the document (``timeline.json``) to ``--out``
or stdout (``--json``), and a short per-stem summary: where in the song each stem carries the tag.

``--out DIR`` also makes it listenable, through the one artifact writer
(:func:`audiolime.artifacts.write_timeline`): each top moment as a WAV clip, each stem and the mix
over the explained range as FLAC, and the listening report ``timeline.html``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from audiolime import settings
from audiolime.commands.args import add_model_dir, integer, number, positive_int
from audiolime.commands.explain import (
    D,
    ProgressBar,
    add_component_args,
    add_model_args,
    add_sampling_args,
    check_paths,
)
from audiolime.method.request import RANDOM_SETS, ExplainRequest, ValidRequest
from audiolime.method.timeline import MAX_TIMELINE_WINDOWS, MAX_TIMELINE_WINDOWS_CAP, TOP_MOMENTS, TimelineRequest

if TYPE_CHECKING:
    from audiolime.explanation.timeline import RangeStems
    from audiolime.method.timeline import TimelinePlan
    from audiolime.method.waveform import Audio

BARS = " \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
SPARK_COLUMNS = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("timeline", help="explain one tag over a whole song: where each stem carries it")
    p.add_argument("song", type=Path, help="audio file (wav, flac, ogg, mp3)")
    p.add_argument("--tag", default=None, help="tag to explain (default: the song's top predicted tag)")
    p.add_argument("--start", type=number, default=0.0, help="start of the range, seconds (default 0)")
    p.add_argument("--end", type=number, default=None, help="end of the range, seconds (default: the end of the song)")
    p.add_argument("--max-windows", type=integer, default=MAX_TIMELINE_WINDOWS,
                   help=f"refuse a range that needs more tagger windows than this (1..{MAX_TIMELINE_WINDOWS_CAP}; "
                        f"default {MAX_TIMELINE_WINDOWS})")
    p.add_argument("--moments", type=integer, default=TOP_MOMENTS,
                   help=f"top moments (song-level components) to report and check (default {TOP_MOMENTS})")
    p.add_argument("--random-sets", type=positive_int(1, 64), default=RANDOM_SETS,
                   help=f"random sets of moments the song-level verdict compares with (default {RANDOM_SETS})")
    p.add_argument("--top-k", type=integer, default=D.top_k,
                   help=f"per window: the top-k set whose stability stops adaptive sampling (default {D.top_k})")
    add_sampling_args(p)
    add_component_args(p)
    p.add_argument("--seed", type=integer, default=D.seed, help=f"random seed of the masks (default {D.seed})")
    p.add_argument("--out", type=Path, default=None,
                   help="write timeline.json, the top moments as WAV clips, each stem and the mix over the range "
                        "(FLAC) and the report timeline.html into this directory (made if missing; default: "
                        "write nothing)")
    p.add_argument("--json", action="store_true", help="print the timeline document as JSON on stdout")
    add_model_args(p)
    add_model_dir(p)
    settings.add(p, settings.LIMITS, use_env=False)
    p.set_defaults(func=cmd_timeline)


def requests_from_args(args: argparse.Namespace) -> tuple[ValidRequest, TimelineRequest]:
    """The window request and the song range the flags ask for, checked (before any work)."""
    timeline = TimelineRequest(start_s=args.start, end_s=args.end, max_windows=args.max_windows, top_k=args.moments,
                               random_sets=args.random_sets).validate()
    request = ExplainRequest(model=args.tagger, tags=(args.tag,) if args.tag else (), segments=args.segments,
                             separator=args.separator, num_samples=args.num_samples, seed=args.seed, top_k=args.top_k,
                             edges=args.edges, fade=args.fade, max_samples=args.max_samples, stability=args.stability,
                             kernel=args.kernel, sampling=args.sampling).validate(settings.limits_from(args))
    return request, timeline


def cmd_timeline(args: argparse.Namespace) -> int:
    from audiolime.artifacts import write_timeline
    from audiolime.audio import decode
    from audiolime.explanation.timeline import TIMELINE_MANIFEST, TIMELINE_REPORT, describe_timeline
    from audiolime.method.engine import Engine
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.method.timeline import explain_timeline, make_timeline_plan
    from audiolime.models import load_separator, load_tagger, quiet_tensorflow

    check_paths(Path(args.song), args.out)
    request, timeline = requests_from_args(args)
    bounds = settings.limits_from(args)
    t = time.perf_counter()
    audio = decode(args.song, limits=bounds)
    decode_s = time.perf_counter() - t
    quiet_tensorflow()
    tagger = load_tagger(args.model_dir, request.model, request.model_version or None)
    tplan = make_timeline_plan(request, timeline, tagger, audio.header, bounds)  # range, windows, cost: refused here
    separator = load_separator(args.model_dir, request.separator)
    # consecutive windows share the separator's chunks (30 s): each chunk is separated once
    source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name, cache_chunks=2)
    engine = Engine(tagger.predict, tagger.labels, batch_size=args.batch_size)
    collected = range_stems(tplan, audio) if args.out else None
    t = time.perf_counter()
    with ProgressBar() as progress:
        result = explain_timeline(tplan, audio, args.song.name, tagger, source, engine, progress, collected)
    timings = {**result.timings_s, "decode": result.timings_s.get("decode", 0.0) + decode_s}
    if collected is not None:
        from audiolime.store import LocalStore

        t_store = time.perf_counter()
        doc = describe_timeline(result, {**timings, "total": decode_s + t_store - t})
        doc, _ = write_timeline(doc, collected, audio.waveform[:, collected.start:collected.end],
                                LocalStore(args.out))
    else:
        doc = describe_timeline(result, {**timings, "total": decode_s + time.perf_counter() - t})
    if args.json:
        sys.stdout.write(doc.dumps().decode())
        if args.out:
            print(f"audiolime: timeline: {args.out / TIMELINE_MANIFEST}", file=sys.stderr)
        return 0
    for line in summary(doc.to_json()):
        print(line)
    if args.out:
        print(f"timeline: {args.out / TIMELINE_MANIFEST}")
        print(f"listening report: {args.out / TIMELINE_REPORT} (open it in a browser)")
    return 0


def range_stems(tplan: TimelinePlan, audio: Audio) -> RangeStems:
    """The collector of the stems over ``tplan``'s range, at the audio's rate (what the clips are
    cut from): the same sample arithmetic as the method's windows."""
    from audiolime.explanation.timeline import RangeStems

    rate, sr_m = audio.sample_rate, tplan.plan.sample_rate
    first = int(round(tplan.starts[0] / sr_m * rate))
    last = int(round(tplan.starts[-1] / sr_m * rate)) + int(round(tplan.plan.window_samples / sr_m * rate))
    return RangeStems(first, min(last, audio.num_samples), audio.channels, rate)


def spark_line(weights: Sequence[float] | np.ndarray, scale: float, columns: int = SPARK_COLUMNS) -> str:
    """Positive weights as at most ``columns`` bars (each the largest weight in its share of the
    timeline), ``scale`` the full bar (blank: no positive weight there)."""
    w = np.clip(np.asarray(weights, np.float64), 0, None)
    edges = np.round(np.linspace(0, len(w), min(columns, len(w)) + 1)).astype(int)
    peaks = [w[a:b].max() for a, b in zip(edges[:-1], edges[1:])]
    return "".join(BARS[int(np.ceil(p / scale * (len(BARS) - 1)))] if scale > 0 else " " for p in peaks)


def summary(doc: dict) -> list[str]:
    """A few lines: the song's probability of the tag, per stem its share of the positive weight,
    where it peaks and a bar line along the song, the top moments, the verdict and the cost."""
    windows, a = doc["windows"], doc["audio"]
    scale = max((p["weight"] for s in doc["stems"] for p in s["timeline"]), default=0.0)
    lines = [f"'{doc['tag']}' over {a['range']['start_s']:.2f}\u2013{a['range']['end_s']:.2f} s of {a['path']} "
             f"({len(windows)} windows of {doc['model']['window_samples'] / doc['model']['sample_rate']:g} s, "
             f"{doc['model']['name']}): song probability {doc['song']['probability']:.3f}"]
    width = max(len(s["name"]) for s in doc["stems"])
    for s in doc["stems"]:
        lines.append(f"  {s['name']:<{width}}  carries {100 * s['positive_share']:3.0f} % of it, most at "
                     f"{s['peak_start_s']:.2f}\u2013{s['peak_end_s']:.2f} s  "
                     f"|{spark_line([p['weight'] for p in s['timeline']], scale)}|")
    lines.append("top moments: " + ", ".join(f"{m['stem']} {m['start_s']:.2f}\u2013{m['end_s']:.2f} s "
                                               f"{m['weight']:+.4f}" for m in doc["top_moments"]))
    f, c = doc["faithfulness"], doc["cost"]
    lines.append(f"song level: {f['verdict']['summary']} (keep {f['keep_probability']:.3f}, drop "
                 f"{f['drop_probability']:.3f}, all {f['original_probability']:.3f})")
    lines.append(f"cost: {c['tagger_calls']} tagger windows, {c['ratio']:.2f} x the {c['masks_x_windows']} masks "
                 f"the windows drew")
    return lines
