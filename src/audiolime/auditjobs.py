"""A catalog audit through the explainer service (``audiolime audit --server``): every (tagger, song,
window) submitted as an explanation job (SubmitExplanation, the audio sent as ``explain --server``
sends it), at most ``in_flight`` jobs outstanding, each job id journaled in ``jobs.jsonl`` (fsynced)
*before* the audit waits for it; each finished job's explanation converted into the
:class:`~audiolime.method.audit.AuditRecord` the in-process audit records and appended to the
checkpoint. Run again after a kill, the audit skips the windows in the checkpoint and re-attaches to
the journaled jobs (durable on the server) instead of submitting them again. A failed job is
journaled as failed and reported (the audit goes on; a rerun submits that window again), as is a
request the explainer refuses, unless it is the run's first (then the request is at fault: a tag or
a model it does not know; one line, exit status 2).

The windows: the in-process audit picks each song's most probable windows from its own song scan,
which needs a local tagger; through the service, with one window per song the explainer picks it
(``window_start_s`` unset: where the tag is most probable, the in-process choice for one window);
with ``W`` windows per song they are evenly spaced: window ``i`` starts at ``i * duration / W``
(10 ms steps), non-overlapping whenever the tagger's window is at most ``duration / W``.

One gap remains: a kill between SubmitExplanation returning and the journal's fsync leaves that
one job unrecorded (the service does not say which request a job runs), so it is submitted again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from audiolime import errors
from audiolime.auditdir import JobEntry, JobKey, append_job, append_records, load_jobs
from audiolime.explanation.document import Document
from audiolime.inputs import AudioSource
from audiolime.method.audit import AuditRecord
from audiolime.method.catalog import Key
from audiolime.method.request import ValidRequest

POLL_S = 0.5  # between two GetExplanation rounds over the outstanding jobs
OUTAGE_S = 120.0  # how long the explainer may be unreachable before the audit stops (a rerun resumes)


@dataclass(frozen=True)
class Unit:
    """One window to explain: the tagger as asked (``NAME`` or ``NAME@VERSION``), the song, the
    window's index and its start (None: the explainer's choice)."""

    tagger: str
    song: str
    window: int
    start_s: float | None

    @property
    def key(self) -> JobKey:
        return (self.tagger, self.song, self.window)


def window_starts(duration_s: float, windows_per_song: int) -> list[float | None]:
    """One window: the explainer's choice; more: evenly spaced, ``i * duration / W`` (see the module)."""
    if windows_per_song == 1:
        return [None]
    return [round(i * duration_s / windows_per_song, 2) for i in range(windows_per_song)]


def spec_text(name: str, version: int | None) -> str:
    return f"{name}@{version}" if version else name


def recorded(unit: Unit, tags: Sequence[str], done: dict[Key, AuditRecord]) -> bool:
    """Whether the checkpoint holds the unit's window (all of ``tags`` when the audit names them)."""
    name, _, version = unit.tagger.partition("@")
    found = {k[3] for k in done if k[1] == unit.song and k[2] == unit.window
             and (k[0] == unit.tagger if version else k[0].partition("@")[0] == name)}
    return bool(found) and all(t in found for t in tags)


def records_from_document(doc: Document, song: str, window: int,
                          clip: Callable[[str, str, int, str, Document, int], str] | None = None) -> list[AuditRecord]:
    """The audit's records of one explanation (one per target), as the in-process audit builds them:
    every component's weight stem-major (``s * segments + j``, stems in the separator's order), the
    window's and the song's probability of the tag (the song's: its mean over the scanned windows,
    which the service reports for the song's five most probable tags; another tag's is recorded as 0).
    ``clip(tagger, song, window, tag, doc, target index)``: the top-1 component's clip name once
    written ("" none)."""
    tid = f"{doc.model.name}@{doc.model.version}"
    stems = tuple(s.name for s in doc.stems) or tuple(doc.separator.stems)
    segs = doc.segments
    w0 = doc.audio.window_start_s
    w1 = w0 + doc.audio.window_duration_s
    song_probs = {t.tag: t.probability for t in doc.song_top_tags}
    out = []
    for k, target in enumerate(doc.targets):
        weights = [0.0] * (len(stems) * segs)
        for c in target.components:
            if c.source not in stems or not 0 <= c.segment < segs:
                raise errors.InvalidInput(f"{song}: component {c.name} is not one of {'+'.join(stems)} x {segs}")
            weights[stems.index(c.source) * segs + c.segment] = c.weight
        name = clip(tid, song, window, target.tag, doc, k) if clip is not None else ""
        out.append(AuditRecord(tid, song, window, round(w0, 4), round(w1, 4), target.tag,
                               round(float(doc.prediction.get(target.tag, 0.0)), 6),
                               round(float(song_probs.get(target.tag, 0.0)), 6), stems, segs,
                               tuple(round(float(w), 8) for w in weights), round(float(target.surrogate_r2), 6),
                               name))
    return out


