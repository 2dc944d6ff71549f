"""`audiolime evaluate` (audioLIME variants vs SLIME vs random): SLIME rectangles, the random
baselines, the aggregation (reference agreement, calls to reach it, stopping-rule replay), a tiny
real run on two songs (outputs, resumability), and bad input as one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audiolime.errors import InvalidInput
from audiolime.evaluation.baselines import random_draws, to_masks, top_k_positive
from audiolime.evaluation.slime import NotApplicable, SpectrogramRectangles, StftRectangles, for_tagger

SONGS = ("admiralbob77_-_Choice_-_Drum-bass.ogg", "Brahms_-_Hungarian_Dance_No5_string_orchestra.ogg")
EXE = str(Path(sys.executable).with_name("audiolime"))


# ---------------------------------------------------------------------------------------------
# SLIME rectangles


@pytest.mark.parametrize("shape,segments,bands", [
    ((187, 96), 6, 4),     # musicnn input, defaults
    ((1813, 96), 10, 5),   # FCN input, the paper's SLIME setting (non-divisible: 1813/10, 96/5)
    ((37, 11), 7, 3),      # small, non-divisible both ways
    ((9, 5), 9, 5),        # one bin per rectangle
])
def test_slime_rectangles_partition_the_spectrogram(shape, segments, bands):
    """Every spectrogram bin belongs to exactly one SLIME component, and every component is non-empty."""
    spec = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    rect = SpectrogramRectangles(spec, segments, bands)
    d = segments * bands
    assert rect.num_components == d == len(rect.info)
    per_comp = rect.component_mask(np.eye(d))  # [d, frames, mels]
    assert set(np.unique(per_comp)) <= {0.0, 1.0}
    np.testing.assert_array_equal(per_comp.sum(axis=0), np.ones(shape))
    assert (per_comp.reshape(d, -1).sum(axis=1) > 0).all()
    # the bins of component i are exactly its declared rectangle
    for c in rect.info:
        expect = np.zeros(shape)
        expect[c.frame_lo:c.frame_hi, c.mel_lo:c.mel_hi] = 1
        np.testing.assert_array_equal(per_comp[c.index], expect)


def test_slime_compose_switches_rectangles_to_baseline():
    """All on = the spectrogram; all off = the baseline; one on = that rectangle only."""
    spec = np.random.default_rng(2).normal(size=(50, 20)).astype(np.float32)
    for baseline, value in (("zero", 0.0), ("min", spec.min()), ("mean", spec.mean())):
        rect = SpectrogramRectangles(spec, 5, 4, baseline)
        out = rect.compose(np.array([np.ones(20), np.zeros(20), np.eye(20)[7]]))
        np.testing.assert_array_equal(out[0], spec)
        np.testing.assert_allclose(out[1], value, rtol=0, atol=1e-6)
        c = rect.info[7]
        inside = np.zeros(spec.shape, bool)
        inside[c.frame_lo:c.frame_hi, c.mel_lo:c.mel_hi] = True
        np.testing.assert_array_equal(out[2][inside], spec[inside])
        np.testing.assert_allclose(out[2][~inside], value, rtol=0, atol=1e-6)


def test_slime_rejects_impossible_grids():
    """More rectangles than bins, or an unknown baseline, is a clear InvalidInput."""
    spec = np.zeros((10, 4), np.float32)
    with pytest.raises(InvalidInput, match="5 bands do not fit into 4"):
        SpectrogramRectangles(spec, 2, 5)
    with pytest.raises(InvalidInput, match="baseline must be one of"):
        SpectrogramRectangles(spec, 2, 2, "median")


class WaveformOnly:
    """A tagger that takes waveforms only (like the paper's SampleCNN, or a model exported
    without ``from_spectrogram``): the real musicnn ``predict`` and nothing else."""

    def __init__(self, tagger) -> None:
        self.name, self.labels = "samplecnn-like", tagger.labels
        self.sample_rate, self.window_samples = tagger.sample_rate, tagger.window_samples
        self.predict = tagger.predict


@pytest.fixture(scope="module")
def musicnn(models: Path):
    from audiolime.models import load_tagger, quiet_tensorflow

    quiet_tensorflow()
    return load_tagger(models, "musicnn-msd")


@pytest.fixture(scope="module")
def brahms_window(shared: Path, musicnn) -> np.ndarray:
    from audiolime.audio import decode
    from audiolime.method.waveform import resample, to_mono

    audio = decode(shared / "audio" / SONGS[1])
    mono = resample(to_mono(audio.waveform)[None, :], audio.sample_rate, musicnn.sample_rate)[0]
    start = 10 * musicnn.sample_rate
    return mono[start:start + musicnn.window_samples].astype(np.float32)


def test_slime_on_real_spectrogram_and_not_applicable_for_waveform_only(musicnn, brahms_window):
    """SLIME uses the tagger's own input spectrogram (all-on reproduces the waveform prediction);
    a waveform-only tagger gets NotApplicable, and the evaluation records SLIME as n/a."""
    rect = for_tagger(musicnn, brahms_window, 6, 4)
    assert rect.shape == tuple(musicnn.spectrogram_shape)
    p_wave = musicnn.predict(brahms_window[None, :])[0]
    p_spec = musicnn.predict_spectrogram(rect.compose(np.ones((1, 24))))[0]
    np.testing.assert_allclose(p_spec, p_wave, atol=1e-4)

    only = WaveformOnly(musicnn)
    with pytest.raises(NotApplicable, match="SLIME is not applicable"):
        for_tagger(only, brahms_window)

    from audiolime.evaluation.config import EvalConfig
    from audiolime.evaluation.methods import WindowContext, run_slime
    from audiolime.method.engine import Engine

    top = int(np.argmax(p_wave))
    ctx = WindowContext(only, brahms_window, 10.0, 3, lambda sep: {}, Engine(only.predict, only.labels), top)
    cfg = EvalConfig(taggers=("samplecnn-like",), audio_dir=".", ks=(1, 3), slime_samples=64, slime_domain="spectrogram")
    rec = run_slime(ctx, cfg)
    assert "SLIME is not applicable" in rec["not_applicable"] and rec["rows"] == []

    # the audio domain (the paper's SLIME, the default) needs only predict(waveform): it applies
    rec = run_slime(ctx, EvalConfig(**{**cfg.__dict__, "slime_domain": "audio"}))
    assert rec["domain"] == "audio" and rec["d"] == 12 == len(rec["weights"])
    assert [r["k"] for r in rec["rows"]] == [1, 3] and all(r["keep"] in (True, False) for r in rec["rows"])
    assert len(rec["deletion"]) == len(rec["insertion"]) == 13  # curves over d' + 1 points
    assert rec["deletion"][0] == pytest.approx(rec["insertion"][-1], abs=1e-6)  # both: every rectangle on
    assert rec["deletion"][0] == pytest.approx(float(p_wave[top]), abs=1e-3)  # = the window itself


# ---------------------------------------------------------------------------------------------
# SLIME in the audio domain (the paper's: STFT rectangles resynthesised with istft)


@pytest.mark.slow  # seconds of CPU: the full run only
@pytest.mark.parametrize("samples,segments,bands", [
    (48_000, 9, 5),    # musicnn-length window at 16 kHz: 1025 bins x 94 frames (94 / 9 non-divisible)
    (30_000, 10, 7),   # 1025 / 7 and 59 frames / 10: non-divisible both ways
    (2_048, 5, 3),     # the shortest window: 5 frames, one per segment
])
def test_audio_slime_rectangles_partition_the_stft(samples, segments, bands):
    """Every STFT bin (all 1025 frequencies, every frame -- none dropped) belongs to exactly one
    component, each component is its declared non-empty rectangle, sizes differ by at most one."""
    y = np.random.default_rng(4).normal(size=samples).astype(np.float32)
    rect = StftRectangles(y, 16000, segments, bands)
    bins, frames = rect.shape
    assert bins == 1025 and frames == 1 + samples // 512
    d = segments * bands
    per_comp = rect.component_mask(np.eye(d))  # [d, bins, frames]
    np.testing.assert_array_equal(per_comp.sum(axis=0), np.ones((bins, frames)))
    for c in rect.info:
        expect = np.zeros((bins, frames), bool)
        expect[c.bin_lo:c.bin_hi, c.frame_lo:c.frame_hi] = True
        np.testing.assert_array_equal(per_comp[c.index], expect)
        assert c.index == c.band * segments + c.segment
    for bounds, n, _parts in ((rect.bin_bounds, bins, bands), (rect.frame_bounds, frames, segments)):
        sizes = np.diff(bounds)
        assert bounds[0] == 0 and bounds[-1] == n and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1
    assert rect.info[-1].hz_hi == 8000.0 and rect.info[0].hz_lo == 0.0
    with pytest.raises(InvalidInput, match="do not fit into"):
        StftRectangles(y, 16000, frames + 1, 2)


def test_audio_slime_resynthesis_on_a_real_window(musicnn, brahms_window):
    """All rectangles on reproduce the window (istft round trip) and its tags; all off is
    near-silence; any mask equals the paper's formula istft(where(keep, |S|, min|S|) * phase)."""
    import librosa

    y = brahms_window
    rms = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))  # noqa: E731
    rect = StftRectangles(y, musicnn.sample_rate, 9, 5)
    masks = np.vstack([np.ones(45), np.zeros(45), np.random.default_rng(5).integers(0, 2, size=(3, 45))])
    out = rect.compose(masks)
    assert out.shape == (5, len(y)) and out.dtype == np.float32
    assert rms(out[0] - y) < 1e-4 * rms(y)
    assert rms(out[1]) < 1e-2 * rms(y)  # the magnitude's min everywhere: near-silence
    stft = librosa.stft(y, n_fft=2048)
    mag, phase = np.abs(stft), stft / np.maximum(np.abs(stft), 1e-30)
    for m, got in zip(masks[2:], out[2:]):
        keep = rect.component_mask(m[None])[0]
        want = librosa.istft(np.where(keep, mag, mag.min()) * phase, n_fft=2048, length=len(y))
        assert rms(got - want) < 1e-4 * rms(y)
        assert 0.05 * rms(y) < rms(got) < rms(y)  # some rectangles kept, some not
    p = musicnn.predict(out[:2])
    np.testing.assert_allclose(p[0], musicnn.predict(y[None, :])[0], atol=1e-3)
    assert not np.allclose(p[1], p[0], atol=1e-2)


