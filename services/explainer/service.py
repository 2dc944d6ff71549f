"""The explainer service's core, free of gRPC: validate a request, decode the audio, run
``pipeline.explain_song`` against a remote tagger and separator, publish the result to the object
store, and keep a bounded table of background jobs.

Publishing: every artifact is written under ``explanations/<explanation_id>/`` with the same
names the CLI writes locally, ``explanation.json`` LAST (a reader that finds the manifest finds
everything it names); if anything fails, the whole prefix is deleted, so nothing partial stays
visible. The result carries presigned URLs (``url_ttl_s``, default 1 h, at most 7 days).

Backend failures (policy implemented in ``remote.RetryPolicy``): each tagger Predict has its own
deadline (``--tagger-timeout``) and is retried on UNAVAILABLE / DEADLINE_EXCEEDED /
RESOURCE_EXHAUSTED with exponential backoff and jitter up to ``--tagger-retries`` times; batches
are independent, so a tagger pod killed and restarted mid-explanation only delays the batches it
was serving and the explanation completes. When the budget is exhausted the request fails with
``Unavailable`` (gRPC UNAVAILABLE) and nothing is left in the store.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from audiolime import errors
from audiolime.audio import Audio, decode, wav_bytes
from audiolime.explainer.engine import Engine, ExplainParams, resolve_tags
from audiolime.explainer.output import MANIFEST
from audiolime.explainer.pipeline import ExplainRequest, ExplainResult, StemSource, Tagger, artifacts, document, \
    explain_song
from audiolime.server import logs, metrics
from audiolime.store import ObjectStore

log = logging.getLogger(__name__)

STAGES = ("decode", "scan", "separate", "predict", "fit", "fidelity", "store")
MAX_URL_TTL_S = 7 * 24 * 3600
MAX_NUM_SAMPLES = 65536
PREFIX = "explanations"

ProgressFn = Callable[[str, int, int], None]  # (stage, evaluated, total)


@dataclass(frozen=True)
class ExplainSpec:
    """One explanation request as the service sees it (zero/empty fields take the defaults)."""

    audio_content: bytes | None = None
    audio_uri: str | None = None
    filename: str = ""
    model: str = ""
    model_version: int = 0
    tags: tuple[str, ...] = ()
    top_n: int = 0
    window_start_s: float | None = None
    window_duration_s: float = 0.0
    segments: int = 0
    separator_model: str = ""
    num_samples: int = 0
    seed: int = 0
    top_k: int = 0
    url_ttl_s: int = 0

    def with_defaults(self) -> ExplainSpec:
        return replace(self, model=self.model or "musicnn-msd", top_n=self.top_n or 1,
                       segments=self.segments or 6, separator_model=self.separator_model or "2stems",
                       num_samples=self.num_samples or 2048, top_k=self.top_k or 3,
                       url_ttl_s=self.url_ttl_s or 3600, filename=self.filename or "audio")


@dataclass(frozen=True)
class ServiceConfig:
    batch_size: int = 64
    max_in_flight: int = 4
    max_duration_s: float = 600.0
    max_bytes: int = 200 * 1024 * 1024
    tagger_cache_s: float = 30.0


@dataclass
class ExplainOutcome:
    """A published explanation: the document with presigned URLs plus provenance."""

    explanation_id: str
    document: dict  # pipeline.document() with presigned URLs as file references
    manifest_url: str
    urls_expire_at: float  # unix time
    separator_cache_hit: bool
    keys: list[str] = field(default_factory=list)


class StemProvider(Protocol):
    """The separator as the core needs it (``remote.RemoteSeparator``)."""

    def stem_source(self, content: bytes | None, uri: str | None, filename: str, model: str,
                    request_id: str | None = None) -> tuple[StemSource, Callable[[], bool]]: ...


TaggerFactory = Callable[[str, int | None, str | None], Tagger]  # (name, version, request_id)


def num_stems(separator_model: str) -> int:
    digits = "".join(ch for ch in separator_model.split("stems")[0] if ch.isdigit())
    if not separator_model.endswith("stems") or not digits:
        raise errors.InvalidInput(f"unknown separator model {separator_model!r} (use 2stems, 4stems or 5stems)")
    return int(digits)


class _TaggerCache:
    """Remote taggers by (name, version), re-resolved after ``ttl_s`` so new versions are seen."""

    def __init__(self, factory: TaggerFactory, ttl_s: float) -> None:
        self._factory = factory
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._items: dict[tuple[str, int], tuple[float, Tagger]] = {}

    def get(self, name: str, version: int, request_id: str | None) -> Tagger:
        key = (name, version)
        with self._lock:
            hit = self._items.get(key)
            if hit and time.monotonic() - hit[0] < self._ttl:
                return hit[1]
        tagger = self._factory(name, version or None, request_id)  # outside the lock: may retry
        with self._lock:
            self._items[key] = (time.monotonic(), tagger)
        return tagger


class _Stages:
    """Turns the pipeline's hooks into monotonic (stage, evaluated, total) progress events."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._index = -1
        self._done = (0, 0)

    def enter(self, stage: str, evaluated: int = 0, total: int = 0) -> None:
        with self._lock:
            i = STAGES.index(stage)
            if i < self._index or (i == self._index and (evaluated, total) <= self._done):
                return
            self._index, self._done = i, (evaluated, total)
            if self._progress:
                self._progress(stage, evaluated, total)

    @property
    def stage(self) -> str:
        return STAGES[self._index] if self._index >= 0 else ""


