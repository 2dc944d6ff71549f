"""The one writer of an explanation's artifacts, over any object store (a local directory and S3
are two stores): artifacts first, ``explanation.json`` last, and on failure everything written is
deleted again. A reader that finds the manifest finds everything it names; a reader never pairs an
old manifest with new audio (an existing manifest is removed before anything is written).

Used by the CLI (``--out DIR`` is a :class:`~audiolime.store.LocalStore`), the explainer service
(its configured store, one prefix per explanation) and the client's download.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from audiolime.explain.document import MANIFEST, Document, artifacts, describe
from audiolime.store import ObjectStore

if TYPE_CHECKING:
    from audiolime.explain.pipeline import ExplainResult


class ArtifactWriter:
    """Use as a context manager: ``put`` every artifact, then ``commit`` the manifest."""

    def __init__(self, store: ObjectStore, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.written: list[str] = []
        self.committed = False

    def __enter__(self) -> ArtifactWriter:
        self.store.delete(self.prefix + MANIFEST)
        return self

    def put(self, name: str, data: bytes, content_type: str) -> None:
        key = self.prefix + name
        self.written.append(key)  # before the write: a failed write may leave a partial object
        self.store.put(key, data, content_type)

    def commit(self, manifest: bytes) -> None:
        self.put(MANIFEST, manifest, "application/json")
        self.committed = True

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            for key in reversed(self.written):  # manifest first, if it got that far
                try:
                    self.store.delete(key)
                except Exception:  # noqa: BLE001 - keep the original error; the manifest is what matters
                    pass


def write_files(store: ObjectStore, prefix: str, files: Iterable[tuple[str, bytes, str]], manifest: bytes) -> list[str]:
    """Write ``(name, data, content type)`` artifacts and then the manifest; returns the names."""
    with ArtifactWriter(store, prefix) as w:
        names = []
        for name, data, ctype in files:
            w.put(name, data, ctype)
            names.append(name)
        w.commit(manifest)
    return names


def write_explanation(result: ExplainResult, store: ObjectStore, prefix: str = "",
                      encode: Callable | None = None) -> tuple[Document, list[str]]:
    """Publish ``result``: every listenable artifact as WAV at the input's rate, then the
    manifest. Returns the document (relative file names) and the artifact names."""
    if encode is None:
        from audiolime.audio import wav_bytes as encode  # soundfile: only where artifacts are written
    doc = describe(result)
    rate = result.audio.sample_rate
    names = write_files(store, prefix, ((name, encode(wave, rate), "audio/wav") for name, wave in artifacts(result)),
                        doc.dumps())
    return doc, names