def test_method_settings_are_part_of_the_checkpoint(tmp_path: Path):
    """Results of a method made with other settings (a variant's request, the SLIME domain) are
    never mixed in: a clear error; other shared settings refuse the directory; a new variant is fine."""
    from audiolime.evaluation.checkpoint import check_config, check_methods
    from audiolime.evaluation.config import EvalConfig, parse_variant

    cfg = EvalConfig(taggers=("musicnn-msd",), audio_dir=".", variants=(parse_variant("a:num_samples=auto"),))
    rec = {"a": cfg.method_key("a"), "slime": cfg.method_key("slime")}
    done = {("s", "musicnn-msd", 0, m): {"key": k} for m, k in rec.items()}
    check_methods(done, cfg)
    more = EvalConfig(**{**cfg.__dict__, "variants": cfg.variants + (parse_variant("b:edges=hard"),)})
    check_methods(done, more)  # adding a variant: only it is computed
    with pytest.raises(InvalidInput, match="'slime' results made with other settings"):
        check_methods(done, EvalConfig(**{**cfg.__dict__, "slime_domain": "spectrogram"}))
    with pytest.raises(InvalidInput, match="'a' results made with other settings"):
        check_methods(done, EvalConfig(**{**cfg.__dict__, "variants": (parse_variant("a:num_samples=512"),)}))
    assert cfg.method_key("a")["request"]["fade"] == 1.0  # resolved: a new product default changes the key
    check_config(tmp_path / "o", cfg)
    with pytest.raises(InvalidInput, match="different configuration.*ks"):
        check_config(tmp_path / "o", EvalConfig(**{**cfg.__dict__, "ks": (2,)}))


