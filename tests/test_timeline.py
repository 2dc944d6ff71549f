"""Song timelines (audiolime.method.timeline): window tiling and its limits, the song-level
combination on a fake tagger and fake stems whose cause is known, the document, and one tiny real
run through ``audiolime timeline``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audiolime.errors import InvalidInput
from audiolime.method.engine import Engine
from audiolime.method.events import Event
from audiolime.method.request import ExplainRequest
from audiolime.method.stems import Stems
from audiolime.method.timeline import (
    MAX_TIMELINE_WINDOWS,
    TimelineRequest,
    explain_timeline,
    make_timeline_plan,
    tile_starts,
)
from audiolime.method.waveform import Audio, AudioHeader

RATE = 8000
SONG_S = 10
VOICE = (6.0, 6.5)  # the only place the vocals sound
TONE_HZ = 1000.0


def test_tiles_cover_the_range_with_the_last_window_clamped() -> None:
    assert tile_starts(100, 30, 0, 100).tolist() == [0, 30, 60, 70]
    assert tile_starts(100, 30, 0, 90).tolist() == [0, 30, 60]  # exact: no clamped window
    assert tile_starts(100, 30, 10, 65).tolist() == [10, 35]
    assert tile_starts(100, 30, 90, 100).tolist() == [70]  # shorter than a window: moved back inside
    assert tile_starts(20, 30, 0, 20).tolist() == [0]  # the signal is shorter than a window


class ToneTagger:
    """1 s windows at 8 kHz: 'voice' is the amplitude of a 1 kHz tone (the fake vocals), 'noise' a
    little above nothing plus the window's loudness. Counts the windows it is given."""

    name, version, labels, sample_rate, window_samples = "tone", 1, ["noise", "voice"], RATE, RATE

    def __init__(self) -> None:
        self.windows = 0
        t = np.arange(RATE) / RATE
        self._sin, self._cos = np.sin(2 * np.pi * TONE_HZ * t), np.cos(2 * np.pi * TONE_HZ * t)

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.windows += len(x)
        amp = 2 / x.shape[1] * np.hypot(x @ self._sin, x @ self._cos)
        rms = np.sqrt(np.mean(x ** 2, axis=1))
        return np.stack([0.02 + 0.3 * np.tanh(rms), np.tanh(20 * amp)], axis=1).astype(np.float32)


def fake_song() -> tuple[Audio, dict[str, np.ndarray]]:
    t = np.arange(SONG_S * RATE) / RATE
    vocals = np.where((t >= VOICE[0]) & (t < VOICE[1]), 0.3 * np.sin(2 * np.pi * TONE_HZ * t), 0.0)
    accompaniment = 0.1 * np.random.default_rng(0).standard_normal(len(t))
    stems = {"vocals": vocals[None].astype(np.float32), "accompaniment": accompaniment[None].astype(np.float32)}
    return Audio((stems["vocals"] + stems["accompaniment"]), RATE), stems


class KnownStems:
    """The stems the fake song was made of, exactly."""

    def __init__(self, stems: dict[str, np.ndarray]) -> None:
        self.stems = stems

    def window(self, audio: Audio, start: int, end: int) -> Stems:
        return Stems({k: v[:, start:end] for k, v in self.stems.items()}, RATE, "known", 0.0)


def run(timeline: TimelineRequest = TimelineRequest(), events=None, **request):
    audio, stems = fake_song()
    tagger = ToneTagger()
    fields = dict(tags=("voice",), num_samples=64, segments=4, top_k=2, edges="hard")
    fields.update(request)
    tplan = make_timeline_plan(ExplainRequest(model="tone", **fields).validate(), timeline, tagger, audio.header)
    result = explain_timeline(tplan, audio, "fake.wav", tagger, KnownStems(stems),
                              Engine(tagger.predict, tagger.labels, batch_size=16), events or (lambda _: None))
    return result, tagger


def test_the_top_moment_is_where_the_cause_is_and_keep_drop_agree() -> None:
    result, _ = run()
    assert [w.start_s for w in result.windows] == [float(s) for s in range(SONG_S)]
    top = result.moments[0]
    assert top.stem == "vocals" and top.window == 6 and VOICE[0] <= top.start_s < VOICE[1]
    # the two vocal segments of window 6 lead; nothing else carries 'voice'
    assert {(m.stem, m.window, m.segment) for m in result.moments[:2]} == {("vocals", 6, 0), ("vocals", 6, 1)}
    f = result.faithfulness
    assert f.keep_top_tag == "voice" and f.drop_top_tag == "noise"
    assert f.verdict.sufficient and f.verdict.necessary, f.verdict.summary
    assert f.keep_probability > f.keep_random.max() and f.drop_probability < f.drop_random.min()


