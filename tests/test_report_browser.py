"""The listening report in a real headless browser (Debian's chromium, driven by Playwright) on one
real explanation through `audiolime up`: `audiolime explain --server ... --out DIR` writes the
CLI's report (opened from file://) and names the published one (opened through its presigned URL).

Both pages: no console errors, every <audio> loads (duration from the page's own JS), no request
but the page and its own audio, a heat-map cell plays exactly its component's time range of its
stem, the cells work from the keyboard, and a screenshot is not blank. The local page is also read
in light and dark mode, and the signed-URL server's byte ranges (what lets the published page seek)
are checked directly.
"""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ENV, HOST, REPO, Stack, audiolime_up, model_dir, shared_dir

DRUMS = "admiralbob77_-_Choice_-_Drum-bass.ogg"  # 25 s: Spleeter runs quickly
TAGS = ("electronic", "Hip-Hop")
N = 64

pytestmark = pytest.mark.slow


@dataclass
class Explained:
    doc: dict
    out: Path
    report_url: str
    stderr: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared, models) -> Stack:
    with audiolime_up(tmp_path_factory.mktemp("up")) as s:
        yield s


@pytest.fixture(scope="module")
def explained(stack, tmp_path_factory) -> Explained:
    """One real explanation of two tags through the services, written locally by the CLI."""
    out = tmp_path_factory.mktemp("report") / "out"
    cmd = [str(REPO / ".venv" / "bin" / "audiolime"), "explain", "--server", f"{HOST}:{stack.explainer}",
           str(shared_dir() / "audio" / DRUMS), *(a for t in TAGS for a in ("--tag", t)), "--num-samples", str(N),
           "--out", str(out), "--json", "--model-dir", str(model_dir())]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"^audiolime: published report \(its links work until [^)]+\): (http\S+)$", proc.stderr, re.M)
    assert found, proc.stderr
    return Explained(json.loads(proc.stdout), out, found.group(1), proc.stderr)


@dataclass
class Loaded:
    """A report open in the browser, with everything it logged and requested."""

    page: object
    url: str
    console: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)


def open_report(browser, url: str, scheme: str = "light") -> Loaded:
    page = browser.new_page()
    page.emulate_media(color_scheme=scheme)
    loaded = Loaded(page, url)
    page.on("console", lambda m: loaded.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: loaded.errors.append(str(e)))
    page.on("request", lambda r: loaded.requests.append(r.url))
    page.on("requestfailed", lambda r: loaded.failed.append(f"{r.url} {r.failure}"))
    page.goto(url, wait_until="load")
    page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
                           timeout=60_000)
    return loaded


@pytest.fixture(scope="module", params=["file", "published"])
def report(request, explained, browser) -> Loaded:
    """The CLI's report from file://, or the published one through its presigned URL."""
    url = (explained.out / "explanation.html").as_uri() if request.param == "file" else explained.report_url
    loaded = open_report(browser, url)
    yield loaded
    loaded.page.close()


def test_cli_names_both_reports(explained):
    """`audiolime explain --out` names its report; the published one is served as text/html; the
    local copy plays the downloaded files, the published one the presigned URLs."""
    assert f"audiolime: listening report: {explained.out / 'explanation.html'} (open it in a browser)" in explained.stderr
    with urllib.request.urlopen(explained.report_url, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        published = resp.read().decode()
    local = (explained.out / "explanation.html").read_text()
    srcs = lambda page: {html.unescape(s) for s in re.findall(r'<audio [^>]*src="([^"]+)"', page)}  # noqa: E731
    assert json.loads((explained.out / "explanation.json").read_text()) == explained.doc
    assert srcs(local) == _files(explained.doc) and all((explained.out / f).is_file() for f in srcs(local))
    assert all(s.startswith(f"http://{HOST}:") and "sig=" in s for s in srcs(published))
    assert len(srcs(published)) == len(srcs(local))
    assert [t["tag"] for t in explained.doc["targets"]] == list(TAGS)


def test_signed_url_server_answers_range_requests(explained):
    """The local signed-URL server serves byte ranges (what lets a browser seek in a stem): 206 with
    Content-Range for a range and a suffix, 416 past the end."""
    with urllib.request.urlopen(explained.report_url, timeout=30) as resp:
        page = resp.read().decode()
    (url,) = {html.unescape(u) for u in re.findall(r'<audio [^>]*src="([^"]+/stem_vocals\.wav\?[^"]+)"', page)}
    with urllib.request.urlopen(url, timeout=30) as resp:
        whole = resp.read()
    for header, first, last in (("bytes=10-19", 10, 19), ("bytes=-5", len(whole) - 5, len(whole) - 1),
                                (f"bytes={len(whole) - 3}-", len(whole) - 3, len(whole) - 1)):
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": header}), timeout=30) as resp:
            assert resp.status == 206 and resp.read() == whole[first:last + 1]
            assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{len(whole)}"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(whole)}-"}), timeout=30)
    assert exc.value.code == 416


def _files(doc: dict) -> set[str]:
    files = {doc["audio"]["window_file"], *(s["file"] for s in doc["stems"])}
    for t in doc["targets"]:
        files |= {c["file"] for c in t["components"] if c["file"]} | {t["fidelity"]["file"], t["fidelity"]["rest_file"]}
    return files