def test_variant_specs():
    """NAME:key=value,... sets request options (numbers typed, num_samples=auto); errors name the variant."""
    from audiolime.evaluation.config import parse_variant

    v = parse_variant("fast:num_samples=auto,fade=0.5,max-samples=1024,edges=fade,reference")
    assert v.reference and dict(v.options) == {"num_samples": 0, "fade": 0.5, "max_samples": 1024, "edges": "fade"}
    req = v.request(7)
    assert (req.seed, req.fade, req.max_samples, req.top_k, req.separator) == (7, 0.5, 1024, 3, "2stems")
    for spec, needle in (("x:foo=1", "is not key=value"), ("x:fade=soft", "fade must be a number"),
                         ("slime:edges=hard", "NAME"), (":edges=hard", "NAME")):
        with pytest.raises(InvalidInput, match=needle):
            parse_variant(spec)


# ---------------------------------------------------------------------------------------------
# random baseline


def test_random_baseline_draws_only_positive_components_outside_top_k():
    """Draws are k distinct positive-weight, non-top-k components; seeded and reproducible."""
    w = np.array([0.9, -0.2, 0.5, 0.0, 0.3, 0.05, -0.7, 0.2, 0.1, 0.4, 0.01, -0.01])
    positive = set(np.flatnonzero(w > 0))
    for k in (1, 2, 3):
        top = set(top_k_positive(w, k))
        assert top == set(np.argsort(-w)[:k])
        d = random_draws(w, k, 200, seed=7)
        assert d.shape == (200, k)
        assert all(len(set(row)) == k for row in d)
        drawn = set(d.ravel())
        assert drawn <= positive - top
        assert drawn == positive - top  # 200 draws reach every eligible component
        np.testing.assert_array_equal(d, random_draws(w, k, 200, seed=7))
        assert not np.array_equal(d, random_draws(w, k, 200, seed=8))
    # 8 positive components: k = 4 leaves exactly 4 to draw from, k = 5 leaves too few
    assert sorted(set(random_draws(w, 4, 50, seed=0).ravel())) == sorted(positive - set(top_k_positive(w, 4)))
    assert random_draws(w, 5, 10, seed=0) is None


