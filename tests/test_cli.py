"""`audiolime explain` end to end on real music, and every bad input as a one-line error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolime.cli import main
from conftest import cli_error

KARISSA = "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"


@pytest.fixture(scope="module")
def karissa_run(shared: Path, models: Path, tmp_path_factory) -> tuple[dict, Path]:
    """One real explanation with the default method (adaptive sampling, faded edges) through the
    installed console script (a separate process); its stderr is kept beside the output as stderr.txt."""
    out = tmp_path_factory.mktemp("explain") / "out"
    exe = Path(sys.executable).with_name("audiolime")
    proc = subprocess.run([str(exe), "explain", str(shared / "audio" / KARISSA), "--tag", "female vocalists",
                           "--seed", "0", "--out", str(out), "--json",
                           "--model-dir", str(models)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (out.parent / "stderr.txt").write_text(proc.stderr)
    return json.loads(proc.stdout), out


def test_vocals_hold_top_ranks_for_female_vocalists(karissa_run):
    """The paper's qualitative example: explaining 'female vocalists', the vocals stem ranks first,
    holds most of the top 3 and carries more weight in all than the accompaniment."""
    doc, _ = karissa_run
    target = doc["targets"][0]
    assert target["tag"] == "female vocalists"
    top3 = [c["source"] for c in target["components"][:3]]
    assert top3[0] == "vocals" and top3.count("vocals") >= 2, top3
    weight = {s: sum(c["weight"] for c in target["components"] if c["source"] == s) for s in ("vocals", "accompaniment")}
    assert weight["vocals"] > weight["accompaniment"], weight
    assert target["components"][0]["weight"] > 0.03
    assert target["surrogate_r2"] > 0.5
    assert target["fidelity"]["same_top_tag"] is True
    assert max(doc["prediction"], key=doc["prediction"].get) == "female vocalists"


def test_document_schema_and_counts(karissa_run, shared: Path):
    """explanation.json holds provenance, counts, timings, and ranks every component once."""
    doc, out = karissa_run
    assert json.loads((out / "explanation.json").read_text()) == doc
    from audiolime.audio import decode

    assert doc["audio"]["sha256"] == decode(shared / "audio" / KARISSA).pcm_sha256()
    assert doc["model"]["name"] == "musicnn-msd" and doc["separator"]["model"] == "2stems"
    assert doc["separator"]["residual_rel_rms"] < 1e-3
    stop = doc["stopping"]
    assert doc["sampling"] == {"kernel": "lime", "sampling": "paired", "num_samples": 0, "max_samples": 4096,
                               "stability_threshold": 0.8, "tie_tolerance": 0.05}
    assert stop["reason"] in ("stable", "max_samples", "exhaustive") and stop["rounds"] >= 1
    assert doc["num_samples"] == stop["masks"] and 12 + 1 < doc["unique_samples"] <= stop["masks"] <= 4096
    assert stop["reason"] != "stable" or stop["stability"] >= 0.8
    assert doc["edges"] == {"mode": "fade", "fade": 1.0, "fade_s": 0.5}
    assert doc["seed"] == 0 and len(doc["prediction"]) == 50
    comps = doc["targets"][0]["components"]
    assert sorted(c["rank"] for c in comps) == list(range(1, 13))
    assert len({(c["source"], c["segment"]) for c in comps}) == 12
    assert [c["weight"] for c in comps] == sorted((c["weight"] for c in comps), reverse=True)
    w = doc["audio"]["window"]
    assert w["duration_s"] == 3.0 and 0 <= w["start_s"] <= doc["audio"]["duration_s"] - 3
    for c in comps:
        assert w["start_s"] - 1e-6 <= c["start_s"] < c["end_s"] <= w["start_s"] + 3 + 1e-6
    assert {"scan", "separate", "predict", "fit", "fidelity"} <= set(doc["timings_s"])


def test_faithfulness_is_in_the_document(karissa_run):
    """Every target carries drop-top-k, deletion/insertion curves over d'+1 points (from every
    component on to none, and back), the top-3 ranking stability (bootstrap) and the verdict against
    random 3-sets; the document says what they cost."""
    doc, _ = karissa_run
    target = doc["targets"][0]
    f, keep = target["faithfulness"], target["fidelity"]
    assert f["drop_top_k"]["components"] == keep["components"] and 0 <= f["stability"] <= 1
    dele, ins = f["deletion"]["probabilities"], f["insertion"]["probabilities"]
    assert len(dele) == len(ins) == 13 and dele[0] == ins[-1] and dele[-1] == ins[0]
    assert abs(dele[0] - keep["original_target_probability"]) < 0.05  # all components on ~ the window
    assert 0 <= f["deletion"]["auc"] < f["insertion"]["auc"] <= 1  # vocals first: deleting them hurts at once
    assert f["drop_top_k"]["target_probability"] < keep["original_target_probability"]
    v = f["verdict"]  # the top-k against 16 random 3-sets; the cost counts them (2 windows each, at most)
    assert v["random_sets"] == 16 and 0 <= v["keep_random_as_good"] <= 1 and 0 <= v["drop_random_as_good"] <= 1
    assert v["sufficient"] == (keep["top_tag"] == target["tag"] and v["keep_random_as_good"] <= 0.25)
    assert v["necessary"] == (f["drop_top_k"]["top_tag"] != target["tag"] and v["drop_random_as_good"] <= 0.25)
    assert f"random {keep['top_k']}-sets" in v["summary"] or "does not keep" in v["summary"]
    assert 0 < doc["faithfulness_cost"]["tagger_calls"] <= 2 + 2 * 13 + 2 * 16 and doc["faithfulness_cost"]["seconds"] > 0


def test_written_audio_is_the_listenable_decomposition(karissa_run, shared: Path):
    """WAVs: window is the original excerpt; each component is silent outside its segment and the
    cross-fades around it (half a fade either side); the top-k mix is the sum of its components."""
    doc, out = karissa_run
    window, sr = sf.read(out / "window.wav", always_2d=True)
    assert sr == 44100 and window.shape == (3 * 44100, 2)
    original, _ = sf.read(shared / "audio" / KARISSA, always_2d=True, dtype="float32")
    start = int(round(doc["audio"]["window"]["start_s"] * sr))
    assert np.abs(window - original[start:start + 3 * sr]).max() < 2e-4  # 16-bit PCM
    top = [c for c in doc["targets"][0]["components"] if c["file"]]
    assert len(top) == 3
    mix = np.zeros_like(window)
    for c in top:
        audio, _ = sf.read(out / c["file"], always_2d=True)
        half = int(round(doc["edges"]["fade_s"] / 2 * sr)) + 1
        a, b = int(round((c["start_s"] - doc["audio"]["window"]["start_s"]) * sr)), \
            int(round((c["end_s"] - doc["audio"]["window"]["start_s"]) * sr))
        assert np.abs(audio[:max(a - half, 0)]).max(initial=0) == 0 and np.abs(audio[b + half:]).max(initial=0) == 0
        assert np.sqrt(np.mean(audio[a:b] ** 2)) > 1e-3  # the sung segment is audible
        mix += audio
    topk, _ = sf.read(out / "topk_mix.wav", always_2d=True)
    assert np.abs(topk - mix).max() < 1e-3


def test_out_has_the_listening_report(karissa_run):
    """In-process `explain --out` writes explanation.html beside the manifest, playing exactly the
    files written, and names it on stderr (stdout stays the JSON document)."""
    doc, out = karissa_run
    page = (out / "explanation.html").read_text()
    srcs = set(re.findall(r'<audio id="[^"]+" controls preload="metadata" src="([^"]+)"', page))
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.wav")}
    assert srcs == written and len(written) == 1 + 2 + 3 + 2  # window, stems, top-3, top-k mix, rest mix
    assert f"Why &ldquo;{doc['targets'][0]['tag']}&rdquo;?" in page
    stderr = (out.parent / "stderr.txt").read_text()
    assert f"audiolime: listening report: {out / 'explanation.html'} (open it in a browser)" in stderr


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {"text": tmp_path / "notes.ogg", "empty": tmp_path / "empty.wav", "silent": tmp_path / "silent.wav",
             "short": tmp_path / "short.wav"}
    files["text"].write_text("this is not audio\n")
    files["empty"].write_bytes(b"")
    sf.write(files["silent"], np.zeros((44100, 2), np.float32), 44100)
    t = np.arange(22050) / 22050
    sf.write(files["short"], (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22050)  # 1 s mono 22.05 kHz
    return files


@pytest.mark.parametrize("case,extra,message", [
    ("missing", [], "no such file"),
    ("text", [], "not a readable audio file"),
    ("empty", [], "not a readable audio file"),
    ("silent", [], "is silent"),
])
def test_bad_audio_is_one_line_error(capsys, tmp_path, bad_files, case, extra, message):
    """Unreadable, non-audio, empty and silent inputs fail with one line, exit 2, no --out written."""
    song = bad_files.get(case, tmp_path / "does-not-exist.mp3")
    out = tmp_path / "out"
    line = cli_error(capsys, ["explain", str(song), "--out", str(out), *extra])
    assert message in line and not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--num-samples", "12"], "between d'+1 = 13"),
    (["--num-samples", "65537"], "and 65536, got 65537"),
    (["--segments", "0"], "must be >= 1"),
    (["--segments", "61"], "minimum is 50 ms"),
    (["--start", "500"], "outside the audio"),
    (["--start", "-1"], "must be >= 0"),
    (["--tag", "femal vocals"], "closest valid tags: female vocalist, female vocalists"),
    (["--tagger", "nope"], "nope"),
])
def test_bad_parameters_are_one_line_errors(capsys, shared, models, tmp_path, extra, message):
    """Out-of-range parameters, unknown tags and models: one line naming the problem, nothing in --out."""
    out = tmp_path / "out"
    argv = ["explain", str(shared / "audio" / KARISSA), "--out", str(out), "--model-dir", str(models), *extra]
    line = cli_error(capsys, argv)
    assert message in line
    assert not out.exists()


def test_short_audio_is_zero_padded_with_warning(capsys, models, bad_files, tmp_path):
    """Audio shorter than the model window is explained, zero-padded, with a warning in the document."""
    out = tmp_path / "out"
    code = main(["explain", str(bad_files["short"]), "--num-samples", "64", "--segments", "2", "--json",
                 "--out", str(out), "--model-dir", str(models)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert any("shorter than the model window" in w for w in doc["warnings"])
    assert doc["exhaustive"] and doc["unique_samples"] == 16
    window, sr = sf.read(out / "window.wav", always_2d=True)
    assert sr == 22050 and window.shape == (int(3 * 22050), 1)
    assert np.abs(window[22050 + 10:]).max() == 0  # padding is silence


def test_hpss_separator_in_the_cli(capsys, models, shared, tmp_path):
    """--separator 2stems+hpss explains vocals / harmonic / percussive x segments from the 2stems
    weights, with listenable components that still sum to the window."""
    out = tmp_path / "out"
    code = main(["explain", str(shared / "audio" / "admiralbob77_-_Choice_-_Drum-bass.ogg"), "--start", "10",
                 "--separator", "2stems+hpss", "--segments", "2", "--num-samples", "64", "--json", "--out", str(out),
                 "--model-dir", str(models)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["separator"]["model"] == "2stems+hpss" and doc["separator"]["stems"] == ["vocals", "harmonic", "percussive"]
    assert doc["num_components"] == 6 and {c["source"] for c in doc["targets"][0]["components"]} == {
        "vocals", "harmonic", "percussive"}
    assert doc["separator"]["residual_rel_rms"] < 1e-3 and doc["exhaustive"]


def test_interim_rankings_print_live_on_a_terminal_only():
    """Each adaptive round's ranking is one line above the progress bar on a terminal (the
    component's name, its weight, the tag's stability); piped output gets no such lines."""
    import io

    from rich.console import Console

    from audiolime.commands.explain import ProgressBar
    from audiolime.method.events import Event, RankedSoFar, Ranking
    from audiolime.method.factorization import Component

    ranking = Ranking(2, 512, (RankedSoFar("rock", 0.834, ((Component(7, "vocals", 3, 3.0, 4.0), 0.12),
                                                           (Component(1, "accompaniment", 1, 1.0, 2.0), -0.05))),))
    shown = {}
    for terminal in (True, False):
        out = io.StringIO()
        with ProgressBar(Console(file=out, force_terminal=terminal, width=200)) as bar:
            bar(Event("predict", 256, 512))
            bar(ranking)
        shown[terminal] = out.getvalue()
    assert ("round 2, 512 masks | rock (stability 0.83): vocals[3] 3.00\u20134.00 s +0.120, "
            "accompaniment[1] 1.00\u20132.00 s -0.050") in shown[True]
    assert "round 2" not in shown[False]
