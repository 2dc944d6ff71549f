"""The explainer service's core of one explanation, free of gRPC: check a request once, decode its
audio, make its plan, run the method (:func:`audiolime.method.pipeline.explain_song`) against a
remote tagger and separator, and publish the result to the object store with the one artifact
writer. Admission, streams, cancellation, jobs and expiry are the API's
(:mod:`audiolime.explainer.core`); this module runs what they admit.

Publishing: every artifact is written under ``explanations/<explanation_id>/`` with the names the
CLI writes locally, then the listening report ``explanation.html`` and ``explanation.json`` last; on
failure everything written is deleted again. The result carries presigned URLs (``url_ttl_s``,
default 1 h, at most 7 days); the published report references its audio by those same URLs. The
stored manifest is the response's document (only its file references become URLs).

Backend failures follow :class:`audiolime.explainer.remote.RetryPolicy`: every tagger Predict has
its own deadline and is retried on transient codes; when the budget is exhausted the request fails
with ``Unavailable`` and nothing is left in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from audiolime import errors
from audiolime.artifacts import write_explanation
from audiolime.audio import decode, probe
from audiolime.explainer import spans
from audiolime.explainer.cache import Entry, ExplanationCache, cache_key
from audiolime.explainer.jobstore import explanation_prefix
from audiolime.explainer.remote import retry_budget
from audiolime.explainer.scans import StoredScan
from audiolime.explanation.document import MANIFEST, REPORT_FILE, Document
from audiolime.inputs import AudioSource, InputReader
from audiolime.method.engine import Deadline, Engine
from audiolime.method.events import Event, EventSink, ignore
from audiolime.method.limits import Limits, MiB
from audiolime.method.pipeline import SongExplanation, explain_song
from audiolime.method.plan import Plan, Tagger, make_plan, memory_bytes
from audiolime.method.request import DEFAULT_BATCH_SIZE, ExplainRequest, ValidRequest
from audiolime.method.stems import StemSource
from audiolime.server import context as callctx
from audiolime.server import metrics
from audiolime.server.admission import MemoryBudget
from audiolime.store import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_URL_TTL_S = 3600
MAX_URL_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Task:
    """Everything one explanation needs, checked (:meth:`ExplainerService.check`): the method's
    request, the audio, how long its URLs live. The same for a unary call, a stream and a job."""

    request: ValidRequest
    audio: AudioSource
    url_ttl_s: int = 0

    @property
    def ttl_s(self) -> int:
        return self.url_ttl_s or DEFAULT_URL_TTL_S


@dataclass(frozen=True)
class ServiceConfig:
    batch_size: int = DEFAULT_BATCH_SIZE
    max_in_flight: int = 4
    limits: Limits = field(default_factory=Limits)
    tagger_cache_s: float = 30.0
    tagger_retry_budget: int = 8  # retries of all tagger calls of one explanation together
    memory_budget: int = 1536 * MiB  # predicted bytes of the explanations running at once (--memory-budget)
    cache: bool = True  # the explanation cache (--cache)


@dataclass(frozen=True)
class Published:
    """A published explanation: the stored manifest's document and its presigned URLs."""

    explanation_id: str
    document: Document  # file references: relative names, as stored (the manifest itself)
    urls: dict[str, str]  # artifact name -> presigned URL
    manifest_url: str
    report_url: str
    urls_expire_at: float  # unix time
    separator_cache_hit: bool
    cache_key: str = ""  # the explanation cache's key ("": not cached)
    cache_hit: bool = False  # read back from the explanation cache
    kept_until: float = 0.0  # a cache hit: when its objects were to be deleted (the caller postpones it)

    def with_urls(self) -> Document:
        """The document a caller gets: file references are presigned URLs."""
        return self.document.with_files(self.urls.get)


class SeparatorClient(Protocol):
    """The separator as the core needs it (``remote.RemoteSeparator``)."""

    def stems(self, audio: AudioSource, model: str) -> StemSource: ...


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


# The stages of an explanation, in order, as the document's timings_s and the stage metric name them:
# waiting for an admission slot, decoding, the song scan, separation of the window, drawing masks,
# the tagger on them, fitting the surrogate, the faithfulness checks, writing the artifacts.
STAGES = ("queue", "decode", "scan", "separate", "sample", "predict", "fit", "fidelity", "store")


class WindowCost:
    """What a tagger window cost this replica's explanations lately, per model: wall seconds of the
    predict stage per window evaluated (at the explainer's batch size and concurrency, so queueing at
    a busy tagger counts), an exponentially weighted mean of the last explanations. Sizes the next
    explanation's work to its deadline (a kept song scan's own measure may be from another load)."""

    WEIGHT = 0.5  # of the newest explanation
    MIN_WINDOWS = 16  # fewer windows measure overhead more than cost

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cost: dict[str, float] = {}

    def observe(self, model: str, seconds: float, windows: int) -> None:
        if windows < self.MIN_WINDOWS or seconds <= 0:
            return
        with self._lock:
            old = self._cost.get(model)
            new = seconds / windows
            self._cost[model] = new if old is None else self.WEIGHT * new + (1 - self.WEIGHT) * old

    def get(self, model: str) -> float:
        """Seconds per window (0.0: not measured yet)."""
        with self._lock:
            return self._cost.get(model, 0.0)


