"""The evaluation run: audioLIME variants compared with each other, with SLIME (time x frequency
rectangles, the audioLIME paper's competitor) and with random components, on the same windows,
by the same measurements (:mod:`audiolime.evaluation.methods`).

:func:`run` validates, computes the (song, tagger, window, method) results missing from the
checkpoint, song by song, and rewrites the outputs. Transport-free: in-process SavedModels and
Spleeter. Stems come from the same source as every other door's
(:class:`audiolime.method.stems.LocalSeparation`), which keeps the separated chunks of the
current song, so windows of one song share them; every separator variant a run uses is loaded
once (variants share their Spleeter model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiolime.evaluation.checkpoint import append_checkpoint, check_config, check_methods, load_checkpoint
from audiolime.evaluation.config import RANDOM, SLIME, EvalConfig, validate
from audiolime.evaluation.outputs import write_outputs
from audiolime.evaluation.plan import Plan, find_songs, item_seed, plan, tagger_batch, window_spans
from audiolime.method.request import DEFAULT_BATCH_SIZE


@dataclass
class RunSummary:
    items_total: int
    items_done_before: int
    items_computed: int
    out: Path
    table: dict = field(default_factory=dict)


def run(cfg: EvalConfig, model_dir: Path, out: Path, batch_size: int = DEFAULT_BATCH_SIZE, console=None,
        compute: bool = True) -> RunSummary:
    """Validate, compute the results missing from ``out``'s checkpoint, rewrite the outputs.
    ``compute=False``: only rewrite the outputs from the checkpoint, over the windows that have
    every method's result (an interim table of a long run, with paired comparisons intact)."""
    from audiolime import modelstore

    serving = modelstore.serving_dir(model_dir)
    validate(cfg, serving, modelstore.spleeter_dir(model_dir) if compute else None)
    songs = find_songs(Path(cfg.audio_dir))
    check_config(out, cfg)
    done = load_checkpoint(out)
    check_methods(done, cfg)
    items = plan(cfg, songs, serving)
    wanted = [key + (m,) for key in items.keys for m in cfg.methods]
    n_done = sum(1 for key in wanted if key in done)
    if compute:
        computed = _compute(cfg, items, done, model_dir, out, batch_size, console, len(wanted), n_done)
    else:
        computed = 0
        complete = {key for key in items.keys if all(key + (m,) in done for m in cfg.methods)}
        wanted = [key + (m,) for key in items.keys if key in complete for m in cfg.methods]
        n_done = len(wanted)
    table = write_outputs(out, cfg, [done[key] for key in wanted if key in done])
    return RunSummary(len(wanted), n_done, computed, out, table)


def evaluate_item(ctx, cfg: EvalConfig, tagger_name: str, methods: list[str], primary_rec: dict | None,
                  say: Callable[[str], None] = lambda _: None) -> Iterator[tuple[str, dict]]:
    """The missing ``methods`` of one window, each yielded as soon as it is done (so it can be
    checkpointed); ``primary_rec``: the primary variant's stored result when it is not among
    them (the random baseline draws from its components)."""
    from audiolime.evaluation.methods import run_random, run_slime, run_variant

    variants = {v.name: v for v in cfg.variants}
    order = [m for m in cfg.methods if m in methods]
    if RANDOM in order and primary_rec is None and cfg.primary.name not in order:
        raise ValueError("the random baseline needs the primary variant's result")
    results: dict[str, dict] = {}
    for m in order:
        say(m)
        if m == SLIME:
            results[m] = run_slime(ctx, cfg)
        elif m == RANDOM:
            results[m] = run_random(ctx, cfg.primary, primary_rec or results[cfg.primary.name], cfg)
        else:
            results[m] = run_variant(ctx, variants[m], cfg, tagger_name)
        yield m, results[m]


def _compute(cfg: EvalConfig, items: Plan, done: dict, model_dir: Path, out: Path, batch_size: int, console,
             total: int, n_done: int) -> int:
    """Evaluate the pending results song by song (models loaded only if any), appending each to
    the checkpoint and to ``done``; returns how many were computed."""
    pending = items.pending(done, cfg.methods)
    if not pending:
        return 0
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from audiolime.audio import decode
    from audiolime.evaluation.methods import WindowContext
    from audiolime.method.engine import Engine
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.method.waveform import fit_length, resample, to_mono
    from audiolime.models import quiet_tensorflow

    quiet_tensorflow()
    from audiolime.models import load_tagger
    from audiolime.modelstore import spleeter_dir
    from audiolime.separator.hpss import load_separators

    console = console or Console(stderr=True)
    taggers = {name: load_tagger(model_dir, name) for name in cfg.taggers}
    separator_names = sorted({v.request(cfg.seed).separator for v in cfg.variants})
    separators = load_separators(spleeter_dir(model_dir), separator_names, warmup=False)  # separates at once
    # the shared stem sources, keeping the chunks of the current song: windows of one song share them
    sources = {n: LocalSeparation(lambda wave, s=s: s.separate(wave, STEM_RATE).stems, n, cache_chunks=8)
               for n, s in separators.items()}
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
            for t, wi, methods in todo:
                tg = taggers[t]
                start, a, b = spans[(t, wi)]
                w = tg.window_samples
                label = f"{song.stem[:28]} {t} w{wi}"
                cache: dict[str, dict[str, np.ndarray]] = {}

                def stems(separator: str, a=a, b=b, tg=tg, w=w, label=label, cache=cache, sr=sr,
                          audio=audio) -> dict[str, np.ndarray]:
                    if separator not in cache:
                        bar.update(task, description=f"{label}: separating ({separator})")
                        listen = {k: fit_length(v, int(round(w / tg.sample_rate * sr)))
                                  for k, v in sources[separator].window(audio, a, b).stems.items()}
                        cache[separator] = {k: fit_length(resample(to_mono(v)[None, :], sr, tg.sample_rate)[0], w)
                                            for k, v in listen.items()}
                    return cache[separator]

                window = fit_length(mono_by_rate[tg.sample_rate][None, start:start + w], w)[0]
                engine = Engine(tg.predict, tg.labels, tagger_batch(batch_size, w))
                prediction = engine.evaluate(lambda _, window=window: window[None, :], np.ones((1, 1)))[0]
                top = int(np.argmax(prediction))
                ctx = WindowContext(tg, window, start / tg.sample_rate, item_seed(cfg.seed, song.name, t, wi), stems,
                                    engine, top, cfg.trace_samples)
                primary = done.get((song.name, t, wi, cfg.primary.name))
                base = {"song": song.name, "tagger": t, "window": wi, "window_start_s": round(start / tg.sample_rate, 4),
                        "window_s": round(w / tg.sample_rate, 4), "top_tag": tg.labels[top],
                        "top_probability": round(float(prediction[top]), 6)}

                def save(method: str, result: dict, base=base) -> None:
                    rec = {**base, "method": method, "key": cfg.method_key(method), "result": result}
                    append_checkpoint(out, rec)
                    done[(rec["song"], rec["tagger"], rec["window"], method)] = rec
                    bar.advance(task)

                for m, result in evaluate_item(ctx, cfg, t, methods, primary["result"] if primary else None,
                                               lambda m, label=label: bar.update(task, description=f"{label}: {m}")):
                    save(m, result)
                    computed += 1
    return computed
