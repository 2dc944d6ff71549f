"""The listening report without a browser: what the writer writes and in which order, what the
page references, the faithfulness adapter with and without the version-2 faithfulness figures, hostile documents,
the `audiolime report` command, HTML validity (Nu Html Checker) and the packaged template files.

Explanations come from the method's own pipeline on a toy tagger and separation (no models)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolime.artifacts import write_explanation
from audiolime.cli import main
from audiolime.explanation.describe import describe
from audiolime.explanation.document import MANIFEST, REPORT_FILE, Document
from audiolime.report.page import render
from audiolime.report.view import audio_ref, faithfulness
from audiolime.store import LocalStore
from conftest import REPO, toy_explanation

AUDIO_SRC = re.compile(r'<audio id="[^"]+" controls preload="metadata" src="([^"]+)"')


@pytest.fixture(scope="module")
def toy():
    """One toy explanation of two tags (the second tag's files in a sub-folder)."""
    return toy_explanation()


@pytest.fixture(scope="module")
def written(toy, tmp_path_factory) -> tuple[Document, Path]:
    out = tmp_path_factory.mktemp("toy") / "out"
    doc, _ = write_explanation(toy, LocalStore(out))
    return doc, out


class RecordingStore(LocalStore):
    """A local store that remembers the order of writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[tuple[str, str]] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.puts.append((key, content_type))
        super().put(key, data, content_type)


def _v1(doc: Document) -> Document:
    """The document as version 1 wrote it: no faithfulness figures, no sampling records."""
    return replace(doc, version=1, targets=tuple(replace(t, faithfulness=None) for t in doc.targets),
                   edges=None, sampling=None, stopping=None, faithfulness_cost=None)


# -- the artifacts -----------------------------------------------------------------------------------------
def test_writer_puts_audio_then_report_then_manifest(toy, tmp_path):
    """The one writer: every WAV first, then explanation.html (text/html), explanation.json last;
    the report plays exactly the artifacts the document names, and each of them exists."""
    store = RecordingStore(tmp_path / "out")
    doc, names = write_explanation(toy, store)
    keys = [k for k, _ in store.puts]
    assert keys[-2:] == [REPORT_FILE, MANIFEST] and keys[:-2] == names
    assert dict(store.puts)[REPORT_FILE] == "text/html; charset=utf-8"
    assert {"stem_vocals.wav", "stem_accompaniment.wav", "rest_mix.wav", "drums/rest_mix.wav"} <= set(names)
    page = (tmp_path / "out" / REPORT_FILE).read_text()
    srcs = {html.unescape(s) for s in AUDIO_SRC.findall(page)}
    assert srcs == set(doc.files()) == set(names)
    assert all((tmp_path / "out" / s).is_file() for s in srcs)


def test_stems_rest_and_topk_are_the_components_audio(toy, written):
    """A stem's WAV is the sum of its components (a cell plays that stem over the cell's time range;
    each component is the stem there, cross-faded into its neighbours over ``fade_s``, and silent
    beyond); the stems sum to the window; the top-k mix and rest_mix.wav (its complement) too."""
    doc, out = written
    fact = toy.factorization
    rate = toy.audio.sample_rate
    read = lambda name: sf.read(out / name, dtype="float32", always_2d=True)[0].T  # noqa: E731
    window, q = read("window.wav"), 2 / 32767  # 16-bit WAVs
    stems = {s.name: read(s.file) for s in doc.stems}
    np.testing.assert_allclose(sum(stems.values()), window, atol=2 * q)
    assert doc.edges.mode == "fade" and doc.edges.fade_s > 0
    half = int(np.ceil(doc.edges.fade_s * rate / 2)) + 1
    for source, stem in stems.items():
        parts = [c for c in fact.info if c.source == source]
        composed = []
        for c in parts:
            mask = np.zeros(fact.num_components, np.float32)
            mask[c.index] = 1
            component = fact.compose_listen(mask)
            a, b = (int(round((t - doc.audio.window_start_s) * rate)) for t in (c.start_s, c.end_s))
            assert np.abs(component[:, :max(a - half, 0)]).max(initial=0) == 0
            assert np.abs(component[:, b + half:]).max(initial=0) == 0
            composed.append(component)
        np.testing.assert_allclose(sum(composed), stem, atol=q)
    for t in doc.targets:
        topk, rest = read(t.keep_top_k.file), read(t.keep_top_k.rest_file)
        np.testing.assert_allclose(topk + rest, window, atol=3 * q)
        assert np.abs(rest).max() > 0.01 and np.abs(topk).max() > 0.01


def test_document_round_trips_and_older_documents_still_load(written):
    """New fields (stems, rest mix, peaks) survive JSON; a document written before them still
    loads, references no stem or rest files, and still renders."""
    doc, out = written
    assert Document.loads((out / MANIFEST).read_bytes()) == doc
    assert len(doc.audio.window_peaks) == 320 and max(doc.audio.window_peaks) == pytest.approx(0.3, abs=2e-3)
    old = json.loads((out / MANIFEST).read_text())
    del old["stems"], old["audio"]["window_peaks"]
    for t in old["targets"]:
        del t["fidelity"]["rest_file"]
    legacy = Document.loads(json.dumps(old))
    assert not legacy.stems and all("stem_" not in f and "rest_mix" not in f for f in legacy.files())
    page = render(legacy)
    cells = re.findall(r'<button type="button" class="cell[^>]*>', page)
    playable = [c for c in cells if "data-audio" in c]
    assert len(cells) == 2 * 8 and len(playable) == 2 * 3  # only the top-k have audio of their own
    assert all(re.search(r'data-audio="a-t\d-r\d"', c) for c in playable)


# -- the page ------------------------------------------------------------------------------------------------
def test_page_content_one_section_per_tag(written):
    """What was explained, the verdict, the prediction chart, one section per tag with the three
    players, a heat map of every component (a button each) and the top components."""
    doc, out = written
    page = (out / REPORT_FILE).read_text()
    for fact in ("toy version 1", "songs/tone &lt;1&gt;.wav", "2 stems \u00d7 4 segments", "200 masks", "Seed"):
        assert fact in page, fact
    sections = re.findall(r'<section id="(tag-[^"]+)" class="target"', page)
    assert sections == ["tag-voice-0", "tag-drums-1"]
    for j, t in enumerate(doc.targets):
        section = page.split(f'id="{sections[j]}"')[1].split("</section>")[0]
        f, top = t.keep_top_k, max(doc.prediction, key=doc.prediction.get)
        kept = f.same_top_tag if t.tag == top else f.target_probability >= f.original_target_probability
        assert ("Kept:" if kept else "Lost:") in section and f"p({t.tag}) {f.original_target_probability:.3f}" in section
        assert f"Surrogate R&sup2; {t.surrogate_r2:.3f}" in section
        assert [html.unescape(s) for s in AUDIO_SRC.findall(section)][:3] == \
            ["window.wav", t.keep_top_k.file, t.keep_top_k.rest_file]
        cells = re.findall(r'<button type="button" class="cell ([a-z ]+)" style="left: ([\d.]+)%; width: ([\d.]+)%.*?'
                           r'aria-label="([^"]+)".*?data-audio="([^"]+)" data-start="([\d.]+)" data-end="([\d.]+)"', section)
        assert len(cells) == doc.num_components
        for cls, left, _width, label, audio, start, end in cells:
            c = next(c for c in t.components if label.startswith(f"{c.source}, segment {c.segment},"))
            assert audio == f"a-stem-{doc.separator.stems.index(c.source)}"
            assert float(start) == pytest.approx(c.start_s - doc.audio.window_start_s, abs=1e-3)
            assert float(end) == pytest.approx(c.end_s - doc.audio.window_start_s, abs=1e-3)
            assert float(left) == pytest.approx(100 * float(start) / doc.audio.window_duration_s, abs=0.01)
            assert ("top" in cls.split()) == (c.rank <= doc.top_k)
            assert ("pos" in cls.split()) == (c.weight > 0)
        assert '<figure class="curves"' in section  # d' = 8: deletion and insertion curves computed
    assert page.count('<tr class="explained">') == 2


def test_verdict_follows_the_fidelity_check(written):
    """For the window's top tag the verdict is the paper's check (same top tag); for another tag, whether
    the top-k mix keeps its probability; no positive component: nothing to check."""
    from audiolime.report.view import _verdict

    doc, _ = written
    t = doc.targets[0]
    f = replace(t.keep_top_k, top_k=2, original_target_probability=0.5)
    cases = [(replace(f, same_top_tag=True, top_tag=t.tag, target_probability=0.1), t.tag, True),
             (replace(f, same_top_tag=False, top_tag="x", target_probability=0.9), t.tag, False),
             (replace(f, same_top_tag=False, top_tag="x", target_probability=0.6), "x", True),
             (replace(f, same_top_tag=True, top_tag="x", target_probability=0.4), "x", False),
             (replace(f, top_k=0, same_top_tag=False), t.tag, False)]
    for fidelity, window_top, kept in cases:
        ok, text = _verdict(replace(t, keep_top_k=fidelity), window_top)
        assert ok == kept and text.startswith("Kept:" if kept else ("No component" if not fidelity.top_k else "Lost:"))


def test_faithfulness_figures_render_where_present(written):
    """Each section shows the document's own drop-top-k, curve areas, ranking stability (bootstrap),
    the verdict line, how sampling stopped and both curves; a version 1 document (no figures)
    renders without them."""
    doc, _ = written
    page = render(doc)
    assert page.count('<figure class="curves"') == len(doc.targets) and page.count("<polyline") == 2 * len(doc.targets)
    for t in doc.targets:
        f, rec = faithfulness(doc, t), t.faithfulness
        assert f.drop_probability == rec.drop_top_k.target_probability and f.stability == rec.stability
        assert f.deletion.probabilities == rec.deletion.probabilities and f.insertion.auc == rec.insertion.auc
        first, last = f.deletion.points.split()[0], f.deletion.points.split()[-1]
        assert first == f"0.00,{100 - 100 * rec.deletion.probabilities[0]:.2f}" and last.startswith("100.00,")
        for text in (f"p({t.tag}) {rec.drop_top_k.target_probability:.3f}", f"{rec.deletion.auc:.3f}",
                     f"{rec.insertion.auc:.3f}"):
            assert text in page, text
        assert f.verdict == rec.verdict.summary
        assert f"<strong>Verdict:</strong> {rec.verdict.summary}</p>" in html.unescape(page)
    assert page.count('<p class="random-verdict">') == len(doc.targets)
    assert page.count("<dt>Ranking stability (bootstrap)</dt>") == len(doc.targets) and "Stability of" not in page
    stop = doc.stopping
    assert f"{stop.rounds} rounds, {stop.masks} masks: {stop.reason}" in page
    old = _v1(doc)
    assert all(faithfulness(old, t) is None for t in old.targets)
    assert '<figure class="curves"' not in render(old) and "Deletion AUC" not in render(old)
    assert '<p class="random-verdict">' not in render(old)


def test_hostile_documents_cannot_inject_markup_or_urls(written):
    """Tag names, paths, warnings and the verdict line are escaped; file references that are not relative names or
    http(s) URLs are dropped; the page has exactly one script, the inlined one its CSP allows."""
    doc, _ = written
    evil = "</title><script>alert(1)</script><img src=x onerror=alert(2)>"
    t0 = doc.targets[0]
    bad = replace(doc, warnings=(evil,), audio=replace(doc.audio, path=evil, window_file="javascript:alert(3)"),
                  targets=(replace(t0, tag=evil, keep_top_k=replace(t0.keep_top_k, file="/etc/passwd",
                                                                  rest_file="../../secret.wav"),
                                   faithfulness=replace(t0.faithfulness,
                                                        verdict=replace(t0.faithfulness.verdict, summary=evil))),),
                  stems=(replace(doc.stems[0], file="file:///etc/passwd"), doc.stems[1]))
    page = render(bad)
    assert "<script>alert" not in page and "<img" not in page and "alert(3)" not in page
    assert "/etc/passwd" not in page and "secret.wav" not in page
    assert page.count("<script") == 1
    script = page.split("<script>")[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html.unescape(page)
    assert [audio_ref(r) for r in ("a/b.wav", "https://h/x.wav?s=1", "http:x", "/a.wav", "a/../b.wav", "data:,")] == \
        ["a/b.wav", "https://h/x.wav?s=1", None, None, None, None]


def test_published_report_plays_urls_and_its_csp_names_their_origins(written):
    """With links (presigned URLs) every audio source is a URL; media-src allows exactly their origin."""
    doc, _ = written
    page = render(doc.with_files(lambda name: f"http://127.0.0.1:9/o/x/{name}?expires=1&sig=ab"))
    srcs = [html.unescape(s) for s in AUDIO_SRC.findall(page)]
    assert srcs and all(s.startswith("http://127.0.0.1:9/o/x/") and s.endswith("&sig=ab") for s in srcs)
    assert "media-src http://127.0.0.1:9;" in page
    assert "media-src 'self' file:;" in html.unescape(render(doc))


def test_large_explanations_stay_small(written):
    """d' = 5 stems x 64 segments = 320 components: every cell is a button, the page stays small
    (one WAV per stem, not per component)."""
    result = toy_explanation(tags=("voice",), segments=64, stems=5, num_samples=400, window_s=3.2, rate=8000)
    doc = describe(result)
    page = render(doc)
    assert page.count('class="cell ') == 320 and page.count("<audio") == 1 + 5 + 3 + doc.top_k
    assert len(page.encode()) < 250_000


def test_pages_validate_as_html(written, tmp_path, vnu):
    """The Nu Html Checker finds no error or warning in the report (local, published, with and without
    faithfulness figures). Its CSP notes are left to the browser, which enforces the policy for real."""
    doc, out = written
    pages = {"local.html": (out / REPORT_FILE).read_text(), "v1.html": render(_v1(doc)),
             "published.html": render(doc.with_files(lambda n: f"https://s3.example/b/{n}?X-Amz-Signature=1&a=2"))}
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run([*vnu, "--also-check-svg", "--format", "json", "--filterpattern", ".*Content Security Policy.*",
                           *(str(tmp_path / n) for n in pages)], capture_output=True, text=True, timeout=300)
    messages = json.loads(proc.stderr)["messages"]
    assert messages == [], json.dumps(messages, indent=1)[:3000]


# -- audiolime report --------------------------------------------------------------------------------------
def test_report_command_rewrites_the_report(written, tmp_path, capsys):
    """`audiolime report DIR` and `audiolime report JSON` rewrite exactly the page the writer wrote,
    print its path, and warn when audio it plays is missing."""
    doc, out = written
    original = (out / REPORT_FILE).read_bytes()
    (out / REPORT_FILE).unlink()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / REPORT_FILE)
    assert (out / REPORT_FILE).read_bytes() == original
    assert main(["report", str(out / MANIFEST)]) == 0 and (out / REPORT_FILE).read_bytes() == original
    capsys.readouterr()
    copy = tmp_path / "saved.json"
    copy.write_bytes((out / MANIFEST).read_bytes())
    assert main(["report", str(copy)]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "saved.html").is_file() and captured.out.strip() == str(tmp_path / "saved.html")
    assert f"{len(doc.files())} of the {len(doc.files())} audio files the report plays are not beside it" in captured.err


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("not json", "not an explanation document: Expecting value"),
    ("[1, 2]", "not an explanation document: expected a JSON object"),
    ('{"version": 1}', "not an explanation document: missing field 'audio'"),
    ('{"version": 7}', "document version 7 is not one this audiolime reads (1, 2)"),
    ("WEIGHT", "not an explanation document"),
])
def test_report_command_bad_input_is_one_line(written, tmp_path, capsys, content, message):
    """A missing, non-JSON, incomplete, newer or mistyped document: one line, exit 2, nothing written."""
    _, out = written
    path = tmp_path / "explanation.json"
    if content == "WEIGHT":
        d = json.loads((out / MANIFEST).read_text())
        d["targets"][0]["components"][0]["weight"] = "heavy"
        content = json.dumps(d)
    if content is not None:
        path.write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("audiolime: error:") and message in err, err
    assert "Traceback" not in err and not (tmp_path / REPORT_FILE).exists()


@pytest.mark.slow  # seconds of CPU: the full run only
# -- packaging -------------------------------------------------------------------------------------------
def test_wheel_ships_the_report_template_and_assets(tmp_path):
    """A built wheel contains the template, CSS and JS the renderer loads (package data)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("audiolime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = {f"audiolime/report/{p.relative_to(REPO / 'src/audiolime/report').as_posix()}"
              for p in (REPO / "src/audiolime/report").rglob("*") if p.suffix in (".j2", ".css", ".js")}
    assert len(assets) == 5 and assets <= names
