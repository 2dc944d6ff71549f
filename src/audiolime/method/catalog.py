"""Running a catalog audit: every song's windows explained by one or two taggers, each finished
window's records appended to a resumable checkpoint (``audit.jsonl``), then aggregated
(:mod:`audiolime.method.audit`).

Per song (decoded once, by the door) and per tagger:

1. the song scan (:func:`~audiolime.method.pipeline.scan_windows`, as ``audiolime explain`` scans);
2. the tags: the audit's (checked against every tagger's vocabulary before any work:
   :func:`check_tags`), or the song's ``top_n`` most probable tags under the *first* tagger (the
   second explains the same tags, those it knows);
3. the windows: the ``windows_per_song`` scanned windows where the tags are most probable, none
   overlapping (:func:`~audiolime.method.audit.pick_windows`; with one window, explain's choice);
4. each window explained for all its tags at once by :func:`~audiolime.method.pipeline.explain_song`
   (the scan reused, the window's stems from the shared stem source), one
   :class:`~audiolime.method.audit.AuditRecord` per tag, the top-1 component written as a WAV clip
   when a clip writer is given, and the window's records appended to the checkpoint (fsynced).

A window whose records are all in the checkpoint (given as ``done``) is skipped, so a killed audit
resumes where it stopped. The files (the checkpoint, its settings :func:`config_key`, the clips)
are the door's: :mod:`audiolime.auditdir`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from audiolime.errors import InvalidInput
from audiolime.method.audit import AuditRecord, pick_windows
from audiolime.method.engine import Engine
from audiolime.method.events import Event, EventSink, ignore
from audiolime.method.limits import DEFAULT, Limits
from audiolime.method.pipeline import Scan, explain_song, scan_hop, scan_windows
from audiolime.method.plan import Tagger, make_plan, resolve_tags
from audiolime.method.request import ValidRequest
from audiolime.method.stems import StemSource
from audiolime.method.waveform import Audio, resample_mono

CONFIG_FORMAT = 1
Key = tuple[str, str, int, str]  # (tagger, song, window, tag)


def tagger_id(tagger: Tagger) -> str:
    """How records name a tagger: ``name@version`` (two versions of one model are two taggers)."""
    return f"{tagger.name}@{tagger.version}"


def check_tags(taggers: Sequence[Tagger], tags: Sequence[str]) -> None:
    """Every audited tag is in every tagger's vocabulary (the closest valid tags otherwise)."""
    for t in taggers:
        try:
            resolve_tags(t.labels, tags)
        except InvalidInput as exc:
            raise InvalidInput(f"{tagger_id(t)}: {exc}", field="tags") from None


# -- the checkpoint ----------------------------------------------------------------------------------
def config_key(request: ValidRequest, windows_per_song: int) -> dict:
    """What every record of an audit directory shares: the sampling and component settings, the
    tags asked for and the windows per song (the taggers and the songs may differ: records name them)."""
    r = request
    return {"format": CONFIG_FORMAT, "tags": list(r.tags), "top_n": r.top_n if not r.tags else 0,
            "windows_per_song": windows_per_song, "separator": r.separator, "segments": r.segments,
            "num_samples": r.num_samples, "max_samples": r.max_samples, "stability": r.stability, "seed": r.seed,
            "top_k": r.top_k, "edges": r.edges, "fade": r.fade, "kernel": r.kernel, "sampling": r.sampling}


# -- running -----------------------------------------------------------------------------------------
@dataclass
class _Memo:
    """The song scan, kept for the song's windows (explain_song reuses it)."""

    scan: Scan

    def load(self) -> Scan:
        return self.scan

    def save(self, scan: Scan) -> None:
        self.scan = scan


ClipWriter = Callable[[str, np.ndarray, int], None]  # (relative name, [channels, samples], rate)
ClipName = Callable[[str, str, int, str], str]  # (tagger, song, window, tag) -> relative name


