"""``audiolime audit``: a catalog audit (:mod:`audiolime.method.catalog`, :mod:`audiolime.method.audit`),
in-process: the songs' windows explained for a tag (or each song's top tags), aggregated into a
reliance profile per stem and segment position with Wilson intervals and outlier songs; resumable
from ``OUT/audit.jsonl``; ``audit.json`` and ``audit.md`` written to ``--out``. With ``--against``
a second tagger audits the same songs and tags and ``diff.json``/``diff.md`` compare the two; with
``--max-shift`` the exit status is 1 when a tag's reliance shifted by more than that. With ``--server``
the windows are explanation jobs on the explainer service (:mod:`audiolime.auditjobs`), their ids
journaled in ``OUT/jobs.jsonl`` so that a killed audit re-attaches to them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiolime import settings
from audiolime.commands.args import add_model_dir, integer, number, positive_int
from audiolime.commands.explain import (
    D,
    ProgressBar,
    add_component_args,
    add_model_args,
    add_sampling_args,
    add_server_args,
)
from audiolime.errors import AudiolimeError, InvalidInput
from audiolime.method.limits import MAX_AUDIT_IN_FLIGHT, MAX_AUDIT_WINDOWS_PER_SONG, check_name
from audiolime.method.request import ExplainRequest, ValidRequest

WINDOWS_PER_SONG = 2
IN_FLIGHT = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="audit a catalog: which stems carry a tag across many songs; diff two taggers")
    p.add_argument("songs", type=Path, nargs="+", help="audio files, or directories searched for them")
    p.add_argument("--tag", action="append", default=None,
                   help="tag to audit (repeatable; default: each song's top predicted tags, --top-n)")
    p.add_argument("--top-n", type=integer, default=1,
                   help="without --tag: audit each song's N most probable tags (default 1)")
    p.add_argument("--windows-per-song", type=integer, default=WINDOWS_PER_SONG,
                   help=f"windows explained per song, where the tags are most probable, none overlapping "
                        f"(1..{MAX_AUDIT_WINDOWS_PER_SONG}; default {WINDOWS_PER_SONG})")
    p.add_argument("--out", type=Path, required=True,
                   help="output directory: audit.jsonl (the resumable checkpoint), audit.json, audit.md, clips/")
    p.add_argument("--against", default=None, metavar="TAGGER[@VERSION]",
                   help="a second tagger (or version) to audit the same songs and tags with and diff against "
                        "(default: none)")
    p.add_argument("--max-shift", type=number, default=None,
                   help="with --against: exit status 1 when a tag's reliance shift (0..1) exceeds this "
                        "(default: report only)")
    p.add_argument("--no-clips", action="store_true", help="do not write each explanation's top-1 component as WAV")
    p.add_argument("--top-k", type=integer, default=D.top_k,
                   help=f"the top-k set whose stability stops adaptive sampling (default {D.top_k})")
    add_sampling_args(p)
    add_component_args(p)
    p.add_argument("--seed", type=integer, default=D.seed, help=f"random seed of the masks (default {D.seed})")
    add_model_args(p)
    add_server_args(p)
    p.add_argument("--in-flight", type=positive_int(1, MAX_AUDIT_IN_FLIGHT), default=IN_FLIGHT,
                   help=f"with --server: explanation jobs kept submitted at once, for the replicas to share "
                        f"(1..{MAX_AUDIT_IN_FLIGHT}; default {IN_FLIGHT})")
    add_model_dir(p)
    settings.add(p, settings.LIMITS, use_env=False)
    p.set_defaults(func=cmd_audit)


def tagger_spec(text: str, flag: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` (a positive integer)."""
    check_name(flag, text)
    name, at, version = text.partition("@")
    if not name or (at and not version.isdigit()) or (at and int(version) < 1):
        raise InvalidInput(f"{flag}: expected NAME or NAME@VERSION (a positive integer), got {text!r}")
    return name, int(version) if at else None


