"""The experiment of the audioLIME paper's quantitative validation (Haunschmid, Manilow & Widmer,
MML 2020, Fig. 2): explain a window's top tag, keep only the top-k components and check whether
the tagger's top tag is unchanged, for audioLIME, SLIME (spectrogram rectangles) and a random
baseline (k random positive-weight components outside the top-k, R draws).

:func:`evaluate_window` is one item (song, tagger, window); :func:`run` is the loop over the
items of a :class:`~audiolime.evaluation.plan.Plan` that are not yet in the checkpoint, followed
by the outputs. Transport-free: in-process SavedModels and Spleeter. Stems come from the same
source as every other door's (:class:`audiolime.explain.stems.LocalSeparation`), which keeps the
separated chunks of the current song, so windows of one song share them.

SLIME runs in one of two domains (``slime_domain``): ``audio`` (default, the paper's own
variant): rectangles of the window's STFT, resynthesised to a waveform for the tagger's normal
``predict`` -- applicable to every tagger; ``spectrogram``: rectangles of the tagger's model-input
spectrogram through its ``from_spectrogram`` signature (n/a for waveform-only taggers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiolime.evaluation.aggregate import rounded
from audiolime.evaluation.checkpoint import append_checkpoint, check_config, load_checkpoint
from audiolime.evaluation.config import EvalConfig, validate
from audiolime.evaluation.outputs import write_outputs
from audiolime.evaluation.plan import Plan, find_songs, item_seed, plan, tagger_batch, window_spans


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
    from audiolime.evaluation.slime import NotApplicable, audio_for_tagger, for_tagger
    from audiolime.explain.engine import Engine
    from audiolime.explain.factorization import StemSegmentFactorization
    from audiolime.explain.request import ExplainRequest

    say = progress or (lambda _: None)
    labels = tagger.labels
    params = ExplainRequest(num_samples=cfg.num_samples, top_k=max(cfg.ks), seed=seed, kernel_width=cfg.kernel_width,
                            segments=cfg.segments, separator=cfg.separator)
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
                "top_tag": labels[top], "kept_top_tag": kept, "surrogate_r2": rounded(r2)}

    rows: list[dict] = []
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


@dataclass
class RunSummary:
    items_total: int
    items_done_before: int
    items_computed: int
    out: Path
    table: dict = field(default_factory=dict)


def run(cfg: EvalConfig, model_dir: Path, out: Path, batch_size: int = 64, console=None) -> RunSummary:
    """Validate, compute the items missing from ``out``'s checkpoint, rewrite the outputs."""
    from audiolime import modelstore

    serving = modelstore.serving_dir(model_dir)
    validate(cfg, serving)
    songs = find_songs(Path(cfg.audio_dir))
    check_config(out, cfg)
    done = load_checkpoint(out)
    items = plan(cfg, songs, serving)
    keys = items.keys
    n_done = sum(1 for key in keys if key in done)
    computed = _compute(cfg, items, done, model_dir, out, batch_size, console, len(keys), n_done)
    table = write_outputs(out, cfg, [done[key] for key in keys])
    return RunSummary(len(keys), n_done, computed, out, table)


def _compute(cfg: EvalConfig, items: Plan, done: dict, model_dir: Path, out: Path, batch_size: int, console,
             total: int, n_done: int) -> int:
    """Evaluate the pending items song by song (models loaded only if any), appending each to the
    checkpoint and to ``done``; returns how many were computed."""
    pending = items.pending(done)
    if not pending:
        return 0
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from audiolime.audio import decode
    from audiolime.explain.signal import fit_length, resample, to_mono
    from audiolime.explain.stems import STEM_RATE, LocalSeparation
    from audiolime.local import load_separator, load_tagger, quiet_tensorflow

    quiet_tensorflow()
    console = console or Console(stderr=True)
    taggers = {name: load_tagger(model_dir, name) for name in cfg.taggers}
    separator = load_separator(model_dir, cfg.separator)
    # the shared stem source, keeping the chunks of the current song: windows of one song share them
    stem_source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name,
                                  cache_chunks=8)
    computed = 0
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("evaluating", total=total, completed=n_done)
        for song, todo in pending:
            audio = decode(song)
            sr = audio.sample_rate
            mono_by_rate: dict[int, np.ndarray] = {}
            spans = {}  # (tagger, window) -> (start at the tagger's rate, a, b in the file)
            for t in cfg.taggers:
                tg = taggers[t]
                if tg.sample_rate not in mono_by_rate:
                    mono_by_rate[tg.sample_rate] = resample(to_mono(audio.waveform)[None, :], sr, tg.sample_rate)[0]
                for wi, span in enumerate(window_spans(len(mono_by_rate[tg.sample_rate]), tg.window_samples,
                                                       tg.sample_rate, items.windows[(song.name, t)], sr,
                                                       audio.num_samples)):
                    spans[(t, wi)] = span
            for t, wi in todo:
                tg = taggers[t]
                start, a, b = spans[(t, wi)]
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
                rec = {"song": song.name, "tagger": t, "window": wi, "window_start_s": round(start / tg.sample_rate, 4),
                       "window_s": round(w / tg.sample_rate, 4), "rows": rows, "meta": meta}
                append_checkpoint(out, rec)
                done[(song.name, t, wi)] = rec
                computed += 1
                bar.advance(task)
    return computed