def test_top_k_positive_never_keeps_non_positive_components():
    """With fewer than k positive weights, the top-k set is only the positive ones."""
    w = np.array([-0.3, 0.2, 0.0, -0.1, 0.6])
    assert list(top_k_positive(w, 3)) == [4, 1]
    masks = to_masks([top_k_positive(w, 3), np.array([0, 3])], 5)
    np.testing.assert_array_equal(masks, [[0, 1, 0, 0, 1], [1, 0, 0, 1, 0]])


def test_windows_and_batches_are_capped():
    """No more windows than ceil(song / window) (a song shorter than the window gets one), and
    no more than 16 FCN windows per tagger call."""
    from audiolime.evaluation.plan import tagger_batch, window_starts, windows_for

    assert windows_for(3, 25.0, 29.0) == 1
    assert windows_for(3, 45.8, 29.0) == 2
    assert windows_for(3, 133.0, 29.0) == 3
    assert windows_for(8, 25.0, 3.0) == 8
    assert tagger_batch(64, 464_000) == 16 and tagger_batch(8, 464_000) == 8 and tagger_batch(64, 48_000) == 64
    starts = window_starts(100, 30, 3)
    assert starts == sorted(starts) and starts[0] >= 0 and starts[-1] + 30 <= 100 and len(set(starts)) == 3


def test_random_rankings_are_permutations():
    """Random rankings are seeded permutations of every component."""
    from audiolime.evaluation.baselines import random_rankings

    orders = random_rankings(12, 5, seed=1)
    assert len(orders) == 5 and all(sorted(o) == list(range(12)) for o in orders)
    assert [list(o) for o in orders] == [list(o) for o in random_rankings(12, 5, seed=1)]


# ---------------------------------------------------------------------------------------------
# aggregation


def test_calls_to_reach_and_stopping_replay():
    """Calls to reach the reference count from the round after which the top-3 set stays the
    reference's; a replayed rule stops at the first (run of) stable round(s), else at the end."""
    from audiolime.evaluation.aggregate import calls_to_reach, jaccard, replay

    trace = [{"masks": 256, "unique": 250, "stability": 0.7, "top": [1, 2, 3]},
             {"masks": 384, "unique": 370, "stability": 0.96, "top": [1, 2, 4]},
             {"masks": 576, "unique": 560, "stability": 0.93, "top": [1, 2, 3]},
             {"masks": 896, "unique": 880, "stability": 0.97, "top": [1, 2, 3]}]
    assert calls_to_reach(trace, [3, 2, 1]) == 560  # reached at 250, lost at 370, reached for good at 560
    assert calls_to_reach(trace, [1, 2, 4]) is None
    assert replay(trace, 0.95)["unique"] == 370 and replay(trace, 0.95)["stopped"]
    assert replay(trace, 0.9, consecutive=2)["unique"] == 880  # 0.96 then 0.93 differ in top set
    assert replay(trace, 0.99) == trace[-1] | {"stopped": False}
    assert jaccard([1, 2, 3], [1, 2, 4]) == 0.5 and jaccard([1, 2, 3], [3, 2, 1]) == 1.0