@dataclass(frozen=True)
class SongOutcome:
    """What one song cost: windows explained now, skipped (already in the checkpoint), warnings."""

    explained: int
    resumed: int
    warnings: tuple[str, ...]


def audit_song(song: str, audio: Audio, taggers: Sequence[tuple[Tagger, Engine]], stem_source: StemSource,
               request: ValidRequest, windows_per_song: int, done: dict[Key, AuditRecord],
               save: Callable[[list[AuditRecord]], None], limits: Limits = DEFAULT,
               clips: tuple[ClipName, ClipWriter] | None = None, events: EventSink = ignore) -> SongOutcome:
    """Explain ``song``'s windows under each tagger (see the module docstring); ``done``: the
    checkpoint's records (windows all of whose tags are there are skipped), ``save``: where each
    window's new records go (the door appends them to the checkpoint); ``clips``: how to name and
    write each explanation's top-1 component (None: no clips)."""
    explained = resumed = 0
    warnings: list[str] = []
    tags: tuple[str, ...] = request.tags
    for tagger, engine in taggers:
        tid = tagger_id(tagger)
        mono = resample_mono(audio.waveform, audio.sample_rate, tagger.sample_rate)
        starts, probs = scan_windows(tagger, mono, hop=scan_hop(tagger), batch_size=engine.batch_size)
        memo = _Memo(Scan(starts, probs, 0.0))
        song_pred = probs.mean(axis=0)
        if not tags:  # the first tagger's top tags; the others explain the same ones
            tags = tuple(tagger.labels[int(i)] for i in np.argsort(-song_pred, kind="stable")[:request.top_n])
        known = tuple(t for t in tags if t in tagger.labels)
        if len(known) < len(tags):
            warnings.append(f"{song}: {tid} has no tag {', '.join(repr(t) for t in tags if t not in known)}")
        if not known:
            continue
        idx = [tagger.labels.index(t) for t in known]
        picked = pick_windows(starts, probs[:, idx].sum(axis=1), tagger.window_samples, windows_per_song)
        if len(picked) < windows_per_song:
            warnings.append(f"{song}: {len(picked)} non-overlapping {tid} windows, fewer than {windows_per_song}")
        for i, start in enumerate(picked):
            if all((tid, song, i, t) in done for t in known):
                resumed += 1
                continue
            events(Event("window", i, len(picked)))
            wreq = ValidRequest(replace(request, model=tagger.name, model_version=tagger.version, tags=known,
                                        top_n=len(known), window_start_s=start / tagger.sample_rate))
            plan = make_plan(wreq, tagger, audio.header, limits)
            result = explain_song(plan, audio, song, tagger, stem_source, engine, events, scans=memo)
            fact = result.factorization
            stems = tuple(fact.sources)
            w0, w1 = result.window_start_s, result.window_start_s + plan.window_s
            new = []
            for target in result.explanation.targets:
                weights = [rc.weight for rc in sorted(target.ranking, key=lambda rc: rc.component.index)]
                name = ""
                top = max(target.ranking, key=lambda rc: rc.weight)
                if clips is not None and top.weight > 0:
                    name = clips[0](tid, song, i, target.tag)
                    mask = np.zeros(fact.num_components, np.float32)
                    mask[top.component.index] = 1
                    rate = audio.sample_rate
                    a = max(0, int(round((top.component.start_s - w0) * rate)))
                    b = max(a + 1, int(round((top.component.end_s - w0) * rate)))
                    clips[1](name, fact.compose_listen(mask)[:, a:b], rate)
                new.append(AuditRecord(tid, song, i, round(w0, 4), round(w1, 4), target.tag,
                                       round(float(result.explanation.prediction[target.tag_index]), 6),
                                       round(float(result.song_prediction[target.tag_index]), 6), stems,
                                       plan.request.segments, tuple(round(float(w), 8) for w in weights),
                                       round(float(target.surrogate_r2), 6), name))
            save(new)
            for r in new:
                done[(r.tagger, r.song, r.window, r.tag)] = r
            explained += 1
    return SongOutcome(explained, resumed, tuple(warnings))
