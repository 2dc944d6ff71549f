"""``audiolime evaluate``: the paper's same-top-tag validation (audioLIME vs SLIME vs random)."""

from __future__ import annotations

import argparse
from pathlib import Path

TAGGERS = ("musicnn-msd", "fcn-msd")
DEFAULT_TAGGER = "musicnn-msd"


def register(sub: argparse._SubParsersAction) -> None:
    """Offered where the evaluation package is installed (the service images leave it out)."""
    import importlib.util

    if importlib.util.find_spec("audiolime.evaluation") is None:
        return
    from audiolime.commands.args import add_model_dir, positive_int
    from audiolime.evaluation.config import EvalConfig as E  # the defaults, read from the one config
    from audiolime.explain.request import MAX_NUM_SAMPLES, stems_of

    p = sub.add_parser("evaluate", help="same-top-tag rate of audioLIME, SLIME and random top-k components "
                                        "(the paper's Figure 2)")
    p.add_argument("--tagger", action="append", choices=TAGGERS, default=None,
                   help=f"tagger to evaluate (repeatable; default {DEFAULT_TAGGER})")
    p.add_argument("--audio", type=Path, required=True, help="directory of songs (wav, flac, ogg, mp3)")
    p.add_argument("--k", type=positive_int(1), nargs="+", default=list(E.ks),
                   help=f"numbers of top components to keep (default {' '.join(map(str, E.ks))})")
    p.add_argument("--num-samples", type=positive_int(2, MAX_NUM_SAMPLES), default=E.num_samples,
                   help=f"perturbations N (default {E.num_samples})")
    p.add_argument("--windows-per-song", nargs="+", default=[str(E.windows_per_song)], metavar="W|TAGGER=W",
                   help=f"analysis windows W per song, evenly spaced centres (default {E.windows_per_song}); "
                        "TAGGER=W overrides one tagger, e.g. 3 fcn-msd=2")
    p.add_argument("--segments", type=positive_int(1), default=E.segments,
                   help=f"audioLIME temporal segments tau (x {len(stems_of(E.separator))} stems; default {E.segments} "
                        f"-> d' = {len(stems_of(E.separator)) * E.segments})")
    p.add_argument("--slime-segments", type=positive_int(1), default=E.slime_segments,
                   help=f"SLIME temporal segments (default {E.slime_segments})")
    p.add_argument("--slime-bands", type=positive_int(1), default=E.slime_bands,
                   help=f"SLIME frequency bands F (default {E.slime_bands})")
    p.add_argument("--slime-domain", choices=("audio", "spectrogram"), default=E.slime_domain,
                   help="SLIME rectangles of the window's STFT resynthesised to audio for the tagger's predict "
                        "(audio, the paper's; default) or of the tagger's model-input spectrogram (spectrogram; "
                        "needs a from_spectrogram signature)")
    p.add_argument("--slime-baseline", choices=("zero", "min", "mean"), default=E.slime_baseline,
                   help="value of a switched-off SLIME rectangle (default min of the window's STFT magnitude / "
                        "model-input spectrogram)")
    p.add_argument("--draws", type=positive_int(1, 10000), default=E.draws,
                   help=f"random baseline draws R (default {E.draws})")
    p.add_argument("--separator", default=E.separator, help=f"Spleeter model (default {E.separator})")
    p.add_argument("--batch-size", type=positive_int(1, 4096), default=64,
                   help="windows per tagger call (default 64; capped at 16 for FCN's 29 s windows, "
                        "which need ~2 GB at 16)")
    p.add_argument("--seed", type=int, default=E.seed)
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable checkpoint inside)")
    add_model_dir(p)
    p.set_defaults(func=cmd_evaluate)


def parse_windows(values: list[str], default: int = 3) -> tuple[int, tuple[tuple[str, int], ...]]:
    """``W`` and ``TAGGER=W`` values -> (default W, per-tagger overrides)."""
    from audiolime.errors import InvalidInput

    override = {}
    for v in values:
        name, _, num = v.rpartition("=")
        try:
            n = int(num)
        except ValueError:
            raise InvalidInput(f"--windows-per-song: expected W or TAGGER=W, got {v!r}") from None
        if not 1 <= n <= 100:
            raise InvalidInput(f"--windows-per-song: W must be between 1 and 100, got {v!r}")
        if name:
            override[name] = n
        else:
            default = n
    return default, tuple(sorted(override.items()))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from audiolime.evaluation.config import EvalConfig
    from audiolime.evaluation.experiment import run

    windows, override = parse_windows(args.windows_per_song, EvalConfig.windows_per_song)
    cfg = EvalConfig(taggers=tuple(args.tagger or [DEFAULT_TAGGER]), audio_dir=str(args.audio),
                     ks=tuple(sorted(set(args.k))), num_samples=args.num_samples,
                     windows_per_song=windows, windows_override=override, segments=args.segments,
                     slime_segments=args.slime_segments, slime_bands=args.slime_bands,
                     slime_baseline=args.slime_baseline, slime_domain=args.slime_domain, draws=args.draws,
                     seed=args.seed, separator=args.separator)
    summary = run(cfg, args.model_dir, args.out, batch_size=args.batch_size, console=Console(stderr=True))
    out = Console()
    out.print(f"{summary.items_total} items: {summary.items_done_before} resumed from the checkpoint, "
              f"{summary.items_computed} computed")
    for t, methods in summary.table.items():
        for m, cells in methods.items():
            vals = "  ".join(f"k={k}: {'n/a' if c['rate'] is None else format(c['rate'], '.2f')}"
                             for k, c in cells.items())
            out.print(f"{t:12s} {m:10s} {vals}")
    out.print(f"wrote {args.out}/results.csv, results.json, results.md, figure2.png")
    return 0