def test_loads_without_errors_and_every_audio_plays_its_media(report, explained):
    """No console message or page error; every <audio> element's media loads (duration = the window)."""
    media = report.js("[...document.querySelectorAll('audio')].map(a => [a.id, a.duration, a.error && a.error.code])")
    window = explained.doc["audio"]["window"]["duration_s"]
    n_targets, k = len(TAGS), explained.doc["top_k"]
    assert len(media) == 1 + 2 + n_targets * (3 + k)  # window + stems, then per tag: 3 players + top-k
    assert all(err is None and duration == pytest.approx(window, abs=0.01) for _, duration, err in media), media
    assert report.console == [] and report.errors == []
    # preload=metadata: the browser itself aborts a media request once it has the header
    assert [f for f in report.failed if not f.endswith("net::ERR_ABORTED")] == []


def test_requests_nothing_but_its_own_audio(report):
    """Every request the page made is the page itself or one of its own <audio> sources."""
    sources = set(report.js("[...document.querySelectorAll('audio')].map(a => a.currentSrc)"))
    assert report.requests[0] == report.url
    assert set(report.requests) <= sources | {report.url}, set(report.requests) - sources
    assert sources <= set(report.requests)  # the log sees subresources: an outside request would show


def test_clicking_a_cell_plays_that_component(report, explained):
    """Clicking a cell that has no WAV of its own (inside the window: the page, not the file's end,
    must stop it) plays its stem from the cell's start and stops at its end; the cell shows it is
    playing, then not; nothing else plays."""
    target = explained.doc["targets"][0]
    ws, last = explained.doc["audio"]["window"]["start_s"], explained.doc["segments"] - 1
    comp = max((c for c in target["components"] if not c["file"] and 0 < c["segment"] < last),
               key=lambda c: (c["segment"], c["source"]))
    section = report.page.locator("section.target").first
    cell = section.locator(f'.cell[aria-label^="{comp["source"]}, segment {comp["segment"]},"]')
    stem_id = cell.get_attribute("data-audio")
    assert report.js("id => document.getElementById(id).currentSrc", stem_id).split("?")[0].endswith(
        f"stem_{comp['source']}.wav")
    cell.click()
    report.page.wait_for_function("id => !document.getElementById(id).paused", arg=stem_id, timeout=10_000)
    t, pressed = report.js("id => [document.getElementById(id).currentTime, "
                           "document.activeElement.getAttribute('aria-pressed')]", stem_id)
    start, end = comp["start_s"] - ws, comp["end_s"] - ws
    assert start - 0.01 <= t < end and pressed == "true"
    report.page.wait_for_function("id => document.getElementById(id).paused && "
                                  "!document.querySelector('.cell[aria-pressed=true]')", arg=stem_id,
                                  timeout=int((end - start) * 1000) + 10_000)
    t_end = report.js("id => document.getElementById(id).currentTime", stem_id)
    assert end - 0.01 <= t_end <= end + 0.15
    others = report.js("id => [...document.querySelectorAll('audio')].filter(a => a.id !== id && !a.paused).length",
                       stem_id)
    assert others == 0


def test_cells_work_from_the_keyboard(report):
    """The heat map is one tab stop (Shift+Tab back from the next control lands on its first cell),
    arrow keys move between cells, Enter plays the focused cell and stops it again."""
    page = report.page
    page.locator("section.target").first.locator("table.top audio").first.focus()
    page.keyboard.press("Shift+Tab")
    stops = report.js("[...document.querySelector('section.target .timeline').querySelectorAll('.cell')]"
                      ".filter(c => c.tabIndex === 0).map(c => c === document.activeElement)")
    assert stops == [True]  # the focused cell is the heat map's one tab stop
    page.keyboard.press("Home")
    page.keyboard.press("ArrowUp")
    first = report.js("document.activeElement.getAttribute('aria-label')")
    assert first.startswith("vocals, segment 0,"), first
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    label = report.js("document.activeElement.getAttribute('aria-label')")
    assert label.startswith("accompaniment, segment 1,"), label
    page.keyboard.press("Enter")
    stem = report.js("document.activeElement.dataset.audio")
    page.wait_for_function("id => !document.getElementById(id).paused", arg=stem, timeout=10_000)
    assert report.js("document.activeElement.getAttribute('aria-pressed')") == "true"
    page.keyboard.press("Enter")  # again: stop
    assert report.js("id => document.getElementById(id).paused", stem)


def _luminance(css_color: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css_color)[:3])
    lin = lambda c: c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4  # noqa: E731
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def test_screenshot_is_not_blank(report):
    """The page renders: a screenshot of the first tag's section has many colours and the heat map is drawn."""
    section = report.page.locator("section.target").first
    image = np.asarray(Image.open(io.BytesIO(section.screenshot())).convert("RGB"))
    assert image.shape[0] > 500 and image.shape[1] > 800
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 300 and image.std() > 20
    box = section.locator(".timeline").bounding_box()
    assert box["width"] > 600 and box["height"] > 100


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_is_readable_in_light_and_dark_mode(explained, browser, scheme):
    """prefers-color-scheme picks the palette: dark background in dark mode, light in light mode, and
    body text has at least 7:1 contrast with the background either way."""
    loaded = open_report(browser, (explained.out / "explanation.html").as_uri(), scheme)
    try:
        fg, bg = loaded.js("[getComputedStyle(document.body).color, getComputedStyle(document.documentElement)"
                           ".backgroundColor]")
        lf, lb = _luminance(fg), _luminance(bg)
        assert (max(lf, lb) + 0.05) / (min(lf, lb) + 0.05) >= 7
        assert (lb < 0.1) == (scheme == "dark")
        assert loaded.console == [] and loaded.errors == []
    finally:
        loaded.page.close()
