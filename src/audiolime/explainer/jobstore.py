"""Explanation jobs as records in the object store, so any replica can answer for any job and a
job outlives the process that ran it. Layout (under the store's prefix)::

    inputs/<sha256>                    the submitted audio, content-addressed (stored once)
    queue/<created ms>-<job id>        index of unfinished jobs, oldest first; written first
    jobs/<job id>/job.json             the submission (request, input reference, owner): the job's
                                       manifest, written after its input and queue entry
    claims/<job id>.<attempt>          a worker's lease on the job, created only if absent,
                                       rewritten to renew it (and report progress)
    claims/<job id>.<attempt>.released the worker gave the job back (graceful shutdown)
    claims/<job id>.<attempt>.retry    ... because a backend was unavailable: retried after a lease
    explanations/<job id>-<attempt>/   that attempt's artifacts, explanation.json last
    jobs/<job id>/result.json          SUCCEEDED / FAILED / CANCELLED: created only if absent,
                                       so exactly one attempt's outcome is ever the job's
    jobs/<job id>/cancel               CancelExplanation was called
    expiry/<delete at>-<id>            what to delete when (finished jobs, unary results)
    cache/<key>.json                   the explanation cache's pointers (explainer/cache.py)
    scans/<key>.npz                    song scans, kept between explanations of a song (explainer/scans.py)

Guarantees (see docs/reliability.md): a lease is taken by creating the next attempt's claim with
:meth:`~audiolime.store.ObjectStore.put_if_absent`, so two workers never hold the same attempt;
a claim not rewritten for ``lease_s`` (by its object's modification time) may be superseded by the
next attempt. An attempt writes only under its own prefix and its result only if none exists, so
artifacts are never mixed and a job is published exactly once even if a worker that lost its
lease keeps running (it discards its own prefix when it finds a result).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

from audiolime import errors
from audiolime.method.events import Event
from audiolime.method.request import ExplainRequest
from audiolime.store import ObjectStore

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
JOB_ID = re.compile(r"[0-9a-f]{32}")
_CLAIM = re.compile(r"claims/([0-9a-f]{32})\.(\d+)(?:\.(released|retry))?$")
EXPLANATIONS = "explanations"
RECORD_VERSION = 1


def explanation_prefix(explanation_id: str) -> str:
    """Where one explanation's artifacts live (unary results and every job attempt alike)."""
    return f"{EXPLANATIONS}/{explanation_id}/"


@dataclass(frozen=True)
class JobConfig:
    """How jobs behave (``--job-*`` flags); the one holder of the lease and the TTL."""

    lease_s: float = 30.0  # a claim not renewed for this long is taken over
    poll_s: float = 1.0  # queue scans; a running job checks for cancellation this often
    ttl_s: float = 3600.0  # a finished job (state and artifacts) is deleted this long after it ended
    max_attempts: int = 5  # attempts lost to dead workers or unavailable backends before the job fails
    max_queued: int = 8  # waiting jobs in the store; more submissions -> RESOURCE_EXHAUSTED
    sweep_s: float = 60.0  # how often expired jobs and results are deleted

    def __post_init__(self) -> None:
        if not (self.lease_s > 0 and self.poll_s > 0 and self.ttl_s > 0 and self.sweep_s > 0):
            raise errors.InvalidInput("job lease, poll interval, TTL and sweep interval must be > 0")
        if self.poll_s * 2 > self.lease_s:
            raise errors.InvalidInput(f"the job lease ({self.lease_s:g} s) must be at least twice the poll "
                                      f"interval ({self.poll_s:g} s)")
        if self.max_attempts < 1 or self.max_queued < 0:
            raise errors.InvalidInput("job attempts must be >= 1 and max queued >= 0")


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_job_id(job_id: str) -> str:
    """A job id names store keys: only what :func:`new_job_id` makes is accepted."""
    if not job_id:
        raise errors.InvalidInput("job_id is required")
    if not JOB_ID.fullmatch(job_id):
        raise errors.InvalidInput(f"job_id must be 32 lowercase hex digits, got {job_id[:64]!r}")
    return job_id