def request_from_args(args: argparse.Namespace) -> ValidRequest:
    return ExplainRequest(model=tagger_spec(args.tagger, "--tagger")[0], tags=tuple(args.tag or ()), top_n=args.top_n,
                          segments=args.segments, separator=args.separator, num_samples=args.num_samples,
                          seed=args.seed, top_k=args.top_k, edges=args.edges, fade=args.fade,
                          max_samples=args.max_samples, stability=args.stability, kernel=args.kernel,
                          sampling=args.sampling, curves="off").validate(settings.limits_from(args))


def check_out(out: Path) -> None:
    import os

    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out}: exists and is not a directory")
    parent = next((p for p in (out, *out.parents) if p.exists()), None)
    if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise InvalidInput(f"--out {out}: {parent} is not a writable directory")


def cmd_audit(args: argparse.Namespace) -> int:
    from audiolime.auditdir import find_songs
    from audiolime.method.limits import MAX_AUDIT_SONGS, check_audit

    check_out(args.out)
    specs = [tagger_spec(args.tagger, "--tagger")] + ([tagger_spec(args.against, "--against")] if args.against else [])
    if args.max_shift is not None:
        if not args.against:
            raise InvalidInput("--max-shift needs --against (a second tagger to diff with)")
        if not 0 <= args.max_shift <= 1:
            raise InvalidInput(f"--max-shift must be between 0 and 1, got {args.max_shift:g}")
    songs = find_songs(args.songs, MAX_AUDIT_SONGS)
    check_audit(len(songs), args.windows_per_song)  # no songs, too many, windows: before any model
    request = request_from_args(args)
    if args.against and len(specs) == 2 and specs[0] == specs[1]:
        raise InvalidInput(f"--against {args.against}: the same tagger as --tagger")
    if args.server:
        if args.against and not request.tags:
            raise InvalidInput("--server with --against needs --tag (the second tagger explains the same tags)")
        return run_remote(args, request, specs, [str(s) for s in songs])
    return run(args, request, specs, [str(s) for s in songs])


def run(args: argparse.Namespace, request: ValidRequest, specs: list[tuple[str, int | None]], songs: list[str]) -> int:
    from audiolime.audio import decode
    from audiolime.auditdir import Clips, append_records, check_config, clip_name, load_records
    from audiolime.explanation.audit import Skipped
    from audiolime.method.catalog import audit_song, check_tags, config_key, tagger_id
    from audiolime.method.engine import Engine
    from audiolime.method.stems import STEM_RATE, LocalSeparation
    from audiolime.models import load_separator, load_tagger, quiet_tensorflow

    out: Path = args.out
    bounds = settings.limits_from(args)
    key = config_key(request, args.windows_per_song)
    check_config(out, key, write=False)  # an audit with other settings in --out: refused before any model
    quiet_tensorflow()
    taggers = [load_tagger(args.model_dir, name, version) for name, version in specs]
    check_tags(taggers, request.tags)  # an unknown tag: refused before the separator and any song
    if len(taggers) == 2 and tagger_id(taggers[0]) == tagger_id(taggers[1]):
        raise InvalidInput(f"--against {args.against}: the same tagger as --tagger ({tagger_id(taggers[0])})")
    separator = load_separator(args.model_dir, request.separator)
    check_config(out, key)  # the request is good: --out is this audit's
    source = LocalSeparation(lambda wave: separator.separate(wave, STEM_RATE).stems, separator.name, cache_chunks=2)
    pairs = [(t, Engine(t.predict, t.labels, batch_size=args.batch_size)) for t in taggers]
    done = load_records(out)
    resumed_at_start = len(done)

    clips = None if args.no_clips else (clip_name, Clips(out).write)
    skipped: list[Skipped] = []
    warnings: list[str] = []
    explained = resumed = 0
    with ProgressBar() as progress:
        for n, song in enumerate(songs, 1):
            try:
                audio = decode(song, limits=bounds)
                outcome = audit_song(song, audio, pairs, source, request, args.windows_per_song, done,
                                     lambda recs: append_records(out, recs), bounds,
                                     clips, progress)
            except (AudiolimeError, OSError) as exc:  # one bad file does not end a catalog's audit
                skipped.append(Skipped(song, str(exc)))
                print(f"audiolime: audit: [{n}/{len(songs)}] {song}: skipped: {exc}", file=sys.stderr)
                continue
            explained += outcome.explained
            resumed += outcome.resumed
            warnings.extend(outcome.warnings)
            print(f"audiolime: audit: [{n}/{len(songs)}] {Path(song).name}: {outcome.explained} windows explained, "
                  f"{outcome.resumed} from the checkpoint", file=sys.stderr)
    ids = [tagger_id(t) for t in taggers]
    return finish(args, key, ids, songs, skipped, warnings,
                  f"{len(songs)} songs: {explained} windows explained now, {resumed} from the checkpoint "
                  f"({resumed_at_start} records there at the start), {len(skipped)} skipped")