def test_aggregate_rates_curves_and_reference_agreement():
    """Keep/drop rates are means over windows, deletion < random counts per window, the reference
    agreement is the share of windows with the reference's top-3 set (exactly, and up to components
    tied within 5 % of the strongest reference weight); random only counts where defined."""
    from audiolime.evaluation.aggregate import aggregate
    from audiolime.evaluation.config import EvalConfig, parse_variant

    cfg = EvalConfig(taggers=("t",), audio_dir=".", ks=(1, 3), variants=(parse_variant("v:reference"),))

    def variant(win: int, keep3: bool, dele: float, same_ref: bool, gap: float = 0.01) -> dict:
        return {"song": "s", "tagger": "t", "window": win, "method": "v", "result": {
            "rows": [{"k": 1, "keep": True, "drop_lost": False}, {"k": 3, "keep": keep3, "drop_lost": True}],
            "deletion_auc": dele, "insertion_auc": 0.5, "surrogate_r2": 0.8, "stability": 0.9, "seconds": 1.0,
            "stopping": {"reason": "stable"}, "calls": {"sampling": 256 * (win + 1), "metrics": 20},
            "top_k_set": [0, 1, 2], "trace": [{"masks": 256, "unique": 250, "stability": 0.99, "top": [0, 1, 2]}],
            "reference": {"top_k_set": [0, 1, 2] if same_ref else [0, 1, 5], "unique": 4096, "stability": 1.0,
                          "weights": [0.5, 0.4, 0.3] + [0.0] * 2 + [0.3 + gap] if not same_ref else
                          [0.5, 0.4, 0.3, 0.0, 0.0, 0.1]}}}

    def rand(win: int, dele: float) -> dict:
        return {"song": "s", "tagger": "t", "window": win, "method": "random", "result": {
            "rows": [{"k": 1, "keep": 0.25, "drop_lost": 0.5}, {"k": 3, "keep": None, "drop_lost": None}],
            "deletion_auc": dele, "insertion_auc": 0.3}}

    recs = [variant(0, True, 0.1, True), variant(1, False, 0.4, True), variant(2, True, 0.2, False),
            rand(0, 0.3), rand(1, 0.3), rand(2, 0.3)]
    far = aggregate(cfg, recs[:2] + [variant(2, True, 0.2, False, gap=0.1)] + recs[3:])["t"]["v"]["reference"]
    assert far["same_top3_up_to_ties"]["rate"] == pytest.approx(2 / 3, abs=1e-4)  # 0.4 vs 0.3: not a tie
    t = aggregate(cfg, recs)["t"]
    v = t["v"]
    assert v["keep"]["3"]["rate"] == pytest.approx(2 / 3, abs=1e-4) and v["keep"]["3"]["n"] == 3
    assert v["drop"]["1"]["rate"] == 0.0 and v["drop"]["3"]["rate"] == 1.0
    assert v["deletion_below_random"]["rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert v["calls"]["sampling_median"] == 512 and v["stopping"] == {"stable": 3}
    ref = v["reference"]
    assert ref["same_top3"]["rate"] == pytest.approx(2 / 3, abs=1e-4) and ref["reference_calls_median"] == 4096
    assert ref["same_top3_up_to_ties"]["rate"] == 1.0  # component 2 at 0.30 vs 5 at 0.31: within 5 % of 0.5
    assert ref["calls_ratio_median"] == 0.125 and ref["reached"]["rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert t["random"]["keep"]["1"]["rate"] == 0.25 and t["random"]["keep"]["3"]["n"] == 0
    assert t["paired"]["random"]["1"] == {"diff": 0.75, "wins": 3, "losses": 0, "n": 3}  # 1 - 0.25 on 3 windows
    assert t["paired"]["random"]["3"]["n"] == 0 and "v" not in t["paired"]
    assert t["slime"]["windows"] == 0 and t["slime"]["keep"]["1"]["rate"] is None


# ---------------------------------------------------------------------------------------------
# a tiny real run


def _evaluate(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([EXE, "evaluate", *args], capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny_run(shared: Path, models: Path, tmp_path_factory):
    """musicnn on two real songs, one window each, k = 1 and 3: an adaptive variant with a
    reference and a hard-edged fixed-N one, SLIME and random, all tiny (a separate process)."""
    root = tmp_path_factory.mktemp("evaluate")
    audio = root / "audio"
    audio.mkdir()
    for name in SONGS:
        (audio / name).symlink_to(shared / "audio" / name)
    out = root / "out"
    args = ["--tagger", "musicnn-msd", "--audio", str(audio), "--k", "1", "3", "--windows-per-song", "1",
            "--variant", "auto:num_samples=auto,max_samples=64,reference", "--variant", "hard:edges=hard,num_samples=32",
            "--reference-samples", "96", "--trace-samples", "64", "--slime-samples", "32", "--draws", "4",
            "--curve-draws", "2", "--out", str(out), "--model-dir", str(models)]
    proc = _evaluate(*args)
    return args, out, proc


def _keep(row: dict) -> float:
    """A CSV keep cell: True/False for an explaining method, the share of draws for random."""
    return float(row["keep"] == "True") if row["keep"] in ("True", "False") else float(row["keep"])


def test_tiny_run_writes_all_outputs_with_sane_values(tiny_run):
    """results.csv has one row per (song, window, method, k) with rates in [0, 1]; the reference,
    the curves and the costs are recorded; json, md and figure agree."""
    _, out, proc = tiny_run
    assert "8 results: 0 resumed from the checkpoint, 8 computed" in proc.stdout
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    keys = [(r["song"], r["window"], r["method"], r["k"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 1 * 4 * 2
    assert {r["song"] for r in rows} == set(SONGS) and {r["k"] for r in rows} == {"1", "3"}
    for r in rows:
        assert r["tagger"] == "musicnn-msd"
        if r["keep"] != "":  # random: n/a when too few positives
            assert 0.0 <= _keep(r) <= 1.0
        if r["method"] != "random":
            assert r["keep"] in ("True", "False") and 0 < int(r["components"]) <= int(r["k"])
            assert (r["keep"] == "True") == (r["kept_top_tag"] == r["top_tag"])
            assert 0 <= float(r["deletion_auc"]) <= 1 and 0 <= float(r["insertion_auc"]) <= 1
    assert len({(r["song"], r["top_tag"]) for r in rows}) == 2  # one top tag per window, shared by all methods

    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    auto = [r["result"] for r in items if r["method"] == "auto"]
    for res in auto:
        assert res["stopping"]["masks"] == 64 and res["reference"]["samples"] == 96
        assert len(res["trace"]) == 1 and res["trace"][0]["top"] == res["top_k_set"]  # a replay of the run itself
        assert len(res["deletion"]) == 13 and res["calls"]["metrics"] > 0
    hard = [r["result"] for r in items if r["method"] == "hard"]
    assert all(h["stopping"] == {"rounds": 1, "masks": 32, "reason": "fixed", "stability": h["stability"]} for h in hard)

    doc = json.loads((out / "results.json").read_text())
    assert doc["results"] == 8 and doc["songs"] == sorted(SONGS)
    table = doc["table"]["musicnn-msd"]
    for method in ("auto", "hard", "slime", "random"):
        for k in ("1", "3"):
            cell = table[method]["keep"][k]
            vals = [_keep(r) for r in rows if r["method"] == method and r["k"] == k and r["keep"] != ""]
            assert cell["n"] == len(vals)
            if vals:
                assert cell["rate"] == pytest.approx(np.mean(vals), abs=1e-4)
                assert 0 <= cell["ci_low"] <= cell["rate"] <= cell["ci_high"] <= 1
    assert table["auto"]["reference"]["windows"] == 2 and table["hard"]["reference"] is None
    md = (out / "results.md").read_text()
    assert "## musicnn-msd" in md and "| auto |" in md and "Agreement with the large-N reference" in md

    import matplotlib.image

    img = matplotlib.image.imread(out / "figure.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_rerun_resumes_from_checkpoint(tiny_run):
    """A rerun computes nothing; --from-checkpoint tabulates only the complete windows and computes
    nothing; after losing results (and a torn line) a rerun recomputes just those; a variant changed
    under its name is refused."""
    args, out, _ = tiny_run
    ckpt = out / "items.jsonl"
    before = ckpt.read_text()
    results = (out / "results.csv").read_text()
    proc = _evaluate(*args)
    assert "8 results: 8 resumed from the checkpoint, 0 computed" in proc.stdout
    assert ckpt.read_text() == before and (out / "results.csv").read_text() == results

    first = sorted(SONGS)[0]
    partial = [line for line in before.splitlines() if not ('"method": "hard"' in line and first in line)]
    ckpt.write_text("\n".join(partial) + "\n")
    proc = _evaluate(*args, "--from-checkpoint")  # interim tables: only the window with every method
    assert "4 results: 4 resumed from the checkpoint, 0 computed" in proc.stdout
    with (out / "results.csv").open() as f:
        assert {r["song"] for r in csv.DictReader(f)} == set(SONGS) - {first}
    assert ckpt.read_text() == "\n".join(partial) + "\n"

    kept = [line for line in before.splitlines() if '"method": "hard"' not in line]
    ckpt.write_text("\n".join(kept) + "\n" + '{"song": "torn')  # lost results and an interrupted write
    proc = _evaluate(*args)
    assert "8 results: 6 resumed from the checkpoint, 2 computed" in proc.stdout
    # same seeds, same windows: the recomputed results reproduce the lost ones
    assert (out / "results.csv").read_text() == results

    other = [a if a != "hard:edges=hard,num_samples=32" else "hard:edges=hard,num_samples=40" for a in args]
    proc = _evaluate(*other, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "'hard' results made with other settings" in proc.stderr


# ---------------------------------------------------------------------------------------------
# bad input


def _one_line_error(proc: subprocess.CompletedProcess | tuple[int, str], needle: str) -> None:
    code, err = (proc.returncode, proc.stderr) if isinstance(proc, subprocess.CompletedProcess) else proc
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("audiolime: error:"), err
    assert needle in lines[0], err


@pytest.mark.slow  # seconds of CPU: the full run only
def test_bad_input_in_a_separate_process(tmp_path: Path):
    """Missing --audio directory and an empty one: one line on stderr, non-zero exit."""
    _one_line_error(_evaluate("--audio", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), check=False),
                    "is not a directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    _one_line_error(_evaluate("--audio", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), check=False),
                    "no audio files")


@pytest.mark.parametrize("extra,needle", [
    (["--k", "3", "25"], "--k 25 needs more components: variant default has d' = 12"),
    (["--k", "5", "--slime-segments", "2", "--slime-bands", "2"], "SLIME has d' = 4"),
    (["--variant", "x:num_samples=5"], "--variant x: num_samples must be between d'+1 = 13"),
    (["--variant", "x:kernel=rbf"], "--variant x: kernel must be one of lime, shap"),
    (["--variant", "x:foo=1"], "is not key=value"),
    (["--variant", "x:", "--variant", "x:edges=hard"], "names must differ"),
    (["--reference-samples", "5"], "--reference-samples must be between d'+1 = 13"),
    (["--slime-samples", "many"], "--slime-samples: expected N or auto"),
    (["--windows-per-song", "3", "fcn-msd=2"], "names a tagger that is not evaluated: fcn-msd"),
    (["--windows-per-song", "three"], "expected N or TAGGER=N"),
    (["--windows-per-song", "0"], "N must be between 1 and 100"),
    (["--tagger", "samplecnn"], "invalid choice"),
    (["--k", "0"], "--k"),
    (["--slime-domain", "mel"], "invalid choice"),
])
def test_bad_arguments_are_one_line_errors(extra, needle, shared: Path, models: Path, tmp_path: Path, capsys):
    """Impossible settings are rejected before any model is loaded, as one line, non-zero exit."""
    from audiolime.cli import main

    code = main(["evaluate", "--audio", str(shared / "audio"), "--out", str(tmp_path / "o"),
                 "--model-dir", str(models), *extra])
    _one_line_error((code, capsys.readouterr().err), needle)
    assert not (tmp_path / "o").exists()  # nothing written for a rejected run


def test_evaluate_without_matplotlib_says_so_before_any_work(capsys, monkeypatch, tmp_path):
    """Without the `eval` extra (matplotlib: the figure) `audiolime evaluate` stops at once with one
    line naming the extra, instead of failing at the figure after hours of tagger calls."""
    import importlib.util

    from conftest import cli_error

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    line = cli_error(capsys, ["evaluate", "--audio", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "pip install 'audiolime[eval]'" in line
    assert not (tmp_path / "out").exists()
