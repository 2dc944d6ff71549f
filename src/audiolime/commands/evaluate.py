"""``audiolime evaluate``: audioLIME variants compared with each other, SLIME and random, on real
recordings (keep/drop-top-k, deletion/insertion curves, tagger calls, agreement with a large-N
reference)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TAGGER = "musicnn-msd"


def taggers() -> tuple[str, ...]:
    """Every tagger the evaluation can load: musicnn and the converted PyTorch family (audiolime.modelstore)."""
    from audiolime.modelstore import TORCH_TAGGERS

    return (DEFAULT_TAGGER, *TORCH_TAGGERS)


def register(sub: argparse._SubParsersAction) -> None:
    """Offered where the evaluation package is installed (the service images leave it out)."""
    import importlib.util

    if importlib.util.find_spec("audiolime.evaluation") is None:
        return
    from audiolime.commands.args import add_model_dir, positive_int
    from audiolime.evaluation.config import DEFAULT_VARIANTS, VARIANT_FIELDS
    from audiolime.evaluation.config import EvalConfig as E  # the defaults, read from the one config
    from audiolime.evaluation.planted import PlantedConfig as P
    from audiolime.method.request import DEFAULT_BATCH_SIZE

    p = sub.add_parser("evaluate", help="compare audioLIME variants, SLIME and random: keep/drop-top-k, "
                                        "deletion/insertion curves, tagger calls, agreement with a large-N reference")
    p.add_argument("--tagger", action="append", choices=taggers(), default=None,
                   help=f"tagger to evaluate (repeatable; default {DEFAULT_TAGGER})")
    p.add_argument("--audio", type=Path, required=True, help="directory of songs (wav, flac, ogg, mp3)")
    defaults = " ".join(f"{v.name}:{','.join(f'{k}={x}' for k, x in v.options)}{',reference' if v.reference else ''}"
                        for v in DEFAULT_VARIANTS)
    p.add_argument("--variant", action="append", default=None, metavar="NAME:KEY=VALUE,...",
                   help=f"an audioLIME variant: the product defaults changed by KEY=VALUE ({', '.join(VARIANT_FIELDS)}; "
                        f"num_samples=auto), plus 'reference' for a large-N reference run; repeatable, the first is "
                        f"the random baseline's pool (default: {defaults})")
    p.add_argument("--k", type=positive_int(1), nargs="+", default=list(E.ks),
                   help=f"numbers of top components to keep/drop (default {' '.join(map(str, E.ks))})")
    p.add_argument("--windows-per-song", nargs="+", default=[str(E.windows_per_song)], metavar="W|TAGGER=W",
                   help=f"analysis windows W per song, evenly spaced centres (default {E.windows_per_song}); "
                        "TAGGER=W overrides one tagger, e.g. 3 fcn-msd=2")
    p.add_argument("--reference-samples", nargs="+", default=[str(E.reference_samples)], metavar="N|TAGGER=N",
                   help=f"N of the reference runs (default {E.reference_samples}); TAGGER=N overrides one tagger")
    p.add_argument("--trace-samples", type=positive_int(0), default=E.trace_samples,
                   help=f"adaptive variants also draw up to this many masks, to replay stopping rules "
                        f"(default {E.trace_samples}; 0: no more than they use)")
    p.add_argument("--slime-segments", type=positive_int(1), default=E.slime_segments,
                   help=f"SLIME temporal segments (default {E.slime_segments})")
    p.add_argument("--slime-bands", type=positive_int(1), default=E.slime_bands,
                   help=f"SLIME frequency bands F (default {E.slime_bands})")
    p.add_argument("--slime-samples", default="auto", metavar="N|auto",
                   help="SLIME's perturbations N (default auto: adaptive, as the product's audioLIME)")
    p.add_argument("--slime-domain", choices=("audio", "spectrogram"), default=E.slime_domain,
                   help="SLIME rectangles of the window's STFT resynthesised to audio for the tagger's predict "
                        "(audio, the paper's; default) or of the tagger's model-input spectrogram (spectrogram; "
                        "needs a from_spectrogram signature)")
    p.add_argument("--slime-baseline", choices=("zero", "min", "mean"), default=E.slime_baseline,
                   help="value of a switched-off SLIME rectangle (default min of the window's STFT magnitude / "
                        "model-input spectrogram)")
    p.add_argument("--draws", type=positive_int(1, 10000), default=E.draws,
                   help=f"random baseline: top-k draws R per k (default {E.draws})")
    p.add_argument("--curve-draws", type=positive_int(1, 1000), default=E.curve_draws,
                   help=f"random baseline: random rankings per window for the curves (default {E.curve_draws})")
    p.add_argument("--batch-size", type=positive_int(1, 4096), default=DEFAULT_BATCH_SIZE,
                   help="windows per tagger call (default 64; capped at 16 for FCN's 29 s windows, "
                        "which need ~2 GB at 16)")
    p.add_argument("--seed", type=int, default=E.seed, help="random seed of every variant's masks")
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable checkpoint inside)")
    g = p.add_argument_group("planted causes (instead of the window evaluation)")
    g.add_argument("--planted", default=None, metavar="KIND[,KIND]",
                   help="plant sources (vocals: a vocal phrase; percussive: drum hits under 2stems+hpss) separated "
                        "from songs of --audio into instrumental windows of other songs, and score each method's "
                        "ranking against the planted components (top-1 hit, top-k recall, Wilson intervals)")
    g.add_argument("--planted-cases", type=positive_int(1, 1000), default=P.cases,
                   help=f"at most this many cases per tagger and kind (default {P.cases})")
    g.add_argument("--planted-segments", type=positive_int(1), default=P.planted_segments,
                   help=f"whole segments one plant covers (default {P.planted_segments})")
    g.add_argument("--planted-gains", type=float, nargs="+", default=list(P.gains_db), metavar="DB",
                   help="plant RMS relative to the base's over the planted time, dB (default "
                        + " ".join(f"{x:g}" for x in P.gains_db) + ")")
    g.add_argument("--planted-min-rise", type=float, default=P.min_rise,
                   help=f"score a case only when the tag rose by at least this (default {P.min_rise:g})")
    g.add_argument("--planted-tag", default=None,
                   help="explain this tag in every case (default: the tag that rose most)")
    p.add_argument("--from-checkpoint", action="store_true",
                   help="compute nothing: rewrite the outputs from --out's checkpoint, over the windows that "
                        "have every method's result (an interim table of a long run)")
    add_model_dir(p)
    p.set_defaults(func=cmd_evaluate)


def parse_windows(values: list[str], default: int = 3, flag: str = "--windows-per-song", hi: int = 100
                  ) -> tuple[int, tuple[tuple[str, int], ...]]:
    """``W`` and ``TAGGER=W`` values -> (default W, per-tagger overrides)."""
    from audiolime.errors import InvalidInput

    override = {}
    for v in values:
        name, _, num = v.rpartition("=")
        try:
            n = int(num)
        except ValueError:
            raise InvalidInput(f"{flag}: expected N or TAGGER=N, got {v!r}") from None
        if not 1 <= n <= hi:
            raise InvalidInput(f"{flag}: N must be between 1 and {hi}, got {v!r}")
        if name:
            override[name] = n
        else:
            default = n
    return default, tuple(sorted(override.items()))


def cmd_evaluate(args: argparse.Namespace) -> int:
    import importlib.util

    from rich.console import Console

    from audiolime.errors import InvalidInput, Unimplemented
    from audiolime.evaluation.config import DEFAULT_VARIANTS, EvalConfig, parse_variant
    from audiolime.evaluation.experiment import run
    from audiolime.method.request import AUTO, MAX_NUM_SAMPLES

    if importlib.util.find_spec("matplotlib") is None:  # before hours of work, not at the figure
        raise Unimplemented("audiolime evaluate draws its figure with matplotlib: pip install 'audiolime[eval]'")
    windows, override = parse_windows(args.windows_per_song, EvalConfig.windows_per_song)
    ref, ref_override = parse_windows(args.reference_samples, EvalConfig.reference_samples, "--reference-samples",
                                      MAX_NUM_SAMPLES)
    try:
        slime_n = AUTO if args.slime_samples == "auto" else int(args.slime_samples)
    except ValueError:
        raise InvalidInput(f"--slime-samples: expected N or auto, got {args.slime_samples!r}") from None
    planted = args.planted is not None
    if planted:
        from audiolime.evaluation.planted import planted_variants
    variants = (tuple(parse_variant(v) for v in args.variant) if args.variant
                else planted_variants(args.planted.split(",")) if planted else DEFAULT_VARIANTS)
    cfg = EvalConfig(taggers=tuple(args.tagger or [DEFAULT_TAGGER]), audio_dir=str(args.audio), variants=variants,
                     ks=tuple(sorted(set(args.k))), windows_per_song=windows, windows_override=override,
                     reference_samples=ref, reference_override=ref_override, trace_samples=args.trace_samples,
                     slime_segments=args.slime_segments, slime_bands=args.slime_bands, slime_samples=slime_n,
                     slime_baseline=args.slime_baseline, slime_domain=args.slime_domain, draws=args.draws,
                     curve_draws=args.curve_draws, seed=args.seed)
    if planted:
        return planted_run(args, cfg)
    summary = run(cfg, args.model_dir, args.out, batch_size=args.batch_size, console=Console(stderr=True),
                  compute=not args.from_checkpoint)
    out = Console()
    out.print(f"{summary.items_total} results: {summary.items_done_before} resumed from the checkpoint, "
              f"{summary.items_computed} computed")
    for t, methods in summary.table.items():
        for m, s in methods.items():
            if m == "paired":  # the differences between methods, in results.md
                continue
            keep = "  ".join(f"k={k}: {'n/a' if c['rate'] is None else format(c['rate'], '.2f')}"
                             for k, c in s["keep"].items())
            dele = "n/a" if s["deletion_auc"] is None else format(s["deletion_auc"], ".3f")
            out.print(f"{t:12s} {m:14s} keep {keep}  deletion AUC {dele}")
    out.print(f"wrote {args.out}/results.csv, results.json, results.md, figure.png")
    return 0


def planted_run(args: argparse.Namespace, cfg) -> int:
    """``--planted``: the planted-cause evaluation over the same taggers, songs, variants and SLIME."""
    from dataclasses import replace

    from rich.console import Console

    from audiolime.evaluation.planted import PlantedConfig, run_planted

    pcfg = PlantedConfig(replace(cfg, trace_samples=0), kinds=tuple(k.strip() for k in args.planted.split(",") if k.strip()),
                         cases=args.planted_cases, planted_segments=args.planted_segments,
                         gains_db=tuple(args.planted_gains), min_rise=args.planted_min_rise, tag=args.planted_tag)
    summary = run_planted(pcfg, args.model_dir, args.out, args.batch_size, Console(stderr=True),
                          compute=not args.from_checkpoint)
    out = Console()
    for tagger, kinds in summary.table.items():
        for kind, t in kinds.items():
            out.print(f"{tagger} planted {kind}: {t['built']} cases, {t['scored']} scored", markup=False)
            for m, s in t["methods"].items():
                top1, recall = s["top1"]["rate"], s["recall"]["rate"]
                out.print(f"  {m:10s} top-1 hit {'n/a' if top1 is None else format(top1, '.2f')}  top-k recall "
                          f"{'n/a' if recall is None else format(recall, '.2f')}  (n={s['n']})", markup=False)
    out.print(f"wrote {args.out}/planted.json, planted.md", markup=False)
    return 0
