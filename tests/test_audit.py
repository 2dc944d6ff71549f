"""Catalog audits (audiolime.method.audit, audiolime.method.catalog, ``audiolime audit``): the
aggregation and its intervals on hand-made records, outliers, diffs and their threshold; the runner
on fake taggers and a fake separator whose causes are known (tests/audit_fakes.py); resumption
from the checkpoint (a torn line, a SIGKILL); refusals in one line; one small real run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from audit_fakes import RATE, BandSeparator, install, song, tone_1k, tone_3k, write_songs

from audiolime.auditdir import find_songs, load_records
from audiolime.errors import InvalidInput
from audiolime.method.audit import AuditRecord, diff, pick_windows, profile, profiles, regressions, wilson
from audiolime.method.catalog import audit_song
from audiolime.method.engine import Engine
from audiolime.method.request import ExplainRequest
from audiolime.method.stems import STEM_RATE, LocalSeparation
from audiolime.method.waveform import Audio

STEMS = ("vocals", "accompaniment")


def rec(song: str, window: int, weights: list[float], tagger: str = "a@1", tag: str = "voice") -> AuditRecord:
    return AuditRecord(tagger, song, window, 3.0 * window, 3.0 * window + 3.0, tag, 0.9, 0.8, STEMS, 2,
                       tuple(weights))


# -- aggregation -------------------------------------------------------------------------------------
def test_wilson_known_values() -> None:
    """Textbook Wilson 95 % intervals (the one definition, ``method.stats``, rounded to 4 places)."""
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert wilson(5, 5) == pytest.approx((0.5655, 1.0), abs=1e-4)
    assert wilson(37, 50) == pytest.approx((0.6045, 0.8413), abs=1e-4)


def test_a_profile_counts_top_components_and_positive_shares() -> None:
    records = [rec(f"s{i}", 0, [0.5, 0.1, 0.2, 0.0]) for i in range(4)]  # vocals[0] top, vocals 75 % of + weight
    records.append(rec("odd", 0, [0.0, 0.1, 0.6, -0.3]))  # accompaniment[0] top, 6/7 of + weight
    records.append(rec("odd", 1, [-0.1, -0.2, -0.1, 0.0]))  # no positive weight: no top, no share
    p = profile(records)
    assert (p.n, p.positive, p.songs, p.majority) == (6, 5, 5, "vocals")
    vocals, acc = p.stems
    assert (vocals.top1, acc.top1) == (4, 1)
    assert vocals.top1_share == pytest.approx(4 / 6, abs=1e-4) and vocals.top1_ci == wilson(4, 6)
    assert vocals.weight_share == pytest.approx((4 * 0.6 / 0.8 + 0.1 / 0.7) / 5, abs=1e-4)
    assert vocals.weight_share + acc.weight_share == pytest.approx(1.0, abs=1e-3)
    assert vocals.weight_ci[0] < vocals.weight_share < vocals.weight_ci[1]
    assert [r.top1 for r in p.positions] == [5, 0]  # the top component is always in the first segment
    assert p.grid["vocals"][0] == pytest.approx(4 * 0.5 / 0.8 / 5, abs=1e-4)
    # the outlier is the song whose dominant stem is the accompaniment, with the windows to listen to
    assert p.outliers == ("odd",)
    odd = next(s for s in p.song_table if s.song == "odd")
    assert odd.dominant == "accompaniment" and odd.deviation == max(s.deviation for s in p.song_table)
    assert [w.top_component for w in odd.windows] == ["accompaniment[0] 0.00\u20131.50 s",
                                                      "none (no positive weight)"]


def test_a_profile_refuses_mixed_records() -> None:
    with pytest.raises(InvalidInput, match="no explanations"):
        profile([])
    with pytest.raises(InvalidInput, match="one tagger, tag"):
        profile([rec("a", 0, [1, 0, 0, 0]), rec("b", 0, [1, 0, 0, 0], tag="rock")])
    with pytest.raises(InvalidInput, match="4 weights"):
        AuditRecord("a@1", "s", 0, 0, 3, "voice", 0.5, 0.5, STEMS, 3, (1.0, 0.0, 0.0, 0.0))


def test_a_diff_measures_the_shift_and_the_threshold_decides() -> None:
    songs = [f"s{i}" for i in range(5)]
    a = profiles([rec(s, 0, [0.6, 0.2, 0.2, 0.0], "a@1") for s in songs])  # vocals 80 %
    b = profiles([rec(s, 0, [0.6, 0.2, 0.2, 0.0], "b@1") for s in songs[:3]]
                 + [rec(s, 0, [0.0, 0.0, 0.5, 0.5], "b@1") for s in songs[3:]])  # two songs moved
    (shift,) = diff({t: p for (_, t), p in a.items()}, {t: p for (_, t), p in b.items()})
    assert shift.tag == "voice" and shift.songs == 5
    assert shift.shift == pytest.approx(2 / 5 * 0.8, abs=1e-3)  # 2 of 5 songs moved 0.8 of their weight
    assert [c.song for c in shift.changed[:2]] == ["s3", "s4"] and shift.changed[0].change == pytest.approx(0.8)
    assert shift.changed[0].dominant_a == "vocals" and shift.changed[0].dominant_b == "accompaniment"
    assert shift.changed[-1].change == 0.0
    assert regressions([shift], 0.3) == [shift] and regressions([shift], 0.4) == []
    with pytest.raises(InvalidInput, match="max_shift"):
        regressions([shift], 1.5)


def test_windows_are_the_most_probable_and_never_overlap() -> None:
    starts = np.arange(0, 10) * 50  # hop 50, window 100
    scores = np.array([0, 1, 9, 8, 2, 7, 0, 0, 6, 5], float)
    assert pick_windows(starts, scores, 100, 1) == [100]
    assert pick_windows(starts, scores, 100, 3) == [100, 250, 400]  # 150 overlaps 100, skipped
    assert pick_windows(starts, scores, 100, 16) == [0, 100, 250, 400]  # greedy: no more fit


# -- the runner on fakes whose cause is known --------------------------------------------------------
def run_fake(songs: dict[str, np.ndarray], taggers, done=None, windows: int = 2, **request):
    source = LocalSeparation(lambda w: BandSeparator().separate(w, STEM_RATE).stems, "band", cache_chunks=2)
    pairs = [(t, Engine(t.predict, t.labels, batch_size=16)) for t in taggers]
    fields = dict(tags=("voice",), num_samples=48, segments=4, top_k=2, edges="hard", curves="off")
    fields.update(request)
    req = ExplainRequest(model=taggers[0].name, **fields).validate()
    done = {} if done is None else done
    saved: list[list[AuditRecord]] = []
    outcomes = [audit_song(name, Audio(wave[None], RATE), pairs, source, req, windows, done, saved.append)
                for name, wave in songs.items()]
    return done, saved, outcomes


def catalog() -> dict[str, np.ndarray]:
    return {"a.wav": song((0.5, 2.5), seed=0), "b.wav": song((1.0, 3.0), seed=1), "c.wav": song((0.0, 2.0), seed=2),
            "odd.wav": song((1.0, 3.0), hz=1030.0, seed=3)}


def test_the_audit_finds_the_stem_that_carries_the_tag_and_the_odd_song() -> None:
    done, saved, outcomes = run_fake(catalog(), [tone_1k()])
    assert [o.explained for o in outcomes] == [2, 2, 2, 2] and len(saved) == 8
    records = list(done.values())
    assert all(r.stems == ("vocals", "accompaniment") and r.segments == 4 for r in records)
    # the two windows of a song do not overlap and are where the tone sounds
    for name in catalog():
        a, b = sorted(r.start_s for r in records if r.song == name)
        assert b - a >= 1.0
    (p,) = profiles(records).values()
    assert p.majority == "vocals" and p.n == 8 and p.songs == 4
    assert p.outliers == ("odd.wav",)  # its 1030 Hz tone is left in the accompaniment by the separator
    vocals = p.stems[0]
    assert vocals.top1 == 6 and vocals.top1_ci == wilson(6, 8)


def test_a_diff_of_two_taggers_shows_the_shift_with_examples() -> None:
    songs = {k: v for k, v in catalog().items() if k != "odd.wav"}
    done, _, _ = run_fake(songs, [tone_1k(), tone_3k()], windows=1)
    by = {}
    for (tid, tag), p in profiles(done.values()).items():
        by.setdefault(tid, {})[tag] = p
    a, b = by["tone-1k@1"]["voice"], by["tone-3k@1"]["voice"]
    assert (a.majority, b.majority) == ("vocals", "accompaniment")
    (shift,) = diff(by["tone-1k@1"], by["tone-3k@1"])
    assert shift.shift > 0.6 and regressions([shift], 0.5) == [shift]
    assert shift.songs == 3 and all(c.dominant_a == "vocals" and c.dominant_b == "accompaniment"
                                    for c in shift.changed)
    assert all(c.windows_a and c.windows_b for c in shift.changed)


def test_windows_in_the_checkpoint_are_not_explained_again() -> None:
    tagger = tone_1k()
    done, _, _ = run_fake(catalog(), [tagger])
    first = tagger.windows
    partial = {k: v for k, v in done.items() if not (k[1] == "b.wav" and k[2] == 1) and k[1] != "odd.wav"}
    again = tone_1k()
    done2, saved, outcomes = run_fake(catalog(), [again], done=dict(partial))
    assert [(o.explained, o.resumed) for o in outcomes] == [(0, 2), (1, 1), (0, 2), (2, 0)]
    assert len(saved) == 3
    assert done2 == done  # deterministic: the same records as the uninterrupted run
    # resuming cost the scans and the three windows, not the five explained before
    scans = 4 * 7  # each song's scan: 4 s at half-window hops
    assert again.windows - scans == pytest.approx((first - scans) * 3 / 8, rel=0.3)


# -- the command -----------------------------------------------------------------------------------
def audit_cli(args: list[str], monkeypatch, taggers=None) -> int:
    from audiolime.cli import main

    install(monkeypatch, taggers or {"tone-1k": tone_1k(), "tone-3k": tone_3k()})
    return main(["audit", *args, "--tagger", "tone-1k", "--segments", "4", "--num-samples", "48", "--edges", "hard"])


def test_the_command_writes_the_documents_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    from audiolime.explanation.audit import AuditDocument, DiffDocument

    songs = write_songs(tmp_path / "songs", 4)
    out = tmp_path / "audit"
    assert audit_cli([str(tmp_path / "songs"), "--tag", "voice", "--out", str(out)], monkeypatch) == 0
    doc = AuditDocument.loads((out / "audit.json").read_bytes())
    assert AuditDocument.loads(doc.dumps()) == doc
    assert doc.kind == "tag-audit" and doc.version == 1 and doc.songs == tuple(str(s.resolve()) for s in songs)
    (p,) = doc.profiles
    assert p.majority == "vocals" and p.outliers == (str(songs[-1].resolve()),)
    clips = [w.clip for s in p.song_table for w in s.windows]
    assert all(c and (out / c).is_file() for c in clips)  # the top-1 component of each, to listen to
    md = (out / "audit.md").read_text()
    assert "majority stem: **vocals**" in md and "Outliers" in md and songs[-1].name in md
    capsys.readouterr()
    # a torn last line (a kill while writing) and a lost window: the rerun explains only that one
    lines = (out / "audit.jsonl").read_text().splitlines()
    (out / "audit.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    assert audit_cli([str(tmp_path / "songs"), "--tag", "voice", "--out", str(out)], monkeypatch) == 0
    assert "1 windows explained now, 7 from the checkpoint" in capsys.readouterr().out
    assert len(load_records(out)) == 8
    assert AuditDocument.loads((out / "audit.json").read_bytes()).profiles == doc.profiles
    # the same directory with --against: the first tagger's records are reused, the diff fails the gate
    assert audit_cli([str(tmp_path / "songs"), "--tag", "voice", "--out", str(out), "--against", "tone-3k",
                      "--max-shift", "0.5"], monkeypatch) == 1
    captured = capsys.readouterr()
    assert "8 windows explained now, 8 from the checkpoint" in captured.out
    assert "shifted by more than --max-shift 0.5: voice" in captured.err
    d = DiffDocument.loads((out / "diff.json").read_bytes())
    assert DiffDocument.loads(d.dumps()) == d
    assert (d.a, d.b, d.regressions) == ("tone-1k@1", "tone-3k@1", ("voice",))
    assert d.shifts[0].majority_a == "vocals" and d.shifts[0].majority_b == "accompaniment"
    assert "tone-3k@1" in (out / "diff.md").read_text()
    # a threshold it meets: exit 0
    assert audit_cli([str(tmp_path / "songs"), "--tag", "voice", "--out", str(out), "--against", "tone-3k",
                      "--max-shift", "0.99"], monkeypatch) == 0


def test_the_command_refuses_bad_input_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import audiolime.auditdir as catalog_mod

    songs = write_songs(tmp_path / "songs", 2)
    out = str(tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(empty), "--out", out], "no audio files"),
        ([str(tmp_path / "missing.wav"), "--out", out], "no such file"),
        ([str(songs[0]), "--tag", "nope", "--out", out], "unknown tag 'nope'"),
        ([str(songs[0]), "--windows-per-song", "17", "--out", out], "windows_per_song"),
        ([str(songs[0]), "--max-shift", "0.2", "--out", out], "needs --against"),
        ([str(songs[0]), "--against", "tone-1k", "--out", out], "the same tagger"),
        ([str(songs[0]), "--against", "x@y", "--out", out], "NAME@VERSION"),
        ([str(songs[0]), "--out", str(songs[0])], "not a directory"),
    ]
    for args, message in cases:
        assert audit_cli(args, monkeypatch) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
    monkeypatch.setattr(catalog_mod, "MAX_AUDIT_SONGS", 1)
    import audiolime.method.limits as limits

    monkeypatch.setattr(limits, "MAX_AUDIT_SONGS", 1)
    assert audit_cli([str(tmp_path / "songs"), "--out", out], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than the limit 1" in err[0]
    # other settings in a directory holding an audit: refused, never mixed
    assert audit_cli([str(songs[0]), "--tag", "voice", "--windows-per-song", "1", "--out", out], monkeypatch) == 0
    capsys.readouterr()
    assert audit_cli([str(songs[0]), "--tag", "voice", "--windows-per-song", "2", "--out", out], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "windows_per_song" in err[0]


def test_an_unreadable_song_is_skipped_not_fatal(tmp_path: Path, monkeypatch, capsys) -> None:
    songs = write_songs(tmp_path / "songs", 2)
    (tmp_path / "songs" / "broken.wav").write_bytes(b"RIFF not really")
    assert audit_cli([str(tmp_path / "songs"), "--tag", "voice", "--windows-per-song", "1", "--out",
                      str(tmp_path / "out")], monkeypatch) == 0
    from audiolime.explanation.audit import AuditDocument

    doc = AuditDocument.loads((tmp_path / "out" / "audit.json").read_bytes())
    assert [Path(s.song).name for s in doc.skipped] == ["broken.wav"] and doc.explanations == len(songs)


def test_find_songs_walks_directories_once_each(tmp_path: Path) -> None:
    songs = write_songs(tmp_path / "d", 3)
    (tmp_path / "d" / "notes.txt").write_text("x")
    found = find_songs([tmp_path / "d", songs[0]])
    assert found == [s.resolve() for s in songs]
    assert len(find_songs([tmp_path / "d"], limit=1)) == 2  # stops counting past the limit


KILL_RUN = """
import sys
sys.path.insert(0, {tests!r})
from audit_fakes import install, tone_1k
install(None, {{"tone-1k": tone_1k(delay_s=0.02)}})
from audiolime.cli import main
sys.exit(main(["audit", {songs!r}, "--tag", "voice", "--tagger", "tone-1k", "--segments", "4", "--num-samples", "48",
               "--edges", "hard", "--out", {out!r}, "--no-clips"]))
