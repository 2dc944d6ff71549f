"""The planted-cause evaluation (`audiolime evaluate --planted`): case construction and scoring on
their own, then one tiny real run (musicnn, Spleeter, real songs) in a separate process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audiolime.errors import InvalidInput
from audiolime.evaluation.config import EvalConfig, Variant
from audiolime.evaluation.planted import (
    CASE,
    Base,
    PlantedConfig,
    Source,
    arrange,
    best_phrase,
    plant,
    planted_components,
    planted_variants,
    score,
    segment_span,
    slime_slots,
    summarize,
    validate_planted,
)
from audiolime.method.factorization import StemSegmentFactorization

EXE = str(Path(sys.executable).with_name("audiolime"))


def test_plant_scales_to_the_gain_and_touches_only_its_samples():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.1, (2, 44100)).astype(np.float32)
    src = rng.normal(0, 0.5, (2, 8820)).astype(np.float32)
    for gain_db in (6.0, 0.0, -6.0):
        mix, gain = plant(base, src, 10000, gain_db, 44100)
        added = mix - base
        assert np.all(added[:, :10000] == 0) and np.all(added[:, 18820:] == 0)
        ratio = np.sqrt(np.mean(added[:, 10000:18820] ** 2)) / np.sqrt(np.mean(base[:, 10000:18820] ** 2))
        assert 20 * np.log10(ratio) == pytest.approx(gain_db, abs=1e-3)
        assert abs(added[0, 10000]) < abs(src[0, 0]) * gain  # faded in, no click of its own
    with pytest.raises(ValueError):
        plant(base, src, 40000, 0.0, 44100)


def test_planted_segments_are_the_factorization_components_of_that_time_and_stem():
    """The span of segments 2-3 at the file rate is where the factorization puts components 2, 3
    (vocals) and 8, 9 (accompaniment): the scoring's ground truth is the engine's own grid."""
    w, sr_t, sr = 48000, 16000, 44100
    a, b = segment_span(w, 6, 2, 2, sr / sr_t)
    assert (a, b) == (44100, 88200)
    stems = {"vocals": np.zeros(w, np.float32), "accompaniment": np.zeros(w, np.float32)}
    fact = StemSegmentFactorization(stems, sr_t, 6, 0.0, edges="fade", fade=1.0)
    t0, t1 = a / sr, b / sr
    assert planted_components(fact.info, "vocals", t0, t1) == [2, 3]
    assert planted_components(fact.info, None, t0, t1) == [2, 3, 8, 9]
    assert planted_components(slime_slots(12, 6, 3.0), None, t0, t1) == [2, 3, 8, 9]  # band-major rectangles


def test_score_top1_recall_and_time_hit():
    w = np.zeros(12)
    w[[2, 9, 3]] = [0.5, 0.9, 0.1]  # the accompaniment in the planted time first, then one vocals component
    s = score(w, [2, 3], [2, 3, 8, 9])
    assert not s["top1"] and s["time_hit"] and s["recall"] == 0.5 and s["order"][:3] == [9, 2, 3]
    w[3] = 1.0
    s = score(w, [2, 3], [2, 3, 8, 9])
    assert s["top1"] and s["recall"] == 0.5  # 3 first, then 9: one of the two in the top 2


def test_best_phrase_finds_the_loud_stretch():
    stem = np.zeros((1, 1000), np.float32)
    stem[0, 600:700] = 1.0
    mix = stem + 0.1
    at, share = best_phrase(stem, mix, 100)
    assert at == 600 and share > 0.9
    assert best_phrase(stem, mix, 2000) == (0, 0.0)


def _base(song: str, start: int) -> Base:
    return Base(song, start, start, start + 10, 0.01)


def _source(song: str, at: int) -> Source:
    return Source(song, at, 0.8, np.zeros((1, 10), np.float32))


def test_cases_vary_every_factor_and_never_plant_a_song_into_itself():
    bases = [_base("a", 0), _base("a", 100), _base("b", 0)]
    sources = [_source("a", 5), _source("c", 7)]
    cases = arrange("vocals", bases, sources, (6.0, 0.0), 5, 12)
    assert len(cases) == 12 and len({c.id for c in cases}) == 12
    assert all(c.source.song != c.base.song for c in cases)
    assert {c.first for c in cases} == set(range(5)) and {c.gain_db for c in cases} == {6.0, 0.0}
    assert {c.base for c in cases} == set(bases)
    assert arrange("vocals", bases, sources, (6.0, 0.0), 5, 12) == cases  # deterministic
    assert len(arrange("vocals", bases, sources, (0.0,), 1, 100)) == 4  # every combination once at most


def _cfg(**kw) -> PlantedConfig:
    return PlantedConfig(EvalConfig(taggers=("musicnn-msd",), audio_dir="x", variants=planted_variants(["vocals"])),
                         **kw)


def test_summary_scores_only_cases_the_plant_caused():
    cfg = _cfg()
    recs = []
    for i, (rise, hit) in enumerate([(0.2, True), (0.1, True), (0.3, False), (0.01, True)]):
        cid = f"case{i}"
        recs.append({"song": cid, "tagger": "t", "window": 0, "method": CASE,
                     "result": {"kind": "vocals", "rise": rise, "scored": rise >= cfg.min_rise}})
        recs.append({"song": cid, "tagger": "t", "window": 0, "method": "default",
                     "result": {"planted": {"top1": hit, "time_hit": True, "recall": 1.0 if hit else 0.5, "k": 2,
                                            "chance": 2 / 12, "masks": 300}}})
    t = summarize(recs)["t"]["vocals"]
    assert t["built"] == 4 and t["scored"] == 3 and t["median_rise"] == pytest.approx(0.15)
    m = t["methods"]["default"]
    assert m["n"] == 3 and m["top1"]["rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert 0 < m["top1"]["ci_low"] < 2 / 3 < m["top1"]["ci_high"] < 1
    assert m["recall"]["rate"] == pytest.approx(5 / 6, abs=1e-4) and m["recall"]["k"] == [2]
    assert t["methods"]["random"]["top1"]["rate"] == pytest.approx(2 / 12, abs=1e-4)


@pytest.mark.parametrize("kw, needle", [
    ({"kinds": ("guitar",)}, "--planted: give kinds among vocals, percussive"),
    ({"planted_segments": 6}, "--planted-segments must be between 1 and 5"),
    ({"gains_db": (60.0,)}, "--planted-gains"),
    ({"min_rise": 1.5}, "--planted-min-rise"),
    ({"cases": 0}, "--planted-cases"),
])
def test_impossible_plants_are_refused(kw, needle):
    with pytest.raises(InvalidInput, match=needle):
        validate_planted(_cfg(**kw))


def test_a_variant_on_another_grid_is_refused():
    cfg = PlantedConfig(EvalConfig(taggers=("musicnn-msd",), audio_dir="x",
                                   variants=(Variant("v", (("segments", 4),)),)))
    with pytest.raises(InvalidInput, match="same number of segments"):
        validate_planted(cfg)


def test_bad_kind_on_the_command_line_is_one_line(shared: Path, models: Path, tmp_path: Path):
    proc = subprocess.run([EXE, "evaluate", "--planted", "guitar", "--audio", str(shared / "audio"),
                           "--out", str(tmp_path / "o"), "--model-dir", str(models)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--planted: give kinds among" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_tiny_planted_run_on_real_music(shared: Path, models: Path, tmp_path: Path):
    """One vocal phrase of Karissa Hobbs planted into Brahms at +6 dB, explained by a small fixed-N
    audioLIME and SLIME: the case records a real rise of the tag it explains, the planted components
    are vocals in the planted segments, scores agree with the weights; a rerun computes nothing."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("Brahms_-_Hungarian_Dance_No5_string_orchestra.ogg", "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"):
        (audio / name).symlink_to(shared / "audio" / name)
    out = tmp_path / "out"
    args = [EXE, "evaluate", "--planted", "vocals", "--tagger", "musicnn-msd", "--audio", str(audio),
            "--planted-cases", "1", "--planted-gains", "6", "--planted-min-rise", "0", "--k", "1", "2",
            "--variant", "small:num_samples=64", "--slime-samples", "32", "--out", str(out),
            "--model-dir", str(models)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "planted.json").read_text())
    (case,) = doc["cases"]
    assert case["base_song"].startswith("Brahms") and case["source_song"].startswith("Karissa")
    assert case["rise"] == pytest.approx(case["p_planted"] - case["p_base"], abs=2e-6) and case["scored"]
    assert len(case["planted_segments"]) == 2 and case["source_share"] >= 0.5 and case["base_share"] <= 0.15
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    small = next(r["result"] for r in items if r["method"] == "small")
    first = case["planted_segments"][0]
    assert small["planted"]["components"] == [first, first + 1]  # vocals (index 0..5) in the planted segments
    order = small["planted"]["order"]
    assert order[0] == int(np.argmax(small["weights"])) and small["planted"]["top1"] == (order[0] in [first, first + 1])
    slime = next(r["result"] for r in items if r["method"] == "slime")
    assert slime["planted"]["components"] == [first, first + 1, first + 6, first + 7]
    t = doc["table"]["musicnn-msd"]["vocals"]
    assert t["built"] == 1 and t["scored"] == 1 and set(t["methods"]) == {"small", "slime", "random"}
    assert "## musicnn-msd, planted vocals" in (out / "planted.md").read_text()
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and (out / "items.jsonl").read_text().count("\n") == len(items)


def test_a_small_run_still_varies_positions_gains_and_sources():
    bases = [_base(song, start) for song in "abcdef" for start in (0, 100, 200)]
    sources = [_source("s", at) for at in (1, 2, 3, 4)]
    cases = arrange("vocals", bases, sources, (6.0, 0.0), 5, 10)
    assert len({c.id for c in cases}) == 10
    assert {c.first for c in cases} == set(range(5)) and {c.gain_db for c in cases} == {6.0, 0.0}
    assert len({c.source.at for c in cases}) >= 3 and len({c.base.song for c in cases}) >= 4
