"""How the listening report scales with d' (one run, ratios against the default d' = 12).

For d' = 2x6 (the default), 4x24 and 5x64 components: the time to render explanation.html from the
document, its size, and in Debian's headless chromium the time from navigation to the load event
and until every <audio> element has its metadata (the page usable). Documents are synthetic
(random weights, 3 s stereo noise at 44.1 kHz as each WAV), written by the one artifact writer's
report function. Target: a few hundred components open about as fast as the default.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

WINDOW_S, RATE = 3.0, 44100
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def synthetic(stems: int, segments: int, top_k: int, out: Path, rng: np.random.Generator):
    """A document with ``stems x segments`` components and its WAVs written under ``out``."""
    import soundfile as sf

    from audiolime.explanation.document import (
        PEAK_COLUMNS,
        AudioRecord,
        ComponentRecord,
        Document,
        KeepTopKRecord,
        ModelRecord,
        SeparatorRecord,
        StemRecord,
        TargetRecord,
        component_file,
        stem_file,
    )

    names = ("vocals", "drums", "bass", "piano", "other")[:stems]
    seg = WINDOW_S / segments
    weights = rng.normal(0, 0.02, stems * segments)
    order = np.argsort(-weights)
    comps = tuple(ComponentRecord(rank + 1, f"{names[i // segments]}[{i % segments}]", names[i // segments],
                                  int(i % segments), 60 + (i % segments) * seg, 60 + (i % segments + 1) * seg,
                                  float(weights[i]), component_file(rank + 1, names[i // segments], int(i % segments))
                                  if rank < top_k else None) for rank, i in enumerate(order))
    files = ["window.wav", *(stem_file(n) for n in names), *(c.file for c in comps if c.file), "topk_mix.wav",
             "rest_mix.wav"]
    for f in files:
        sf.write(out / f, (rng.normal(0, 0.05, (int(WINDOW_S * RATE), 2))).astype(np.float32), RATE)
    peaks = lambda: tuple(np.round(rng.uniform(0, 0.5, PEAK_COLUMNS), 3).tolist())  # noqa: E731
    fid = KeepTopKRecord(top_k, tuple(c.name for c in comps[:top_k]), True, "rock", 0.4, 0.5, "topk_mix.wav",
                         "rest_mix.wav")
    return Document(
        audio=AudioRecord("song.ogg", "0" * 64, RATE, 2, 180.0, 60.0, WINDOW_S, "window.wav", peaks()),
        model=ModelRecord("musicnn-msd", 1, 16000, 48000), separator=SeparatorRecord("bench", names, 1e-5),
        prediction={f"tag{i}": float(p) for i, p in enumerate(rng.dirichlet(np.ones(50)))}, song_top_tags=(),
        targets=(TargetRecord("rock", 0.8, 0.1, comps, fid),), segments=segments, num_components=stems * segments,
        num_samples=2048, unique_samples=2000, exhaustive=False, seed=0, top_k=top_k,
        kernel_width=0.25, stems=tuple(StemRecord(n, stem_file(n), peaks()) for n in names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="page loads per size (the median is reported)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from audiolime.artifacts import render_report

    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
        for stems, segments in ((2, 6), (4, 24), (5, 64)):
            out = Path(tmp) / f"d{stems * segments}"
            out.mkdir()
            doc = synthetic(stems, segments, 3, out, rng)
            render_report(doc)  # template compiled once (a process renders many)
            t = time.perf_counter()
            page_bytes = render_report(doc)
            render_ms = (time.perf_counter() - t) * 1000
            (out / "explanation.html").write_bytes(page_bytes)
            loads, ready = [], []
            for _ in range(args.repeats):
                page = browser.new_page()
                t = time.perf_counter()
                page.goto((out / "explanation.html").as_uri(), wait_until="load")
                loads.append((time.perf_counter() - t) * 1000)
                page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
                ready.append((time.perf_counter() - t) * 1000)
                assert page.locator(".cell").count() == stems * segments
                page.close()
            rows.append((stems * segments, render_ms, len(page_bytes), float(np.median(loads)), float(np.median(ready))))
        browser.close()
    base = rows[0]
    print(f"{'d_prime':>7} {'render_ms':>9} {'html_kB':>8} {'load_ms':>8} {'ready_ms':>8} {'ready_ratio':>11}")
    for d, render_ms, size, load_ms, ready_ms in rows:
        print(f"{d:>7} {render_ms:>9.1f} {size / 1000:>8.1f} {load_ms:>8.1f} {ready_ms:>8.1f} {ready_ms / base[4]:>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
