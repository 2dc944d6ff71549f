"""The explainer service's core, free of gRPC: check a request, decode its audio, run the method
(:func:`audiolime.explain.pipeline.explain_song`) against a remote tagger and separator, and
publish the result to the object store with the one artifact writer.

Publishing: every artifact is written under ``explanations/<explanation_id>/`` with the names the
CLI writes locally, then the listening report ``explanation.html`` and ``explanation.json`` last; on
failure everything written is deleted again. The outcome carries presigned URLs (``url_ttl_s``,
default 1 h, at most 7 days); the published report references its audio by those same URLs.

Backend failures follow :class:`audiolime.explainer.remote.RetryPolicy`: every tagger Predict has
its own deadline and is retried on transient codes; when the budget is exhausted the request fails
with ``Unavailable`` and nothing is left in the store.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from audiolime import errors
from audiolime.audio import decode, probe
from audiolime.explain.artifacts import write_explanation
from audiolime.explain.document import MANIFEST, REPORT_FILE, Document
from audiolime.explain.engine import Engine
from audiolime.explain.events import Event, EventSink, ignore
from audiolime.explain.limits import Limits
from audiolime.explain.pipeline import Tagger, check, explain_song
from audiolime.explain.request import ExplainRequest
from audiolime.explain.stems import StemSource
from audiolime.inputs import InputReader
from audiolime.server import metrics
from audiolime.store import ObjectStore
from audiolime.wire import AudioSource

log = logging.getLogger(__name__)

DEFAULT_URL_TTL_S = 3600
MAX_URL_TTL_S = 7 * 24 * 3600
PREFIX = "explanations"


@dataclass(frozen=True)
class Job:
    """Everything one explanation needs: the method's request, the audio, how long URLs live."""

    request: ExplainRequest
    audio: AudioSource
    url_ttl_s: int = 0

    @property
    def ttl_s(self) -> int:
        return self.url_ttl_s or DEFAULT_URL_TTL_S


@dataclass(frozen=True)
class ServiceConfig:
    batch_size: int = 64
    max_in_flight: int = 4
    limits: Limits = field(default_factory=Limits)
    tagger_cache_s: float = 30.0


@dataclass
class ExplainOutcome:
    """A published explanation."""

    explanation_id: str
    document: Document  # file references: relative names, as stored
    urls: dict[str, str]  # artifact name -> presigned URL
    manifest_url: str
    report_url: str
    urls_expire_at: float  # unix time
    separator_cache_hit: bool
    keys: list[str] = field(default_factory=list)

    def published(self) -> Document:
        """The document a caller gets: file references are presigned URLs."""
        return self.document.with_files(self.urls.get)


class StemSourceWithCache(StemSource, Protocol):
    cache_hit: bool


class SeparatorClient(Protocol):
    """The separator as the core needs it (``remote.RemoteSeparator``)."""

    def stems(self, audio: AudioSource, model: str) -> StemSourceWithCache: ...


TaggerFactory = Callable[[str, "int | None"], Tagger]  # (name, version)


class _TaggerCache:
    """Remote taggers by (name, version), re-resolved after ``ttl_s`` so new versions are seen."""

    def __init__(self, factory: TaggerFactory, ttl_s: float) -> None:
        self._factory = factory
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], tuple[float, Tagger]] = {}

    def get(self, name: str, version: int) -> Tagger:
        key = (name, version)
        with self._lock:
            hit = self._items.get(key)
            if hit and time.monotonic() - hit[0] < self._ttl:
                return hit[1]
        tagger = self._factory(name, version or None)  # outside the lock: may retry
        with self._lock:
            self._items[key] = (time.monotonic(), tagger)
        return tagger