@dataclass
class Outcome:
    """What the run did: windows explained now and already in the checkpoint, jobs re-attached and
    submitted now, failures (song, why), the explanations' warnings."""

    explained: int = 0
    resumed: int = 0  # windows already in the checkpoint
    attached: int = 0
    submitted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Outage:
    """Tolerate an unreachable explainer for ``OUTAGE_S`` (a restarting replica), then give up; one
    never reached (a wrong address) fails the audit at once."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.reached = False

    def ok(self) -> None:
        self.since, self.reached = None, True

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self.since = self.since or now
        if not self.reached or now - self.since > OUTAGE_S:
            raise exc


def run_jobs(client, out: Path, units: Sequence[Unit], request: ValidRequest, tags: Sequence[str],
             done: dict[Key, AuditRecord], audio_of: Callable[[str], AudioSource], in_flight: int,
             clip: Callable[[str, str, int, str, Document, int], str] | None = None,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Outcome:
    """Explain ``units`` as jobs on ``client`` (an :class:`~audiolime.client.ExplainerClient`), see
    the module docstring. ``audio_of(song)``: the request's audio (an ``AudioSource``);
    ``done``: the checkpoint's records (updated); ``tags``: the audit's tags (empty: top_n)."""
    from audiolime import wire
    from audiolime.v1 import explainer_pb2

    job_pb = explainer_pb2.ExplanationJob
    journal = load_jobs(out)
    todo = [u for u in units if not recorded(u, tags, done)]
    result = Outcome(resumed=len(units) - len(todo))
    outstanding: dict[str, Unit] = {}
    outage = _Outage()
    total = len(todo)
    finished = 0

    def submit(u: Unit) -> None:
        old = journal.get(u.key)
        if old is not None and not old.error and old.start_s == u.start_s:
            outstanding[old.job_id] = u  # submitted by a killed run: durable on the server
            result.attached += 1
            return
        name, _, version = u.tagger.partition("@")
        req = ValidRequest(replace(request, model=name, model_version=int(version) if version else 0,
                                   window_start_s=u.start_s))
        pb = wire.request_to_proto(req, audio_of(u.song))
        while True:
            try:
                job_id = client.submit(pb)
                outage.ok()
                break
            except (errors.Unavailable, errors.DeadlineExceeded, errors.ResourceExhausted) as exc:
                outage.failed(exc)
                time.sleep(POLL_S * 4)
            except (errors.InvalidInput, errors.NotFound) as exc:
                if not (result.submitted or result.attached or done):
                    raise  # the run's first request refused: the request's fault (a tag, a model), exit 2
                result.failed.append((u.song, f"window {u.window}: refused: {exc}"))
                log(f"audiolime: audit: {Path(u.song).name} window {u.window}: refused: {exc}")
                return
        entry = JobEntry(u.tagger, u.song, u.window, u.start_s, job_id)
        append_job(out, entry)  # before waiting: a kill from here on re-attaches
        journal[u.key] = entry
        outstanding[job_id] = u
        result.submitted += 1

    def fail(job_id: str, u: Unit, why: str) -> None:
        append_job(out, JobEntry(u.tagger, u.song, u.window, u.start_s, job_id, why))
        journal[u.key] = JobEntry(u.tagger, u.song, u.window, u.start_s, job_id, why)
        result.failed.append((u.song, f"window {u.window}: job {job_id} failed: {why}"))
        log(f"audiolime: audit: {Path(u.song).name} window {u.window}: job {job_id} failed: {why}")

    queue = list(todo)
    while queue or outstanding:
        while queue and len(outstanding) < in_flight:
            submit(queue.pop(0))
        for job_id, u in list(outstanding.items()):
            try:
                job = client.get(job_id)
                outage.ok()
            except errors.NotFound as exc:  # expired or another store: a rerun submits it again
                del outstanding[job_id]
                fail(job_id, u, str(exc))
                continue
            except (errors.Unavailable, errors.DeadlineExceeded) as exc:
                outage.failed(exc)
                continue
            if job.state in (job_pb.FAILED, job_pb.CANCELLED):
                del outstanding[job_id]
                fail(job_id, u, f"{job.error_code or job_pb.State.Name(job.state)}: {job.error_message}")
            elif job.state == job_pb.SUCCEEDED:
                del outstanding[job_id]
                doc = wire.explanation_from_proto(job.result)
                try:
                    recs = records_from_document(doc, u.song, u.window, clip)
                except (errors.AudiolimeError, OSError) as exc:
                    fail(job_id, u, str(exc))
                    continue
                result.warnings.extend(f"{u.song} window {u.window}: {w}" for w in doc.warnings)
                append_records(out, recs)
                for r in recs:
                    done[(r.tagger, r.song, r.window, r.tag)] = r
                result.explained += 1
                finished += 1
                log(f"audiolime: audit: [{finished}/{total}] {Path(u.song).name} window {u.window} "
                    f"({doc.audio.window_start_s:.2f} s): job {job_id} done")
        if outstanding:
            time.sleep(POLL_S)
    return result
