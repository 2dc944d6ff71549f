"""The resumable checkpoint of an evaluation run, in its output directory: ``config.json`` (the
configuration's result key; a different configuration is refused, never mixed in) and
``items.jsonl`` (one finished (song, tagger, window) item per line, appended and fsynced; a torn
last line from an interrupted run is skipped). The format is stable: old output directories resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

from audiolime.errors import InvalidInput
from audiolime.evaluation.config import EvalConfig

CHECKPOINT = "items.jsonl"
CONFIG = "config.json"


def load_checkpoint(out: Path) -> dict[tuple[str, str, int], dict]:
    path = out / CHECKPOINT
    items: dict[tuple[str, str, int], dict] = {}
    if not path.is_file():
        return items
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from an interrupted run
                continue
            items[(rec["song"], rec["tagger"], int(rec["window"]))] = rec
    return items


def append_checkpoint(out: Path, rec: dict) -> None:
    path = out / CHECKPOINT
    torn = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:  # a torn last line from an interrupted run: start a fresh line
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_config(out: Path, cfg: EvalConfig) -> None:
    """Write ``config.json`` into a new ``out``; refuse an ``out`` holding another configuration."""
    path = out / CONFIG
    key = cfg.result_key()
    if path.is_file():
        # checkpoints from before --slime-domain existed hold spectrogram-domain SLIME results
        old = {"slime_domain": "spectrogram", **json.loads(path.read_text())}
        diff = [f"{k} {old.get(k)!r} != {v!r}" for k, v in key.items() if old.get(k) != v]
        if diff:
            raise InvalidInput(f"{out} holds results of a different configuration ({'; '.join(diff)}); "
                               f"use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(key, indent=2) + "\n")
