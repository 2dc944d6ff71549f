"""``audiolime evaluate``: the paper's same-top-tag validation (audioLIME vs SLIME vs random)."""

from __future__ import annotations

import argparse
from pathlib import Path

TAGGERS = ("musicnn-msd", "fcn-msd")


def register(sub: argparse._SubParsersAction) -> None:
    from audiolime.commands.args import add_model_dir
    from audiolime.commands.args import positive_int as _positive_int

    p = sub.add_parser("evaluate", help="same-top-tag rate of audioLIME, SLIME and random top-k components "
                                        "(the paper's Figure 2)")
    p.add_argument("--tagger", action="append", choices=TAGGERS, default=None,
                   help="tagger to evaluate (repeatable; default musicnn-msd)")
    p.add_argument("--audio", type=Path, required=True, help="directory of songs (wav, flac, ogg, mp3)")
    p.add_argument("--k", type=_positive_int(1), nargs="+", default=[3, 5, 7, 9, 11],
                   help="numbers of top components to keep (default 3 5 7 9 11)")
    p.add_argument("--num-samples", type=_positive_int(2, 65536), default=512, help="perturbations N (default 512)")
    p.add_argument("--windows-per-song", nargs="+", default=["3"], metavar="W|TAGGER=W",
                   help="analysis windows W per song, evenly spaced centres (default 3); "
                        "TAGGER=W overrides one tagger, e.g. 3 fcn-msd=2")
    p.add_argument("--segments", type=_positive_int(1), default=12,
                   help="audioLIME temporal segments tau (x 2 stems; default 12 -> d' = 24)")
    p.add_argument("--slime-segments", type=_positive_int(1), default=6, help="SLIME temporal segments (default 6)")
    p.add_argument("--slime-bands", type=_positive_int(1), default=4, help="SLIME frequency bands F (default 4)")
    p.add_argument("--slime-domain", choices=("audio", "spectrogram"), default="audio",
                   help="SLIME rectangles of the window's STFT resynthesised to audio for the tagger's predict "
                        "(audio, the paper's; default) or of the tagger's model-input spectrogram (spectrogram; "
                        "needs a from_spectrogram signature)")
    p.add_argument("--slime-baseline", choices=("zero", "min", "mean"), default="min",
                   help="value of a switched-off SLIME rectangle (default min of the window's STFT magnitude / "
                        "model-input spectrogram)")
    p.add_argument("--draws", type=_positive_int(1, 10000), default=32, help="random baseline draws R (default 32)")
    p.add_argument("--separator", default="2stems", help="Spleeter model (default 2stems)")
    p.add_argument("--batch-size", type=_positive_int(1, 4096), default=64, help="windows per tagger call (default 64; capped at 16 for FCN's 29 s windows, "
                        "which need ~2 GB at 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable checkpoint inside)")
    add_model_dir(p)
    p.set_defaults(func=cmd_evaluate)


def parse_windows(values: list[str]) -> tuple[int, tuple[tuple[str, int], ...]]:
    from audiolime.errors import InvalidInput

    default, override = 3, {}
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

    from audiolime.evaluation.experiment import EvalConfig, run

    windows, override = parse_windows(args.windows_per_song)
    cfg = EvalConfig(taggers=tuple(args.tagger or ["musicnn-msd"]), audio_dir=str(args.audio),
                     ks=tuple(sorted(set(args.k))), num_samples=args.num_samples,
                     windows_per_song=windows, windows_override=override, segments=args.segments,
                     slime_segments=args.slime_segments, slime_bands=args.slime_bands,
                     slime_baseline=args.slime_baseline, slime_domain=args.slime_domain, draws=args.draws, seed=args.seed, separator=args.separator)
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
