"""The audioLIME paper's quantitative validation (Haunschmid, Manilow & Widmer, MML 2020, Fig. 2):
keep only the top-k components of an explanation and check whether the tagger's top tag is
unchanged ("same top tag" rate), for audioLIME, SLIME (spectrogram rectangles) and a random
baseline (k random positive-weight components outside the top-k, R draws).

SLIME runs in one of two domains (``slime_domain``): ``audio`` (default, the paper's own
variant): rectangles of the window's STFT, resynthesised to a waveform for the tagger's normal
``predict`` -- applicable to every tagger; ``spectrogram``: rectangles of the tagger's model-input
spectrogram through its ``from_spectrogram`` signature (n/a for waveform-only taggers).

Transport-free: in-process SavedModels and Spleeter. Per song, ``windows_per_song`` analysis
windows are placed with *evenly spaced centres* (centre i at (i + 1/2) / W of the song, the
window clamped inside the song): independent of the tagger's confidence (top-probability
windows would bias the check towards easy windows), and windows of different taggers share
centres, so a short (musicnn, 3 s) window usually lies inside a long (FCN, 29 s) one. Stems come
from the same source as every other door's (:class:`audiolime.explain.stems.LocalSeparation`),
which keeps the separated chunks of the current song, so windows of one song share them.

Every finished (song, tagger, window) item is appended to ``items.jsonl`` in the output
directory; a rerun with the same configuration skips finished items and rebuilds the outputs
from the checkpoint. Outputs: ``results.csv``, ``results.json``, ``results.md``, ``figure2.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from audiolime.errors import InvalidInput, ModelNotFound
from audiolime.explain.request import stems_of

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
METHODS = ("audiolime", "slime", "random")
CHECKPOINT = "items.jsonl"
# Windows per tagger call are capped at this many samples in total: 64 FCN windows (29 s) need
# ~7 GB in the FCN graph (OOM-killed on an evaluation machine); 16 need ~2 GB. musicnn (3 s)
# keeps the full --batch-size.
MAX_BATCH_SAMPLES = 16 * 464_000
FCN_CONVERT_HINT = ("python -m audiolime.tagger.fcn_convert --pth /work/shared/models/fcn-msd/best_model.pth "
                    "--model-base {serving}")

# Figure 2 of the paper (k = 3, 5, 7, 9, 11), read off the published table.
PAPER_KS = (3, 5, 7, 9, 11)
PAPER = {
    "FCN": {"audiolime": (.46, .55, .61, .71, .79), "slime": (.37, .43, .46, .52, .54),
            "random": (.24, .22, .22, .22, .21)},
    "SampleCNN": {"audiolime": (.34, .40, .49, .60, .68), "slime": (.11, .20, .22, .23, .25),
                  "random": (.18, .17, .16, .14, .10)},
}
PAPER_MODEL = {"fcn-msd": "FCN"}  # which paper model a tagger corresponds to (musicnn: none)
# the nearest paper model to draw as a dashed reference (musicnn: a short-window model, like SampleCNN)
NEAREST_PAPER_MODEL = {"fcn-msd": "FCN", "musicnn-msd": "SampleCNN"}


@dataclass(frozen=True)
class EvalConfig:
    taggers: tuple[str, ...]
    audio_dir: str
    ks: tuple[int, ...] = PAPER_KS
    num_samples: int = 512
    windows_per_song: int = 3
    segments: int = 12  # audioLIME tau (x stems of the separator)
    slime_segments: int = 6  # SLIME tau
    slime_bands: int = 4  # SLIME F
    slime_baseline: str = "min"
    slime_domain: str = "audio"  # "audio": STFT rectangles -> istft -> predict (the paper's); "spectrogram"
    draws: int = 32  # R
    seed: int = 0
    separator: str = "2stems"
    kernel_width: float = 0.25
    window_placement: str = "evenly spaced centres, at most ceil(song / window) per song"
    windows_override: tuple[tuple[str, int], ...] = ()  # per-tagger W, e.g. (("fcn-msd", 2),)

    def windows(self, tagger: str) -> int:
        return dict(self.windows_override).get(tagger, self.windows_per_song)

    def result_key(self) -> dict:
        """Everything that changes an item's result (taggers and songs only add items)."""
        d = asdict(self)
        for k in ("taggers", "audio_dir"):
            d.pop(k)
        d["ks"] = list(self.ks)
        d["windows_override"] = {t: n for t, n in self.windows_override}
        return d


