"""Planted causes: explanations checked against a cause we put there.

A *source* (a vocal phrase separated from a song that has singing; percussive hits separated from
a song that has drums) is mixed into an *instrumental base* (a tagger window whose own share of
that stem is small) over whole temporal segments of the explanation's grid, at a known gain. When
the tagger's tag rises by at least ``min_rise`` because of it, the planted components -- that stem
in those segments -- are the cause of the rise, and an explanation of the tag must rank them
first. Cases whose rise stays below the threshold are kept in the record (and counted) but not
scored: the plant did not cause anything there.

Per method (audioLIME variants, SLIME, random) the run reports the top-1 hit rate (the first
component is a planted one), the top-k recall for k = the number of planted components (their
share found in the top k), a *time* hit (the first component lies in the planted time, whatever
its stem: a miss that is a time hit points at the separator, which split the plant between stems)
and the chance level of each (a random ranking), with Wilson intervals. SLIME's rectangles have no
stems: a rectangle in the planted time counts as a hit, so its chance is higher.

Cases vary bases (songs and windows), sources (songs and phrases), gains and positions,
deterministically (round-robin), so the numbers are not those of one arrangement.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.evaluation.aggregate import rounded, wilson
from audiolime.evaluation.config import RANDOM, SLIME, EvalConfig, Variant
from audiolime.method.request import stems_of

FORMAT = 1
CASE = "case"  # the checkpoint line holding a case's construction and the tagger's rise
RAMP_S = 0.01  # the plant fades in and out over this long (no click of its own)


@dataclass(frozen=True)
class Kind:
    """What is planted: the stem a separator isolates it into."""

    name: str
    separator: str  # the separator that finds sources and whose stem holds the plant
    stem: str


KINDS = {k.name: k for k in (Kind("vocals", "2stems", "vocals"), Kind("percussive", "2stems+hpss", "percussive"))}

PLANTED_VARIANTS = (
    Variant("default"),  # the product's request (fade edges)
    Variant("hard", (("edges", "hard"),)),  # the same with hard segment edges: is a miss the fades'?
)
HPSS_VARIANTS = (  # percussive plants live in 2stems+hpss's percussive stem
    Variant("hpss", (("separator", "2stems+hpss"),)),
    Variant("hpss-hard", (("edges", "hard"), ("separator", "2stems+hpss"))),
)


def planted_variants(kinds: Sequence[str]) -> tuple[Variant, ...]:
    """The variants compared when none is given: the product's request with fade and hard edges,
    on a separator whose stems hold every planted kind."""
    return PLANTED_VARIANTS + (HPSS_VARIANTS if "percussive" in kinds else ())


@dataclass(frozen=True)
class PlantedConfig:
    """A planted-cause run: ``eval`` holds the taggers, songs, variants and SLIME settings shared
    with :mod:`audiolime.evaluation.experiment`; the rest says how cases are built."""

    eval: EvalConfig
    kinds: tuple[str, ...] = ("vocals",)
    cases: int = 24  # at most this many cases per (tagger, kind), spread over bases, sources, gains, positions
    planted_segments: int = 2  # whole segments the plant covers (contiguous)
    gains_db: tuple[float, ...] = (6.0, 0.0)  # plant RMS relative to the base's over the planted time
    min_rise: float = 0.05  # the tag must rise by this much for the case to be scored
    base_max_share: float = 0.15  # a base's own RMS share of the planted stem at most
    source_min_share: float = 0.5  # a source phrase's RMS share of its stem at least
    candidates_per_song: int = 6  # tagger windows per song considered as bases and sources
    tag: str | None = None  # explain this tag (else the one that rose most)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.eval.variants) + (SLIME,)

    def method_key(self, method: str) -> dict:
        return self.eval.method_key(method)

    def result_key(self) -> dict:
        return {"format": self.eval.result_key()["format"], "planted_format": FORMAT, "ks": list(self.eval.ks),
                "seed": self.eval.seed, "kinds": list(self.kinds), "cases": self.cases,
                "planted_segments": self.planted_segments, "gains_db": list(self.gains_db),
                "min_rise": self.min_rise, "base_max_share": self.base_max_share,
                "source_min_share": self.source_min_share, "candidates_per_song": self.candidates_per_song,
                "tag": self.tag}


def validate_planted(cfg: PlantedConfig) -> None:
    """One-line errors naming the flag, before any model is loaded."""
    unknown = [k for k in cfg.kinds if k not in KINDS]
    if not cfg.kinds or unknown:
        raise InvalidInput(f"--planted: give kinds among {', '.join(KINDS)}, got {','.join(cfg.kinds) or 'none'}")
    if not 1 <= cfg.cases <= 1000:
        raise InvalidInput(f"--planted-cases must be between 1 and 1000, got {cfg.cases}")
    segments = {v.request(0).segments for v in cfg.eval.variants} | {cfg.eval.slime_segments}
    if not 1 <= cfg.planted_segments < min(segments):
        raise InvalidInput(f"--planted-segments must be between 1 and {min(segments) - 1} (the fewest segments of "
                           f"a method), got {cfg.planted_segments}")
    if len(segments) != 1:
        raise InvalidInput("every variant and SLIME must use the same number of segments (the planted time is "
                           f"whole segments of one grid), got {sorted(segments)}")
    if not cfg.gains_db or any(not -40 <= g <= 20 for g in cfg.gains_db):
        raise InvalidInput("--planted-gains must be dB values between -40 and 20")
    if not 0 <= cfg.min_rise < 1:
        raise InvalidInput(f"--planted-min-rise must be in [0, 1), got {cfg.min_rise}")


def segment_span(window_samples: int, segments: int, first: int, count: int, rate_ratio: float) -> tuple[int, int]:
    """Samples ``[a, b)`` (at the rate ``rate_ratio`` x the tagger's) of segments ``first ..
    first + count - 1`` of the explanation grid over a ``window_samples`` window."""
    from audiolime.method.factorization import segment_bounds

    bounds = segment_bounds(window_samples, segments, 1)  # the grid in samples (rate only checks length)
    return int(round(bounds[first] * rate_ratio)), int(round(bounds[first + count] * rate_ratio))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def stem_share(stem: np.ndarray, mix: np.ndarray) -> float:
    """The stem's RMS relative to the mixture's (0 for silence)."""
    m = rms(mix)
    return rms(stem) / m if m > 0 else 0.0


def best_phrase(stem: np.ndarray, mix: np.ndarray, length: int) -> tuple[int, float]:
    """The ``length``-sample stretch of ``stem [channels, n]`` with the most energy (hop a quarter
    of it): its start and its share of the mixture there."""
    n = stem.shape[-1]
    if n < length:
        return 0, 0.0
    hop = max(1, length // 4)
    starts = range(0, n - length + 1, hop)
    best = max(starts, key=lambda s: rms(stem[..., s:s + length]))
    return best, stem_share(stem[..., best:best + length], mix[..., best:best + length])


def ramp(n: int, rate: int) -> np.ndarray:
    """Raised-cosine fade in and out over :data:`RAMP_S` (at most a quarter of ``n`` each)."""
    k = max(1, min(int(RAMP_S * rate), n // 4))
    env = np.ones(n, np.float32)
    up = np.sin(0.5 * np.pi * (np.arange(k) + 0.5) / k) ** 2
    env[:k], env[n - k:] = up, up[::-1]
    return env


def plant(base: np.ndarray, source: np.ndarray, at: int, gain_db: float, rate: int) -> tuple[np.ndarray, float]:
    """``base [channels, n]`` with ``source [channels, m]`` mixed in from sample ``at``, scaled so
    its RMS is ``gain_db`` relative to the base's over the same samples; returns the mix and the
    linear gain applied to the source."""
    m = source.shape[-1]
    if at < 0 or at + m > base.shape[-1]:
        raise ValueError(f"plant [{at}, {at + m}) outside a base of {base.shape[-1]} samples")
    shaped = source * ramp(m, rate)[None, :]
    target = rms(base[..., at:at + m]) * 10 ** (gain_db / 20)
    gain = target / rms(shaped) if rms(shaped) > 0 else 0.0
    out = base.astype(np.float32, copy=True)
    out[..., at:at + m] += gain * shaped
    return out, gain


def planted_components(info: Sequence, stem: str | None, t0: float, t1: float) -> list[int]:
    """Components inside the planted time ``[t0, t1)`` (at least half of each; relative to the
    window) and, when ``stem`` is given, of that stem (audioLIME); SLIME's rectangles: time only."""
    out = []
    for c in info:
        overlap = min(c.end_s, t1) - max(c.start_s, t0)
        if overlap >= 0.5 * (c.end_s - c.start_s) - 1e-9 and (stem is None or c.source == stem):
            out.append(int(c.index))
    return out


def score(weights: Sequence[float], planted: Sequence[int], in_time: Sequence[int]) -> dict:
    """Top-1 hit, top-k recall (k = len(planted)) and time hit of one ranking (by weight, highest first)."""
    from audiolime.method.engine import descending

    order = [int(i) for i in descending(np.asarray(weights, np.float64))]
    k = len(planted)
    return {"top1": order[0] in planted, "recall": len(set(order[:k]) & set(planted)) / k if k else None,
            "time_hit": order[0] in in_time, "order": order[:max(k, 3)]}


@dataclass(frozen=True)
class Base:
    song: str
    start: int  # tagger-rate start of the window in the song's mono signal
    a: int  # the window in the file: [a, b)
    b: int
    share: float  # its own share of the kind's stem


@dataclass(frozen=True)
class Source:
    song: str
    at: int  # file-rate start of the phrase in the song
    share: float
    audio: np.ndarray = field(repr=False, compare=False)  # [channels, m] at the file rate


@dataclass(frozen=True)
class Case:
    kind: str
    base: Base
    source: Source
    first: int  # first planted segment
    gain_db: float

    @property
    def id(self) -> str:
        return (f"{self.kind}:{self.base.song}@{self.base.start}+{self.source.song}@{self.source.at}"
                f":seg{self.first}:{self.gain_db:+g}dB")


def arrange(kind: str, bases: Sequence[Base], sources: Sequence[Source], gains: Sequence[float], positions: int,
            limit: int) -> list[Case]:
    """Up to ``limit`` distinct cases over (base, source from another song) x (position, gain),
    deterministic. Fewer cases than pairs: pairs in a fixed shuffled order, the (position, gain)
    combinations cycled (also shuffled), so that a small run still varies every factor. More:
    every pair, each walking the combinations from its own offset (spread over them)."""
    pairs = [(b, s) for b in bases for s in sources if s.song != b.song]
    combos = [(p, g) for p in range(positions) for g in gains]
    combos = [combos[i] for i in np.random.default_rng(1).permutation(len(combos))]
    if not pairs:
        return []
    if limit <= len(pairs):
        order = np.random.default_rng(0).permutation(len(pairs))
        chosen = [(pairs[order[j]], combos[j % len(combos)]) for j in range(limit)]
    else:
        chosen = [(pairs[i % len(pairs)],
                   combos[(i // len(pairs) + (i % len(pairs)) * len(combos) // len(pairs)) % len(combos)])
                  for i in range(min(limit, len(pairs) * len(combos)))]
    return [Case(kind, b, s, first, gain) for (b, s), (first, gain) in chosen]


def summarize(records: Sequence[dict]) -> dict:
    """Per tagger and kind: the cases (built, scored) and per method the rates with intervals."""
    table: dict = {}
    cases = {(r["tagger"], r["song"]): r["result"] for r in records if r["method"] == CASE}
    for (tagger, _), c in sorted(cases.items()):
        t = table.setdefault(tagger, {}).setdefault(c["kind"], {"built": 0, "scored": 0, "methods": {}, "rises": []})
        t["built"] += 1
        t["rises"].append(c["rise"])
        t["scored"] += bool(c["scored"])
    for r in records:
        if r["method"] == CASE:
            continue
        c = cases.get((r["tagger"], r["song"]))
        if c is None or not c["scored"]:
            continue
        m = table[r["tagger"]][c["kind"]]["methods"].setdefault(r["method"], [])
        m.append(r["result"]["planted"])
    for kinds in table.values():
        for t in kinds.values():
            rises = t.pop("rises")
            t["median_rise"] = rounded(float(np.median(rises))) if rises else None
            t["methods"] = {name: _rates(scores) for name, scores in t["methods"].items()}
            chance = _chance(t["methods"])
            if chance is not None:
                t["methods"][RANDOM] = chance
    return table


def _rates(scores: Sequence[dict]) -> dict:
    n = len(scores)
    out: dict = {"n": n}
    for key in ("top1", "time_hit"):
        hits = sum(bool(s[key]) for s in scores)
        lo, hi = wilson(hits, n)
        out[key] = {"rate": rounded(hits / n) if n else None, "ci_low": rounded(lo), "ci_high": rounded(hi)}
    found = sum(s["recall"] * s["k"] for s in scores)
    total = sum(s["k"] for s in scores)
    lo, hi = wilson(found, total)
    out["recall"] = {"rate": rounded(found / total) if total else None, "ci_low": rounded(lo), "ci_high": rounded(hi),
                     "k": sorted({s["k"] for s in scores})}
    out["chance_top1"] = rounded(float(np.mean([s["chance"] for s in scores]))) if n else None
    out["masks"] = rounded(float(np.median([s["masks"] for s in scores]))) if n else None
    return out


def _chance(methods: dict) -> dict | None:
    """A random ranking of the primary (first) variant's components: top-1 hit = k / d' = expected recall."""
    if not methods:
        return None
    first = next(iter(methods.values()))
    return {"n": first["n"], "top1": {"rate": first["chance_top1"]}, "recall": {"rate": first["chance_top1"]},
            "time_hit": None, "chance_top1": first["chance_top1"], "masks": 0}


def markdown(table: dict, cfg: PlantedConfig) -> str:
    lines = ["# Planted causes", "",
             f"Cases: kinds {', '.join(cfg.kinds)}; {cfg.planted_segments} planted segments; gains "
             f"{', '.join(f'{g:+g} dB' for g in cfg.gains_db)}; a case is scored when the tag rose by >= "
             f"{cfg.min_rise:g}. Rates with Wilson 95 % intervals; recall: the planted components found in the top k "
             "(k = their number); time hit: the first component in the planted time, any stem.", ""]
    for tagger, kinds in table.items():
        for kind, t in kinds.items():
            lines += [f"## {tagger}, planted {kind}", "",
                      f"{t['built']} cases built, {t['scored']} scored (median rise of the tag {_f(t['median_rise'])})",
                      "", "| method | cases | top-1 hit | top-k recall | time hit | chance top-1 | median masks |",
                      "|---|---|---|---|---|---|---|"]
            for name, m in t["methods"].items():
                lines.append(f"| {name} | {m['n']} | {_cell(m['top1'])} | {_cell(m['recall'])} | "
                             f"{_cell(m['time_hit'])} | {_f(m['chance_top1'])} | {_f(m['masks'], '.0f')} |")
            lines.append("")
    return "\n".join(lines)


def _f(x, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _cell(c: dict | None) -> str:
    if not c or c.get("rate") is None:
        return "n/a"
    if c.get("ci_low") is None:
        return f"{c['rate']:.2f}"
    return f"{c['rate']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"


def write_planted_outputs(out: Path, cfg: PlantedConfig, records: Sequence[dict]) -> dict:
    table = summarize(records)
    doc = {"config": {**cfg.result_key(), "taggers": list(cfg.eval.taggers), "methods": list(cfg.methods)},
           "table": table,
           "cases": [{"tagger": r["tagger"], "id": r["song"], **{k: v for k, v in r["result"].items()}}
                     for r in records if r["method"] == CASE]}
    (out / "planted.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out / "planted.md").write_text(markdown(table, cfg), encoding="utf-8")
    return table


@dataclass
class PlantedSummary:
    computed: int
    table: dict


def run_planted(cfg: PlantedConfig, model_dir: Path, out: Path, batch_size: int, console=None,
                compute: bool = True) -> PlantedSummary:
    """Build the cases from ``cfg.eval.audio_dir``, evaluate every method on those not in
    ``out``'s checkpoint (resumable), and write ``planted.json`` / ``planted.md``."""
    from audiolime import modelstore
    from audiolime.evaluation.checkpoint import check_config, check_methods, load_checkpoint
    from audiolime.evaluation.config import validate
    from audiolime.evaluation.plan import find_songs

    validate_planted(cfg)
    serving = modelstore.serving_dir(model_dir)
    validate(cfg.eval, serving, modelstore.spleeter_dir(model_dir) if compute else None)
    songs = find_songs(Path(cfg.eval.audio_dir))
    check_config(out, cfg)  # type: ignore[arg-type]  # duck-typed: result_key()
    done = load_checkpoint(out)
    check_methods(done, cfg)  # type: ignore[arg-type]  # duck-typed: methods, method_key()
    computed = _compute(cfg, songs, done, model_dir, out, batch_size, console) if compute else 0
    return PlantedSummary(computed, write_planted_outputs(out, cfg, list(done.values())))


def _compute(cfg: PlantedConfig, songs: list[Path], done: dict, model_dir: Path, out: Path, batch_size: int,
             console) -> int:
    from rich.console import Console

    from audiolime.audio import decode
    from audiolime.evaluation.plan import tagger_batch, window_spans, windows_for
    from audiolime.method.engine import Engine
    from audiolime.method.waveform import resample, to_mono
    from audiolime.models import load_tagger, quiet_tensorflow
    from audiolime.modelstore import spleeter_dir
    from audiolime.separator.hpss import load_separators

    quiet_tensorflow()
    console = console or Console(stderr=True)

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    kinds = [KINDS[k] for k in cfg.kinds]
    names = {k.separator for k in kinds} | {v.request(0).separator for v in cfg.eval.variants}
    separators = load_separators(spleeter_dir(model_dir), sorted(names), warmup=False)
    audios = {s.name: decode(s) for s in songs}
    segments = cfg.eval.slime_segments
    computed = 0
    for tagger_name in cfg.eval.taggers:
        tg = load_tagger(model_dir, tagger_name)
        if cfg.tag is not None and cfg.tag not in tg.labels:
            raise InvalidInput(f"--planted-tag {cfg.tag!r} is not a tag of {tagger_name}")
        w, sr_t = tg.window_samples, tg.sample_rate
        engine = Engine(tg.predict, tg.labels, tagger_batch(batch_size, w))
        for kind in kinds:
            sep = separators[kind.separator]
            bases, sources = [], []
            for name, audio in audios.items():  # candidates: evenly spaced tagger windows of every song
                sr = audio.sample_rate
                mono_len = resample(to_mono(audio.waveform)[None, :], sr, sr_t).shape[-1]
                count = windows_for(cfg.candidates_per_song, audio.duration_s, w / sr_t)
                a0, b0 = segment_span(w, segments, 0, cfg.planted_segments, sr / sr_t)
                for start, a, b in window_spans(mono_len, w, sr_t, count, sr, audio.num_samples):
                    mix = audio.waveform[:, a:b]
                    stem = sep.separate(mix, sr).stems[kind.stem]
                    share = stem_share(stem, mix)
                    if share <= cfg.base_max_share:
                        bases.append(Base(name, int(start), a, b, round(share, 4)))
                    at, pshare = best_phrase(stem, mix, b0 - a0)
                    if pshare >= cfg.source_min_share:
                        sources.append(Source(name, a + at, round(pshare, 4), stem[:, at:at + b0 - a0].copy()))
            cases = arrange(kind.name, bases, sources, cfg.gains_db, segments - cfg.planted_segments + 1, cfg.cases)
            say(f"{tagger_name} {kind.name}: {len(bases)} bases, {len(sources)} sources -> {len(cases)} cases")
            for case in cases:
                computed += run_case(cfg, case, tg, tagger_name, engine, audios[case.base.song], separators, kind,
                                     done, out, say)
    return computed


def run_case(cfg: PlantedConfig, case: Case, tg, tagger_name: str, engine, audio, separators: dict, kind: Kind,
             done: dict, out: Path, say: Callable[[str], None]) -> int:
    """One case: plant, measure the tag's rise, explain it with every method whose stems hold the
    plant, score each ranking; every result checkpointed as it is done. Returns results computed."""
    from audiolime.evaluation.checkpoint import append_checkpoint
    from audiolime.evaluation.experiment import evaluate_item
    from audiolime.evaluation.methods import WindowContext
    from audiolime.evaluation.plan import item_seed
    from audiolime.method.waveform import fit_length, resample, to_mono

    w, sr_t = tg.window_samples, tg.sample_rate
    segments = cfg.eval.slime_segments
    sr = audio.sample_rate
    n_file = int(round(w / sr_t * sr))
    base = fit_length(audio.waveform[:, case.base.a:case.base.b], n_file)
    a, b = segment_span(w, segments, case.first, cfg.planted_segments, sr / sr_t)
    src = fit_length(case.source.audio, b - a)
    if src.shape[0] != base.shape[0]:
        src = np.repeat(src.mean(axis=0, keepdims=True), base.shape[0], axis=0)
    mix, gain = plant(base, src, a, case.gain_db, sr)

    def model_input(x: np.ndarray) -> np.ndarray:
        return fit_length(resample(to_mono(x)[None, :], sr, sr_t), w)[0]

    window = model_input(mix)
    p_base, p_mix = tg.predict(np.stack([model_input(base), window]))
    tag = tg.labels.index(cfg.tag) if cfg.tag is not None else int(np.argmax(p_mix - p_base))
    rise = float(p_mix[tag] - p_base[tag])
    t0, t1 = a / sr, b / sr
    case_rec = {"kind": case.kind, "base_song": case.base.song, "base_start_s": round(case.base.a / sr, 3),
                "base_share": case.base.share, "source_song": case.source.song,
                "source_start_s": round(case.source.at / sr, 3), "source_share": case.source.share,
                "planted_segments": list(range(case.first, case.first + cfg.planted_segments)),
                "planted_s": [round(t0, 3), round(t1, 3)], "gain_db": case.gain_db, "gain": round(gain, 4),
                "tag": tg.labels[tag], "p_base": round(float(p_base[tag]), 6), "p_planted": round(float(p_mix[tag]), 6),
                "rise": round(rise, 6), "scored": rise >= cfg.min_rise}
    key = (case.id, tagger_name, 0)
    if key + (CASE,) not in done:
        rec = {"song": case.id, "tagger": tagger_name, "window": 0, "method": CASE, "key": {}, "result": case_rec}
        append_checkpoint(out, rec)
        done[key + (CASE,)] = rec
    if not case_rec["scored"]:
        say(f"  {case.id}: {tg.labels[tag]} rose {rise:+.3f} (< {cfg.min_rise:g}): not scored")
        return 0
    variants = {v.name: v for v in cfg.eval.variants if kind.stem in stems_of(v.request(0).separator)}
    methods = [m for m in list(variants) + [SLIME] if key + (m,) not in done]
    if not methods:
        return 0
    cache: dict[str, dict[str, np.ndarray]] = {}

    def stems(separator: str) -> dict[str, np.ndarray]:
        if separator not in cache:
            cache[separator] = {k: model_input(v) for k, v in separators[separator].separate(mix, sr).stems.items()}
        return cache[separator]

    ctx = WindowContext(tg, window, 0.0, item_seed(cfg.eval.seed, case.id, tagger_name, 0), stems, engine, tag, 0)
    n = 0
    for m, result in evaluate_item(ctx, cfg.eval, tagger_name, methods, None):
        if m == SLIME:
            planted_idx = in_time = planted_components(slime_slots(len(result["weights"]), segments, w / sr_t),
                                                       None, t0, t1)
        else:
            fact, _ = ctx.factorization(variants[m].request(ctx.seed).validate())
            planted_idx = planted_components(fact.info, kind.stem, t0, t1)
            in_time = planted_components(fact.info, None, t0, t1)
        s = score(result["weights"], planted_idx, in_time)
        result["planted"] = {**s, "k": len(planted_idx), "components": planted_idx,
                             "chance": len(planted_idx) / len(result["weights"]),
                             "masks": result["stopping"]["masks"] + result["calls"]["metrics"]}
        rec = {"song": case.id, "tagger": tagger_name, "window": 0, "method": m, "key": cfg.method_key(m),
               "result": result}
        append_checkpoint(out, rec)
        done[key + (m,)] = rec
        say(f"  {case.id} {tg.labels[tag]} {rise:+.3f} {m}: top-1 {'hit' if s['top1'] else 'miss'}, "
            f"recall {s['recall']:.2f}, first {s['order'][0]}")
        n += 1
    return n


@dataclass(frozen=True)
class Slot:
    """A component's place in time (what scoring needs of it)."""

    index: int
    source: str
    start_s: float
    end_s: float


def slime_slots(d: int, segments: int, window_s: float) -> list[Slot]:
    """SLIME's rectangles as time slots (band-major: index = band x segments + segment)."""
    seg_s = window_s / segments
    return [Slot(i, "rectangle", (i % segments) * seg_s, (i % segments + 1) * seg_s) for i in range(d)]