def run_remote(args: argparse.Namespace, request: ValidRequest, specs: list[tuple[str, int | None]],
               songs: list[str]) -> int:
    """The audit as explanation jobs on the explainer at ``--server`` (:mod:`audiolime.auditjobs`)."""
    from audiolime.audio import probe
    from audiolime.auditdir import check_config, clip_name, load_records
    from audiolime.auditjobs import Unit, run_jobs, spec_text, window_starts
    from audiolime.client import ExplainerClient, fetch
    from audiolime.explanation.audit import Skipped
    from audiolime.explanation.document import Document
    from audiolime.inputs import AudioSource
    from audiolime.method.catalog import config_key

    out: Path = args.out
    bounds = settings.limits_from(args)
    key = config_key(request, args.windows_per_song)
    if args.windows_per_song > 1:
        key["windows"] = "evenly spaced"  # not the in-process choice: the two are not mixed in one --out
    check_config(out, key, write=False)
    skipped: list[Skipped] = []
    units: list[Unit] = []
    for song in songs:
        try:
            header = probe(song, limits=bounds)  # size and header before anything is sent
        except (AudiolimeError, OSError) as exc:
            skipped.append(Skipped(song, str(exc)))
            print(f"audiolime: audit: {song}: skipped: {exc}", file=sys.stderr)
            continue
        starts = window_starts(header.duration_s, args.windows_per_song)
        units += [Unit(spec_text(*spec), song, i, start) for spec in specs for i, start in enumerate(starts)]
    if not units:
        raise InvalidInput("no song could be audited: " + "; ".join(f"{s.song}: {s.reason}" for s in skipped[:3]))
    check_config(out, key)
    done = load_records(out)
    at_start = len(done)
    clips = not args.no_clips

    def clip(tid: str, song: str, window: int, tag: str, doc: Document, k: int) -> str:
        """The top-1 component's WAV (the explainer's, downloaded) as clips/...; "" when none."""
        top = doc.targets[k].components[0] if doc.targets[k].components else None
        if clips is None or top is None or top.weight <= 0 or not top.file:
            return ""
        name = clip_name(tid, song, window, tag)
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fetch(top.file))
        return name

    def audio_of(song: str) -> AudioSource:
        return AudioSource(content=Path(song).read_bytes(), filename=song)

    with ExplainerClient(args.server, ca=args.ca) as client:
        outcome = run_jobs(client, out, units, request, request.tags, done, audio_of, args.in_flight, clip)
    skipped += [Skipped(song, why) for song, why in outcome.failed]
    # the taggers as the results name them (NAME@VERSION), in the order asked
    def asked(tid: str) -> int | None:
        name, _, version = tid.partition("@")
        return next((i for i, (n, v) in enumerate(specs) if n == name and (v is None or str(v) == version)), None)

    ids = sorted({r.tagger for r in load_records(out).values() if r.song in set(songs) and asked(r.tagger) is not None},
                 key=lambda t: (asked(t), t))
    return finish(args, key, ids, songs, skipped, outcome.warnings,
                  f"{len(songs)} songs, {len(units)} windows: {outcome.explained} explained now "
                  f"({outcome.submitted} jobs submitted now, {outcome.attached} re-attached), "
                  f"{outcome.resumed} from the checkpoint "
                  f"({at_start} records there at the start), {len(outcome.failed)} jobs failed, "
                  f"{len(skipped) - len(outcome.failed)} songs skipped")