def _known(cls, d: dict) -> dict:
    """The fields of ``cls`` in ``d``: a record written by a newer replica (a rolling upgrade) still
    loads; fields it lacks take their defaults."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def explanation_id(job_id: str, attempt: int) -> str:
    """The explanation an attempt publishes: derived from the job, one namespace per attempt."""
    return f"{job_id}-{attempt}"


@dataclass(frozen=True)
class JobRecord:
    """``job.json``: what was asked, by whom, and where the audio is (never the audio itself)."""

    job_id: str
    owner: str
    created_at: float
    request: ExplainRequest
    filename: str
    url_ttl_s: int
    queue_key: str
    input_key: str | None = None  # a stored input (inputs/<sha256>) ...
    input_uri: str | None = None  # ... or the caller's own URI
    traceparent: str = ""  # the submitting call's W3C trace context (tracing on): its run links to it

    def dumps(self) -> bytes:
        d = asdict(self)
        d["request"]["tags"] = list(self.request.tags)
        return json.dumps({"version": RECORD_VERSION, **d}).encode()

    @classmethod
    def loads(cls, data: bytes) -> JobRecord:
        d = _known(cls, json.loads(data))
        req = _known(ExplainRequest, d.pop("request"))
        return cls(request=ExplainRequest(**{**req, "tags": tuple(req.get("tags", ()))}), **d)


@dataclass(frozen=True)
class ResultRecord:
    """``result.json``: how the job ended; written once."""

    state: str
    attempt: int
    finished_at: float
    explanation_id: str = ""
    separator_cache_hit: bool = False
    error_code: str = ""
    error_message: str = ""
    worker: str = ""

    def dumps(self) -> bytes:
        return json.dumps({"version": RECORD_VERSION, **asdict(self)}).encode()

    @classmethod
    def loads(cls, data: bytes) -> ResultRecord:
        return cls(**_known(cls, json.loads(data)))


@dataclass(frozen=True)
class Claim:
    """One attempt's lease as listed: ``modified`` is when it was last renewed (store clock);
    ``retry_at`` is set when it was handed back because a backend was unavailable."""

    job_id: str
    attempt: int
    modified: float
    released: bool = False
    retry_at: float | None = None

    def live(self, now: float, lease_s: float) -> bool:
        """A worker holds the job."""
        return not self.released and self.retry_at is None and now - self.modified < lease_s

    def blocks(self, now: float, lease_s: float) -> bool:
        """No new attempt may start yet: a worker holds it, or it waits a lease before a retry."""
        if self.retry_at is not None:
            return now - self.retry_at < lease_s
        return self.live(now, lease_s)

    @property
    def counts(self) -> bool:
        """An attempt used up (graceful hand-overs are free)."""
        return not self.released


@dataclass(frozen=True)
class QueueEntry:
    job_id: str
    key: str
    modified: float


@dataclass
class Snapshot:
    """Every unfinished job and its claims, from two listings (no per-job reads)."""

    entries: list[QueueEntry]
    claims: dict[str, list[Claim]]
    now: float
    lease_s: float

    def latest(self, job_id: str) -> Claim | None:
        cs = self.claims.get(job_id)
        return max(cs, key=lambda c: c.attempt) if cs else None

    def is_running(self, job_id: str) -> bool:
        c = self.latest(job_id)
        return c is not None and c.live(self.now, self.lease_s)

    def waiting(self) -> list[QueueEntry]:
        """Unfinished jobs no worker holds (never claimed, or their worker stopped), oldest first."""
        return [e for e in self.entries if not self.is_running(e.job_id)]

    def claimable(self) -> list[QueueEntry]:
        """Waiting jobs a worker may take now (not backing off before a retry), oldest first."""
        def free(e: QueueEntry) -> bool:
            c = self.latest(e.job_id)
            return c is None or not c.blocks(self.now, self.lease_s)
        return [e for e in self.entries if free(e)]


@dataclass
class JobView:
    """A job as GetExplanation reports it."""

    record: JobRecord
    state: str
    attempt: int = 0
    progress: Event = field(default_factory=lambda: Event(""))
    result: ResultRecord | None = None
    expires_at: float | None = None
    cancel_requested: bool = False
    worker: str = ""

    @property
    def job_id(self) -> str:
        return self.record.job_id


class JobStore:
    """Reads and writes job records; holds no job state of its own (safe to share by threads)."""

    def __init__(self, store: ObjectStore, config: JobConfig = JobConfig(),
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.clock = clock  # the store's idea of now (objects' modification times are unix times)

    @property
    def lease_s(self) -> float:
        return self.config.lease_s

    @property
    def ttl_s(self) -> float:
        return self.config.ttl_s

    # -- keys ----------------------------------------------------------------------------------
    @staticmethod
    def _job_key(job_id: str) -> str:
        return f"jobs/{job_id}/job.json"

    @staticmethod
    def _result_key(job_id: str) -> str:
        return f"jobs/{job_id}/result.json"

    @staticmethod
    def _cancel_key(job_id: str) -> str:
        return f"jobs/{job_id}/cancel"

    @staticmethod
    def claim_key(job_id: str, attempt: int) -> str:
        return f"claims/{job_id}.{attempt:06d}"

    # -- submission ----------------------------------------------------------------------------
    def stage_input(self, content: bytes) -> str:
        """Store submitted audio once under its sha256 (re-written on every submission, so its
        modification time says when it was last wanted); returns the key."""
        key = f"inputs/{hashlib.sha256(content).hexdigest()}"
        self.store.put(key, content)
        return key

    def create(self, job_id: str, owner: str, request: ExplainRequest, filename: str, url_ttl_s: int,
               input_key: str | None = None, input_uri: str | None = None, traceparent: str = "") -> JobRecord:
        """Queue entry, then ``job.json`` (the job exists once that is written)."""
        now = self.clock()
        queue_key = f"queue/{int(now * 1000):013d}-{job_id}"
        record = JobRecord(job_id, owner, now, request, filename, url_ttl_s, queue_key, input_key, input_uri,
                           traceparent)
        self.store.put(queue_key, b"")
        self.store.put(self._job_key(job_id), record.dumps(), "application/json")
        return record

    def load(self, job_id: str) -> JobRecord:
        try:
            return JobRecord.loads(self.store.get(self._job_key(check_job_id(job_id))))
        except errors.NotFound:
            raise self.not_found(job_id) from None

    def owned(self, owner: str, limit: int, page_token: str = "") -> tuple[list[JobRecord], str]:
        """``owner``'s jobs, newest first (by when ``job.json`` was written, then id): at most
        ``limit`` after ``page_token`` (a previous call's token), and the next page's token ("" after
        the last). Lists every job's key and reads ``job.json`` until the page is full: its cost grows
        with the jobs of all callers kept for the job TTL."""
        after: tuple[float, str] | None = None
        if page_token:
            stamp, _, job_id = page_token.partition(":")
            try:
                after = (float(stamp), check_job_id(job_id))
            except (ValueError, errors.InvalidInput):
                raise errors.InvalidInput("page_token is not one a ListExplanations response gave", field="page_token") \
                    from None
        entries = sorted(((o.modified, o.key.split("/")[1]) for o in self.store.list("jobs/")
                          if o.key.endswith("/job.json") and JOB_ID.fullmatch(o.key.split("/")[1])), reverse=True)
        if after is not None:
            entries = [e for e in entries if e < after]
        records: list[JobRecord] = []
        for i, (modified, job_id) in enumerate(entries):
            try:
                record = self.load(job_id)
            except errors.NotFound:  # expired between the listing and the read
                continue
            if record.owner != owner:
                continue
            records.append(record)
            if len(records) == limit:
                return records, (f"{modified!r}:{job_id}" if i + 1 < len(entries) else "")
        return records, ""

    def not_found(self, job_id: str) -> errors.NotFound:
        """The one answer for a job that does not exist, expired, or belongs to another caller."""
        return errors.NotFound(f"no explanation job {job_id!r} (unknown, or expired after the job TTL "
                               f"of {self.ttl_s:g} s)")

    def input(self, record: JobRecord) -> bytes:
        assert record.input_key is not None  # a job with a stored input
        try:
            return self.store.get(record.input_key)
        except errors.NotFound:
            raise errors.NotFound(f"the job's stored input {record.input_key} is gone (expired); submit again") \
                from None

    # -- the queue -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        entries = []
        for o in self.store.list("queue/"):
            job_id = o.key.rsplit("-", 1)[-1]
            if JOB_ID.fullmatch(job_id):
                entries.append(QueueEntry(job_id, o.key, o.modified))
        return Snapshot(entries, self._claims("claims/"), self.clock(), self.lease_s)

    def _claims(self, prefix: str) -> dict[str, list[Claim]]:
        seen: dict[tuple[str, int], Claim] = {}
        released: set[tuple[str, int]] = set()
        retry: dict[tuple[str, int], float] = {}
        for o in self.store.list(prefix):
            m = _CLAIM.match(o.key)
            if not m:
                continue
            k = (m.group(1), int(m.group(2)))
            if m.group(3) == "released":
                released.add(k)
            elif m.group(3) == "retry":
                retry[k] = o.modified
            else:
                seen[k] = Claim(k[0], k[1], o.modified)
        out: dict[str, list[Claim]] = {}
        for k, c in seen.items():
            out.setdefault(k[0], []).append(Claim(c.job_id, c.attempt, c.modified, k in released, retry.get(k)))
        return out

    def claims(self, job_id: str) -> list[Claim]:
        return sorted(self._claims(f"claims/{job_id}.").get(job_id, []), key=lambda c: c.attempt)

    # -- leases --------------------------------------------------------------------------------
    def claim(self, job_id: str, attempt: int, worker: str) -> bool:
        """Take ``attempt`` of a job: True for exactly one caller."""
        return self.store.put_if_absent(self.claim_key(job_id, attempt), self._claim_body(worker, attempt, Event("")),
                                        "application/json")

    def renew(self, job_id: str, attempt: int, worker: str, progress: Event) -> None:
        self.store.put(self.claim_key(job_id, attempt), self._claim_body(worker, attempt, progress), "application/json")

    def _claim_body(self, worker: str, attempt: int, progress: Event) -> bytes:
        return json.dumps({"worker": worker, "attempt": attempt, "renewed_at": self.clock(),
                           "progress": asdict(progress)}).encode()

    def release(self, job_id: str, attempt: int, retry: bool = False) -> None:
        """Give the job back: the next attempt may start at once instead of after the lease (or,
        with ``retry``, after one lease: a backend was unavailable; this attempt counts)."""
        self.store.put(self.claim_key(job_id, attempt) + (".retry" if retry else ".released"), b"")

    def superseded(self, job_id: str, attempt: int) -> bool:
        """Another worker took a later attempt, or the job already has its result."""
        return self.store.exists(self.claim_key(job_id, attempt + 1)) or self.store.exists(self._result_key(job_id))

    def progress(self, job_id: str, attempt: int) -> tuple[Event, str]:
        """The attempt's last reported progress and its worker."""
        try:
            body = json.loads(self.store.get(self.claim_key(job_id, attempt)))
            return Event(**body["progress"]), str(body["worker"])
        except (errors.NotFound, ValueError, KeyError, TypeError):
            return Event(""), ""

    # -- cancellation --------------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        self.store.put(self._cancel_key(job_id), b"")

    def cancel_requested(self, job_id: str) -> bool:
        return self.store.exists(self._cancel_key(job_id))

    # -- the end -------------------------------------------------------------------------------
    def result(self, job_id: str) -> ResultRecord | None:
        try:
            return ResultRecord.loads(self.store.get(self._result_key(job_id)))
        except errors.NotFound:
            return None

    def finish(self, record: JobRecord, result: ResultRecord) -> bool:
        """Write the job's one result (False: another attempt's is already there), then tidy up."""
        won = self.store.put_if_absent(self._result_key(record.job_id), result.dumps(), "application/json")
        if won:
            self.finalize(record.job_id, record.queue_key, result)
        return won

    def finalize(self, job_id: str, queue_key: str, result: ResultRecord) -> None:
        """After the result: schedule expiry, drop other attempts' artifacts and the claims, and
        leave the queue last (a crash in between is repaired by the next queue scan)."""
        self.expire_at(result.finished_at + self.ttl_s, job_id,
                       [self._job_key(job_id), f"{EXPLANATIONS}/{job_id}-", f"claims/{job_id}.", f"jobs/{job_id}/"])
        for c in self.claims(job_id):
            if explanation_id(job_id, c.attempt) != result.explanation_id:
                self.store.delete_prefix(explanation_prefix(explanation_id(job_id, c.attempt)))
        self.store.delete_prefix(f"claims/{job_id}.")
        self.store.delete(queue_key)

    def forget_submission(self, entry: QueueEntry) -> None:
        """A queue entry whose job.json never appeared (the submitter died mid-way)."""
        self.store.delete_prefix(f"claims/{entry.job_id}.")
        self.store.delete(entry.key)

    # -- what a reader sees --------------------------------------------------------------------
    def view(self, job_id: str) -> JobView:
        record = self.load(job_id)
        result = self.result(job_id)
        if result is not None:
            return JobView(record, result.state, result.attempt, Event("store") if result.state == SUCCEEDED
                           else Event(""), result, result.finished_at + self.ttl_s, worker=result.worker)
        claims = self.claims(job_id)
        latest = claims[-1] if claims else None
        cancel = self.cancel_requested(job_id)
        if latest is not None and latest.live(self.clock(), self.lease_s):
            progress, worker = self.progress(job_id, latest.attempt)
            return JobView(record, RUNNING, latest.attempt, progress, cancel_requested=cancel, worker=worker)
        return JobView(record, QUEUED, latest.attempt if latest else 0, cancel_requested=cancel)

    # -- expiry --------------------------------------------------------------------------------
    def expire_at(self, when: float, name: str, prefixes: list[str]) -> None:
        """Delete ``prefixes`` (in order) at ``when``; the marker goes last, so a sweep that dies
        half-way is repeated."""
        self.store.put(self._marker(when, name), json.dumps({"delete": prefixes}).encode(), "application/json")

    def postpone(self, old: float, when: float, name: str, prefixes: list[str]) -> None:
        """Move the deletion :meth:`expire_at` scheduled at ``old`` to ``when``: the new marker
        first, then the old one goes (a crash in between deletes at the earlier time)."""
        self.expire_at(when, name, prefixes)
        if int(old) != int(when):
            self.store.delete(self._marker(old, name))

    @staticmethod
    def _marker(when: float, name: str) -> str:
        return f"expiry/{int(when):012d}-{name}"

    def sweep(self) -> int:
        """Delete what is due; inputs not written for ``ttl_s`` and not referenced by an unfinished
        job go too. Returns the number of expired entries. Idempotent, safe on every replica."""
        now = self.clock()
        done = 0
        for o in self.store.list("expiry/"):
            name = o.key[len("expiry/"):]
            due = name.split("-", 1)[0]
            if not due.isdigit() or int(due) > now:
                break  # keys sort by due time
            try:
                prefixes = json.loads(self.store.get(o.key))["delete"]
            except errors.NotFound:
                continue  # another replica swept it
            for p in prefixes:
                self.store.delete_prefix(p)
            self.store.delete(o.key)
            done += 1
        old = [o for o in self.store.list("inputs/") if now - o.modified > self.ttl_s]
        if old:
            keep = self._live_inputs()
            for o in old:
                if o.key not in keep:
                    self.store.delete(o.key)
        return done

    def _live_inputs(self) -> set[str]:
        keep: set[str] = set()
        for e in self.snapshot().entries:
            try:
                if key := self.load(e.job_id).input_key:
                    keep.add(key)
            except errors.NotFound:
                continue
        return keep