class ExplainerService:
    """Runs and publishes explanations; safe for concurrent requests (no per-request state)."""

    def __init__(self, store: ObjectStore, tagger_factory: TaggerFactory, separator: SeparatorClient,
                 config: ServiceConfig = ServiceConfig(), read_uri: Callable[[str], bytes] | None = None) -> None:
        self.store = store
        self.read_uri = read_uri or InputReader(store, limits=config.limits)
        self.separator = separator
        self.config = config
        self._taggers = _TaggerCache(tagger_factory, config.tagger_cache_s)

    # -- checks before any work --------------------------------------------------------------
    def validate(self, job: Job) -> Job:
        """Everything that can be checked without the audio or the backends."""
        job.request.validate(self.config.limits)
        job.audio.check()
        if job.audio.content is not None:
            self.config.limits.check_size(len(job.audio.content), "audio")
        if not 0 <= job.url_ttl_s <= MAX_URL_TTL_S:
            raise errors.InvalidInput(f"url_ttl_s must be between 0 and {MAX_URL_TTL_S} (7 days), got {job.url_ttl_s}")
        return job

    def _content(self, audio: AudioSource) -> bytes:
        """The encoded audio: inline, or read by URI (allow-list and size checked first)."""
        if audio.content is not None:
            return audio.content
        try:
            return self.read_uri(audio.uri)
        except errors.NotFound as exc:
            raise errors.InvalidInput(f"audio uri: {exc}") from None

    # -- the request -------------------------------------------------------------------------
    def explain(self, job: Job, events: EventSink = ignore, explanation_id: str | None = None) -> ExplainOutcome:
        """Explain, publish to the store, return the outcome with presigned URLs.

        Checks run cheapest first, each before the work it protects: the request's fields, the
        audio's size and header, the request against the tagger and the header (tags, cost,
        component memory), and only then decoding and separation."""
        self.validate(job)
        req, limits = job.request, self.config.limits
        events(Event("decode"))
        t = time.perf_counter()
        content = self._content(job.audio)
        header = probe(content, job.audio.name, limits)
        decode_s = time.perf_counter() - t
        tagger = self._taggers.get(req.model, req.model_version)
        check(req, tagger, header, limits)  # unknown tags, bad windows, too costly: before decoding
        t = time.perf_counter()
        audio = decode(content, job.audio.name, limits)
        decode_s += time.perf_counter() - t
        source = self.separator.stems(job.audio, req.separator)
        engine = Engine(tagger.predict, tagger.labels, self.config.batch_size, self.config.max_in_flight)
        result = explain_song(audio, job.audio.name, req, tagger, source, engine, events, limits)
        events(Event("store"))
        explanation_id = explanation_id or uuid.uuid4().hex
        t = time.perf_counter()
        outcome = self._publish(result, job, explanation_id, source.cache_hit)
        store_s = time.perf_counter() - t
        tm = result.timings_s
        for stage, value in (("decode", decode_s + tm.get("decode", 0.0)), ("separate", tm.get("separate", 0.0)),
                             ("predict", tm.get("scan", 0.0) + tm.get("sample", 0.0) + tm.get("predict", 0.0)),
                             ("fit", tm.get("fit", 0.0)), ("fidelity", tm.get("fidelity", 0.0)), ("store", store_s)):
            metrics.EXPLANATION_STAGE.labels(stage).observe(value)
        exp = result.explanation
        metrics.MASKS_EVALUATED.labels(tagger.name).inc(exp.unique_samples + exp.metric_calls)
        outcome.document = outcome.document.with_timing("store", store_s)
        log.info("explanation published", extra={"explanation_id": explanation_id, "model": tagger.name,
                                                 "num_samples": exp.num_samples, "stopping": exp.stopping.reason,
                                                 "separator_cache_hit": outcome.separator_cache_hit,
                                                 "timings_s": outcome.document.timings_s})
        return outcome

    def _publish(self, result, job: Job, explanation_id: str, cache_hit: bool) -> ExplainOutcome:
        prefix = f"{PREFIX}/{explanation_id}/"
        signed: dict[str, str] = {}

        def link(name: str) -> str:  # presigning needs no object: the report is written with these
            if name not in signed:
                signed[name] = self.store.presign(prefix + name, job.ttl_s)
            return signed[name]

        doc, names = write_explanation(result, self.store, prefix, links=link)
        try:
            return self._signed(explanation_id, doc, names, job.ttl_s, cache_hit, link)
        except BaseException:
            self.store.delete_prefix(prefix)
            raise

    def present(self, explanation_id: str, ttl_s: int, cache_hit: bool, not_after: float | None = None,
                store_s: float | None = None) -> ExplainOutcome:
        """A published explanation read back from the store (by any replica) with fresh URLs valid
        ``ttl_s`` seconds, but never past ``not_after`` (when the objects are deleted). The report's
        own audio links are the ones signed when it was published."""
        prefix = f"{PREFIX}/{explanation_id}/"
        doc = Document.loads(self.store.get(prefix + MANIFEST))
        if not_after is not None:
            ttl_s = int(max(1, min(ttl_s, not_after - time.time())))
        if store_s is not None:
            doc = doc.with_timing("store", store_s)
        return self._signed(explanation_id, doc, doc.files(), ttl_s, cache_hit)

    def _signed(self, explanation_id: str, doc: Document, names: list[str], ttl_s: int, cache_hit: bool,
                link: Callable[[str], str] | None = None) -> ExplainOutcome:
        prefix = f"{PREFIX}/{explanation_id}/"
        if link is None:
            def link(name: str) -> str:
                return self.store.presign(prefix + name, ttl_s)
        expires = time.time() + ttl_s
        urls = {n: link(n) for n in names}
        return ExplainOutcome(explanation_id, doc, urls, link(MANIFEST), link(REPORT_FILE), expires, cache_hit,
                              [prefix + n for n in names] + [prefix + REPORT_FILE, prefix + MANIFEST])