def finish(args: argparse.Namespace, key: dict, ids: list[str], songs: list[str], skipped: list,
           warnings: list[str], summary: str) -> int:
    """The profiles of the checkpoint's records of ``ids`` and ``songs``: audit.json and audit.md
    (and, with two taggers, the diff); printed; the exit status."""
    from audiolime.auditdir import load_records
    from audiolime.explanation.audit import (
        AUDIT_MANIFEST,
        AUDIT_MARKDOWN,
        DIFF_MANIFEST,
        DIFF_MARKDOWN,
        AuditDocument,
        DiffDocument,
        audit_markdown,
        diff_markdown,
    )
    from audiolime.method import audit as core

    out: Path = args.out
    wanted = set(songs)
    records = [r for r in load_records(out).values() if r.song in wanted and r.tagger in ids]
    if not records:
        raise InvalidInput("no song could be audited: " + "; ".join(f"{s.song}: {s.reason}" for s in skipped[:3]))
    profs = core.profiles(sorted(records, key=lambda r: (ids.index(r.tagger), r.tag, r.song, r.window)))
    doc = AuditDocument(key, tuple(ids), tuple(songs), len(records), tuple(profs.values()), tuple(skipped),
                        tuple(warnings))
    (out / AUDIT_MANIFEST).write_bytes(doc.dumps())
    (out / AUDIT_MARKDOWN).write_text(audit_markdown(doc), encoding="utf-8")
    print(summary)
    for p in profs.values():
        stems = ", ".join(f"{r.name} top-1 {100 * r.top1_share:.0f} % [{100 * r.top1_ci[0]:.0f}, "
                          f"{100 * r.top1_ci[1]:.0f}], weight {100 * r.weight_share:.0f} %" for r in p.stems)
        print(f"'{p.tag}' {p.tagger}: {p.n} explanations of {p.songs} songs: {stems}; majority {p.majority}; "
              f"{len(p.outliers)} outlier songs")
    print(f"audit: {out / AUDIT_MANIFEST}, {out / AUDIT_MARKDOWN}")
    if len(ids) < 2:
        return 0
    by = {t: {tag: p for (tid, tag), p in profs.items() if tid == t} for t in ids}
    shifts = core.diff(by[ids[0]], by[ids[1]])
    regress = core.regressions(shifts, args.max_shift) if args.max_shift is not None else []
    ddoc = DiffDocument(ids[0], ids[1], shifts, args.max_shift, tuple(s.tag for s in regress), tuple(warnings))
    (out / DIFF_MANIFEST).write_bytes(ddoc.dumps())
    (out / DIFF_MARKDOWN).write_text(diff_markdown(ddoc), encoding="utf-8")
    for s in shifts:
        top = s.changed[0] if s.changed else None
        most = f"; most changed {Path(top.song).name} ({top.change:.2f})" if top else ""
        print(f"'{s.tag}' {ids[0]} -> {ids[1]}: shift {s.shift:.3f}, majority {s.majority_a} -> {s.majority_b}{most}")
    print(f"diff: {out / DIFF_MANIFEST}, {out / DIFF_MARKDOWN}")
    if regress:
        print(f"audiolime: audit: {len(regress)} tag(s) shifted by more than --max-shift {args.max_shift:g}: "
              f"{', '.join(s.tag for s in regress)}", file=sys.stderr)
        return 1
    return 0