def test_song_numbers_are_the_mean_of_the_windows() -> None:
    result, tagger = run()
    probs = [w.probability for w in result.windows]
    assert result.song_probability == pytest.approx(np.mean(probs))
    assert result.faithfulness.original_probability == pytest.approx(np.mean(probs))
    assert result.song_intercept == pytest.approx(np.mean([w.intercept for w in result.windows]))
    segs = 4
    for stem in result.stems:
        assert len(stem.weights) == len(result.windows) * segs
        assert np.all(np.diff(stem.starts_s) > 0)  # time order
    # the song weights are the window weights / windows
    assert result.song_weights.shape == (SONG_S, 2 * segs)
    assert result.moments[0].weight == pytest.approx(result.song_weights.max())
    cost = result.cost
    assert cost.tagger_calls == tagger.windows  # every tagger window is counted, none twice
    assert cost.masks_x_windows == SONG_S * 64
    assert cost.tagger_calls == cost.scan + cost.predictions + cost.masks + cost.window_checks + cost.song_checks
    assert cost.ratio < 1.5


def test_without_a_tag_the_song_top_tag_is_scanned_first() -> None:
    seen: list[Event] = []
    result, _ = run(events=lambda e: seen.append(e) if isinstance(e, Event) else None, tags=())
    stages = [e.stage for e in seen]
    assert stages[0] == "scan" and stages[-1] == "song-fidelity"
    assert [e.done for e in seen if e.stage == "window"] == list(range(SONG_S))
    assert stages[1:4] == ["window", "separate", "predict"]
    assert result.cost.scan == SONG_S
    assert result.tag == "voice" == result.tagger.labels[int(np.argmax(result.song_prediction))]


def test_a_range_and_its_limits() -> None:
    result, _ = run(TimelineRequest(start_s=2.0, end_s=4.5))
    assert [(w.start_s, w.end_s) for w in result.windows] == [(2.0, 3.0), (3.0, 4.0), (3.5, 4.5)]
    header = AudioHeader(RATE, 1, 200 * RATE)
    request = ExplainRequest(model="tone", tags=("voice",), num_samples=64, segments=4, top_k=2).validate()
    tagger = ToneTagger()
    with pytest.raises(InvalidInput, match="max_windows") as err:
        make_timeline_plan(request, TimelineRequest(), tagger, header)
    assert err.value.field == "max_windows" and f"max_windows {MAX_TIMELINE_WINDOWS}" in str(err.value)
    assert make_timeline_plan(request, TimelineRequest(max_windows=200), tagger, header).windows == 200
    for timeline, name in ((TimelineRequest(start_s=300), "start_s"), (TimelineRequest(end_s=201), "end_s"),
                           (TimelineRequest(start_s=5, end_s=5), "end_s"), (TimelineRequest(max_windows=0),
                                                                            "max_windows")):
        with pytest.raises(InvalidInput, match=name) as err:
            make_timeline_plan(request, timeline, tagger, header)
        assert err.value.field == name
    with pytest.raises(InvalidInput, match="one tag"):
        make_timeline_plan(ExplainRequest(model="tone", tags=("voice", "noise")).validate(), TimelineRequest(),
                           tagger, AudioHeader(RATE, 1, 10 * RATE))
    # the tagger-cost budget covers every window
    with pytest.raises(InvalidInput, match="max-tagger-seconds"):
        make_timeline_plan(ExplainRequest(model="tone", tags=("voice",), num_samples=4096, segments=4).validate(),
                           TimelineRequest(max_windows=200), tagger, header)
    capped = make_timeline_plan(ExplainRequest(model="tone", tags=("voice",), segments=4).validate(),
                                TimelineRequest(max_windows=200), tagger, header)
    assert capped.window_request.max_samples < 4096 and "capped" in capped.warnings[0]


def test_the_document_round_trips_and_is_consistent() -> None:
    from audiolime.explanation.timeline import TIMELINE_KIND, TimelineDocument, describe_timeline

    result, _ = run()
    doc = describe_timeline(result)
    data = json.loads(doc.dumps())
    assert data["kind"] == TIMELINE_KIND and data["version"] == 2
    assert TimelineDocument.loads(doc.dumps()) == doc
    check_document(data, segments=4)
    # version 1 (no files) still reads: the file fields are optional
    v1 = {**data, "version": 1, "audio": {**data["audio"], "range": {k: v for k, v in data["audio"]["range"].items()
                                                                     if k != "mix_file"}},
          "stems": [{k: v for k, v in s.items() if k != "file"} for s in data["stems"]],
          "top_moments": [{k: v for k, v in m.items() if k != "file"} for m in data["top_moments"]]}
    old = TimelineDocument.loads(json.dumps(v1))
    assert old.version == 1 and old.files() == [] and old.stems == doc.stems
    with pytest.raises(InvalidInput, match="version 3"):
        TimelineDocument.loads(json.dumps({**data, "version": 3}))


