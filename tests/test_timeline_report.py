"""The song timeline made listenable and viewable: the files ``audiolime timeline --out`` writes (the
top moments' clips, each stem and the mix over the range), ``timeline.html`` computed from the
document (one lane per stem, bounded however long the song), HTML validity, ``audiolime report``
on a timeline folder, and the page in a real headless browser (its audio plays, the lanes work from
the keyboard, a 10-minute song renders with a bounded DOM).

The timeline comes from the method on the fake tagger and stems of tests/test_timeline.py (no
models); the 10-minute document is that one's records stretched to 200 windows x 6 segments."""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_timeline import RATE, fake_song, run

from audiolime.artifacts import write_timeline
from audiolime.cli import main
from audiolime.explanation.timeline import (
    CLIP_FADE_S,
    TIMELINE_MANIFEST,
    TIMELINE_REPORT,
    RangeStems,
    TimelineDocument,
    TimelinePoint,
    describe_timeline,
    fade_edges,
)
from audiolime.report.page import render_timeline
from audiolime.report.timeline import MAX_COLUMNS, build_timeline
from audiolime.store import LocalStore

AUDIO_SRC = re.compile(r'<audio id="[^"]+" controls preload="metadata" src="([^"]+)"')


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[TimelineDocument, Path, dict[str, np.ndarray]]:
    """The fake song's timeline written by the one writer, with the stems it was made of."""
    audio, stems = fake_song()
    collected = RangeStems(0, audio.num_samples, 1, RATE)
    collected(0, audio.num_samples, stems)
    result, _ = run()
    out = tmp_path_factory.mktemp("tl") / "out"
    doc, _ = write_timeline(describe_timeline(result), collected, audio.waveform, LocalStore(out))
    return doc, out, stems


