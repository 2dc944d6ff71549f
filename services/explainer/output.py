"""Write an explanation to a local directory: WAV artifacts first, ``explanation.json`` last,
all staged in a temporary sibling directory so a failure leaves nothing half-written."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from audiolime.audio import write_wav
from audiolime.explainer.pipeline import ExplainResult, artifacts, document

MANIFEST = "explanation.json"


def write_local(result: ExplainResult, out_dir: Path, audio_path: str) -> dict:
    """Write every artifact and the manifest into ``out_dir``; return the manifest document."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        names = []
        for name, audio in artifacts(result):
            path = stage / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, audio, result.request.audio.sample_rate)
            names.append(name)
        doc = document(result, audio_path, {n: n for n in names})
        (stage / MANIFEST).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        out_dir.mkdir(exist_ok=True)
        old_manifest = out_dir / MANIFEST
        old_manifest.unlink(missing_ok=True)  # a reader never pairs an old manifest with new audio
        for name in names + [MANIFEST]:  # manifest last
            dest = out_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            (stage / name).replace(dest)
        return doc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
