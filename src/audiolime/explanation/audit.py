"""Catalog audits as documents: ``audit.json`` (``kind: tag-audit``, the reliance profiles of an
audit, :mod:`audiolime.method.audit`) and ``diff.json`` (``kind: audit-diff``, two taggers'
profiles compared), each versioned on its own, written with the schema machinery
(:mod:`audiolime.explanation.schema`) so that they round-trip, and rendered as Markdown
(``audit.md``, ``diff.md``) for a person: the profile with its intervals, the outlier songs and the
most changed songs with the windows (and clips) to listen to. Reading them needs numpy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from audiolime.explanation import schema
from audiolime.method.audit import Listen, Reliance, TagProfile, TagShift

AUDIT_KIND = "tag-audit"
AUDIT_VERSION = 1
DIFF_KIND = "audit-diff"
DIFF_VERSION = 1
AUDIT_MANIFEST, AUDIT_MARKDOWN = "audit.json", "audit.md"
DIFF_MANIFEST, DIFF_MARKDOWN = "diff.json", "diff.md"

T = TypeVar("T")


@dataclass(frozen=True)
class Skipped:
    song: str
    reason: str


@dataclass(frozen=True)
class AuditDocument:
    """One audit: its settings (``audit-config.json``), the taggers and songs, per (tagger, tag)
    the reliance profile, the songs that could not be audited and the warnings."""

    settings: dict[str, Any]
    taggers: tuple[str, ...]
    songs: tuple[str, ...]
    explanations: int
    profiles: tuple[TagProfile, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    kind: str = AUDIT_KIND
    version: int = AUDIT_VERSION

    def to_json(self) -> dict:
        return schema.to_json(self)

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def loads(cls, data: bytes | str) -> AuditDocument:
        return schema.load_document(data, lambda d: schema.from_json(cls, d), (AUDIT_VERSION,), "a tag audit",
                                    "tag audit document", AUDIT_KIND)


@dataclass(frozen=True)
class DiffDocument:
    """Two taggers' audits of the same songs and tags: per tag the shift (most shifted first),
    ``max_shift`` the threshold asked for (None: none) and ``regressions`` the tags past it."""

    a: str
    b: str
    shifts: tuple[TagShift, ...]
    max_shift: float | None = None
    regressions: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    kind: str = DIFF_KIND
    version: int = DIFF_VERSION

    def to_json(self) -> dict:
        return schema.to_json(self)

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def loads(cls, data: bytes | str) -> DiffDocument:
        return schema.load_document(data, lambda d: schema.from_json(cls, d), (DIFF_VERSION,), "an audit diff",
                                    "audit diff document", DIFF_KIND)


# -- Markdown -----------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _ci(ci: tuple[float, ...]) -> str:
    return f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _reliance_table(rows: tuple[Reliance, ...], head: str) -> list[str]:
    out = [f"| {head} | top-1 component | 95 % CI | positive weight | 95 % CI |", "| --- | ---: | --- | ---: | --- |"]
    out += [f"| {_cell(r.name)} | {r.top1} ({_pct(r.top1_share)}) | {_ci(r.top1_ci)} | {_pct(r.weight_share)} | "
            f"{_ci(r.weight_ci)} |" for r in rows]
    return out


def _listen(w: Listen) -> str:
    clip = f" \u2014 [clip]({w.clip})" if w.clip else ""
    return (f"window {w.start_s:.2f}\u2013{w.end_s:.2f} s (p {w.probability:.3f}): top-1 "
            f"{_cell(w.top_component)}{clip}")


def audit_markdown(doc: AuditDocument) -> str:
    s = doc.settings
    tags = ", ".join(s.get("tags") or []) or f"each song's top {s.get('top_n')}"
    lines = [f"# Tag audit: {tags}", "",
             f"{len(doc.songs)} songs x up to {s.get('windows_per_song')} windows, taggers "
             f"{', '.join(doc.taggers)}; {doc.explanations} explanations ({s.get('separator')} x {s.get('segments')} "
             f"segments, num_samples {s.get('num_samples')}, seed {s.get('seed')}). Shares count explanations "
             f"(the windows of a song are not independent: the songs are listed apart); intervals are 95 % Wilson.", ""]
    for p in doc.profiles:
        lines += [f"## '{p.tag}' \u2014 {p.tagger}", "",
                  f"{p.n} explanations of {p.songs} songs ({p.positive} with positive weight); majority stem: "
                  f"**{p.majority}**.", ""]
        lines += _reliance_table(p.stems, "stem") + [""]
        lines += _reliance_table(p.positions, "segment") + [""]
        if p.outliers:
            lines += [f"Outliers (dominant stem not {p.majority}):", ""]
            by_song = {t.song: t for t in p.song_table}
            for song in p.outliers:
                t = by_song[song]
                shares = ", ".join(f"{k} {_pct(v)}" for k, v in t.shares.items())
                lines.append(f"- `{_cell(song)}`: {t.dominant} ({shares}; deviation {t.deviation:.2f})")
                lines += [f"  - {_listen(w)}" for w in t.windows]
            lines.append("")
        else:
            lines += [f"No outliers: every song's dominant stem is {p.majority}.", ""]
    if doc.skipped:
        lines += ["## Skipped", ""] + [f"- `{_cell(x.song)}`: {_cell(x.reason)}" for x in doc.skipped] + [""]
    if doc.warnings:
        lines += ["## Warnings", ""] + [f"- {_cell(w)}" for w in doc.warnings] + [""]
    return "\n".join(lines)


def diff_markdown(doc: DiffDocument) -> str:
    lines = [f"# Explanation diff: {doc.a} \u2192 {doc.b}", "",
             "Shift: total variation distance between the two taggers' positive-weight shares per stem "
             "(0 the same reliance, 1 entirely other stems); a song's change is the same distance between its "
             "shares under each.", ""]
    if doc.max_shift is not None:
        verdict = (f"**{len(doc.regressions)} tag(s) shifted by more than {doc.max_shift:g}**: "
                   f"{', '.join(doc.regressions)}") if doc.regressions else \
            f"No tag shifted by more than {doc.max_shift:g}."
        lines += [verdict, ""]
    lines += ["| tag | shift | majority | songs | mean song change |", "| --- | ---: | --- | ---: | ---: |"]
    lines += [f"| {_cell(t.tag)} | {t.shift:.3f} | {t.majority_a} \u2192 {t.majority_b} | {t.songs} | "
              f"{t.mean_change:.3f} |" for t in doc.shifts]
    lines.append("")
    for t in doc.shifts:
        lines += [f"## '{t.tag}': shift {t.shift:.3f}", "",
                  f"| stem | positive weight {doc.a} | {doc.b} | top-1 {doc.a} | {doc.b} | intervals apart |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]
        lines += [f"| {s.stem} | {_pct(s.weight_share_a)} | {_pct(s.weight_share_b)} | {_pct(s.top1_share_a)} | "
                  f"{_pct(s.top1_share_b)} | {'yes' if s.separated else 'no'} |" for s in t.stems]
        lines += ["", "Most changed songs:", ""]
        for c in t.changed:
            lines.append(f"- `{_cell(c.song)}`: change {c.change:.2f}, dominant {c.dominant_a or '-'} \u2192 "
                         f"{c.dominant_b or '-'}")
            lines += [f"  - {doc.a}: {_listen(w)}" for w in c.windows_a]
            lines += [f"  - {doc.b}: {_listen(w)}" for w in c.windows_b]
        lines.append("")
    if doc.warnings:
        lines += ["## Warnings", ""] + [f"- {_cell(w)}" for w in doc.warnings] + [""]
    return "\n".join(lines)