def long_document(doc: TimelineDocument, windows: int = 200, segments: int = 6, window_s: float = 3.0,
                  files: bool = False) -> TimelineDocument:
    """``doc`` stretched to ``windows`` x ``segments`` (a 10-minute song of 3 s windows by default),
    weights a smooth function of time with a few peaks; no files unless ``files``."""
    seg = window_s / segments
    t0 = np.arange(windows * segments) * seg
    stems = []
    for k, s in enumerate(doc.stems):
        w = 0.001 * np.sin(t0 / (17 + 5 * k)) + np.where(np.arange(len(t0)) % (97 + k) == 0, 0.01, 0.0)
        points = tuple(TimelinePoint(i // segments, i % segments, round(a, 4), round(a + seg, 4), float(round(x, 6)))
                       for i, (a, x) in enumerate(zip(t0, w)))
        stems.append(replace(s, timeline=points, file=s.file if files else None))
    w0 = doc.windows[0]
    wins = tuple(replace(w0, index=i, start_s=i * window_s, end_s=(i + 1) * window_s) for i in range(windows))
    moments = tuple(replace(m, file=m.file if files else None) for m in doc.top_moments)
    end = windows * window_s
    return replace(doc, audio=replace(doc.audio, duration_s=end, start_s=0.0, end_s=end,
                                      mix_file=doc.audio.mix_file if files else None),
                   windows=wins, stems=tuple(stems), top_moments=moments, segments=segments,
                   num_components=windows * len(stems) * segments)


# -- the files ---------------------------------------------------------------------------------------------
def test_clips_are_the_stem_over_the_moment_and_the_stems_the_range(written):
    """Each moment's clip is its stem over its segment at the stems' rate, faded only at the edges;
    each stem file is the stem over the range, the mix file the mixture; the document names them all."""
    doc, out, stems = written
    assert doc.version == 2 and doc.audio.mix_file == "mix.flac"
    names = set(doc.files())
    assert names == {"mix.flac", "stem_vocals.flac", "stem_accompaniment.flac",
                     *(f"moment_{m.rank:02d}_{m.stem}.wav" for m in doc.top_moments)}
    assert all((out / n).is_file() for n in names)
    assert TimelineDocument.loads((out / TIMELINE_MANIFEST).read_bytes()) == doc
    assert doc.timings_s["store"] > 0
    fade = int(CLIP_FADE_S * RATE)
    for m in doc.top_moments:
        clip, rate = sf.read(out / m.file, dtype="float32", always_2d=True)
        assert rate == RATE
        a, b = int(round(m.start_s * RATE)), int(round(m.end_s * RATE))
        truth = stems[m.stem][0, a:b]
        assert clip.shape == (b - a, 1)
        q = 1 / 32768 + 1e-6
        np.testing.assert_allclose(clip[fade:-fade, 0], truth[fade:-fade], atol=q)  # the stem, untouched
        np.testing.assert_allclose(clip[:, 0], fade_edges(truth[None], RATE)[0], atol=q)  # faded at the edges
        assert abs(clip[0, 0]) <= abs(truth[0]) * 0.05 + q
    for s in doc.stems:
        wave, rate = sf.read(out / s.file, dtype="float32", always_2d=True)
        np.testing.assert_allclose(wave[:, 0], stems[s.name][0], atol=1 / 32768 + 1e-6)
    mix, _ = sf.read(out / "mix.flac", dtype="float32", always_2d=True)
    np.testing.assert_allclose(mix[:, 0], stems["vocals"][0] + stems["accompaniment"][0], atol=1 / 32768 + 1e-6)


def test_range_stems_assemble_overlapping_windows():
    """The collector places each window's stems at its samples; the clamped last window overlaps."""
    c = RangeStems(10, 40, 2, RATE)
    ramp = np.arange(50, dtype=np.float32)[None].repeat(2, 0)
    for a, b in ((10, 20), (20, 30), (25, 35), (35, 45)):  # the last one reaches past the range
        c(a, b, {"x": ramp[:, a:b]})
    np.testing.assert_array_equal(c.stems["x"], ramp[:, 10:40])


# -- the page, without a browser ----------------------------------------------------------------------------
def test_the_page_lists_every_stem_and_plays_every_file(written):
    """One lane per stem in the document's order; the top moments are marked in their stem's lane
    and each plays its clip; the page plays exactly the files the document names."""
    doc, out, _ = written
    view = build_timeline(doc)
    assert [x.stem for x in view.lanes] == [s.name for s in doc.stems]
    assert all(len(x.columns) == len(s.timeline) for x, s in zip(view.lanes, doc.stems))  # unaggregated
    assert sorted(m.rank for x in view.lanes for m in x.markers) == [m.rank for m in doc.top_moments]
    assert [m.player.src for m in view.moments if m.player] == [m.file for m in doc.top_moments]
    page = (out / TIMELINE_REPORT).read_text()
    assert page == render_timeline(doc)
    srcs = [html.unescape(s) for s in AUDIO_SRC.findall(page)]
    assert sorted(srcs) == sorted(doc.files())
    for s in doc.stems:
        assert f'aria-labelledby="lane-{doc.stems.index(s)}-name"' in page and f">{s.name}</span>" in page
    top = max(abs(p.weight) for s in doc.stems for p in s.timeline)
    assert view.max_weight == pytest.approx(top)
    assert "media-src 'self' file:;" in html.unescape(page) and "<script src" not in page


def test_a_ten_minute_song_is_drawn_with_a_bounded_number_of_elements(written):
    """200 windows x 6 segments per stem aggregate to at most MAX_COLUMNS columns a lane, each the
    sum of the weights whose segments it holds; the page stays small."""
    doc, _, _ = written
    long = long_document(doc)
    view = build_timeline(long)
    assert view.aggregated and view.end_s == 600.0
    for lane, s in zip(view.lanes, long.stems):
        assert len(lane.columns) == MAX_COLUMNS
        assert sum(c.segments for c in lane.columns) == 1200
        assert sum(c.weight for c in lane.columns) == pytest.approx(sum(p.weight for p in s.timeline), abs=1e-9)
        assert lane.columns[0].start_s == 0 and lane.columns[-1].end_s == pytest.approx(600)
    page = render_timeline(long)
    assert page.count("<rect") <= len(long.stems) * (MAX_COLUMNS + 2 + len(long.top_moments))
    assert len(page.encode()) < 200_000
    assert [x for x, _ in view.ticks][:2] == [0.0, 10.0]  # a tick a minute


def test_hostile_file_references_are_not_played(written):
    doc, _, _ = written
    bad = replace(doc, audio=replace(doc.audio, mix_file="javascript:alert(1)"),
                  stems=tuple(replace(s, file="/etc/passwd") for s in doc.stems),
                  top_moments=tuple(replace(m, file="../x.wav") for m in doc.top_moments))
    page = render_timeline(bad)
    assert not AUDIO_SRC.search(page) and "media-src 'none';" in html.unescape(page)


def test_pages_validate_as_html(written, tmp_path, vnu):
    """The Nu Html Checker finds nothing in the timeline page (with files, published, 10 minutes)."""
    doc, out, _ = written
    pages = {"local.html": (out / TIMELINE_REPORT).read_text(),
             "published.html": render_timeline(doc.with_files(lambda n: f"https://s3.example/b/{n}?sig=1&a=2")),
             "long.html": render_timeline(long_document(doc))}
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run([*vnu, "--also-check-svg", "--format", "json", "--filterpattern", ".*Content Security Policy.*",
                           *(str(tmp_path / n) for n in pages)], capture_output=True, text=True, timeout=300)
    messages = json.loads(proc.stderr)["messages"]
    assert messages == [], json.dumps(messages, indent=1)[:3000]


# -- audiolime report ---------------------------------------------------------------------------------------
def test_report_command_rewrites_a_timeline_page(written, tmp_path, capsys):
    """`audiolime report DIR` on a timeline folder (and on its timeline.json) rewrites timeline.html;
    a version-1 document (no files) gets a page with no audio."""
    doc, out, _ = written
    original = (out / TIMELINE_REPORT).read_bytes()
    (out / TIMELINE_REPORT).unlink()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / TIMELINE_REPORT)
    assert (out / TIMELINE_REPORT).read_bytes() == original
    data = json.loads((out / TIMELINE_MANIFEST).read_text())
    data["version"] = 1
    del data["audio"]["range"]["mix_file"]
    for s in data["stems"] + data["top_moments"]:
        del s["file"]
    (tmp_path / TIMELINE_MANIFEST).write_text(json.dumps(data))
    assert main(["report", str(tmp_path / TIMELINE_MANIFEST)]) == 0
    page = (tmp_path / TIMELINE_REPORT).read_text()
    assert not AUDIO_SRC.search(page) and page.count('class="tl-lane"') == len(doc.stems)