"""


@pytest.mark.slow  # starts processes
def test_an_audit_of_50_windows_survives_sigkill(tmp_path: Path) -> None:
    """25 songs x 2 windows on the fakes: killed after a few windows, rerun, completed with the
    windows done before kept; the profile has its intervals and finds the one odd song."""
    write_songs(tmp_path / "songs", 25)
    out = tmp_path / "out"
    code = KILL_RUN.format(tests=str(Path(__file__).parent), songs=str(tmp_path / "songs"), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "audit.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # wait for some, not all, windows
        if ckpt.is_file() and len(ckpt.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the audit ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    before = load_records(out)
    assert 3 <= len(before) < 50 and not (out / "audit.json").exists()
    rerun = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = load_records(out)
    assert len(after) == 50 and all(after[k] == r for k, r in before.items())  # kept, not recomputed
    assert f"{50 - len(before)} windows explained now, {len(before)} from the checkpoint" in rerun.stdout
    doc = json.loads((out / "audit.json").read_text())
    (p,) = doc["profiles"]
    assert doc["explanations"] == 50 and p["n"] == 50 and p["songs"] == 25 and p["majority"] == "vocals"
    assert [Path(s).name for s in p["outliers"]] == ["song24.wav"]
    vocals = p["stems"][0]
    assert vocals["top1_ci"] == list(wilson(vocals["top1"], 50)) and vocals["top1_ci"][0] > 0.5


# -- a small real run --------------------------------------------------------------------------------
def test_audit_and_diff_on_real_music(shared: Path, models: Path, tmp_path: Path) -> None:
    """musicnn-msd against fcn-msd on 2 real songs x 1 window, 32 masks each."""
    out = tmp_path / "audit"
    audio = shared / "audio"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "audiolime.cli", "audit", str(audio / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg"),
                           str(audio / "Kevin_MacLeod_-_Vibe_Ace.ogg"), "--tag", "female vocalists",
                           "--windows-per-song", "1", "--num-samples", "32", "--against", "fcn-msd",
                           "--out", str(out), "--model-dir", str(models)],
                          capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "audit.json").read_text())
    assert [p["tagger"].split("@")[0] for p in doc["profiles"]] == ["musicnn-msd", "fcn-msd"]
    for p in doc["profiles"]:
        assert p["n"] == 2 and {s["name"] for s in p["stems"]} == {"vocals", "accompaniment"}
        assert all(0 <= s["top1_ci"][0] <= s["top1_share"] <= s["top1_ci"][1] <= 1 for s in p["stems"])
    d = json.loads((out / "diff.json").read_text())
    assert d["shifts"][0]["tag"] == "female vocalists" and len(d["shifts"][0]["changed"]) == 2
    assert 0 <= d["shifts"][0]["shift"] <= 1
    assert "female vocalists" in (out / "audit.md").read_text()