def check_document(data: dict, segments: int) -> None:
    """What every timeline document holds, whatever the tagger."""
    windows = data["windows"]
    assert data["song"]["probability"] == pytest.approx(np.mean([w["probability"] for w in windows]), abs=1e-5)
    for stem in data["stems"]:
        assert len(stem["timeline"]) == len(windows) * segments
        assert [p["window"] for p in stem["timeline"]] == [i for i in range(len(windows)) for _ in range(segments)]
    assert data["top_moments"][0]["rank"] == 1
    weights = sorted((p["weight"] for s in data["stems"] for p in s["timeline"]), reverse=True)
    assert [m["weight"] for m in data["top_moments"]] == weights[:len(data["top_moments"])]
    f = data["faithfulness"]
    assert f["verdict"]["random_sets"] == len(f["keep_random"]) == len(f["drop_random"])
    c = data["cost"]
    assert c["tagger_calls"] == c["scan"] + c["predictions"] + c["masks"] + c["window_checks"] + c["song_checks"]
    assert c["masks_x_windows"] == sum(w["stopping"]["masks"] for w in windows)


def test_timeline_cli_on_real_music(shared: Path, models: Path, tmp_path: Path) -> None:
    """musicnn on 20-30 s of a real song, 32 masks per window, through the console entry point;
    ``--out`` writes the document, the clips, the stems and mix of the range and the report."""
    out = tmp_path / "tl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "audiolime.cli", "timeline",
                           str(shared / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"), "--tag", "female vocalists",
                           "--start", "20", "--end", "30", "--num-samples", "32", "--out", str(out),
                           "--model-dir", str(models)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "timeline.json").read_text())
    assert data["tag"] == "female vocalists" and data["model"]["name"] == "musicnn-msd"
    assert [w["start_s"] for w in data["windows"]] == [20.0, 23.0, 26.0, 27.0]
    check_document(data, segments=6)
    assert {s["name"] for s in data["stems"]} == {"vocals", "accompaniment"}
    assert "vocals" in proc.stdout and "accompaniment" in proc.stdout  # the per-stem summary
    check_clips(out, data, shared / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")


def check_clips(out: Path, data: dict, song: Path) -> None:
    """What ``--out`` makes listenable: the mix of the range is the song there, each stem file the
    stem over the range, each top moment's clip that stem over the moment's time (equal but for the
    fade at its edges), at the stems' (the song's) rate; the report plays exactly these files."""
    import html
    import re

    import soundfile as sf

    from audiolime.audio import decode
    from audiolime.explanation.timeline import CLIP_FADE_S

    assert data["version"] == 2
    audio = decode(song)
    rate, a0 = audio.sample_rate, int(round(data["audio"]["range"]["start_s"] * audio.sample_rate))
    q = 1 / 32768 + 1e-6  # 16-bit
    mix, r = sf.read(out / data["audio"]["range"]["mix_file"], dtype="float32", always_2d=True)
    assert r == rate and mix.shape[1] == audio.channels
    assert len(mix) == int(round(data["audio"]["range"]["end_s"] * rate)) - a0
    np.testing.assert_allclose(mix.T, np.clip(audio.waveform[:, a0:a0 + len(mix)], -1, 1), atol=q)
    stems = {}
    for s in data["stems"]:
        stems[s["name"]], r = sf.read(out / s["file"], dtype="float32", always_2d=True)
        assert r == rate and stems[s["name"]].shape == mix.shape
    residual = mix - sum(stems.values())
    assert np.sqrt(np.mean(residual ** 2)) < 0.5 * np.sqrt(np.mean(mix ** 2))  # the stems make up the mix
    fade = int(round(CLIP_FADE_S * rate))
    for m in data["top_moments"]:
        clip, r = sf.read(out / m["file"], dtype="float32", always_2d=True)
        a, b = int(round(m["start_s"] * rate)) - a0, int(round(m["end_s"] * rate)) - a0
        assert r == rate and clip.shape == (b - a, audio.channels)
        stem = stems[m["stem"]][a:b]
        np.testing.assert_allclose(clip[fade:-fade], stem[fade:-fade], atol=q)
        assert np.all(np.abs(clip[:fade]) <= np.abs(stem[:fade]) + q)  # faded in, never louder
        assert np.all(np.abs(clip[-fade:]) <= np.abs(stem[-fade:]) + q)
    page = (out / "timeline.html").read_text()
    srcs = {html.unescape(x) for x in re.findall(r'<audio [^>]*src="([^"]+)"', page)}
    assert srcs == {data["audio"]["range"]["mix_file"], *(s["file"] for s in data["stems"]),
                    *(m["file"] for m in data["top_moments"])}
    assert all((out / x).is_file() for x in srcs)


def test_timeline_cli_refuses_bad_input_in_one_line(shared: Path, capsys) -> None:
    from audiolime.cli import main

    song = str(shared / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    assert main(["timeline", song, "--start", "30", "--end", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "end_s" in err[0]