def caller_deadline() -> Deadline | None:
    """The gRPC caller's deadline as the engine's (None: no deadline, e.g. a job), keeping what
    publishing needs (:meth:`Deadline.for_answer`)."""
    left = callctx.remaining()
    return None if left is None else Deadline.for_answer(left)


class ExplainerService:
    """Runs and publishes explanations; safe for concurrent requests (no per-request state)."""

    def __init__(self, store: ObjectStore, tagger_factory: TaggerFactory, separator: SeparatorClient,
                 config: ServiceConfig = ServiceConfig(), read_uri: Callable[[str], bytes] | None = None) -> None:
        self.store = store
        self.read_uri = read_uri or InputReader(store, limits=config.limits)
        self.separator = separator
        self.config = config
        self._taggers = _TaggerCache(tagger_factory, config.tagger_cache_s)
        self.memory = MemoryBudget(config.memory_budget)
        self.cache = ExplanationCache(store)
        self._window_cost = WindowCost()

    # -- the one check of a request ------------------------------------------------------------
    def check(self, request: ExplainRequest, audio: AudioSource, url_ttl_s: int = 0) -> Task:
        """Everything that can be checked without the audio or the backends, once; the task is
        trusted from here on (the tagger- and header-dependent checks are the plan's)."""
        valid = request.validate(self.config.limits)
        audio.check()
        if audio.content is not None:
            self.config.limits.check_inline_size(len(audio.content), "audio")
        if not 0 <= url_ttl_s <= MAX_URL_TTL_S:
            raise errors.InvalidInput(f"url_ttl_s must be between 0 and {MAX_URL_TTL_S} (7 days), got {url_ttl_s}")
        return Task(valid, audio, url_ttl_s)

    def _content(self, audio: AudioSource) -> bytes:
        """The encoded audio: inline, or read by URI (allow-list and size checked first)."""
        if audio.content is not None:
            return audio.content
        assert audio.uri is not None  # Task: exactly one of them
        try:
            return self.read_uri(audio.uri)
        except errors.NotFound as exc:
            raise errors.InvalidInput(f"audio uri: {exc}") from None

    # -- one explanation ---------------------------------------------------------------------
    def run(self, task: Task, events: EventSink = ignore, explanation_id: str | None = None,
            memory_wait_s: float = 0.0, cached: bool = False, queued_s: float = 0.0) -> Published:
        """Explain, publish to the store, return it with presigned URLs.

        Cheapest first, each before the work it protects: the audio's size and header, the plan
        (the request against the tagger and the header: tags, cost, component memory), and only
        then decoding and separation. With ``cached`` (and ``--cache`` on) the plan's key is looked up
        in the explanation cache first; the caller remembers a computed result once its expiry is
        scheduled (:meth:`remember`). ``queued_s``: how long the request waited for its admission slot
        (the document's ``queue`` stage)."""
        req = task.request
        with retry_budget(self.config.tagger_retry_budget), spans.traced(events, {
                "audiolime.model": req.model, "audiolime.separator": req.separator}) as sink:
            published = self._run(task, sink, explanation_id, memory_wait_s, cached and self.config.cache, queued_s)
            doc = published.document
            spans.finished(sink, {"audiolime.explanation_id": published.explanation_id,
                                  "audiolime.cache_hit": published.cache_hit,
                                  "audiolime.separator_cache_hit": published.separator_cache_hit,
                                  **{f"audiolime.timing.{k}_s": round(float(v), 6) for k, v in doc.timings_s.items()}})
            return published

    def _run(self, task: Task, events: EventSink, explanation_id: str | None, memory_wait_s: float,
             cached: bool, queued_s: float = 0.0) -> Published:
        req, limits = task.request, self.config.limits
        events(Event("decode"))
        t = time.perf_counter()
        content = self._content(task.audio)
        header = probe(content, task.audio.name, limits)
        decode_s = time.perf_counter() - t
        tagger = self._taggers.get(req.model, req.model_version)
        plan = make_plan(req, tagger, header, limits)  # unknown tags, bad windows, too costly: before decoding
        key, sha = "", hashlib.sha256(content).hexdigest()  # the cache's and the song scan's key
        if cached:
            key = cache_key(plan, tagger, sha, task.audio.name, self.config.batch_size)
            hit = self._cached(key, task.ttl_s, tagger.name)
            if hit is not None:
                return hit
        need = len(content) + memory_bytes(plan, header)
        what = f"a {header.duration_s:.0f} s recording at {header.sample_rate} Hz x {header.channels} channels"
        with self.memory.reserve(need, what, memory_wait_s):
            published, cut_short = self._explain(task, events, explanation_id, content, sha, plan, tagger,
                                                 {"queue": queued_s, "decode": decode_s})
        if cut_short:
            key = ""  # cut short by this caller's time: not the answer to the request itself
        return dataclasses.replace(published, cache_key=key)

    def _cached(self, key: str, ttl_s: int, model: str) -> Published | None:
        """The cached explanation with fresh URLs valid ``ttl_s`` (the caller postpones its deletion to
        at least that long: ``ExplainerCore``), or None."""
        entry = self.cache.lookup(key, time.time())
        published = None
        if entry is not None:
            try:
                # URLs for the full ttl_s: the caller postpones the deletion to at least that long
                published = self.present(entry.explanation_id, ttl_s, entry.separator_cache_hit)
            except errors.NotFound:  # deleted since (the sweep removes the pointer with it)
                pass
        metrics.EXPLANATION_CACHE.labels(model, "miss" if published is None else "hit").inc()
        if entry is None or published is None:
            return None
        log.info("explanation cache hit", extra={"explanation_id": published.explanation_id, "model": model})
        return dataclasses.replace(published, cache_key=key, cache_hit=True, kept_until=entry.deleted_at)

    def remember(self, published: Published, deleted_at: float) -> None:
        """Point the cache at an explanation (after its manifest and its expiry exist), or record a
        hit's postponed deletion."""
        if published.cache_key:
            self.cache.remember(published.cache_key, Entry(published.explanation_id, deleted_at,
                                                           published.separator_cache_hit))

    def _explain(self, task: Task, events: EventSink, explanation_id: str | None, content: bytes, sha: str,
                 plan: Plan, tagger: Tagger, timings: dict[str, float]) -> tuple[Published, bool]:
        """``sha``: hex SHA-256 of ``content`` (the song scan's key); ``timings``: the stages so far.
        Also returns whether this caller's time cut the explanation short (sampling stopped at the
        deadline or budget, or fewer faithfulness checks than asked)."""
        req, limits = task.request, self.config.limits
        t = time.perf_counter()
        audio = decode(content, task.audio.name, limits)
        timings["decode"] += time.perf_counter() - t
        source = self.separator.stems(task.audio, req.separator)
        engine = Engine(tagger.predict, tagger.labels, self.config.batch_size, self.config.max_in_flight)
        scans = StoredScan(self.store, tagger, sha, self.config.batch_size)
        result = explain_song(plan, audio, task.audio.name, tagger, source, engine, events, timings,
                              caller_deadline(), scans, self._window_cost.get(tagger.name))
        events(Event("store"))
        published = self._publish(result, task, explanation_id or uuid.uuid4().hex)
        tm = published.document.timings_s
        for stage in STAGES:  # every stage each time (0 when it took nothing, e.g. a kept scan)
            metrics.EXPLANATION_STAGE.labels(stage).observe(tm.get(stage, 0.0))
        exp = result.explanation
        self._window_cost.observe(tagger.name, tm.get("predict", 0.0), 1 + exp.unique_samples)
        metrics.MASKS_EVALUATED.labels(tagger.name).inc(exp.unique_samples + exp.metric_calls)
        log.info("explanation published", extra={"explanation_id": published.explanation_id, "model": tagger.name,
                                                 "num_samples": exp.num_samples, "stopping": exp.stopping.reason,
                                                 "separator_cache_hit": published.separator_cache_hit,
                                                 "timings_s": tm})
        return published, exp.cut_short

    def _publish(self, result: SongExplanation, task: Task, explanation_id: str) -> Published:
        prefix = explanation_prefix(explanation_id)
        signed: dict[str, str] = {}

        def link(name: str) -> str:  # presigning needs no object: the report is written with these
            if name not in signed:
                signed[name] = self.store.presign(prefix + name, task.ttl_s)
            return signed[name]

        doc, names = write_explanation(result, self.store, prefix, links=link)
        try:
            return self._signed(explanation_id, doc, names, task.ttl_s, result.stems.cache_hit, link)
        except BaseException:
            self.store.delete_prefix(prefix)
            raise

    def present(self, explanation_id: str, ttl_s: int, cache_hit: bool, not_after: float | None = None) -> Published:
        """A published explanation read back from the store (by any replica) with fresh URLs valid
        ``ttl_s`` seconds, but never past ``not_after`` (when the objects are deleted). The report's
        own audio links are the ones signed when it was published."""
        doc = Document.loads(self.store.get(explanation_prefix(explanation_id) + MANIFEST))
        if not_after is not None:
            ttl_s = int(max(1, min(ttl_s, not_after - time.time())))
        return self._signed(explanation_id, doc, doc.files(), ttl_s, cache_hit)

    def _signed(self, explanation_id: str, doc: Document, names: list[str], ttl_s: int, cache_hit: bool,
                link: Callable[[str], str] | None = None) -> Published:
        prefix = explanation_prefix(explanation_id)
        sign = link or (lambda name: self.store.presign(prefix + name, ttl_s))
        expires = time.time() + ttl_s
        urls = {n: sign(n) for n in names}
        return Published(explanation_id, doc, urls, sign(MANIFEST), sign(REPORT_FILE), expires, cache_hit)
