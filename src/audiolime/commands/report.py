"""``audiolime report DIR_OR_JSON``: (re)write the listening report beside a saved explanation,
e.g. one written by an older audiolime, or after moving its folder; or ``timeline.html`` beside a
song timeline's ``timeline.json`` (``audiolime timeline --out``). A thin door over the one
artifact writer's :func:`~audiolime.artifacts.write_report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiolime.errors import InvalidInput

MAX_DOCUMENT_BYTES = 64 << 20  # explanation.json of the largest request (d' in the thousands) is a few MB


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the listening report (explanation.html, or timeline.html) of a saved "
                                      "explanation or song timeline")
    p.add_argument("path", type=Path, help="an explanation's folder (explain --out DIR) or its explanation.json; "
                                           "a song timeline's folder (timeline --out DIR) or its timeline.json")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from audiolime.artifacts import write_report
    from audiolime.explanation.document import MANIFEST, Document
    from audiolime.explanation.timeline import TIMELINE_KIND, TIMELINE_MANIFEST, TimelineDocument
    from audiolime.report.view import audio_ref
    from audiolime.store import LocalStore

    manifest = args.path / MANIFEST if args.path.is_dir() else args.path
    if args.path.is_dir() and not manifest.is_file() and (args.path / TIMELINE_MANIFEST).is_file():
        manifest = args.path / TIMELINE_MANIFEST
    if not manifest.is_file():
        raise InvalidInput(f"{manifest}: no such file (give an explanation's folder or its {MANIFEST}, or a song "
                           f"timeline's folder or its {TIMELINE_MANIFEST})")
    if manifest.stat().st_size > MAX_DOCUMENT_BYTES:
        raise InvalidInput(f"{manifest}: {manifest.stat().st_size} bytes is more than an explanation document "
                           f"can be ({MAX_DOCUMENT_BYTES})")
    out = manifest.with_suffix(".html")
    try:
        data = manifest.read_bytes()
        doc: Document | TimelineDocument
        if _kind(data) == TIMELINE_KIND:
            doc = TimelineDocument.loads(data)
        else:
            doc = Document.loads(data)
        write_report(LocalStore(manifest.parent), out.name, doc)
    except InvalidInput as exc:
        raise InvalidInput(f"{manifest}: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong type
        raise InvalidInput(f"{manifest}: not an explanation document: {exc}") from None
    refs = [f for f in doc.files() if audio_ref(f) and "://" not in f]
    missing = [f for f in refs if not (manifest.parent / f).is_file()]
    if missing:
        print(f"audiolime: warning: {len(missing)} of the {len(refs)} audio files the report plays are not "
              f"beside it: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}", file=sys.stderr)
    print(out)
    return 0


def _kind(data: bytes) -> object:
    import json

    try:
        d = json.loads(data)
    except ValueError:
        return None
    return d.get("kind") if isinstance(d, dict) else None