# ---------------------------------------------------------------------------------------------
# validation and planning (no TensorFlow)


def find_songs(audio_dir: Path) -> list[Path]:
    if not audio_dir.is_dir():
        raise InvalidInput(f"--audio {audio_dir} is not a directory")
    songs = sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not songs:
        raise InvalidInput(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {audio_dir}")
    return songs


def validate(cfg: EvalConfig, serving_dir: Path) -> None:
    if not cfg.taggers:
        raise InvalidInput("give at least one --tagger")
    if len(set(cfg.taggers)) != len(cfg.taggers):
        raise InvalidInput("--tagger given twice")
    if not cfg.ks or min(cfg.ks) < 1:
        raise InvalidInput("--k values must be >= 1")
    d_a = len(stems_of(cfg.separator)) * cfg.segments
    d_s = cfg.slime_segments * cfg.slime_bands
    for name, d in (("audioLIME", d_a), ("SLIME", d_s)):
        if max(cfg.ks) >= d:
            raise InvalidInput(f"--k {max(cfg.ks)} needs more components: {name} has d' = {d} "
                               f"(increase --segments / --slime-segments)")
        if cfg.num_samples < d + 1:
            raise InvalidInput(f"--num-samples must be at least d'+1 = {d + 1} for {name}, got {cfg.num_samples}")
    from audiolime.evaluation.slime import BASELINES, DOMAINS

    if cfg.slime_domain not in DOMAINS:
        raise InvalidInput(f"--slime-domain must be one of {', '.join(DOMAINS)}, got {cfg.slime_domain!r}")
    if cfg.slime_baseline not in BASELINES:
        raise InvalidInput(f"--slime-baseline must be one of {', '.join(BASELINES)}, got {cfg.slime_baseline!r}")
    unknown = sorted(set(dict(cfg.windows_override)) - set(cfg.taggers))
    if unknown:
        raise InvalidInput(f"--windows-per-song names a tagger that is not evaluated: {', '.join(unknown)}")
    if min(cfg.windows(t) for t in cfg.taggers) < 1 or cfg.draws < 1:
        raise InvalidInput("--windows-per-song and --draws must be >= 1")
    for name in cfg.taggers:
        model = serving_dir / name
        if not any((v / "saved_model.pb").is_file() for v in model.glob("*")):
            if name == "fcn-msd":
                raise ModelNotFound(f"fcn-msd SavedModel missing in {model}; create it with: "
                                    + FCN_CONVERT_HINT.format(serving=serving_dir))
            raise ModelNotFound(f"tagger {name!r} missing in {model} (run `audiolime setup`)")


def song_seconds(path: Path) -> float:
    """Duration from the file header (no decoding)."""
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{path.name}: not a readable audio file ({str(exc).strip().splitlines()[-1:]})") from None


def tagger_window_seconds(serving_dir: Path, name: str) -> float | None:
    """The tagger's analysis window in seconds, from its export metadata (None if unknown)."""
    versions = sorted((v for v in (serving_dir / name).glob("*") if v.name.isdigit()), key=lambda v: int(v.name))
    for v in reversed(versions):
        meta = v / "assets" / "audiolime.json"
        if meta.is_file():
            d = json.loads(meta.read_text())
            return d["window_samples"] / d["sample_rate"]
    return None


def windows_for(requested: int, song_s: float, window_s: float | None) -> int:
    """At most ``requested`` windows, and no more than ``ceil(song / window)``: more windows
    than that on a short song would repeat (nearly or exactly, for songs shorter than the
    window) the same audio and inflate n without adding evidence."""
    if not window_s:
        return requested
    return max(1, min(requested, math.ceil(song_s / window_s - 1e-6)))


def window_starts(num_samples: int, window: int, count: int) -> list[int]:
    """``count`` windows with evenly spaced centres, clamped inside ``[0, num_samples)``."""
    out = []
    for i in range(count):
        centre = (i + 0.5) * num_samples / count
        out.append(int(min(max(round(centre - window / 2), 0), max(num_samples - window, 0))))
    return out


def tagger_batch(batch_size: int, window_samples: int) -> int:
    """Windows per tagger call: ``batch_size``, capped by :data:`MAX_BATCH_SAMPLES`."""
    return max(1, min(batch_size, MAX_BATCH_SAMPLES // max(window_samples, 1)))


def item_seed(seed: int, song: str, tagger: str, window: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{song}|{tagger}|{window}".encode())) % (2 ** 31)


# ---------------------------------------------------------------------------------------------
# checkpoint


def load_checkpoint(out: Path) -> dict[tuple[str, str, int], dict]:
    path = out / CHECKPOINT
    items: dict[tuple[str, str, int], dict] = {}
    if not path.is_file():
        return items
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from an interrupted run
                continue
            items[(rec["song"], rec["tagger"], int(rec["window"]))] = rec
    return items


def append_checkpoint(out: Path, rec: dict) -> None:
    path = out / CHECKPOINT
    torn = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:  # a torn last line from an interrupted run: start a fresh line
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_config(out: Path, cfg: EvalConfig) -> None:
    path = out / "config.json"
    key = cfg.result_key()
    if path.is_file():
        # checkpoints from before --slime-domain existed hold spectrogram-domain SLIME results
        old = {"slime_domain": "spectrogram", **json.loads(path.read_text())}
        diff = [f"{k} {old.get(k)!r} != {v!r}" for k, v in key.items() if old.get(k) != v]
        if diff:
            raise InvalidInput(f"{out} holds results of a different configuration ({'; '.join(diff)}); "
                               f"use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(key, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# one item


def _weights(target, d: int) -> np.ndarray:
    w = np.zeros(d)
    for rc in target.ranking:
        w[rc.component.index] = rc.weight
    return w


def evaluate_window(tagger, window: np.ndarray, model_stems: dict[str, np.ndarray], start_s: float,
                    cfg: EvalConfig, seed: int, batch_size: int = 64,
                    progress: Callable[[str], None] | None = None) -> tuple[list[dict], dict]:
    """Explain the top tag of one window with audioLIME and SLIME, then tag the top-k mixes
    (and the random draws) for every k. Returns (rows without song/window keys, metadata)."""
    from audiolime.evaluation.baselines import random_draws, to_masks, top_k_positive
    from audiolime.explain.engine import Engine
    from audiolime.explain.request import ExplainRequest
    from audiolime.explain.factorization import StemSegmentFactorization
    from audiolime.evaluation.slime import NotApplicable, audio_for_tagger, for_tagger

    say = progress or (lambda _: None)
    labels = tagger.labels
    params = ExplainRequest(num_samples=cfg.num_samples, top_k=max(cfg.ks), seed=seed, kernel_width=cfg.kernel_width,
                            segments=cfg.segments, separator=cfg.separator)
    rows: list[dict] = []
    meta: dict = {"timings_s": {}}
    t0 = time.perf_counter()

    # audioLIME: stems x segments over the waveform
    say("audioLIME")
    wave = Engine(tagger.predict, labels, batch_size)
    fact = StemSegmentFactorization(model_stems, tagger.sample_rate, cfg.segments, start_s)
    exp = wave.explain(fact, window, None, params)
    top = int(np.argmax(exp.prediction))
    target = exp.targets[0]
    w = _weights(target, fact.num_components)
    rng = np.random.default_rng(seed + 1)
    sets, spans = [], []  # (method, k, first row, rows)
    for k in cfg.ks:
        s = len(sets)
        sets.append(top_k_positive(w, k))
        spans.append(("audiolime", k, s, 1))
        draws = random_draws(w, k, cfg.draws, rng)
        if draws is not None:
            spans.append(("random", k, len(sets), len(draws)))
            sets.extend(list(draws))
        else:
            spans.append(("random", k, -1, 0))
    say("audioLIME top-k")
    preds = wave.evaluate(fact.compose, to_masks(sets, fact.num_components))
    meta["audiolime"] = {"d": fact.num_components, "positive": int((w > 0).sum()),
                         "surrogate_r2": round(target.surrogate_r2, 4), "unique_samples": exp.unique_samples}
    meta["timings_s"]["audiolime"] = round(time.perf_counter() - t0, 2)

    # SLIME: rectangles over the window's STFT (audio domain, resynthesised; the paper's) or over
    # the tagger's input spectrogram (spectrogram domain)
    t1 = time.perf_counter()
    say("SLIME")
    rect = None
    if cfg.slime_domain == "audio":
        rect = audio_for_tagger(tagger, window, cfg.slime_segments, cfg.slime_bands, cfg.slime_baseline, start_s)
        slime_engine, analysed = wave, window
    else:
        try:
            rect = for_tagger(tagger, window, cfg.slime_segments, cfg.slime_bands, cfg.slime_baseline, start_s)
        except NotApplicable as exc:  # waveform-only tagger: SLIME rows stay empty ("n/a")
            meta["slime"] = {"domain": cfg.slime_domain, "not_applicable": str(exc)}
        else:
            slime_engine, analysed = Engine(tagger.predict_spectrogram, labels, batch_size), rect.spectrogram
    if rect is not None:
        exp_s = slime_engine.explain(rect, analysed, [top], params)
        w_s = _weights(exp_s.targets[0], rect.num_components)
        s_sets = [top_k_positive(w_s, k) for k in cfg.ks]
        s_preds = slime_engine.evaluate(rect.compose, to_masks(s_sets, rect.num_components))
        meta["slime"] = {"domain": cfg.slime_domain, "d": rect.num_components, "positive": int((w_s > 0).sum()),
                         "surrogate_r2": round(exp_s.targets[0].surrogate_r2, 4), "baseline": rect.baseline,
                         ("top_tag_from_audio" if cfg.slime_domain == "audio" else "top_tag_from_spectrogram"):
                             labels[int(np.argmax(exp_s.prediction))]}
    meta["timings_s"]["slime"] = round(time.perf_counter() - t1, 2)

    def row(method: str, k: int, n_comp: int | None, same: float | None, kept: str | None, draws: int,
            r2: float) -> dict:
        return {"method": method, "k": k, "components": n_comp, "draws": draws,
                "same_top_tag": None if same is None else round(float(same), 6),
                "top_tag": labels[top], "kept_top_tag": kept, "surrogate_r2": _r(r2)}

    for method, k, first, n in spans:
        if method == "audiolime":
            p = preds[first]
            rows.append(row(method, k, len(sets[first]), bool(len(sets[first])) and int(np.argmax(p)) == top,
                            labels[int(np.argmax(p))], 1, target.surrogate_r2))
        elif n == 0:
            rows.append(row(method, k, None, None, None, 0, target.surrogate_r2))
        else:
            tops = np.argmax(preds[first:first + n], axis=1)
            common = int(np.bincount(tops).argmax())
            rows.append(row(method, k, k, float(np.mean(tops == top)), labels[common], n, target.surrogate_r2))
    for i, k in enumerate(cfg.ks):
        if rect is None:
            rows.append(row("slime", k, None, None, None, 0, math.nan))
            continue
        p = s_preds[i]
        rows.append(row("slime", k, len(s_sets[i]), bool(len(s_sets[i])) and int(np.argmax(p)) == top,
                        labels[int(np.argmax(p))], 1, exp_s.targets[0].surrogate_r2))
    meta["top_tag"] = labels[top]
    meta["top_probability"] = round(float(exp.prediction[top]), 6)
    return rows, meta


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class RunSummary:
    items_total: int
    items_done_before: int
    items_computed: int
    out: Path
    table: dict = field(default_factory=dict)


def run(cfg: EvalConfig, model_dir: Path, out: Path, batch_size: int = 64, console=None) -> RunSummary:
    from audiolime import modelstore

    serving = modelstore.serving_dir(model_dir)
    validate(cfg, serving)
    songs = find_songs(Path(cfg.audio_dir))
    check_config(out, cfg)
    done = load_checkpoint(out)

    from audiolime.audio import decode
    from audiolime.explain.signal import fit_length, resample, to_mono

    # Plan: decode headers lazily per song; window lengths come from the taggers, which we only
    # load when something is left to compute.
    pending_by_song: list[tuple[Path, list[tuple[str, int]]]] = []
    win_s = {t: tagger_window_seconds(serving, t) for t in cfg.taggers}
    nwin = {(s.name, t): windows_for(cfg.windows(t), song_seconds(s), win_s[t]) for s in songs for t in cfg.taggers}
    keys = [(s.name, t, w) for s in songs for t in cfg.taggers for w in range(nwin[(s.name, t)])]
    total = len(keys)
    n_done = sum(1 for key in keys if key in done)
    for s in songs:
        todo = [(t, w) for t in cfg.taggers for w in range(nwin[(s.name, t)]) if (s.name, t, w) not in done]
        if todo:
            pending_by_song.append((s, todo))
    computed = 0
    if pending_by_song:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        from audiolime.explain.stems import STEM_RATE, LocalSeparation
        from audiolime.local import load_separator, load_tagger, quiet_tensorflow

        quiet_tensorflow()
        console = console or Console(stderr=True)
        taggers = {name: load_tagger(model_dir, name) for name in cfg.taggers}
        separator = load_separator(model_dir, cfg.separator)
        # the shared stem source, keeping the chunks of the current song: windows of one song share them
        stem_source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name,
                                      cache_chunks=8)
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("evaluating", total=total, completed=n_done)
            for song, todo in pending_by_song:
                audio = decode(song)
                sr = audio.sample_rate
                mono_by_rate: dict[int, np.ndarray] = {}
                plan = {}  # (tagger, window) -> (start_m, a, b)
                for t in cfg.taggers:
                    tg = taggers[t]
                    if tg.sample_rate not in mono_by_rate:
                        mono_by_rate[tg.sample_rate] = resample(to_mono(audio.waveform)[None, :], sr,
                                                                tg.sample_rate)[0]
                    n_m = len(mono_by_rate[tg.sample_rate])
                    for wi, start in enumerate(window_starts(n_m, tg.window_samples, nwin[(song.name, t)])):
                        a = int(round(start / tg.sample_rate * sr))
                        b = min(a + int(round(tg.window_samples / tg.sample_rate * sr)), audio.num_samples)
                        plan[(t, wi)] = (start, a, b)
                for t, wi in todo:
                    tg = taggers[t]
                    start, a, b = plan[(t, wi)]
                    bar.update(task, description=f"{song.stem[:28]}: separating")
                    w = tg.window_samples
                    listen = {k: fit_length(v, int(round(w / tg.sample_rate * sr)))
                              for k, v in stem_source.window(audio, a, b).stems.items()}
                    model_stems = {k: fit_length(resample(to_mono(v)[None, :], sr, tg.sample_rate)[0], w)
                                   for k, v in listen.items()}
                    window = fit_length(mono_by_rate[tg.sample_rate][None, start:start + w], w)[0]
                    label = f"{song.stem[:28]} {t} w{wi}"
                    rows, meta = evaluate_window(
                        tg, window, model_stems, start / tg.sample_rate, cfg, item_seed(cfg.seed, song.name, t, wi),
                        tagger_batch(batch_size, tg.window_samples),
                        lambda stage, label=label: bar.update(task, description=f"{label}: {stage}"))
                    rec = {"song": song.name, "tagger": t, "window": wi,
                           "window_start_s": round(start / tg.sample_rate, 4),
                           "window_s": round(w / tg.sample_rate, 4), "rows": rows, "meta": meta}
                    append_checkpoint(out, rec)
                    done[(song.name, t, wi)] = rec
                    computed += 1
                    bar.advance(task)
    items = [done[key] for key in keys]
    table = write_outputs(out, cfg, items)
    return RunSummary(total, n_done, computed, out, table)


# ---------------------------------------------------------------------------------------------
# aggregation and outputs


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def flat_rows(items: Sequence[dict]) -> list[dict]:
    out = []
    for rec in items:
        for r in rec["rows"]:
            out.append({"song": rec["song"], "window": rec["window"], "window_start_s": rec["window_start_s"],
                        "tagger": rec["tagger"], **r})
    return out


def aggregate(cfg: EvalConfig, rows: Sequence[dict]) -> dict:
    """``{tagger: {method: {k: {rate, n, ci_low, ci_high}}}}``; random: mean over explanations
    of the per-explanation fraction of R draws (CI treats explanations as the trials)."""
    table: dict = {}
    for t in cfg.taggers:
        table[t] = {}
        for m in METHODS:
            table[t][m] = {}
            for k in cfg.ks:
                vals = [r["same_top_tag"] for r in rows
                        if r["tagger"] == t and r["method"] == m and r["k"] == k and r["same_top_tag"] is not None]
                n = len(vals)
                rate = float(np.mean(vals)) if n else math.nan
                lo, hi = wilson(rate * n, n) if n else (math.nan, math.nan)
                table[t][m][str(k)] = {"rate": _r(rate), "n": n, "ci_low": _r(lo), "ci_high": _r(hi)}
    return table


def _r(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)


def write_outputs(out: Path, cfg: EvalConfig, items: Sequence[dict]) -> dict:
    rows = flat_rows(items)
    fields = ["song", "window", "window_start_s", "tagger", "method", "k", "components", "draws", "same_top_tag",
              "top_tag", "kept_top_tag", "surrogate_r2"]
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    table = aggregate(cfg, rows)
    doc = {"config": {**asdict(cfg), "ks": list(cfg.ks), "taggers": list(cfg.taggers),
                      "windows_per_song": {t: cfg.windows(t) for t in cfg.taggers}, "windows_override": None,
                      "audioLIME_components": len(stems_of(cfg.separator)) * cfg.segments,
                      "slime_components": cfg.slime_segments * cfg.slime_bands},
           "items": len(items), "songs": sorted({rec["song"] for rec in items}),
           "table": table, "paper": {m: {meth: dict(zip(map(str, PAPER_KS), v)) for meth, v in d.items()}
                                     for m, d in PAPER.items()},
           "paper_model": PAPER_MODEL,
           "positive_components": _meta_means(cfg, items, "positive"),
           "surrogate_r2": _meta_means(cfg, items, "surrogate_r2")}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown(cfg, table, items), encoding="utf-8")
    figure(out / "figure2.png", cfg, table)
    return table


def _meta_means(cfg: EvalConfig, items: Sequence[dict], key: str) -> dict:
    """Mean of one per-explanation metadata value, per tagger and method (skipping n/a)."""
    return {t: {m: _mean([rec["meta"][m][key] for rec in items if rec["tagger"] == t and key in rec["meta"][m]])
                for m in ("audiolime", "slime")} for t in cfg.taggers}


def _mean(xs: Sequence[float]) -> float | None:
    return round(float(np.mean(xs)), 3) if xs else None


def _cell(c: dict) -> str:
    if c["rate"] is None:
        return "n/a"
    return f"{c['rate']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}] (n={c['n']})"


def markdown(cfg: EvalConfig, table: dict, items: Sequence[dict]) -> str:
    d_a = len(stems_of(cfg.separator)) * cfg.segments
    lines = ["# Same-top-tag rate (audioLIME paper, Figure 2)", "",
             f"{len(items)} explanations ({len({r['song'] for r in items})} songs; windows per song: "
             + ", ".join(f"{t} {cfg.windows(t)}" for t in cfg.taggers)
             + f", at most ceil(song / window), evenly spaced centres); N = {cfg.num_samples} perturbations; audioLIME {cfg.separator} x tau = {cfg.segments} "
             f"(d' = {d_a}); SLIME tau = {cfg.slime_segments} x F = {cfg.slime_bands} "
             f"(d' = {cfg.slime_segments * cfg.slime_bands}, {cfg.slime_domain} domain, baseline {cfg.slime_baseline}); random R = {cfg.draws}; "
             f"seed {cfg.seed}. Cells: rate [95% Wilson CI] (n explanations).", ""]
    ks = list(cfg.ks)
    for t in cfg.taggers:
        paper = PAPER.get(PAPER_MODEL.get(t, ""), None)
        lines += [f"## {t}", "", "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for m in METHODS:
            label = f"slime, {cfg.slime_domain} domain" if m == "slime" else m
            lines.append(f"| {label} (measured) | " + " | ".join(_cell(table[t][m][str(k)]) for k in ks) + " |")
            if paper:
                vals = dict(zip(PAPER_KS, paper[m]))
                lines.append(f"| {m} (paper {PAPER_MODEL[t]}) | "
                             + " | ".join(f"{vals[k]:.2f}" if k in vals else "-" for k in ks) + " |")
        if not paper:
            lines.append("")
            lines.append(f"(the paper has no {t} results; see the FCN / SampleCNN reference below)")
        lines.append("")
    lines += ["## Paper reference (Haunschmid et al. 2020, Fig. 2)", "",
              "| model | method | " + " | ".join(f"k={k}" for k in PAPER_KS) + " |", "|---|---|" + "---|" * len(PAPER_KS)]
    for model, d in PAPER.items():
        for m in METHODS:
            lines.append(f"| {model} | {m} | " + " | ".join(f"{v:.2f}" for v in d[m]) + " |")
    return "\n".join(lines) + "\n"


COLORS = {"audiolime": "tab:blue", "slime": "tab:orange", "random": "tab:gray"}


def figure(path: Path, cfg: EvalConfig, table: dict, extra: dict | None = None) -> None:
    """Same-top-tag rate against k per tagger (solid, shaded 95 % CI) with the paper's (dashed).
    ``extra``: ``{tagger: {label: (method colour, {k: cell})}}`` drawn dotted, e.g. another
    run's SLIME domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cfg.taggers)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), sharey=True, squeeze=False)
    ks = list(cfg.ks)
    for ax, t in zip(axes[0], cfg.taggers):
        ref_model = NEAREST_PAPER_MODEL.get(t, "FCN")
        for m in METHODS:
            rates = [table[t][m][str(k)]["rate"] for k in ks]
            lo = [table[t][m][str(k)]["ci_low"] for k in ks]
            hi = [table[t][m][str(k)]["ci_high"] for k in ks]
            y = np.array([np.nan if r is None else 100 * r for r in rates])
            ax.plot(ks, y, "o-", color=COLORS[m], label=f"slime ({cfg.slime_domain})" if m == "slime" else m)
            ax.fill_between(ks, [np.nan if v is None else 100 * v for v in lo],
                            [np.nan if v is None else 100 * v for v in hi], color=COLORS[m], alpha=0.12)
            ax.plot(PAPER_KS, [100 * v for v in PAPER[ref_model][m]], "--", color=COLORS[m], alpha=0.7,
                    label=f"{m} (paper {ref_model})")
        for label, (m, cells) in (extra or {}).get(t, {}).items():
            ax.plot(ks, [np.nan if cells.get(str(k), {}).get("rate") is None else 100 * cells[str(k)]["rate"]
                         for k in ks], "s:", color=COLORS[m], alpha=0.8, label=label)
        ax.set_title(t + ("" if t in PAPER_MODEL else f"  (dashed: paper {ref_model})"), fontsize=9)
        ax.set_xlabel("k (components kept)")
        ax.set_xticks(sorted(set(ks) | set(PAPER_KS)))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("% same top tag")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