class _StagedTagger:
    """The tagger with stage hooks: the first call is the window scan; after the masks are all
    evaluated (the surrogate fit), the next call is the fidelity check."""

    def __init__(self, tagger: Tagger, stages: _Stages, request_id: str) -> None:
        self._tagger, self._stages, self._rid = tagger, stages, request_id
        self.name, self.version, self.labels = tagger.name, tagger.version, tagger.labels
        self.sample_rate, self.window_samples = tagger.sample_rate, tagger.window_samples

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        if self._stages.stage in ("", "decode"):
            self._stages.enter("scan")
        elif self._stages.stage == "fit":
            self._stages.enter("fidelity")
        if getattr(self._tagger, "accepts_request_id", False):  # remote: threads lose the context
            return self._tagger.predict(waveforms, request_id=self._rid)
        return self._tagger.predict(waveforms)


class ExplainerService:
    """Runs and publishes explanations; safe for concurrent requests (no per-request state)."""

    def __init__(self, store: ObjectStore, tagger_factory: TaggerFactory, separator: StemProvider,
                 config: ServiceConfig = ServiceConfig(), read_uri: Callable[[str], bytes] | None = None) -> None:
        self.store = store
        self.read_uri = read_uri or (lambda uri: store.get(store.parse_uri(uri)))
        self.separator = separator
        self.config = config
        self._taggers = _TaggerCache(tagger_factory, config.tagger_cache_s)

    # -- validation --------------------------------------------------------------------------
    def validate(self, spec: ExplainSpec) -> ExplainSpec:
        s = spec.with_defaults()
        if (s.audio_content is None) == (s.audio_uri is None):
            raise errors.InvalidInput("audio: give exactly one of content (bytes) or uri")
        if s.audio_content is not None and len(s.audio_content) > self.config.max_bytes:
            raise errors.InvalidInput(f"audio is {len(s.audio_content)} bytes, more than the limit "
                                      f"{self.config.max_bytes}")
        for name in ("top_n", "segments", "num_samples", "top_k", "url_ttl_s"):
            if getattr(s, name) < 0:
                raise errors.InvalidInput(f"{name} must be >= 0, got {getattr(s, name)}")
        if s.model_version < 0:
            raise errors.InvalidInput(f"model_version must be >= 0, got {s.model_version}")
        if s.url_ttl_s > MAX_URL_TTL_S:
            raise errors.InvalidInput(f"url_ttl_s must be at most {MAX_URL_TTL_S} (7 days), got {s.url_ttl_s}")
        if s.window_duration_s < 0:
            raise errors.InvalidInput(f"window_duration_s must be >= 0, got {s.window_duration_s:g}")
        if s.window_start_s is not None and s.window_start_s < 0:
            raise errors.InvalidInput(f"window_start_s must be >= 0, got {s.window_start_s:g}")
        d = num_stems(s.separator_model) * s.segments
        if not d + 1 <= s.num_samples <= MAX_NUM_SAMPLES:
            raise errors.InvalidInput(f"num_samples must be between d'+1 = {d + 1} ({s.separator_model} x "
                                      f"{s.segments} segments) and {MAX_NUM_SAMPLES}, got {s.num_samples}")
        if any(not t for t in s.tags):
            raise errors.InvalidInput("tags must not be empty strings")
        return s

    def _decode(self, s: ExplainSpec) -> Audio:
        content = s.audio_content
        if content is None:
            try:
                content = self.read_uri(s.audio_uri)
            except errors.NotFound as exc:
                raise errors.InvalidInput(f"audio uri: {exc}") from None
            if len(content) > self.config.max_bytes:
                raise errors.InvalidInput(f"{s.audio_uri} is {len(content)} bytes, more than the limit "
                                          f"{self.config.max_bytes}")
        audio = decode(content, s.filename)
        if audio.duration_s > self.config.max_duration_s:
            raise errors.InvalidInput(f"{s.filename}: {audio.duration_s:.1f} s is longer than the limit "
                                      f"{self.config.max_duration_s:g} s")
        return audio

    # -- the request -------------------------------------------------------------------------
    def explain(self, spec: ExplainSpec, progress: ProgressFn | None = None,
                explanation_id: str | None = None) -> ExplainOutcome:
        """Explain, publish to the store, return the document with presigned URLs."""
        rid = logs.current_request_id()
        s = self.validate(spec)
        stages = _Stages(progress)
        stages.enter("decode")
        t = time.perf_counter()
        audio = self._decode(s)
        decode_s = time.perf_counter() - t
        tagger = self._taggers.get(s.model, s.model_version, rid)
        if s.tags:
            resolve_tags(tagger.labels, s.tags)  # unknown tags fail before any separation
        window_s = tagger.window_samples / tagger.sample_rate
        if s.window_duration_s and abs(s.window_duration_s - window_s) > 1e-3:
            raise errors.InvalidInput(f"window_duration_s must be 0 or the model's input length {window_s:g} s "
                                      f"for {tagger.name!r}, got {s.window_duration_s:g}")
        source, cache_hit = self.separator.stem_source(s.audio_content, s.audio_uri, s.filename,
                                                       s.separator_model, rid)

        def staged_source(a: Audio, start: int, end: int):
            stages.enter("separate")
            return source(a, start, end)

        def on_masks(done: int, total: int) -> None:
            stages.enter("predict", done, total)
            if done >= total:
                stages.enter("fit")

        staged = _StagedTagger(tagger, stages, rid)
        engine = Engine(staged.predict, tagger.labels, self.config.batch_size, self.config.max_in_flight)
        req = ExplainRequest(audio, s.filename, list(s.tags) or None, s.top_n, s.window_start_s, s.segments,
                             ExplainParams(num_samples=s.num_samples, top_k=s.top_k, seed=s.seed))
        result = explain_song(req, staged, staged_source, engine, on_masks)
        stages.enter("fit")
        stages.enter("store")
        explanation_id = explanation_id or uuid.uuid4().hex
        t = time.perf_counter()
        outcome = self._publish(result, s, explanation_id, cache_hit())
        store_s = time.perf_counter() - t
        tm = result.timings_s
        for stage, value in (("decode", decode_s + tm.get("decode", 0.0)), ("separate", tm.get("separate", 0.0)),
                             ("predict", tm.get("scan", 0.0) + tm.get("sample", 0.0) + tm.get("predict", 0.0)),
                             ("fit", tm.get("fit", 0.0)), ("fidelity", tm.get("fidelity", 0.0)), ("store", store_s)):
            metrics.EXPLANATION_STAGE.labels(stage).observe(value)
        metrics.MASKS_EVALUATED.labels(tagger.name).inc(result.explanation.unique_samples)
        outcome.document["timings_s"]["store"] = round(store_s, 4)
        log.info("explanation published", extra={"explanation_id": explanation_id, "model": tagger.name,
                                                 "num_samples": s.num_samples, "separator_cache_hit": cache_hit(),
                                                 "timings_s": outcome.document["timings_s"]})
        return outcome

    def _publish(self, result: ExplainResult, s: ExplainSpec, explanation_id: str, cache_hit: bool) -> ExplainOutcome:
        prefix = f"{PREFIX}/{explanation_id}/"
        keys: list[str] = []
        try:
            names = []
            for name, wave in artifacts(result):
                self.store.put(prefix + name, wav_bytes(wave, result.request.audio.sample_rate), "audio/wav")
                names.append(name)
                keys.append(prefix + name)
            manifest = document(result, s.filename, {n: n for n in names})
            self.store.put(prefix + MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode(),
                           "application/json")
            keys.append(prefix + MANIFEST)
            expires = time.time() + s.url_ttl_s
            urls = {n: self.store.presign(prefix + n, s.url_ttl_s) for n in names}
            manifest_url = self.store.presign(prefix + MANIFEST, s.url_ttl_s)
        except BaseException:
            self.store.delete_prefix(prefix)
            raise
        return ExplainOutcome(explanation_id, document(result, s.filename, urls), manifest_url, expires,
                              cache_hit, keys)