# -- in a real browser ----------------------------------------------------------------------------------------
def _open(browser, url: str):
    page = browser.new_page()
    seen: dict[str, list] = {"console": [], "errors": []}
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.goto(url, wait_until="load")
    page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
                           timeout=60_000)
    return page, seen


def test_in_a_browser_every_audio_loads_and_the_lanes_play_from_the_keyboard(written, browser):
    """Every <audio> loads (stems and mix: the range; clips: their moment), nothing is logged, the
    lanes are sliders: arrows move a cursor, Down moves to the next stem at the same time, Enter
    plays that stretch of the stem from its start and stops at its end."""
    doc, out, _ = written
    page, seen = _open(browser, (out / TIMELINE_REPORT).as_uri())
    try:
        media = dict(page.evaluate("[...document.querySelectorAll('audio')].map(a => "
                                   "[a.getAttribute('src'), [a.duration, a.error && a.error.code]])"))
        assert set(media) == set(doc.files())
        span = doc.audio.end_s - doc.audio.start_s
        for src, (duration, err) in media.items():
            assert err is None, src
            m = next((m for m in doc.top_moments if m.file == src), None)
            assert duration == pytest.approx(m.end_s - m.start_s if m else span, abs=0.01), src
        lanes = page.evaluate("[...document.querySelectorAll('.tl-lane')].map(l => l.getAttribute('aria-labelledby'))")
        assert len(lanes) == len(doc.stems)
        page.locator("#lane-0").focus()
        for key in ("Home", "ArrowRight", "ArrowRight"):
            page.keyboard.press(key)
        text = page.evaluate("document.activeElement.getAttribute('aria-valuetext')")
        assert text.startswith("vocals, 0.50 to 0.75 s, weight "), text
        page.keyboard.press("ArrowDown")
        assert page.evaluate("document.activeElement.id") == "lane-1"
        assert page.evaluate("document.activeElement.getAttribute('aria-valuenow')") == "2"
        page.keyboard.press("Enter")
        stem = page.evaluate("document.activeElement.dataset.audio")
        page.wait_for_function("id => !document.getElementById(id).paused", arg=stem, timeout=10_000)
        page.wait_for_function("id => document.getElementById(id).paused", arg=stem, timeout=10_000)
        t = page.evaluate("id => document.getElementById(id).currentTime", arg=stem)
        assert 0.75 - 0.01 <= t <= 0.75 + 0.15
        assert page.evaluate("getComputedStyle(document.querySelector('.tl-lane .cursor')).visibility") == "visible"
        top = doc.top_moments[0]
        page.locator("button.goto").first.click()  # the first moment, found on its stem's lane
        lane = f"lane-{[x.name for x in doc.stems].index(top.stem)}"
        assert page.evaluate("document.activeElement.id") == lane
        text = page.evaluate("document.activeElement.getAttribute('aria-valuetext')")
        assert text.startswith(f"{top.stem}, {top.start_s:.2f} to {top.end_s:.2f} s, weight {top.weight:+.5f}"), text
        assert seen["console"] == [] and seen["errors"] == []
    finally:
        page.close()


def test_in_a_browser_a_ten_minute_song_renders_bounded(written, browser, tmp_path):
    """The 10-minute document (with the clips and stems of the fake song beside it): a bounded DOM,
    every lane drawn across the page, a screenshot that is not blank, no errors."""
    from PIL import Image

    doc, out, _ = written
    path = out / "long.html"
    path.write_text(render_timeline(long_document(doc, files=True)))
    page, seen = _open(browser, path.as_uri())
    try:
        elements = page.evaluate("document.querySelectorAll('*').length")
        assert elements < 1500, elements
        assert page.evaluate("document.querySelectorAll('.tl-lane rect.col').length") == len(doc.stems) * MAX_COLUMNS
        box = page.locator("#lane-1").bounding_box()
        assert box["width"] > 600 and box["height"] > 30
        section = page.locator("#song-timeline")
        image = np.asarray(Image.open(io.BytesIO(section.screenshot())).convert("RGB"))
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 100 and image.std() > 20
        page.locator("#lane-0").focus()
        page.keyboard.press("End")
        text = page.evaluate("document.activeElement.getAttribute('aria-valuetext')")
        assert text.startswith("vocals, 597.50 to 600.00 s, weight ") and "(5 segments)" in text, text
        assert seen["errors"] == []
    finally:
        page.close()
