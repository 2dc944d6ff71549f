"""The one writer of an explanation's artifacts, over any object store (a local directory and S3
are two stores): artifacts first, then the listening report ``explanation.html``, and
``explanation.json`` last; on failure everything written is deleted again. A reader that finds
the manifest finds everything it names; a reader never pairs an old manifest with new audio (an
existing manifest is removed before anything is written).

The report is rendered from the document it sits beside, so every writer of a manifest writes
one: the CLI's ``--out``, the explainer's published artifacts and the client's download. Its audio
is referenced by relative name, or through ``links`` (the explainer's presigned URLs: presigning
needs no object, so the URLs exist before the report is written, and the manifest still comes last).

Used by the CLI (``--out DIR`` is a :class:`~audiolime.store.LocalStore`), the explainer service
(its configured store, one prefix per explanation), the client's download and ``audiolime report``.
A song timeline (``audiolime timeline --out``) is written the same way (:func:`write_timeline`):
its clips and stem audio, then ``timeline.html``, then ``timeline.json`` last.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from audiolime.explanation.document import MANIFEST, REPORT_FILE, Document, FileRef
from audiolime.store import ObjectStore

if TYPE_CHECKING:  # the method (scikit-learn): only where an explanation is written, not read
    import numpy as np

    from audiolime.explanation.timeline import RangeStems, TimelineDocument
    from audiolime.method.pipeline import SongExplanation

REPORT_TYPE = "text/html; charset=utf-8"


def render_report(doc: Document | TimelineDocument, links: FileRef | None = None) -> bytes:
    """The listening report of ``doc`` (an explanation or a song timeline), its audio referenced by
    ``links(name)`` or by relative name."""
    from audiolime.report.page import render, render_timeline  # jinja2: only where reports are written

    if isinstance(doc, Document):
        return render(doc.with_files(links) if links else doc).encode()
    return render_timeline(doc.with_files(links) if links else doc).encode()


def _names(doc: Document | TimelineDocument) -> tuple[str, str]:
    """(report, manifest) file names of ``doc``'s kind."""
    if isinstance(doc, Document):
        return REPORT_FILE, MANIFEST
    from audiolime.explanation.timeline import TIMELINE_MANIFEST, TIMELINE_REPORT

    return TIMELINE_REPORT, TIMELINE_MANIFEST


def write_report(store: ObjectStore, key: str, doc: Document | TimelineDocument, links: FileRef | None = None) -> None:
    """(Re)write only the report, e.g. beside a saved manifest (``audiolime report``)."""
    store.put(key, render_report(doc, links), REPORT_TYPE)


class ArtifactWriter:
    """Use as a context manager: ``put`` every artifact, then ``commit`` the report and manifest."""

    def __init__(self, store: ObjectStore, prefix: str = "", manifest: str = MANIFEST) -> None:
        self.store = store
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.manifest = manifest  # removed first (a reader never pairs it with new audio)
        self.written: list[str] = []
        self.committed = False

    def __enter__(self) -> ArtifactWriter:
        self.store.delete(self.prefix + self.manifest)
        return self

    def put(self, name: str, data: bytes, content_type: str) -> None:
        key = self.prefix + name
        self.written.append(key)  # before the write: a failed write may leave a partial object
        self.store.put(key, data, content_type)

    def commit(self, doc: Document | TimelineDocument, manifest: bytes | None = None,
               links: FileRef | None = None) -> None:
        """The report of ``doc``, then the manifest (``manifest`` bytes as received, else ``doc``'s)."""
        report, name = _names(doc)
        self.put(report, render_report(doc, links), REPORT_TYPE)
        self.put(name, doc.dumps() if manifest is None else manifest, "application/json")
        self.committed = True

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            for key in reversed(self.written):  # manifest first, if it got that far
                try:
                    self.store.delete(key)
                except Exception:  # noqa: BLE001 - keep the original error; the manifest is what matters
                    pass


def write_files(store: ObjectStore, prefix: str, files: Iterable[tuple[str, bytes, str]], doc: Document,
                manifest: bytes | None = None, links: FileRef | None = None) -> list[str]:
    """Write ``(name, data, content type)`` artifacts, then ``doc``'s report and the manifest;
    returns the artifact names."""
    with ArtifactWriter(store, prefix) as w:
        names = []
        for name, data, ctype in files:
            w.put(name, data, ctype)
            names.append(name)
        w.commit(doc, manifest, links)
    return names


def write_explanation(result: SongExplanation, store: ObjectStore, prefix: str = "",
                      links: FileRef | None = None) -> tuple[Document, list[str]]:
    """Publish ``result``: every listenable artifact as WAV at the input's rate, the report (audio
    through ``links`` when given), then the manifest. The document's timings are final before
    anything names them: ``store`` is the time the audio took to write. Returns the document
    (relative file names) and the artifact names."""
    from audiolime.audio import wav_bytes  # soundfile: only where artifacts are written
    from audiolime.explanation.describe import artifacts, describe

    rate = result.audio.sample_rate
    t = time.perf_counter()
    with ArtifactWriter(store, prefix) as w:
        names = []
        for name, wave in artifacts(result):
            w.put(name, wav_bytes(wave, rate), "audio/wav")
            names.append(name)
        doc = describe(result, {**result.timings_s, "store": time.perf_counter() - t})
        w.commit(doc, links=links)
    return doc, names


def write_timeline(doc: TimelineDocument, stems: RangeStems, mix: np.ndarray, store: ObjectStore,
                   prefix: str = "") -> tuple[TimelineDocument, list[str]]:
    """Publish a song timeline: the mix of its range and each stem over it (FLAC), each top moment's
    clip (WAV), all at the stems' rate, then ``timeline.html``, then ``timeline.json`` (version 2,
    naming them; its timings gain ``store``, the time the audio took to write). Returns the document
    and the artifact names."""
    from audiolime.audio import flac_bytes, wav_bytes  # soundfile: only where artifacts are written
    from audiolime.explanation.timeline import TIMELINE_MANIFEST, timeline_artifacts, with_clip_names

    doc = with_clip_names(doc, stems)
    t = time.perf_counter()
    with ArtifactWriter(store, prefix, TIMELINE_MANIFEST) as w:
        names = []
        for name, wave, kind in timeline_artifacts(doc, stems, mix):
            if kind == "flac":
                w.put(name, flac_bytes(wave, stems.sample_rate), "audio/flac")
            else:
                w.put(name, wav_bytes(wave, stems.sample_rate), "audio/wav")
            names.append(name)
        doc = replace(doc, timings_s={**doc.timings_s, "store": round(time.perf_counter() - t, 4)})
        w.commit(doc)
    return doc, names