# -- background jobs ---------------------------------------------------------------------------
QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"


@dataclass
class Job:
    job_id: str
    state: str = QUEUED
    stage: str = ""
    evaluated: int = 0
    total: int = 0
    outcome: ExplainOutcome | None = None
    error: BaseException | None = None
    finished_at: float | None = None


class JobTable:
    """Submitted explanations run on ``workers`` threads; at most ``max_jobs`` are remembered.

    Finished jobs are forgotten after ``ttl_s`` (or earlier, oldest first, when the table is
    full); when every slot holds an unfinished job, ``submit`` raises ``ResourceExhausted``."""

    def __init__(self, run: Callable[[ExplainSpec, ProgressFn, str], ExplainOutcome], workers: int = 2,
                 max_jobs: int = 64, ttl_s: float = 3600.0) -> None:
        if workers < 1 or max_jobs < 1:
            raise errors.InvalidInput("job workers and max jobs must be >= 1")
        self._run = run
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="job")
        self._max = max_jobs
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def _evict(self) -> None:
        now = time.time()
        for jid in [j.job_id for j in self._jobs.values() if j.finished_at and now - j.finished_at > self._ttl]:
            del self._jobs[jid]
        while len(self._jobs) >= self._max:
            finished = [j for j in self._jobs.values() if j.finished_at]
            if not finished:
                raise errors.ResourceExhausted(f"{self._max} explanation jobs are queued or running; retry later")
            del self._jobs[min(finished, key=lambda j: j.finished_at).job_id]

    def submit(self, spec: ExplainSpec, validate: Callable[[ExplainSpec], object] | None = None) -> str:
        if validate:
            validate(spec)  # malformed requests fail at submission, not later
        job = Job(uuid.uuid4().hex)
        with self._lock:
            self._evict()
            self._jobs[job.job_id] = job
        ctx = contextvars.copy_context()
        self._pool.submit(ctx.run, self._work, job, spec)
        return job.job_id

    def _work(self, job: Job, spec: ExplainSpec) -> None:
        def progress(stage: str, evaluated: int, total: int) -> None:
            with self._lock:
                job.stage, job.evaluated, job.total = stage, evaluated, total

        with self._lock:
            job.state = RUNNING
        try:
            outcome = self._run(spec, progress, job.job_id)
        except BaseException as exc:  # noqa: BLE001 - reported through GetExplanation
            if not isinstance(exc, errors.AudiolimeError):
                log.exception("job failed", extra={"job_id": job.job_id})
            with self._lock:
                job.state, job.error, job.finished_at = FAILED, exc, time.time()
            return
        with self._lock:
            job.state, job.outcome, job.finished_at = SUCCEEDED, outcome, time.time()

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise errors.NotFound(f"no explanation job {job_id!r} (unknown, or finished more than "
                                      f"{self._ttl:g} s ago)")
            return replace(job)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
